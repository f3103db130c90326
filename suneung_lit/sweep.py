"""Hyperparameter sweeps on Optuna: ``python -m suneung_lit sweep --config C --space SPACE.yaml --trials N``.

Each trial is a real ``fit`` through the package's LightningCLI with the trial's values as command-line overrides,
then ``validate`` of its best checkpoint on the same loaded model; Optuna's pruner stops a trial early on the
``val/acc`` it reports after each validation during fit. The study lives in an Optuna storage (SQLite beside the
results by default, any RDB URL otherwise), so several workers, on one machine or several, share one study: start
the same command once per GPU. Every trial's folder holds its checkpoints, TensorBoard logs and resolved config;
``results.csv`` is rewritten from the storage after each trial, one row per trial with its parameters, ``val/acc``
with its 95% interval and the best constant predictor on the same validation items.

A search space is a YAML mapping from dotted config keys to a list of values (categorical; a grid when every key
is a list) or a range ``{low, high, log, step}`` (integers when both ends are integers)::

    model.lora.r: [4, 8, 16]
    model.optimization.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}
    data.template: [base, choices_last]

Every key and value is parsed against the CLI before any trial runs, so a typo or a wrong type fails at once,
naming the key.
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import yaml

from suneung_lit.atomic_write import write_atomically
from suneung_lit.evaluation import best_constant, wilson_interval

Primitive = str | int | float | bool | None
# Keys a trial may not vary: one process per trial (parallelism comes from workers), and the trial's outputs go to
# its own folder.
FIXED_KEYS = ("trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.default_root_dir",
              "checkpoint.dirpath", "adapter_export.output_dir", "prediction_writer.output_dir")  # fmt: skip
RESULT_COLUMNS = ("val_acc", "val_acc_low", "val_acc_high", "best_constant", "items", "steps", "seconds", "dir")
SKIPPED = "skipped"  # user attribute of a trial asked for after the study's budget was spent (never run)


class SearchSpaceError(ValueError):
    """A search space that cannot run: its file, the key and what is wrong."""


@dataclass(frozen=True)
class Choice:
    """A categorical parameter: one of ``values`` (YAML values; lists and mappings too, stored as JSON text)."""

    values: tuple[Any, ...]

    @property
    def encoded(self) -> bool:
        # Optuna stores only primitives; any list or mapping makes every value travel as JSON text.
        return not all(value is None or isinstance(value, str | int | float | bool) for value in self.values)

    def options(self) -> list[Primitive]:
        return [json.dumps(v, ensure_ascii=False) for v in self.values] if self.encoded else list(self.values)

    def decode(self, suggested: Primitive) -> Any:
        return json.loads(suggested) if self.encoded else suggested


@dataclass(frozen=True)
class Range:
    """A numeric parameter in ``[low, high]``: integers when both ends are integers, on a log scale if ``log``."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float)

    def probes(self) -> list[float]:
        """Values that show whether the key takes this type: both ends and a point between them."""
        middle = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        return [self.low, self.high, round(middle) if self.integer else middle]


Parameter = Choice | Range


