"""The Streamlit app: four pages (Data, Runs, Training, Sweeps) laid out over suneung_lit.dashboard.analysis.

Started by ``python -m suneung_lit.dashboard``, which passes its flags in SUNEUNG_LIT_DASHBOARD_ARGS (JSON); each
setting is also a sidebar field, so a user can point the app at other files without restarting it. ``?page=Runs``
in the address opens a page directly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from suneung_lit.dashboard import analysis
from suneung_lit.dashboard.app_path import ARGS_VARIABLE
from suneung_lit.data.cleaning import clean
from suneung_lit.data.prompts import available_templates, load_template, prompt_token_counts, render_prompt
from suneung_lit.data.records import DataValidationError, Item, load_items

PAGES = ("Data", "Runs", "Training", "Sweeps")

# Rows listed in the item picker: a selectbox of every row of a large file would be slow to render.
MAX_PICKER_ROWS = 2000


def _mtime(path: str) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(show_spinner="loading data")
def cached_items(path: str, mtime: float) -> list[Item]:
    """The file's items after the data module's default cleaning (no row dropped): what the model is shown."""
    items, _ = clean(load_items(path), allow_drops=False)
    return items


@st.cache_resource(show_spinner="loading tokenizer")
def cached_tokenizer(model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


@st.cache_data(show_spinner="counting prompt tokens")
def cached_token_counts(path: str, mtime: float, model: str, template: str) -> list[int]:
    return prompt_token_counts(cached_items(path, mtime), cached_tokenizer(model), template)


@st.cache_data(show_spinner="loading runs")
def cached_runs(paths: tuple[str, ...], mtimes: tuple[float, ...]) -> list[analysis.Run]:
    return analysis.load_runs(paths)


@st.cache_data(show_spinner="reading TensorBoard logs")
def cached_scalars(root: str, mtimes: tuple[float, ...]) -> pd.DataFrame:
    return analysis.training_scalars(root)


def _defaults() -> None:
    """Session settings, first from the launcher's flags; sidebar fields edit them afterwards."""
    given = json.loads(os.environ.get(ARGS_VARIABLE, "{}"))
    st.session_state.setdefault("data_path", given.get("data") or "")
    st.session_state.setdefault("run_paths", "\n".join(given.get("runs") or []))
    st.session_state.setdefault("log_root", given.get("logs") or "lightning_logs")
    st.session_state.setdefault("model", given.get("model") or "")
    st.session_state.setdefault("sweep_path", given.get("sweep") or "")
    st.session_state.setdefault("template", "base")
    page = st.query_params.get("page", "Data")
    st.session_state.setdefault("page", page if page in PAGES else "Data")


def load_data() -> tuple[list[Item] | None, str | None]:
    """The data file's items, or None with the reason shown (a missing path is not an error)."""
    path = st.session_state.data_path.strip()
    if not path:
        return None, None
    try:
        return cached_items(path, _mtime(path)), path
    except DataValidationError as err:
        st.error(str(err))
        return None, path


def tokenizer_or_none():
    model = st.session_state.model.strip()
    if not model:
        return None
    try:
        return cached_tokenizer(model)
    except (OSError, ValueError) as err:
        st.warning(f"cannot load a tokenizer from {model!r} ({err}); showing prompts without token counts")
        return None


def show_item(item: Item, tokenizer) -> None:
    """The item exactly as the model sees it: the rendered prompt for the chosen template, and its token count."""
    template = load_template(st.session_state.template)
    st.markdown(f"**{item.id}** · {item.num_choices} choices · answer {item.answer if item.answer else 'unknown'}")
    if tokenizer is None:
        turns = template.messages(item)
        st.caption("no tokenizer given (sidebar 'Tokenizer folder'): the template's turns, without the chat format")
        st.code("\n\n".join(turn["content"] for turn in turns), language=None, wrap_lines=True)
        return
    prompt = render_prompt(item, template, tokenizer)
    count = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    st.caption(
        f"{count} prompt tokens ({st.session_state.template} template, after the default cleaning); "
        "the answer digit comes next"
    )
    st.code(prompt, language=None, wrap_lines=True)


