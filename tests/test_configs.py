"""Every shipped YAML parses against the real CLI, so a typo fails here and not on a user's GPU."""

from __future__ import annotations

import pytest

from suneung_lit.cli import main

from .conftest import REPO

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def print_config(config, capsys) -> tuple[int, str, str]:
    """``fit --config CONFIG --print_config`` in this process: parsing only, nothing is loaded."""
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(config), "--print_config"])
    captured = capsys.readouterr()
    return stopped.value.code or 0, captured.out, captured.err


def test_configs_are_found():
    assert {"demo.yaml", "gemma270m.yaml", "qwen1.5b.yaml", "qwen7b.yaml", "qwen32b.yaml"} <= {c.name for c in CONFIGS}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_config_parses_and_every_key_is_a_constructor_argument(config, capsys):
    code, out, err = print_config(config, capsys)
    assert code == 0, err[-3000:]
    assert "debias:" in out and "chat_template:" in out and "balance_train:" in out


def test_a_mistyped_key_in_a_config_fails_to_parse(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text((REPO / "configs" / "demo.yaml").read_text().replace("lora_r:", "lora_rank:"), encoding="utf-8")
    code, _, err = print_config(broken, capsys)
    assert code != 0 and "lora_rank" in err