def load_space(path: Path) -> dict[str, Parameter]:
    """Read a search-space YAML, refusing (with the file and key) any entry that is not a list or a range."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise SearchSpaceError(f"{path}: cannot read the search space ({err})") from err
    if not isinstance(raw, Mapping) or not raw:
        raise SearchSpaceError(f"{path}: a search space is a mapping from dotted config keys to values or ranges")
    return {str(key): parse_parameter(path, str(key), value) for key, value in raw.items()}


def parse_parameter(path: Path, key: str, value: Any) -> Parameter:
    where = f"{path}: {key}"
    if "." not in key or any(not part for part in key.split(".")):
        raise SearchSpaceError(f"{where}: not a dotted config key such as model.lora.r")
    if key in FIXED_KEYS:
        raise SearchSpaceError(f"{where}: a sweep sets this key itself (one process and one folder per trial)")
    if isinstance(value, list):
        if not value:
            raise SearchSpaceError(f"{where}: an empty list of values")
        texts = [json.dumps(v, sort_keys=True, ensure_ascii=False) for v in value]
        if len(set(texts)) != len(texts):
            raise SearchSpaceError(f"{where}: a value is listed twice ({value})")
        return Choice(tuple(value))
    if isinstance(value, Mapping):
        unknown = set(value) - {"low", "high", "log", "step"}
        if unknown or not {"low", "high"} <= set(value):
            raise SearchSpaceError(f"{where}: a range is {{low, high}} with optional log and step, got {dict(value)}")
        low, high, step = value["low"], value["high"], value.get("step")
        numbers = [v for v in (low, high, step) if v is not None]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
            raise SearchSpaceError(f"{where}: low, high and step must be numbers, got {dict(value)}")
        if not low < high:
            raise SearchSpaceError(f"{where}: low ({low}) must be below high ({high})")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise SearchSpaceError(f"{where}: log is true or false, got {log!r}")
        if log and (low <= 0 or step is not None):
            raise SearchSpaceError(f"{where}: a log range needs low > 0 and no step")
        if step is not None and step <= 0:
            raise SearchSpaceError(f"{where}: step must be positive, got {step}")
        return Range(low, high, log, step)
    raise SearchSpaceError(f"{where}: give a list of values or a range {{low, high}}, got {value!r}")


def override_args(params: Mapping[str, Any]) -> list[str]:
    """``--key value`` pairs for the CLI: strings as they are, everything else as JSON (which YAML reads)."""
    args = []
    for key, value in params.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)]
    return args


def trial_output_args(folder: Path) -> list[str]:
    return [
        "--trainer.default_root_dir", str(folder),
        "--checkpoint.dirpath", str(folder / "checkpoints"),
        "--adapter_export.output_dir", str(folder / "adapter"),
        "--prediction_writer.output_dir", str(folder / "predictions"),
    ]  # fmt: skip


def parse_config(args: list[str]):
    """The resolved ``fit`` config for ``args``, parsed by the package's CLI with nothing loaded; a parse error is
    raised as ``SearchSpaceError`` with jsonargparse's message (which names the key)."""
    from jsonargparse import ArgumentError

    from suneung_lit.cli import SuneungCLI, build_cli, resolve_config_args

    class ConfigProbe(SuneungCLI):
        def _set_seed(self) -> None: ...

        def before_instantiate_classes(self) -> None:
            self._check_data(self.config["fit"])  # data paths and template names; nothing is written

        def instantiate_classes(self) -> None: ...

        def after_instantiate_classes(self) -> None: ...

        def _run_subcommand(self, subcommand: str) -> None: ...

    try:
        probe = build_cli(["fit", *resolve_config_args(args)], cli_class=ConfigProbe, exit_on_error=False)
    except (ArgumentError, ValueError, FileNotFoundError) as err:  # a parse error, or a bad data path or template
        raise SearchSpaceError(str(err).strip()) from err
    return probe.config["fit"]


def check_space(config_args: list[str], space: Mapping[str, Parameter], space_path: Path) -> None:
    """Parse the config with each candidate value of each key (both ends and a middle point of a range), so an
    unknown key or a value of the wrong type fails before any trial, naming the file and key."""
    base = parse_config(config_args)
    devices = base["trainer"].get("devices")
    if str(devices) not in ("1", "[0]") or base["trainer"].get("num_nodes", 1) != 1:
        raise SearchSpaceError(
            f"trainer.devices is {devices!r}: a sweep runs each trial in one process; set trainer.devices 1 and start "
            "one sweep worker per GPU (CUDA_VISIBLE_DEVICES=i), all on the same --storage"
        )
    for key, parameter in space.items():
        values = parameter.values if isinstance(parameter, Choice) else parameter.probes()
        for value in values:
            try:
                parsed = parse_config([*config_args, *override_args({key: value})])
            except SearchSpaceError as err:
                raise SearchSpaceError(f"{space_path}: {key}: {value!r} does not parse: {err}") from err
            if key not in parsed:
                raise SearchSpaceError(f"{space_path}: {key}: not a key of this config")


