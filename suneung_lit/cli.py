"""The command line: ``python -m suneung_lit fit|validate|test|predict --config configs/NAME.yaml``; ``sweep``
(``suneung_lit.sweep``) and ``pretrain`` (``suneung_lit.pretraining``) dispatch to their own modules.

Only wiring lives here: argument links, default callbacks, and resolving a bare config name to the configs shipped
inside the package (``suneung_lit/configs``). Every YAML key maps to a constructor argument of the module, data
module, trainer or callbacks.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI

from suneung_lit import sharding
from suneung_lit.data.datamodule import MultipleChoiceDataModule
from suneung_lit.module import QLoRAMultipleChoice
from suneung_lit.precision import resolve_dtype, this_machine, trainer_precision
from suneung_lit.progress import EpochProgressBar
from suneung_lit.writer import PredictionCSVWriter

BUNDLED_CONFIGS = Path(__file__).resolve().parent / "configs"
# Data keys whose relative paths in a bundled config may name a file shipped beside it (the demo's sample data,
# the reviewed corrections), so a bundled config runs from any folder.
BUNDLED_DATA_KEYS = ("train_path", "val_path", "test_path", "predict_path", "corrections_path")
BUNDLED_DATA_LIST_KEYS = ("corpus_paths", "items_paths", "exclude_paths")  # the language-model stage's


def checkpoint_defaults(dirpath: str, monitor: str, mode: str) -> dict[str, object]:
    """The ``checkpoint`` group's defaults for a stage that keeps its best run by ``monitor`` and always a last."""
    short = monitor.split("/")[-1]
    return {
        "checkpoint.dirpath": dirpath,
        "checkpoint.monitor": monitor,
        "checkpoint.mode": mode,
        "checkpoint.save_last": True,
        "checkpoint.filename": f"best-step{{step}}-{short}{{{monitor}:.4f}}",
        "checkpoint.auto_insert_metric_name": False,
        # A re-run overwrites last.ckpt instead of writing last-v1.ckpt beside a stale one.
        "checkpoint.enable_version_counter": False,
    }


class AdapterExport(L.Callback):
    """At the end of fit, saves the LoRA adapter with peft's ``save_pretrained`` (loadable by ``PeftModel``).

    Args:
        output_dir: folder for ``adapter_model.safetensors`` and ``adapter_config.json``; null turns export off.
    """

    def __init__(self, output_dir: str | None = "adapter"):
        self.output_dir = output_dir

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.output_dir is None:
            return
        if sharding.is_sharded(trainer):  # every rank gathers; rank 0 writes the whole adapter
            state = {k.removeprefix("model."): v for k, v in sharding.trainable_state(trainer.model, pl_module).items()}
            if trainer.is_global_zero:
                sharding.save_adapter(pl_module.model, state, self.output_dir)
        elif trainer.is_global_zero:
            pl_module.model.save_pretrained(self.output_dir)
        if trainer.is_global_zero:
            print(f"saved LoRA adapter to {self.output_dir}")


class SuneungCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The model name is set once; the tokenizer and the option count follow it.
        parser.link_arguments("model.model_name_or_path", "data.tokenizer_name_or_path")
        parser.link_arguments("model.base.trust_remote_code", "data.trust_remote_code")
        parser.link_arguments("model.max_choices", "data.max_choices")
        parser.link_arguments("model.debias", "data.debias")
        parser.link_arguments("model.answer_mode", "data.answer_mode")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(checkpoint_defaults("checkpoints", "val/acc", "max"))
        parser.add_lightning_class_args(PredictionCSVWriter, "prediction_writer")
        parser.add_lightning_class_args(AdapterExport, "adapter_export")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would overwrite the parsed config with the hyperparameters saved in --ckpt_path, so that
        # `validate --ckpt_path X --model.debias cyclic` silently scored with the checkpoint's `debias` (and its
        # every other model setting). Here the config and the command line win; a checkpoint whose adapter does
        # not fit the configured model is refused when it loads (``checkpoints.load_trainable_state``).
        return None

    def _instantiate_trainer(self, config: dict, callbacks: list) -> L.Trainer:
        # Our default progress bar would make `--trainer.enable_progress_bar false` a MisconfigurationException.
        if config.get("enable_progress_bar") is False:
            defaults = [c for c in self.trainer_defaults.get("callbacks", []) if not isinstance(c, ProgressBar)]
            self.trainer_defaults = {**self.trainer_defaults, "callbacks": defaults}
        return super()._instantiate_trainer(config, callbacks)

    def before_instantiate_classes(self) -> None:
        # A CLI built with run=False (a script's or a benchmark's) has no subcommand and no inputs to check, but its
        # `auto` dtypes are resolved all the same.
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand:
            self._check_inputs(config)
        resolve_auto_precision(config)

    def _check_inputs(self, config) -> None:
        # Fail on bad data paths, template names or unwritable outputs before a multi-gigabyte model is loaded.
        # The files' contents are validated in the data module's setup, which Lightning also runs before
        # configure_model loads the model.
        self._check_data(config)
        outputs = {
            "fit": [
                ("checkpoint.dirpath", config["checkpoint"]["dirpath"]),
                ("adapter_export.output_dir", config["adapter_export"]["output_dir"]),
            ],
            "predict": [("prediction_writer.output_dir", config["prediction_writer"]["output_dir"])],
        }.get(self.subcommand, [])
        for key, folder in outputs:
            if folder:
                check_writable(key, Path(folder))

    def _check_data(self, config) -> None:
        """The data paths and template names of ``config`` (nothing is loaded or written)."""
        datamodule = config["data"]
        paths = {k: datamodule.get(k) for k in ("train_path", "val_path", "test_path", "predict_path")}
        probe = MultipleChoiceDataModule(
            tokenizer_name_or_path=datamodule["tokenizer_name_or_path"] or "",
            **paths,
            template=datamodule["template"],
            chat_template=datamodule["chat_template"],
            debias=config["model"]["debias"],
            prefix_reuse=datamodule["prefix_reuse"],
        )
        probe.check_inputs(self.subcommand)
        if config["model"]["base"]["quantization"] != "none" and str(config["trainer"].get("accelerator")) == "mps":
            raise ValueError("bitsandbytes quantization does not run on Apple MPS; set model.base.quantization: none")


def resolve_auto_precision(config) -> None:
    """Resolve `auto` dtypes once, for the accelerator the run uses, and write them into ``config``, so the module's
    settings and the trainer's precision cannot be chosen for different devices; each choice is printed with why."""
    machine, base = this_machine(str(config["trainer"].get("accelerator"))), config["model"]["base"]
    reasons = {}
    for key in ("dtype", "compute_dtype"):
        base[key], reasons[key] = resolve_dtype(base[key], machine)
        if reasons[key] != "set in the config":
            print(f"model.base.{key} auto -> {base[key]}: {reasons[key]}", file=sys.stderr)
    if config["trainer"].get("precision") is None:
        # Unset: follow the compute dtype, so bf16 weights get bf16 autocast, float16 gets loss scaling and
        # float32 stays float32.
        config["trainer"]["precision"] = trainer_precision(base["compute_dtype"])
        print(f"trainer.precision unset -> {config['trainer']['precision']} (compute dtype "
              f"{base['compute_dtype']}: {reasons['compute_dtype']})", file=sys.stderr)  # fmt: skip


def check_writable(key: str, folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"{key}: cannot write to {folder} ({err.strerror or err})") from err


def resolve_config_args(argv: list[str]) -> list[str]:
    """``--config NAME.yaml`` that is not a file here resolves to the bundled ``configs/NAME.yaml``.

    A bundled config's relative data paths that do not exist in the current folder but do beside the config
    (``data/sample_train.csv``) are added after it as overrides pointing there, with a note; a file of that name in
    the current folder wins, and so does any later ``--data.KEY`` the user gives.
    """
    resolved: list[str] = []
    for i, arg in enumerate(argv):
        if i > 0 and argv[i - 1] == "--config":
            config = _bundled(arg)
            resolved += [config, *_bundled_data_overrides(config)]
        elif arg.startswith("--config="):
            config = _bundled(arg.split("=", 1)[1])
            resolved += ["--config=" + config, *_bundled_data_overrides(config)]
        else:
            resolved.append(arg)
    return resolved