def histogram(frame: pd.DataFrame, column: str, title: str, bins: int = 40) -> alt.Chart:
    return (
        alt.Chart(frame[[column]], title=title)
        .mark_bar()
        .encode(alt.X(f"{column}:Q", bin=alt.Bin(maxbins=bins), title=column), alt.Y("count()", title="items"))
        .properties(height=220)
    )


def data_page() -> None:
    items, path = load_data()
    if items is None:
        if not path:
            st.info("Give a data file (CSV or JSON Lines) in the sidebar, or start with --data FILE.")
        return
    tokenizer = tokenizer_or_none()
    template = st.session_state.template
    tokens = cached_token_counts(path, _mtime(path), st.session_state.model.strip(), template) if tokenizer else None
    frame = analysis.items_frame(items, tokens)

    left, middle, right = st.columns(3)
    sources = left.multiselect("Source", sorted(frame["source"].unique()), key="filter_sources")
    choices = middle.multiselect("Choices", sorted(frame["num_choices"].unique().tolist()), key="filter_choices")
    answers = right.multiselect(
        "Answer position", sorted(frame["answer"].dropna().unique().tolist()), key="filter_answers"
    )
    low = high = None
    if tokens:
        low, high = st.slider("Prompt tokens", 0, max(tokens), (0, max(tokens)), key="filter_tokens")
    text = st.text_input("Text contains", key="filter_text")
    chosen = analysis.ItemFilter(sources, choices, answers, low, high, text)
    shown = analysis.filter_items(frame, chosen)
    st.metric("Items shown", f"{len(shown)} of {len(frame)}")

    chart_left, chart_right = st.columns(2)
    length_column = "tokens" if tokens else "paragraph_chars"
    chart_left.altair_chart(histogram(shown, length_column, f"{length_column} per item"), width="stretch")
    positions = shown["answer"].dropna().astype(int).value_counts().rename_axis("answer").reset_index(name="items")
    chart_right.altair_chart(
        alt.Chart(positions, title="answer positions")
        .mark_bar()
        .encode(x="answer:O", y="items:Q")
        .properties(height=220),
        width="stretch",
    )
    columns = ["id", "source", "num_choices", "answer", *(["tokens"] if tokens else []), "question"]
    st.dataframe(shown[columns], hide_index=True, width="stretch")

    if len(shown):
        ids = shown["id"].tolist()[:MAX_PICKER_ROWS]
        picked = st.selectbox("Open an item", ids, key="item_id")
        by_id = {item.id: item for item in items}
        show_item(by_id[picked], tokenizer)


def _run_paths() -> list[str]:
    return [line.strip() for line in st.session_state.run_paths.splitlines() if line.strip()]