def suggest(trial, space: Mapping[str, Parameter]) -> dict[str, Any]:
    """The trial's value for each key, through Optuna's ``suggest_*`` (so the sampler decides)."""
    params = {}
    for key, parameter in space.items():
        if isinstance(parameter, Choice):
            params[key] = parameter.decode(trial.suggest_categorical(key, parameter.options()))
        elif parameter.integer:
            step = int(parameter.step or 1)
            params[key] = trial.suggest_int(key, int(parameter.low), int(parameter.high), step=step, log=parameter.log)
        else:
            params[key] = trial.suggest_float(
                key, parameter.low, parameter.high, log=parameter.log, step=parameter.step
            )
    return params


class ReportToTrial(L.Callback):
    """Reports ``val/acc`` after each validation in fit to the Optuna trial and stops fit when the pruner says so."""

    def __init__(self, trial) -> None:
        self.trial, self.pruned_at = trial, None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get("val/acc")
        if trainer.sanity_checking or trainer.state.fn != "fit" or value is None:
            return
        self.trial.report(float(value), trainer.global_step)
        if self.trial.should_prune():
            self.pruned_at = trainer.global_step
            trainer.should_stop = True


@dataclass(frozen=True)
class TrialResult:
    val_acc: float
    items: int
    correct: int
    best_constant: float
    steps: int
    pruned_at: int | None


def run_trial(config_args: list[str], params: Mapping[str, Any], folder: Path, trial) -> TrialResult:
    """Fit with the trial's overrides, then validate its best checkpoint (the last weights when none was saved)."""
    from suneung_lit.cli import build_cli, resolve_config_args

    report = ReportToTrial(trial)
    args = ["fit", *resolve_config_args([*config_args, *override_args(params), *trial_output_args(folder)])]
    cli = None
    try:
        # Fit runs here; a parse error raises (instead of exiting) so that the trial fails and the sweep goes on.
        cli = build_cli(args, callbacks=[report], exit_on_error=False)
        trainer, datamodule = cli.trainer, cli.datamodule
        steps = trainer.global_step
        if report.pruned_at is not None:
            return TrialResult(float(trainer.callback_metrics["val/acc"]), 0, 0, math.nan, steps, report.pruned_at)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        metrics = trainer.validate(cli.model, datamodule=datamodule, ckpt_path=best or None, verbose=False)[0]
        items = datamodule.items["val"]
        answers = [item.answer for item in items]
        _, constant = best_constant(answers, [item.num_choices for item in items])
        value = float(metrics["val/acc"])
        return TrialResult(value, len(items), round(value * len(items)), constant.value, steps, None)
    finally:
        trainer = datamodule = cli = None  # drop every reference to the model before collecting
        gc.collect()
        _empty_cuda_cache()


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def make_sampler(kind: Literal["auto", "grid", "tpe", "random"], space: Mapping[str, Parameter], seed: int | None):
    import optuna

    if kind == "auto":
        kind = "grid" if all(isinstance(p, Choice) for p in space.values()) else "tpe"
    if kind == "grid":
        ranges = [key for key, p in space.items() if isinstance(p, Range)]
        if ranges:
            raise SearchSpaceError(f"--sampler grid needs a list of values for every key; {ranges[0]} is a range")
        return optuna.samplers.GridSampler({k: p.options() for k, p in space.items()}, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


HEARTBEAT_SECONDS, GRACE_SECONDS = 60, 300
STORAGE_TRIES = 5
NO_HEARTBEAT = "no heartbeat: its worker stopped (killed, or its machine went away) while it ran"


def make_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS, grace: int = GRACE_SECONDS):
    """The study's Optuna storage: an RDB URL (SQLite, PostgreSQL, MySQL) with heartbeats, so that a trial whose
    worker was killed is marked failed by the next worker after ``grace`` seconds instead of staying "running"
    and holding a place in the budget for ever."""
    import optuna
    import sqlalchemy.exc

    # Several workers write one SQLite file: wait for the lock instead of failing at once.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else None

    def open_storage():
        return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=grace)

    for attempt in range(STORAGE_TRIES - 1):
        try:
            return open_storage()
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
            # Workers started together on a new database each find it empty and create its tables and version
            # rows; all but one then meet the rows another wrote. Once one has finished, the schema is only read,
            # so trying again succeeds; a storage that stays unreachable fails at the last try below.
            time.sleep(0.2 * (attempt + 1))
    return open_storage()


