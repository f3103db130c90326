"""Sweeps: search spaces checked before any trial, real fits on the tiny model through the CLI, an Optuna study in
SQLite shared by two worker processes, pruning by a real Optuna pruner, and the results table."""

from __future__ import annotations

import csv
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from suneung_lit import sweep
from suneung_lit.cli import build_cli, resolve_config_args
from suneung_lit.data.records import load_items
from suneung_lit.evaluation import best_constant

from .conftest import REPO

# A few steps on the demo recipe, validating twice: enough for a real fit, validate and a report to the pruner.
SHORT_FIT = ["--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--trainer.log_every_n_steps", "1",
             "--data.eval_batch_size", "16"]  # fmt: skip


def write_space(folder: Path, text: str, name: str = "space.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def read_results(folder: Path) -> list[dict[str, str]]:
    with open(folder / "results.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def demo_args(tiny_model_dir: Path) -> list[str]:
    return ["--config", "demo.yaml", "--model.model_name_or_path", str(tiny_model_dir), *SHORT_FIT]


# --- search spaces --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("[1, 2]", "a mapping from dotted config keys"),
        ("lora_r: [4, 8]", "lora_r: not a dotted config key"),
        ("model.lora.r: []", "model.lora.r: an empty list"),
        ("model.lora.r: [4, 4]", "model.lora.r: a value is listed twice"),
        ("model.lora.r: 8", "model.lora.r: give a list of values or a range"),
        ("model.optimization.learning_rate: {low: 0.1}", "a range is {low, high}"),
        ("model.optimization.learning_rate: {low: 0.1, high: 0.01}", "low (0.1) must be below high (0.01)"),
        ("model.optimization.learning_rate: {low: 0, high: 0.1, log: true}", "a log range needs low > 0"),
        ("model.optimization.learning_rate: {low: a, high: b}", "must be numbers"),
        ("trainer.devices: [1, 2]", "trainer.devices: a sweep sets this key itself"),
    ],
)
def test_a_malformed_search_space_is_refused_naming_its_file_and_key(tmp_path, text, complaint):
    path = write_space(tmp_path, text)
    with pytest.raises(sweep.SearchSpaceError, match="space.yaml") as refused:
        sweep.load_space(path)
    assert complaint in str(refused.value)


def test_lists_are_choices_ranges_are_integer_or_float_and_lists_of_lists_travel_as_json(tmp_path):
    space = sweep.load_space(
        write_space(
            tmp_path,
            "model.lora.r: {low: 4, high: 16, step: 4}\n"
            "model.optimization.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}\n"
            "model.lora.target_modules: [[q_proj, v_proj], [o_proj]]\n",
        )
    )
    rank, rate, modules = space.values()
    assert rank.integer and not rate.integer
    assert modules.options() == ['["q_proj", "v_proj"]', '["o_proj"]']
    assert modules.decode(modules.options()[1]) == ["o_proj"]
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = sweep.suggest(trial, space)
    assert params["model.lora.r"] in (4, 8, 12, 16)
    assert 1e-5 <= params["model.optimization.learning_rate"] <= 1e-3
    assert params["model.lora.target_modules"] in (["q_proj", "v_proj"], ["o_proj"])
    assert sweep.override_args(params)[-1] in ('["q_proj", "v_proj"]', '["o_proj"]')


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("model.lora.rank: [4, 8]", "model.lora.rank: 4 does not parse"),
        ("model.lora.r: [4, eight]", "model.lora.r: 'eight' does not parse"),
        ("data.template: [base, no_such_template]", "data.template: 'no_such_template' does not parse"),
    ],
)
def test_an_unknown_key_or_a_value_of_the_wrong_type_fails_before_any_trial(tmp_path, capsys, text, complaint):
    output = tmp_path / "sweep"
    code = sweep.main(["--config", "demo.yaml", "--space", str(write_space(tmp_path, text)), "--trials", "2",
                       "--output", str(output)])  # fmt: skip
    assert code == 2
    assert complaint in capsys.readouterr().err
    assert not output.exists(), "nothing may be created before the space is known to parse"


def test_a_grid_refuses_a_range_and_a_sweep_refuses_several_devices_per_trial(tmp_path, capsys):
    ranged = write_space(tmp_path, "model.optimization.learning_rate: {low: 1.0e-4, high: 1.0e-2}")
    assert sweep.main(["--config", "demo.yaml", "--space", str(ranged), "--trials", "2", "--sampler", "grid"]) == 2
    assert "--sampler grid needs a list of values for every key" in capsys.readouterr().err
    space = write_space(tmp_path, "model.lora.r: [4, 8]")
    assert sweep.main(["--config", "demo.yaml", "--space", str(space), "--trials", "2", "--",
                       "--trainer.devices", "2"]) == 2  # fmt: skip
    assert "one sweep worker per GPU" in capsys.readouterr().err