def runs_page() -> None:
    paths = _run_paths()
    if not paths:
        st.info("List probabilities.csv files (one per line) in the sidebar, or start with --runs FILE...")
        return
    try:
        runs = cached_runs(tuple(paths), tuple(_mtime(p) for p in paths))
    except analysis.RunError as err:
        st.error(str(err))
        return
    items, _ = load_data()
    by_id = {item.id: item for item in items or []}
    groups = {
        i: analysis.source_of(item) for i, item in by_id.items() if analysis.source_of(item) != analysis.NO_SOURCE
    }

    shared = analysis.common_ids(runs)
    if any(len(run.ids) != len(shared) for run in runs):
        st.warning(f"the runs cover different ids; the comparison below uses the {len(shared)} they share")

    st.subheader("Accuracy")
    table = analysis.accuracy_table(runs, groups or None)
    st.dataframe(table.style.format(precision=3), hide_index=True, width="stretch")
    overall = table[table["group"] == "all"]
    bars = (
        alt.Chart(overall)
        .mark_bar()
        .encode(x=alt.X("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])), y="run:N")
    )
    errors = alt.Chart(overall).mark_errorbar().encode(x=alt.X("low:Q", title="accuracy"), x2="high:Q", y="run:N")
    constant = alt.Chart(overall).mark_tick(color="red", thickness=2, size=20).encode(x="best constant:Q", y="run:N")
    st.altair_chart((bars + errors + constant).properties(height=40 * len(runs) + 40), width="stretch")
    st.caption("bars: accuracy with its 95% Wilson interval; red tick: the best constant predictor on the same items")
    points = analysis.points_table(runs, by_id)
    if len(points):
        st.subheader("Exam points")
        st.dataframe(points, hide_index=True, width="stretch")
        st.caption("items that carry a score (KICE papers: 2 or 3 points an item, 100 a paper), per source")

    run = runs[[r.name for r in runs].index(st.selectbox("Run", [r.name for r in runs], key="run_name"))]
    left, right = st.columns(2)
    with left:
        st.markdown("**Accuracy by gold answer position**")
        st.dataframe(analysis.accuracy_by_position(run).style.format(precision=3), hide_index=True)
        matrix = analysis.confusion(run)
        heat = alt.Chart(matrix, title="confusion: gold (rows) vs predicted").encode(x="prediction:O", y="answer:O")
        dark = alt.datum.count > matrix["count"].max() / 2
        st.altair_chart(
            heat.mark_rect().encode(color=alt.Color("count:Q", scale=alt.Scale(scheme="blues")))
            + heat.mark_text().encode(
                text="count:Q", color=alt.condition(dark, alt.value("white"), alt.value("black"))
            ),
            width="stretch",
        )
    with right:
        curve, error = analysis.reliability(run)
        st.metric("Expected calibration error", f"{error:.3f}")
        perfect = pd.DataFrame({"confidence": [0.0, 1.0], "accuracy": [0.0, 1.0]})  # the calibrated line
        diagonal = (
            alt.Chart(perfect).mark_line(strokeDash=[4, 4], color="gray").encode(x="confidence:Q", y="accuracy:Q")
        )
        points = (
            alt.Chart(curve, title="reliability (confidence vs accuracy)")
            .mark_line(point=True)
            .encode(
                x=alt.X("confidence:Q", scale=alt.Scale(domain=[0, 1])),
                y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1])),
                tooltip=["confidence", "accuracy", "items"],
            )
        )
        st.altair_chart(diagonal + points, width="stretch")

    st.subheader("Where runs differ")
    compared = analysis.comparison(runs)
    view = st.radio("Show", ["runs disagree", "every run wrong"], horizontal=True, key="compare_view")
    rows = compared[compared["disagree"] if view == "runs disagree" else compared["all wrong"]]
    st.caption(f"{len(rows)} of {len(compared)} items")
    st.dataframe(rows.drop(columns=["disagree", "all wrong"]), hide_index=True, width="stretch")
    if len(rows):
        picked = st.selectbox("Open an item", rows["id"].tolist()[:MAX_PICKER_ROWS], key="compare_id")
        if picked in by_id:
            show_item(by_id[picked], tokenizer_or_none())
        else:
            st.caption("give the data file in the sidebar to see the item's text")


def training_page() -> None:
    root = st.session_state.log_root.strip()
    files = analysis.event_files(root) if root and Path(root).is_dir() else []
    if not files:
        st.info(f"No TensorBoard event files under {root!r}; Lightning writes them to lightning_logs/ during fit.")
        return
    scalars = cached_scalars(root, tuple(f.stat().st_mtime for f in files))
    runs = sorted(scalars["run"].unique())
    chosen = st.multiselect("Runs", runs, default=runs[-3:], key="log_runs")
    shown = scalars[scalars["run"].isin(chosen)]
    # Loss, accuracy and learning rate first: the curves a user checks before any other.
    tags = sorted(shown["tag"].unique(), key=lambda t: (not t.endswith("loss"), "acc" not in t, "lr" not in t, t))
    for tag in tags:
        series = shown[shown["tag"] == tag]
        chart = (
            alt.Chart(series, title=tag)
            .mark_line(point=len(series) < 30)
            .encode(x="step:Q", y=alt.Y("value:Q", title=tag), color="run:N", tooltip=["run", "step", "value"])
        )
        st.altair_chart(chart.properties(height=220), width="stretch")