def results_rows(study, space: Mapping[str, Parameter]) -> list[dict[str, Any]]:
    """One row per trial that ran (or is running), in trial order: its state, parameters and results."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if not holds_a_place(trial):
            continue
        row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name.lower()}
        row.update({key: trial.params.get(key, "") for key in space})  # lists and mappings as their JSON text
        attrs = trial.user_attrs
        row["val_acc"] = trial.value if trial.value is not None else attrs.get("val_acc", "")
        row.update({column: attrs.get(column, "") for column in RESULT_COLUMNS if column != "val_acc"})
        stale = trial.state.name == "FAIL" and "error" not in attrs  # an exception in a trial records its error
        row["error"] = NO_HEARTBEAT if stale else attrs.get("error", "")
        rows.append(row)
    return rows


def write_results(path: Path, rows: list[dict[str, Any]], space: Mapping[str, Parameter]) -> None:
    columns = ["trial", "state", *space, *RESULT_COLUMNS, "error"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, out.getvalue())


def holds_a_place(trial) -> bool:
    """Whether a trial counts towards the budget: it ran or runs (a skipped trial never ran; a waiting one has not
    started)."""
    import optuna

    return SKIPPED not in trial.user_attrs and trial.state != optuna.trial.TrialState.WAITING


def give_back_grid_point(trial) -> None:
    """Queue a skipped trial's grid point again. The grid sampler counts the point of every ended trial as visited,
    so without this a later run with a larger budget would never measure it (and would re-run another point). The
    waiting trial carries the point as the grid sampler's own retries do; Optuna hands it to the next trial asked
    for, in this run or a later one. Other samplers keep no such record: nothing to give back."""
    import optuna

    [frozen] = [t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number]
    if "grid_id" in frozen.system_attrs:
        point = {key: frozen.system_attrs[key] for key in ("grid_id", "search_space")}
        trial.study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, system_attrs=point))


def objective_for(config_args: list[str], space: Mapping[str, Parameter], output: Path, budget: int):
    import optuna

    def objective(trial) -> float:
        # Trials are numbered across workers; a skipped one (below) takes a number but not a place in the budget.
        earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
        if sum(map(holds_a_place, earlier)) >= budget:
            # Another worker took the last trial of the budget: this one never runs and is left out of the table.
            trial.set_user_attr(SKIPPED, f"over the budget of {budget} trials")
            give_back_grid_point(trial)
            trial.study.stop()
            raise optuna.TrialPruned()
        params = suggest(trial, space)
        folder = output / f"trial-{trial.number:04d}"
        trial.set_user_attr("dir", str(folder))
        print(f"sweep: trial {trial.number} {json.dumps(params, ensure_ascii=False)} -> {folder}", file=sys.stderr)
        started = time.perf_counter()
        try:
            result = run_trial(config_args, params, folder, trial)
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
            raise
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        trial.set_user_attr("steps", result.steps)
        if result.pruned_at is not None:
            trial.set_user_attr("val_acc", result.val_acc)
            raise optuna.TrialPruned(f"val/acc {result.val_acc:.4f} at step {result.pruned_at}")
        low, high = wilson_interval(result.correct, result.items)
        trial.set_user_attr("val_acc_low", round(low, 4))
        trial.set_user_attr("val_acc_high", round(high, 4))
        trial.set_user_attr("best_constant", round(result.best_constant, 4))
        trial.set_user_attr("items", result.items)
        return result.val_acc

    return objective


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m suneung_lit sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the fit config (a file, or a shipped name like demo.yaml)")
    parser.add_argument("--space", required=True, type=Path, help="the search-space YAML")
    parser.add_argument("--trials", required=True, type=int, help="trials in the study, over every worker")
    parser.add_argument("--output", type=Path, default=Path("sweeps/sweep"), help="trial folders and results.csv")
    parser.add_argument("--storage", help="an Optuna storage URL (default: sqlite:///OUTPUT/study.db)")
    parser.add_argument("--study", help="the study's name (default: the config's and the space's file names)")
    parser.add_argument("--sampler", choices=["auto", "grid", "tpe", "random"], default="auto",
                        help="auto: grid when every key is a list, else TPE")  # fmt: skip
    parser.add_argument("--seed", type=int, help="the sampler's seed (leave unset when several workers share a study)")
    parser.add_argument("--pruner", choices=["median", "none"], default="median",
                        help="median: stop a trial below the median val/acc of earlier ones at a step")  # fmt: skip
    parser.add_argument("--startup-trials", type=int, default=2, help="trials run to the end before pruning starts")
    parser.add_argument("overrides", nargs="*", help="--key value pairs applied to every trial (after --)")
    return parser


def main(argv: list[str] | None = None) -> int:
    import optuna

    args = build_parser().parse_args(argv)
    if args.trials < 1:
        print("error: --trials must be at least 1", file=sys.stderr)
        return 2
    config_args = ["--config", args.config, *args.overrides]
    try:
        space = load_space(_bundled_space(args.space))
        sampler = make_sampler(args.sampler, space, args.seed)
        check_space(config_args, space, args.space)
    except SearchSpaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{(args.output / 'study.db').resolve()}"
    name = args.study or f"{Path(args.config).stem}-{args.space.stem}"
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=args.startup_trials)
        if args.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        storage=make_storage(storage), study_name=name, direction="maximize", sampler=sampler, pruner=pruner,
        load_if_exists=True,
    )  # fmt: skip
    described = {key: str(parameter) for key, parameter in space.items()}
    if study.user_attrs.get("space", described) != described:
        print(f"error: study {name!r} in {storage} was started with another search space: "
              f"{study.user_attrs['space']}; name a new --study", file=sys.stderr)  # fmt: skip
        return 2
    study.set_user_attr("space", described)
    study.set_user_attr("config", " ".join(config_args))
    results = args.output / "results.csv"
    print(f"sweep: study {name!r} in {storage}; results in {results}", file=sys.stderr)

    def rewrite_results(study, trial) -> None:
        write_results(results, results_rows(study, space), space)
        if sum(map(holds_a_place, study.get_trials(deepcopy=False))) >= args.trials:
            study.stop()

    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and holds_a_place(t)]
    if len(finished) < args.trials:
        objective = objective_for(config_args, space, args.output, args.trials)
        # A trial that fails (out of memory, say) is recorded with its error and the sweep goes on.
        study.optimize(objective, callbacks=[rewrite_results], catch=(Exception,), gc_after_trial=True)
    rows = results_rows(study, space)
    write_results(results, rows, space)
    complete = [row for row in rows if row["state"] == "complete"]
    counts = {state: sum(row["state"] == state for row in rows) for state in ("complete", "pruned", "fail")}
    print(f"sweep: {len(rows)} trials ({', '.join(f'{n} {s}' for s, n in counts.items())}) in {results}")
    if complete:
        best = max(complete, key=lambda row: row["val_acc"])
        print(f"sweep: best trial {best['trial']}: val/acc {best['val_acc']:.4f} "
              f"[{best['val_acc_low']}, {best['val_acc_high']}], best constant {best['best_constant']}: "
              + json.dumps({key: best[key] for key in space}, ensure_ascii=False))  # fmt: skip
    return 0 if complete or counts["pruned"] else 1


def _bundled_space(path: Path) -> Path:
    """A search space that is not a file here resolves to one shipped in ``suneung_lit/configs/sweeps``."""
    from suneung_lit.cli import BUNDLED_CONFIGS

    shipped = BUNDLED_CONFIGS / "sweeps" / path.name
    return path if path.exists() or not shipped.is_file() else shipped
