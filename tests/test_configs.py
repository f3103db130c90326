"""Every shipped YAML parses against the real CLI, so a typo fails here and not on a user's GPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import REPO

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def test_configs_are_found():
    assert {"demo.yaml", "gemma270m.yaml", "qwen7b.yaml", "qwen32b.yaml"} <= {c.name for c in CONFIGS}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_config_parses_and_every_key_is_a_constructor_argument(config):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-m", "suneung_lit", "fit", "--config", str(config), "--print_config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "debias:" in result.stdout and "chat_template:" in result.stdout


def test_a_mistyped_key_in_a_config_fails_to_parse(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text((REPO / "configs" / "demo.yaml").read_text().replace("lora_r:", "lora_rank:"), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "suneung_lit", "fit", "--config", str(broken), "--print_config"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode != 0 and "lora_rank" in result.stderr
