"""Shared set-up for the benchmarks: a Qwen2-shaped model with the real vocabulary, and the results file."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
COMPETITION = ROOT.parent / "shared" / "data" / "generationfornlp"


def model_dir(hidden: int, layers: int, cache: Path = ROOT / "artifacts") -> Path:
    """A random Qwen2ForCausalLM with the real Qwen2.5 tokenizer at the given size, built once and reused."""
    from suneung_lit.tiny import build_tiny_model

    path = cache / f"bench-qwen2-h{hidden}-l{layers}"
    if not (path / "config.json").is_file():
        heads = max(2, hidden // 64)
        build_tiny_model(
            path,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=max(1, heads // 2),
            intermediate_size=hidden * 2,
        )
    return path


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} threads"


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def append_result(section: str, header: list[str], row: list[object]) -> None:
    """Append a dated row under ``## section`` in RESULTS.md (the section and its table header are created once)."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else "# Benchmark results\n"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    full_header = ["date", "commit", "device", *header]
    line = "| " + " | ".join(str(v) for v in [stamp, commit(), device_name(), *row]) + " |"
    marker = f"## {section}"
    if marker not in text:
        text += f"\n{marker}\n\n| " + " | ".join(full_header) + " |\n|" + "---|" * len(full_header) + "\n"
    start = text.index(marker)
    end = text.find("\n## ", start + len(marker))
    end = len(text) if end == -1 else end
    body = text[start:end].rstrip("\n") + "\n" + line + "\n"
    RESULTS.write_text(text[:start] + body + text[end:], encoding="utf-8")


def set_threads() -> int:
    threads = int(os.environ.get("BENCH_THREADS", torch.get_num_threads()))
    torch.set_num_threads(threads)
    return threads
