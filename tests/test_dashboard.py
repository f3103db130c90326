"""The dashboard: its analysis functions and its pages, on real files written by the tiny model's runs.

Pages are driven through Streamlit's own testing API (AppTest), which runs the app script as a browser session
would, widgets included.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import lightning as L
import optuna
import pytest
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from streamlit.testing.v1 import AppTest

from suneung_lit.dashboard import analysis
from suneung_lit.dashboard.__main__ import main as dashboard_main
from suneung_lit.dashboard.app_path import APP
from suneung_lit.data.cleaning import clean
from suneung_lit.data.datamodule import MultipleChoiceDataModule
from suneung_lit.data.prompts import load_template, prompt_token_counts, render_prompt
from suneung_lit.data.records import load_items, write_items
from suneung_lit.data.synthetic import make_items
from suneung_lit.writer import PredictionCSVWriter

from .conftest import COMPETITION_DATA, needs_competition, quick_learner

SOURCES = ("국어", "사회")


@pytest.fixture(scope="module")
def run_files(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """A labelled data file with a source column, TensorBoard logs of a short fit, and two predict runs."""
    folder = tmp_path_factory.mktemp("dashboard")
    labelled = [
        dataclasses.replace(item, metadata={"source": SOURCES[n % 2]})
        for n, item in enumerate(make_items(40, seed=11, prefix="dash"))
    ]
    write_items(labelled, folder / "data.csv")
    write_items(make_items(64, seed=12, prefix="train"), folder / "train.csv")
    L.seed_everything(0)
    module = quick_learner(tiny_model_dir)
    paths = dict(max_length=256, eval_batch_size=16, cache_dir=str(folder / "cache"))
    datamodule = MultipleChoiceDataModule(
        str(tiny_model_dir), train_path=str(folder / "train.csv"), val_path=str(folder / "data.csv"), **paths
    )
    L.Trainer(
        accelerator="cpu",
        max_steps=6,
        val_check_interval=3,
        logger=TensorBoardLogger(str(folder), name="lightning_logs"),
        log_every_n_steps=1,
        callbacks=[LearningRateMonitor(logging_interval="step")],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module, datamodule=datamodule)
    for mode in ("none", "cyclic"):
        module.hparams.debias = mode
        predict = MultipleChoiceDataModule(
            str(tiny_model_dir), predict_path=str(folder / "data.csv"), debias=mode, **paths
        )
        writer = PredictionCSVWriter(str(folder / "predictions" / mode))
        L.Trainer(
            accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False, enable_model_summary=False
        ).predict(module, datamodule=predict, return_predictions=False)
    return {
        "data": folder / "data.csv",
        "logs": folder / "lightning_logs",
        "plain": folder / "predictions" / "none" / "probabilities.csv",
        "cyclic": folder / "predictions" / "cyclic" / "probabilities.csv",
        "model": tiny_model_dir,
    }


# --- analysis -------------------------------------------------------------------------------------------------


def test_runs_load_with_names_from_their_folders(run_files):
    runs = analysis.load_runs([run_files["plain"], run_files["cyclic"]])
    assert [r.name for r in runs] == ["none", "cyclic"]
    assert len(runs[0].ids) == 40 and runs[0].answers == runs[1].answers


def test_a_run_without_answers_is_refused_with_its_file_and_first_id(tmp_path):
    path = tmp_path / "probabilities.csv"
    path.write_text("id,p1,p2,prediction\nq1,0.4,0.6,2\n", encoding="utf-8")
    with pytest.raises(analysis.RunError, match=r"probabilities\.csv: 1 of 1 rows have no answer \(first: id 'q1'\)"):
        analysis.load_runs([path])


def test_accuracy_table_stands_each_figure_beside_the_best_constant(run_files):
    runs = analysis.load_runs([run_files["plain"]])
    items = load_items(run_files["data"])
    table = analysis.accuracy_table(runs, {i.id: analysis.source_of(i) for i in items})
    assert table["group"].tolist() == ["all", *sorted(SOURCES)]
    overall = table.iloc[0]
    frame = runs[0].frame()
    assert overall["items"] == 40 and overall["accuracy"] == pytest.approx(frame["correct"].mean())
    assert overall["low"] <= overall["accuracy"] <= overall["high"]
    # make_items spreads answers evenly over positions: no constant predictor does better than 0.25 here.
    assert overall["best constant"] <= 0.3
    assert table.iloc[1:]["items"].sum() == 40


def test_groups_fall_back_to_choice_counts_without_a_source():
    run = analysis.Run(
        "r", Path("r.csv"), ["a", "b", "c"], {"a": [0.9, 0.1, 0, 0], "b": [0.2, 0.8, 0, 0, 0], "c": [0.5, 0.5, 0, 0]},
        {"a": 1, "b": 1, "c": 2},
    )  # fmt: skip
    table = analysis.accuracy_table([run])
    assert dict(zip(table["group"], table["items"], strict=True)) == {"all": 3, "4-choice": 2, "5-choice": 1}
    # Ties go to the first position, as the package's argmax does.
    assert run.prediction("c") == 1


def test_confusion_counts_every_gold_and_predicted_pair():
    run = analysis.Run(
        "r", Path("r.csv"), ["a", "b", "c"], {"a": [0.9, 0.1], "b": [0.9, 0.1], "c": [0.3, 0.7]},
        {"a": 1, "b": 2, "c": 2},
    )  # fmt: skip
    matrix = analysis.confusion(run).set_index(["answer", "prediction"])["count"].to_dict()
    assert matrix == {(1, 1): 1, (1, 2): 0, (2, 1): 1, (2, 2): 1}
    by_position = analysis.accuracy_by_position(run).set_index("answer")
    assert by_position.loc[2, "accuracy"] == 0.5 and by_position.loc[1, "predicted here"] == 2


def test_reliability_bins_confidence_and_measures_calibration():
    ids = [f"q{n}" for n in range(10)]
    # Confidence 0.9 on every item, right on 6 of 10: one bin, 0.3 over-confident.
    run = analysis.Run("r", Path("r.csv"), ids, {i: [0.9, 0.1] for i in ids}, {i: 1 if n < 6 else 2 for n, i in
                                                                             enumerate(ids)})  # fmt: skip
    table, error = analysis.reliability(run)
    assert len(table) == 1 and table.iloc[0]["items"] == 10
    assert table.iloc[0]["accuracy"] == pytest.approx(0.6) and error == pytest.approx(0.3)


def test_comparison_marks_disagreements_and_items_every_run_gets_wrong():
    answers = {"a": 1, "b": 2, "c": 1}
    one = analysis.Run("one", Path("1.csv"), ["a", "b", "c"], {"a": [1, 0], "b": [1, 0], "c": [0, 1]}, answers)
    two = analysis.Run("two", Path("2.csv"), ["a", "b", "c"], {"a": [1, 0], "b": [0, 1], "c": [0, 1]}, answers)
    compared = analysis.comparison([one, two]).set_index("id")
    assert compared["disagree"].to_dict() == {"a": False, "b": True, "c": False}
    assert compared["all wrong"].to_dict() == {"a": False, "b": False, "c": True}


def test_comparisons_use_only_the_ids_every_run_has():
    one = analysis.Run("one", Path("1.csv"), ["a", "b"], {"a": [1, 0], "b": [1, 0]}, {"a": 1, "b": 1})
    two = analysis.Run("two", Path("2.csv"), ["b", "c"], {"b": [1, 0], "c": [1, 0]}, {"b": 1, "c": 1})
    assert analysis.common_ids([one, two]) == ["b"]


def test_filters_combine_and_search_every_text_field():
    items = make_items(30, seed=1)
    frame = analysis.items_frame(items, prompt_tokens=list(range(30)))
    chosen = analysis.ItemFilter(choice_counts=[4], answers=[2], min_tokens=5)
    shown = analysis.filter_items(frame, chosen)
    assert len(shown) and all(shown["num_choices"] == 4) and all(shown["answer"] == 2) and all(shown["tokens"] >= 5)
    word = items[3].choices[0]
    assert items[3].id in analysis.filter_items(frame, analysis.ItemFilter(text=word))["id"].tolist()
    unlabelled = analysis.items_frame(make_items(4, with_answers=False))
    assert analysis.filter_items(unlabelled, analysis.ItemFilter(answers=[1])).empty


def test_training_scalars_come_from_the_fit_event_files(run_files):
    scalars = analysis.training_scalars(run_files["logs"])
    tags = set(scalars["tag"])
    assert {"train/loss", "val/loss", "val/acc"} <= tags and any(t.startswith("lr-") for t in tags)
    assert scalars[scalars["tag"] == "train/loss"]["step"].max() >= 5
    assert scalars["run"].unique().tolist() == ["version_0"]


@needs_competition("train.csv")
def test_the_real_train_set_frames_every_row_and_a_filter_keeps_exactly_the_matching_items(tokenizer):
    # How long this takes is a benchmark's business (benchmarks/data_pipeline.py); here: what it shows.
    items = load_items(COMPETITION_DATA / "train.csv")
    frame = analysis.items_frame(items, prompt_token_counts(items, tokenizer, "base"))
    shown = analysis.filter_items(frame, analysis.ItemFilter(choice_counts=[5], text="조선"))
    assert len(frame) == 2031
    expected = [
        i.id
        for i in items
        if i.num_choices == 5 and any("조선" in text for text in (i.paragraph, i.question, i.question_plus, *i.choices))
    ]
    assert 0 < len(expected) < 2031 and shown["id"].tolist() == expected


# --- pages (AppTest) ------------------------------------------------------------------------------------------


def app(run_files, page: str, **state) -> AppTest:
    test = AppTest.from_file(str(APP), default_timeout=120)
    test.session_state["page"] = page
    test.session_state["data_path"] = str(run_files["data"])
    test.session_state["run_paths"] = f"{run_files['plain']}\n{run_files['cyclic']}"
    test.session_state["log_root"] = str(run_files["logs"])
    test.session_state["model"] = str(run_files["model"])
    for key, value in state.items():
        test.session_state[key] = value
    return test.run()


def test_data_page_filters_items_and_shows_one_as_the_model_sees_it(run_files, tokenizer):
    page = app(run_files, "Data")
    assert not page.exception and not page.error
    assert page.metric[0].value == "40 of 40"
    page.multiselect(key="filter_sources").set_value(["국어"]).run()
    assert page.metric[0].value == "20 of 40"
    shown = page.dataframe[0].value
    assert set(shown["source"]) == {"국어"} and "tokens" in shown
    page.selectbox(key="item_id").set_value(shown["id"].iloc[1]).run()
    prompt = page.code[0].value
    item = {i.id: i for i in load_items(run_files["data"])}[shown["id"].iloc[1]]
    expected = render_prompt(item, load_template("base"), tokenizer)  # chat format included, up to the digit
    assert item.paragraph in prompt and prompt.strip() == expected.strip()
    assert "prompt tokens (base template, after the default cleaning)" in page.caption[0].value


@needs_competition("train.csv")
def test_data_page_shows_real_items_cleaned_as_the_data_module_cleans_them(run_files, tokenizer):
    page = app(run_files, "Data", data_path=str(COMPETITION_DATA / "train.csv"))
    assert not page.exception and page.metric[0].value == "2031 of 2031"
    page.selectbox(key="item_id").set_value("generation-for-nlp-425").run()
    [raw] = [i for i in load_items(COMPETITION_DATA / "train.csv") if i.id == "generation-for-nlp-425"]
    [cleaned], _ = clean([raw], allow_drops=False)
    assert " ." in raw.paragraph and cleaned.paragraph in page.code[0].value  # "다 ." became "다."
    assert render_prompt(cleaned, load_template("base"), tokenizer).strip() == page.code[0].value.strip()


def test_data_page_without_a_tokenizer_shows_the_template_turns(run_files):
    page = app(run_files, "Data", model="")
    assert not page.exception and page.metric[0].value == "40 of 40" and "tokens" not in page.dataframe[0].value
    assert "without the chat format" in page.caption[0].value


def test_data_page_reports_a_bad_file_with_its_row(run_files, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('id,paragraph,question,choices,answer\nx1,지문,질문,"[""가"", ""나""]",7\n', "utf-8")
    page = app(run_files, "Data", data_path=str(bad))
    assert not page.exception and "id 'x1', column 'answer': answer 7 is outside 1..2" in page.error[0].value


def test_runs_page_compares_runs_and_opens_an_item(run_files):
    page = app(run_files, "Runs")
    assert not page.exception and not page.error
    accuracy = page.dataframe[0].value
    assert set(accuracy["run"]) == {"none", "cyclic"} and {"all", *SOURCES} == set(accuracy["group"])
    plain = analysis.load_runs([run_files["plain"]])[0].frame()
    shown = accuracy[(accuracy["run"] == "none") & (accuracy["group"] == "all")].iloc[0]
    assert shown["accuracy"] == pytest.approx(plain["correct"].mean())
    assert page.metric[0].label == "Expected calibration error"
    page.radio(key="compare_view").set_value("every run wrong").run()
    wrong = page.dataframe[-1].value
    assert len(wrong) == int(analysis.comparison(analysis.load_runs([run_files["plain"], run_files["cyclic"]]))
                             ["all wrong"].sum())  # fmt: skip
    assert len(wrong) > 0  # six steps on 64 items leave the tiny model wrong on some items in both runs (seeded)
    assert any(f"**{wrong['id'].iloc[0]}**" in text.value for text in page.markdown)
    assert page.code[0].value.startswith("<|im_start|>")


def test_runs_page_names_a_run_file_it_cannot_use(run_files, tmp_path):
    broken = tmp_path / "broken.csv"
    broken.write_text("id,p1,p2\nq1,0.5,oops\n", encoding="utf-8")
    page = app(run_files, "Runs", run_paths=str(broken))
    assert not page.exception and "broken.csv: row 2, id 'q1'" in page.error[0].value


def test_training_page_draws_one_chart_per_logged_scalar(run_files):
    page = app(run_files, "Training")
    assert not page.exception and not page.error
    tags = set(analysis.training_scalars(run_files["logs"])["tag"])
    titles = [json.loads(chart.proto.spec)["title"] for chart in page.get("vega_lite_chart")]
    assert sorted(titles) == sorted(tags)
    assert titles[0].endswith("loss")  # loss curves come first


def test_training_page_explains_where_logs_come_from_when_there_are_none(run_files, tmp_path):
    page = app(run_files, "Training", log_root=str(tmp_path))
    assert not page.exception and "No TensorBoard event files" in page.info[0].value


# --- sweeps ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep_results(tmp_path_factory) -> Path:
    """A results.csv as ``sweep`` writes it from an Optuna study: six trials over a model and a learning rate (values
    told to the study here; the fits behind such a table are tests/test_sweep.py's), one pruned, one failed."""
    from suneung_lit import sweep

    folder = tmp_path_factory.mktemp("sweep")
    space_file = folder / "space.yaml"
    space_file.write_text(
        "model.model_name_or_path: [small, large]\nmodel.optimization.learning_rate: [0.001, 0.004]\n"
    )
    space = sweep.load_space(space_file)
    study = optuna.create_study(direction="maximize")
    grid = [(size, rate) for size in ("small", "large") for rate in (0.001, 0.004)]
    for size, rate in [*grid, ("small", 0.004), ("large", 0.001)]:  # the last two: pruned and failed
        study.enqueue_trial({"model.model_name_or_path": size, "model.optimization.learning_rate": rate})
    for number in range(6):
        trial = study.ask()
        params = sweep.suggest(trial, space)
        if number == 4:
            trial.set_user_attr("val_acc", 0.3)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        if number == 5:
            trial.set_user_attr("error", "OutOfMemoryError: CUDA out of memory")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        value = (0.6 if params["model.model_name_or_path"] == "large" else 0.4) + params[
            "model.optimization.learning_rate"
        ]
        for key, attr in (("val_acc_low", value - 0.1), ("val_acc_high", value + 0.1), ("best_constant", 0.25),
                          ("items", 40), ("steps", 10), ("seconds", 1.5), ("dir", f"trial-{number}")):  # fmt: skip
            trial.set_user_attr(key, attr)
        study.tell(trial, value)
    path = folder / "results.csv"
    sweep.write_results(path, sweep.results_rows(study, space), space)
    return path


def test_a_sweep_table_reads_back_with_its_parameters_and_summarises_each_value(sweep_results):
    frame = analysis.read_sweep(sweep_results)
    assert len(frame) == 6 and list(frame["state"]).count("complete") == 4
    assert analysis.sweep_parameters(frame) == ["model.model_name_or_path", "model.optimization.learning_rate"]
    effect = analysis.parameter_effect(frame, "model.model_name_or_path").set_index("model.model_name_or_path")
    assert effect.loc["large", "trials"] == 2 and effect.loc["large", "best val_acc"] == pytest.approx(0.604)
    assert effect.loc["small", "mean val_acc"] == pytest.approx(0.4025)
    assert set(effect["best constant"]) == {0.25}


def test_a_file_that_is_not_a_sweep_table_is_refused_naming_it(run_files):
    with pytest.raises(analysis.SweepError, match="probabilities.csv: not a sweep's results.csv"):
        analysis.read_sweep(run_files["plain"])


def test_sweeps_page_draws_each_parameter_and_the_models_beside_the_best_constant(run_files, sweep_results):
    page = app(run_files, "Sweeps", sweep_path=str(sweep_results))
    assert not page.exception and not page.error
    assert page.metric[0].value == "4 complete, 1 pruned, 1 failed"
    assert "best: trial" in page.caption[0].value and "best constant 0.250" in page.caption[0].value
    specs = [json.loads(chart.proto.spec) for chart in page.get("vega_lite_chart")]
    titles = [spec.get("title") for spec in specs]
    assert titles[1:] == ["model.model_name_or_path", "model.optimization.learning_rate"], "one chart per key"
    assert "OutOfMemoryError" in page.dataframe[0].value["error"].tolist()[5]


def test_sweeps_page_explains_what_to_give_and_names_a_bad_file(run_files, tmp_path):
    page = app(run_files, "Sweeps", sweep_path="")
    assert "results.csv" in page.info[0].value
    page = app(run_files, "Sweeps", sweep_path=str(run_files["plain"]))
    assert "not a sweep's results.csv" in page.error[0].value


# --- launcher -------------------------------------------------------------------------------------------------


def test_launcher_refuses_missing_files(tmp_path, capsys):
    assert dashboard_main(["--data", str(tmp_path / "missing.csv")]) == 2
    assert "not found" in capsys.readouterr().err


def test_launcher_serves_the_app_headless_on_a_port_the_os_picks(run_files):
    # --port 0: the launcher takes a free port from the OS and prints the address; the test reads it from there.
    command = [sys.executable, "-m", "suneung_lit.dashboard", "--port", "0", "--data", str(run_files["data"])]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen, match = [], None
        while match is None and (line := process.stdout.readline()):
            seen.append(line)
            match = re.match(r"dashboard: (http://127\.0\.0\.1:(\d+))", line)
        assert match and int(match.group(2)) > 0, "".join(seen)
        url = match.group(1)
        health = None
        while health is None:  # until the server answers, or it has exited (then the assert below names why)
            if process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    health = response.read().decode()
            except OSError:
                time.sleep(0.5)
        assert health == "ok", process.stdout.read() if process.poll() is not None else ""
        with urllib.request.urlopen(f"{url}/", timeout=5) as response:
            assert "<title>Streamlit</title>" in response.read().decode()
    finally:
        process.terminate()
        process.communicate(timeout=30)