def test_shipped_search_spaces_parse_against_their_configs(capsys):
    # qwen7b.yaml reads data/train.csv and data/test.csv, which a clone does not have: the sample files stand in.
    samples = ["--data.train_path", "data/sample_train.csv", "--data.predict_path", "data/sample_test.csv"]
    for config, name in (("demo.yaml", "demo-space.yaml"), ("qwen7b.yaml", "qwen-lora.yaml")):
        path = sweep._bundled_space(Path(name))
        assert path.parent == REPO / "suneung_lit" / "configs" / "sweeps"
        sweep.check_space(["--config", config, *samples], sweep.load_space(path), path)


# --- trials ---------------------------------------------------------------------------------------------------


def test_a_grid_sweep_runs_each_point_as_a_real_fit_and_validate_and_records_a_failing_trial(
    tiny_model_dir, tmp_path, capsys
):
    space = write_space(tmp_path, "model.lora.target_modules: [[q_proj, v_proj], [no_such_proj]]\n")
    output = tmp_path / "sweep"
    args = ["--space", str(space), "--trials", "2", "--output", str(output), "--seed", "0"]
    assert sweep.main(["--config", "demo.yaml", *args, "--", *demo_args(tiny_model_dir)[2:]]) == 0
    rows = {row["model.lora.target_modules"]: row for row in read_results(output)}
    assert set(rows) == {'["q_proj", "v_proj"]', '["no_such_proj"]'}, "each grid point once"
    failed, done = rows['["no_such_proj"]'], rows['["q_proj", "v_proj"]']
    assert failed["state"] == "fail" and "no_such_proj" in failed["error"], "the error is kept, the sweep goes on"
    assert done["state"] == "complete" and done["error"] == ""
    value, low, high = (float(done[k]) for k in ("val_acc", "val_acc_low", "val_acc_high"))
    assert 0 <= low <= value <= high <= 1 and int(done["steps"]) == 4

    # Each trial's folder holds its adapter, best checkpoint and resolved config; its val/acc is what a plain
    # `validate` of that checkpoint with that config reports.
    folder = Path(done["dir"])
    assert (folder / "adapter" / "adapter_config.json").is_file()
    [config] = folder.glob("lightning_logs/version_*/config.yaml")
    [best] = folder.glob("checkpoints/best-*.ckpt")
    validated = build_cli(["validate", "--config", str(config), "--ckpt_path", str(best)])
    assert float(validated.trainer.callback_metrics["val/acc"]) == pytest.approx(value, abs=1e-6)
    assert int(done["items"]) < len(load_items(REPO / "data" / "sample_train.csv")), "the held-out split only"

    # Run again on the same study: the budget is spent, nothing more runs.
    assert sweep.main(["--config", "demo.yaml", *args, "--", *demo_args(tiny_model_dir)[2:]]) == 0
    assert len(read_results(output)) == 2
    # Another space on the same study is refused rather than mixed into it.
    other = write_space(tmp_path, "model.lora.r: [4, 8]\n", name="other.yaml")
    assert sweep.main(["--config", "demo.yaml", "--space", str(other), "--trials", "2", "--output", str(output),
                       "--study", "demo-space"]) == 2  # fmt: skip
    assert "another search space" in capsys.readouterr().err


def test_best_constant_in_the_table_is_that_of_the_validation_items(tiny_model_dir, tmp_path):
    space = sweep.load_space(write_space(tmp_path, "model.lora.r: [4]\n"))
    study = optuna.create_study(direction="maximize")
    config = ["--config", "demo.yaml", *demo_args(tiny_model_dir)[2:]]
    study.optimize(sweep.objective_for(config, space, tmp_path / "sweep", budget=1), n_trials=1)
    [trial] = study.trials
    probe = build_cli(resolve_config_args(config), run=False)
    probe.datamodule.setup("fit")
    items = probe.datamodule.items["val"]
    _, constant = best_constant([item.answer for item in items], [item.num_choices for item in items])
    assert trial.user_attrs["items"] == len(items)
    assert trial.user_attrs["best_constant"] == pytest.approx(constant.value, abs=1e-4)


def test_a_trial_the_pruner_stops_ends_its_fit_at_that_validation(tiny_model_dir, tmp_path):
    # A real Optuna pruner that prunes any trial below 1.1 val/acc: the first report inside fit stops it.
    space = sweep.load_space(write_space(tmp_path, "model.lora.r: [4]\n"))
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    config = ["--config", "demo.yaml", *demo_args(tiny_model_dir)[2:]]
    study.optimize(sweep.objective_for(config, space, tmp_path / "sweep", budget=1), n_trials=1)
    [trial] = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["steps"] == 2, "stopped at the first validation (step 2 of 4)"
    assert list(trial.intermediate_values) == [2]
    [row] = sweep.results_rows(study, space)
    assert row["state"] == "pruned" and row["val_acc"] == trial.intermediate_values[2]