def _bundled(name: str) -> str:
    if Path(name).exists():
        return name
    for candidate in (BUNDLED_CONFIGS / name, BUNDLED_CONFIGS / f"{name}.yaml", BUNDLED_CONFIGS / Path(name).name):
        if candidate.is_file():
            return str(candidate)
    return name


def _bundled_data_overrides(config: str) -> list[str]:
    """``--data.KEY PATH`` for each relative data path of a bundled ``config`` that only exists beside it."""
    path = Path(config).resolve()
    if path.parent != BUNDLED_CONFIGS or not path.is_file():
        return []
    import yaml

    data = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("data") or {}
    overrides = []
    for key in BUNDLED_DATA_KEYS:
        value = data.get(key)
        if not value or Path(value).is_absolute() or Path(value).exists():
            continue
        shipped = BUNDLED_CONFIGS / value
        if shipped.is_file():
            print(f"{path.name}: data.{key} {value} is not in this folder; using the copy shipped with the package, "
                  f"{shipped}", file=sys.stderr)  # fmt: skip
            overrides += [f"--data.{key}", str(shipped)]
    for key in BUNDLED_DATA_LIST_KEYS:
        values = data.get(key) or []
        shipped = [_shipped_or_given(value) for value in values]
        if shipped != values:
            print(f"{path.name}: data.{key} {values}: using the copies shipped with the package for files not in this "
                  f"folder, {shipped}", file=sys.stderr)  # fmt: skip
            overrides += [f"--data.{key}", json.dumps(shipped, ensure_ascii=False)]
    return overrides


def _shipped_or_given(value: str) -> str:
    if Path(value).is_absolute() or Path(value).exists():
        return value
    return str(BUNDLED_CONFIGS / value) if (BUNDLED_CONFIGS / value).exists() else value


def main(argv: list[str] | None = None) -> None:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["sweep"]:
        from suneung_lit.sweep import main as sweep

        sys.exit(sweep(given[1:]))
    if given[:1] == ["pretrain"]:
        from suneung_lit.pretraining.cli import main as pretrain

        return pretrain(given[1:])
    if argv is None:
        sys.argv[1:] = resolve_config_args(sys.argv[1:])
        build_cli(None)
    else:
        build_cli(resolve_config_args(argv))


def build_cli(
    args: list[str] | None,
    run: bool = True,
    callbacks: list[L.Callback] | None = None,
    cli_class: type[SuneungCLI] | None = None,
    exit_on_error: bool = True,
) -> SuneungCLI:
    """The package's LightningCLI on ``args`` (None: the command line). ``run=False`` parses a config without a
    subcommand and returns the instantiated model, data module and trainer, `auto` dtypes resolved, for scripts.
    ``callbacks`` join the trainer's default ones (a sweep's trial reporter); ``exit_on_error=False`` raises
    jsonargparse's ``ArgumentError`` instead of exiting, for callers that report it themselves."""
    # Our batch sampler returns every index for prediction; Lightning cannot know that and warns on each run.
    warnings.filterwarnings("ignore", message="You are using a custom batch sampler")
    parser_kwargs = {} if exit_on_error else {"exit_on_error": False, "fit": {"exit_on_error": False}}
    return (cli_class or SuneungCLI)(
        QLoRAMultipleChoice,
        MultipleChoiceDataModule,
        seed_everything_default=42,
        trainer_defaults={
            "callbacks": [LearningRateMonitor(logging_interval="step"), EpochProgressBar(), *(callbacks or [])],
            # The data module shards batches per rank itself (see ResumableBatchSampler).
            "use_distributed_sampler": False,
        },
        save_config_kwargs={"overwrite": True},
        parser_kwargs=parser_kwargs,
        args=args,
        run=run,
    )