def sweeps_page() -> None:
    path = st.session_state.sweep_path.strip()
    if not path:
        st.info("Give a sweep's results.csv in the sidebar (python -m suneung_lit sweep writes it), or --sweep FILE")
        return
    try:
        frame = analysis.read_sweep(path)
    except analysis.SweepError as err:
        st.error(str(err))
        return
    done = frame[frame["state"] == "complete"]
    counts = frame["state"].value_counts()
    st.metric("Trials", f"{counts.get('complete', 0)} complete, {counts.get('pruned', 0)} pruned, "
              f"{counts.get('fail', 0)} failed")  # fmt: skip
    st.dataframe(frame, hide_index=True, width="stretch")
    if done.empty:
        st.info("no complete trial yet")
        return
    best = done.loc[done["val_acc"].idxmax()]
    interval = f"[{best['val_acc_low']:.3f}, {best['val_acc_high']:.3f}]"
    st.caption(f"best: trial {best['trial']}, val/acc {best['val_acc']:.3f} {interval} on {best['items']} items, "
               f"best constant {best['best_constant']:.3f}")  # fmt: skip
    keys = analysis.sweep_parameters(frame)
    if analysis.MODEL_KEY in keys:
        st.subheader("Per model")
        # Vega-Lite reads a dot in a field name as nested access: the model column gets a plain name.
        effect = analysis.parameter_effect(frame, analysis.MODEL_KEY).rename(columns={analysis.MODEL_KEY: "model"})
        bars = (
            alt.Chart(effect)
            .mark_bar()
            .encode(
                x=alt.X("best val_acc:Q", scale=alt.Scale(domain=[0, 1])),
                y=alt.Y("model:N", title="model"),
            )
        )
        tick = alt.Chart(effect).mark_tick(color="red", thickness=2, size=20).encode(x="best constant:Q", y="model:N")
        st.altair_chart((bars + tick).properties(height=40 * len(effect) + 40), width="stretch")
    st.subheader("val/acc against each parameter")
    for key in keys:
        numeric = pd.api.types.is_numeric_dtype(done[key])
        field = key.replace(".", "\\.")  # Vega-Lite reads a dot as nested access: every swept key has dots
        axis = alt.X(f"{field}:{'Q' if numeric else 'N'}", title=key)
        base = alt.Chart(done)
        points = base.mark_point(filled=True, size=60).encode(
            x=axis, y=alt.Y("val_acc:Q", scale=alt.Scale(domain=[0, 1])), tooltip=["trial", field, "val_acc"]
        )
        errors = base.mark_errorbar().encode(x=axis, y="val_acc_low:Q", y2="val_acc_high:Q")
        constant = base.mark_tick(color="red", thickness=2).encode(x=axis, y="best_constant:Q")
        st.altair_chart((points + errors + constant).properties(title=key, height=240), width="stretch")
        st.dataframe(analysis.parameter_effect(frame, key), hide_index=True)
    st.caption("points: complete trials with their 95% Wilson interval; red ticks: the best constant predictor on "
               "the same validation items")  # fmt: skip


def sidebar() -> None:
    st.sidebar.title("suneung-lit")
    st.sidebar.radio("Page", PAGES, key="page")
    st.sidebar.text_input("Data file", key="data_path", help="competition or flat CSV, or JSON Lines")
    st.sidebar.text_input("Tokenizer folder", key="model", help="a model folder: prompts and token counts as encoded")
    st.sidebar.selectbox("Template", available_templates(), key="template")
    st.sidebar.text_area("Runs (probabilities.csv, one per line)", key="run_paths")
    st.sidebar.text_input("TensorBoard log folder", key="log_root")
    st.sidebar.text_input("Sweep results (results.csv)", key="sweep_path")


def main() -> None:
    st.set_page_config(page_title="suneung-lit", layout="wide")
    _defaults()
    sidebar()
    st.query_params["page"] = st.session_state.page
    pages = {"Data": data_page, "Runs": runs_page, "Training": training_page, "Sweeps": sweeps_page}
    pages[st.session_state.page]()


main()
