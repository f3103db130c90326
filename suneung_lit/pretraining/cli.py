"""``python -m suneung_lit pretrain [fit|validate] --config pretrain-NAME.yaml``: the language-model stage through
the package's LightningCLI (``fit`` when no subcommand is given). Only wiring lives here."""

from __future__ import annotations

import sys
from pathlib import Path

from suneung_lit.cli import (
    AdapterExport,
    SuneungCLI,
    check_writable,
    checkpoint_defaults,
    resolve_auto_precision,
    resolve_config_args,
)
from suneung_lit.pretraining.datamodule import TextCorpusDataModule
from suneung_lit.pretraining.module import CausalLMPretraining

SUBCOMMANDS = ("fit", "validate")


class PretrainCLI(SuneungCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {name: spec for name, spec in SuneungCLI.subcommands().items() if name in SUBCOMMANDS}

    def add_arguments_to_parser(self, parser) -> None:
        from lightning.pytorch.callbacks import ModelCheckpoint

        parser.link_arguments("model.model_name_or_path", "data.tokenizer_name_or_path")
        parser.link_arguments("model.base.trust_remote_code", "data.trust_remote_code")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(checkpoint_defaults("checkpoints/pretrain", "val/loss", "min"))
        parser.add_lightning_class_args(AdapterExport, "adapter_export")
        parser.set_defaults({"adapter_export.output_dir": "artifacts/pretrain-adapter"})

    def _check_inputs(self, config) -> None:
        # The corpus itself is read and checked once, in the data module's setup, which Lightning runs before
        # configure_model loads the model; here only the outputs are checked.
        if self.subcommand == "fit":
            for key in ("checkpoint.dirpath", "adapter_export.output_dir"):
                group, name = key.split(".")
                if config[group][name]:
                    check_writable(key, Path(config[group][name]))

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand:
            self._check_inputs(config)
        resolve_auto_precision(config)


def build_pretrain_cli(args: list[str] | None, run: bool = True) -> PretrainCLI:
    from lightning.pytorch.callbacks import LearningRateMonitor

    from suneung_lit.progress import EpochProgressBar

    return PretrainCLI(
        CausalLMPretraining,
        TextCorpusDataModule,
        seed_everything_default=42,
        trainer_defaults={
            "callbacks": [LearningRateMonitor(logging_interval="step"), EpochProgressBar()],
            "use_distributed_sampler": False,  # the data module shards batches per rank itself
        },
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(argv: list[str]) -> None:
    argv = list(argv)
    if not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help"):
        argv.insert(0, "fit")
    try:
        build_pretrain_cli(resolve_config_args(argv))
    except Exception as err:
        from suneung_lit.pretraining.corpus import CorpusError

        if isinstance(err, CorpusError):
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
