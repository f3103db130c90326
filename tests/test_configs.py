"""Every shipped YAML parses against the real CLI, so a typo fails here and not on a user's GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from suneung_lit.cli import main

from .conftest import REPO

# Search spaces (configs/sweeps) are not configs: tests/test_sweep.py parses them.
CONFIGS = sorted(path for path in (REPO / "configs").rglob("*.yaml") if "sweeps" not in path.parts)


def print_config(config, capsys) -> tuple[int, str, str]:
    """``fit --config CONFIG --print_config`` in this process (``pretrain`` for the language-model stage's
    ``pretrain-*.yaml``): parsing only, nothing is loaded."""
    command = "pretrain" if Path(config).name.startswith("pretrain-") else "fit"
    with pytest.raises(SystemExit) as stopped:
        main([command, "--config", str(config), "--print_config"])
    captured = capsys.readouterr()
    return stopped.value.code or 0, captured.out, captured.err


def test_configs_are_found():
    names = {
        "demo.yaml",
        "gemma270m.yaml",
        "qwen1.5b.yaml",
        "qwen7b.yaml",
        "qwen32b.yaml",
        "qwen3-32b.yaml",
        "qwen3-14b.yaml",
    }
    assert names <= {c.name for c in CONFIGS}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_config_parses_and_every_key_is_a_constructor_argument(config, capsys):
    code, out, err = print_config(config, capsys)
    assert code == 0, err[-3000:]
    if config.name.startswith("pretrain-"):
        assert "block_size:" in out and "init_adapter:" in out and "packing:" in out
    else:
        assert "debias:" in out and "chat_template:" in out and "balance_train:" in out


def test_a_mistyped_key_in_a_config_fails_to_parse(tmp_path, capsys):
    demo = (REPO / "configs" / "demo.yaml").read_text()
    assert "\n    r: 8\n" in demo
    broken = tmp_path / "broken.yaml"
    broken.write_text(demo.replace("\n    r: 8\n", "\n    rank: 8\n"), encoding="utf-8")
    code, _, err = print_config(broken, capsys)
    assert code != 0 and "rank" in err


@pytest.mark.parametrize("flat", ["lora_r: 8", "learning_rate: 0.001", "quantization: none"])
def test_the_old_flat_keys_are_refused_next_to_their_groups(flat, tmp_path, capsys):
    """Grouped settings have one spelling: ``model.lora.r``, not ``model.lora_r`` beside it."""
    old = tmp_path / "old.yaml"
    old.write_text((REPO / "configs" / "demo.yaml").read_text().replace("model:\n", f"model:\n  {flat}\n"))
    code, _, err = print_config(old, capsys)
    assert code != 0 and flat.split(":")[0] in err


def test_grouped_settings_reach_the_module_and_its_checkpoint_hyperparameters(tmp_path):
    """Nested YAML keys build the typed settings; the hyperparameters a checkpoint keeps are plain dicts, so
    ``torch.load(weights_only=True)`` reads them, and a module rebuilt from them has the same settings."""
    import torch

    from suneung_lit.backbone import LoraSettings
    from suneung_lit.cli import SuneungCLI
    from suneung_lit.data.datamodule import MultipleChoiceDataModule
    from suneung_lit.module import QLoRAMultipleChoice

    args = ["--config", str(REPO / "configs" / "demo.yaml"), "--model.lora.r", "4", "--model.lora.top_layers", "1"]
    module = SuneungCLI(QLoRAMultipleChoice, MultipleChoiceDataModule, args=args, run=False).model
    assert module.lora == LoraSettings(r=4, alpha=16, dropout=0.0, top_layers=1)
    assert module.optimization.learning_rate == 0.004 and module.base.quantization == "nf4"
    torch.save({"hyper_parameters": dict(module.hparams)}, tmp_path / "hparams.pt")
    saved = torch.load(tmp_path / "hparams.pt", weights_only=True)["hyper_parameters"]
    assert saved["lora"]["r"] == 4
    rebuilt = QLoRAMultipleChoice(**{k: v for k, v in saved.items() if not k.startswith("_")})  # _class_path etc.
    assert (rebuilt.base, rebuilt.lora, rebuilt.optimization) == (module.base, module.lora, module.optimization)


def test_a_bare_config_name_runs_from_any_folder_with_the_data_shipped_beside_it(tmp_path, monkeypatch, capsys):
    from suneung_lit.cli import BUNDLED_CONFIGS, resolve_config_args

    monkeypatch.chdir(tmp_path)  # nothing here: no configs/, no data/
    args = resolve_config_args(["fit", "--config", "demo.yaml", "--trainer.max_steps", "2"])
    assert args[:3] == ["fit", "--config", str(BUNDLED_CONFIGS / "demo.yaml")]
    overrides = dict(zip(args[3:-2:2], args[4:-2:2], strict=True))
    assert set(overrides) == {"--data.train_path", "--data.predict_path"}
    assert all(Path(path).is_file() and Path(path).is_relative_to(BUNDLED_CONFIGS) for path in overrides.values())
    assert args[-2:] == ["--trainer.max_steps", "2"]  # the user's own overrides still come last and win
    assert "data.train_path data/sample_train.csv is not in this folder" in capsys.readouterr().err


def test_a_data_file_in_the_current_folder_wins_over_the_shipped_copy(tmp_path, monkeypatch):
    from suneung_lit.cli import BUNDLED_CONFIGS, resolve_config_args

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sample_train.csv").write_text("id\n", encoding="utf-8")
    args = resolve_config_args(["--config=demo.yaml"])
    assert args[0] == "--config=" + str(BUNDLED_CONFIGS / "demo.yaml")
    assert "--data.train_path" not in args and "--data.predict_path" in args


def test_a_config_of_ones_own_gets_no_rewritten_paths(tmp_path, monkeypatch):
    from suneung_lit.cli import resolve_config_args

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("data:\n  train_path: data/sample_train.csv\n", encoding="utf-8")
    assert resolve_config_args(["--config", "mine.yaml"]) == ["--config", "mine.yaml"]