@pytest.mark.slow
def test_two_workers_on_one_sqlite_study_finish_exactly_the_budget_of_distinct_trials(tiny_model_dir, tmp_path):
    space = write_space(tmp_path, "model.optimization.learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}\n")
    output = tmp_path / "sweep"
    command = [sys.executable, "-m", "suneung_lit", "sweep", "--config", "demo.yaml", "--space", str(space),
               "--trials", "4", "--output", str(output), "--sampler", "random", "--pruner", "none", "--",
               *demo_args(tiny_model_dir)[2:]]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [worker.communicate(timeout=900)[1] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], "\n".join(e[-3000:] for e in errors)
    study = optuna.load_study(study_name="demo-space", storage=f"sqlite:///{(output / 'study.db').resolve()}")
    ran = [t for t in study.trials if sweep.SKIPPED not in t.user_attrs]
    assert sorted(t.number for t in ran) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in ran)
    # Both workers took part, each trial in its own folder, and the table holds the four.
    assert all("sweep: trial" in e for e in errors)
    rows = read_results(output)
    assert [int(row["trial"]) for row in rows] == [0, 1, 2, 3]
    assert len({row["dir"] for row in rows}) == 4 and all(Path(row["dir"], "adapter").is_dir() for row in rows)
    assert len({row["model.optimization.learning_rate"] for row in rows}) == 4


STALLED_WORKER = """
import sys, time, optuna
from suneung_lit.sweep import make_storage
study = optuna.load_study(study_name="s", storage=make_storage(sys.argv[1], heartbeat=1, grace=2))
def objective(trial):
    trial.suggest_categorical("model.lora.r", [4, 8])
    print("running", flush=True)
    time.sleep(600)
study.optimize(objective, n_trials=1)
"""


def _open_storage_at(url: str, start: float) -> None:
    while time.time() < start:  # every worker reaches the empty database at the same moment
        pass
    sweep.make_storage(url)


def test_workers_started_together_on_a_new_database_all_open_it(tmp_path):
    # The first workers of a sweep usually start together (one per GPU, one command each); each finds the database
    # empty and creates its schema. Without the retry, 6 of 20 such workers failed on a UNIQUE constraint.
    context = multiprocessing.get_context("fork")
    for round_ in range(3):
        url = f"sqlite:///{tmp_path / f'study{round_}.db'}"
        start = time.time() + 0.3
        workers = [context.Process(target=_open_storage_at, args=(url, start)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
        assert optuna.create_study(storage=sweep.make_storage(url)).trials == []


def test_a_trial_whose_worker_is_killed_is_failed_by_the_next_worker_instead_of_running_for_ever(tmp_path):
    url = f"sqlite:///{(tmp_path / 'study.db').resolve()}"
    optuna.create_study(study_name="s", storage=sweep.make_storage(url, heartbeat=1, grace=2))
    worker = subprocess.Popen([sys.executable, "-c", STALLED_WORKER, url], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert worker.stdout.readline().strip() == "running"
    worker.kill()  # SIGKILL: nothing of the worker's own runs
    worker.wait()
    study = optuna.load_study(study_name="s", storage=sweep.make_storage(url, heartbeat=1, grace=2))
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.RUNNING]
    time.sleep(3)  # past the grace period
    optuna.storages.fail_stale_trials(study)  # what every worker's optimize does before it takes a trial
    space = {"model.lora.r": sweep.parse_parameter(Path("space.yaml"), "model.lora.r", [4, 8])}
    (row,) = sweep.results_rows(study, space)
    assert row["state"] == "fail" and row["error"] == sweep.NO_HEARTBEAT


def test_a_grid_point_taken_by_a_trial_skipped_over_the_budget_is_run_by_a_later_trial(tmp_path):
    # Two workers, budget spent: the trial the second one had already asked for is skipped without running. The grid
    # sampler counts any ended trial's point as visited, so that point must come back, or a later run with a larger
    # --trials would never measure it (and would evaluate another point twice instead).
    space = {"model.lora.r": sweep.parse_parameter(Path("space.yaml"), "model.lora.r", [4, 8, 16])}
    url = f"sqlite:///{(tmp_path / 'study.db').resolve()}"
    study = optuna.create_study(
        study_name="s", storage=sweep.make_storage(url), direction="maximize",
        sampler=sweep.make_sampler("grid", space, seed=0),
    )  # fmt: skip
    ran: list[int] = []

    def run(trial) -> float:
        ran.append(sweep.suggest(trial, space)["model.lora.r"])
        return 0.5

    study.optimize(run, n_trials=1)
    # Budget 1, already spent: the objective skips before any fit (nothing here would run one).
    study.optimize(sweep.objective_for([], space, tmp_path, budget=1), n_trials=1)
    skipped = study.trials[1]
    assert sweep.SKIPPED in skipped.user_attrs and skipped.state == optuna.trial.TrialState.PRUNED
    assert [row["trial"] for row in sweep.results_rows(study, space)] == [0], "neither skipped nor waiting is a row"

    study.optimize(run, n_trials=2)  # a later run with a budget of 3
    assert sorted(ran) == [4, 8, 16], "every grid point measured once"
