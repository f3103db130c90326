"""What the dashboard shows, as plain functions over items, probabilities files and TensorBoard logs.

Each function returns a pandas DataFrame (or a list of ids) so that it can be tested and reused without Streamlit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from suneung_lit.data.records import Item
from suneung_lit.data.tokenization import group_of
from suneung_lit.ensemble import EnsembleInputError, read_probabilities
from suneung_lit.evaluation import accuracy, best_constant
from suneung_lit.exam import ExamPoints, score_or_zero

NO_SOURCE = "(no source column)"


# --- data -----------------------------------------------------------------------------------------------------


def source_of(item: Item) -> str:
    return group_of(item) or NO_SOURCE


def items_frame(items: Sequence[Item], prompt_tokens: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per item: id, source, choice count, answer, <보기> flag, lengths, and a lower-cased search text."""
    frame = pd.DataFrame(
        {
            "id": [i.id for i in items],
            "source": [source_of(i) for i in items],
            "num_choices": [i.num_choices for i in items],
            "answer": pd.array([i.answer for i in items], dtype="Int64"),
            "has_question_plus": [bool(i.question_plus.strip()) for i in items],
            "paragraph_chars": [len(i.paragraph) for i in items],
            "question": [i.question for i in items],
            "search_text": ["\n".join([i.paragraph, i.question, i.question_plus, *i.choices]).lower() for i in items],
        }
    )
    if prompt_tokens is not None:
        frame["tokens"] = list(prompt_tokens)
    return frame


@dataclass(frozen=True)
class ItemFilter:
    """The Data page's filters; an empty selection means no restriction."""

    sources: Sequence[str] = ()
    choice_counts: Sequence[int] = ()
    answers: Sequence[int] = ()
    min_tokens: int | None = None
    max_tokens: int | None = None
    text: str = ""


def filter_items(frame: pd.DataFrame, chosen: ItemFilter) -> pd.DataFrame:
    keep = pd.Series(True, index=frame.index)
    if chosen.sources:
        keep &= frame["source"].isin(chosen.sources)
    if chosen.choice_counts:
        keep &= frame["num_choices"].isin(chosen.choice_counts)
    if chosen.answers:
        keep &= frame["answer"].isin(chosen.answers).fillna(False).astype(bool)
    if "tokens" in frame:
        if chosen.min_tokens is not None:
            keep &= frame["tokens"] >= chosen.min_tokens
        if chosen.max_tokens is not None:
            keep &= frame["tokens"] <= chosen.max_tokens
    if chosen.text.strip():
        keep &= frame["search_text"].str.contains(chosen.text.strip().lower(), regex=False)
    return frame[keep]


# --- runs -----------------------------------------------------------------------------------------------------


class RunError(ValueError):
    """A run file cannot be compared: unreadable, or without the answers accuracy needs."""


@dataclass(frozen=True)
class Run:
    """One probabilities.csv that carries answers: predictions, confidences and gold answers by id."""

    name: str
    path: Path
    ids: list[str]
    probabilities: Mapping[str, list[float]]
    answers: Mapping[str, int]

    def prediction(self, item_id: str) -> int:
        values = self.probabilities[item_id]
        return max(range(len(values)), key=values.__getitem__) + 1

    def frame(self) -> pd.DataFrame:
        rows = []
        for item_id in self.ids:
            values = self.probabilities[item_id]
            predicted = self.prediction(item_id)
            rows.append((item_id, predicted, self.answers[item_id], values[predicted - 1], len(values)))
        frame = pd.DataFrame(rows, columns=["id", "prediction", "answer", "confidence", "num_choices"])
        frame["correct"] = frame["prediction"] == frame["answer"]
        return frame


def run_name(path: Path, taken: set[str]) -> str:
    """A short name: the run's folder (``predictions/NAME/probabilities.csv``), made unique."""
    base = path.parent.name or path.stem
    name, n = base, 2
    while name in taken:
        name, n = f"{base} ({n})", n + 1
    return name


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    runs: list[Run] = []
    for path in map(Path, paths):
        try:
            raw = read_probabilities(path)
        except EnsembleInputError as err:
            raise RunError(str(err)) from err
        missing = [i for i in raw.ids if i not in raw.answers]
        if missing:
            raise RunError(
                f"{path}: {len(missing)} of {len(raw.ids)} rows have no answer (first: id {missing[0]!r}); "
                "compare runs made on labelled data (validate/test, or predict on a file with answers)"
            )
        runs.append(Run(run_name(path, {r.name for r in runs}), path, raw.ids, raw.probabilities, raw.answers))
    return runs


def common_ids(runs: Sequence[Run]) -> list[str]:
    """Ids present in every run, in the first run's order: comparisons use only these."""
    if not runs:
        return []
    shared = set(runs[0].ids).intersection(*(r.ids for r in runs[1:]))
    return [i for i in runs[0].ids if i in shared]


def _accuracy_row(run: str, group: str, frame: pd.DataFrame) -> dict:
    result = accuracy(frame["prediction"].tolist(), frame["answer"].tolist())
    _, constant = best_constant(frame["answer"].tolist(), frame["num_choices"].tolist())
    return {
        "run": run,
        "group": group,
        "items": result.total,
        "accuracy": result.value,
        "low": result.low,
        "high": result.high,
        "best constant": constant.value,
    }


def accuracy_table(runs: Sequence[Run], groups: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Accuracy with its 95% Wilson interval and the best constant predictor, overall and per group.

    ``groups`` maps ids to a source; without it (or for ids it lacks) items group by choice count.
    """
    rows = []
    for run in runs:
        frame = run.frame()
        rows.append(_accuracy_row(run.name, "all", frame))
        labels = [
            (groups or {}).get(i) or f"{n}-choice" for i, n in zip(frame["id"], frame["num_choices"], strict=True)
        ]
        for label, part in frame.groupby(pd.Series(labels, index=frame.index), sort=True):
            rows.append(_accuracy_row(run.name, str(label), part))
    return pd.DataFrame(rows)


def points_table(runs: Sequence[Run], items: Mapping[str, Item]) -> pd.DataFrame:
    """Exam points per run and source over the items that carry a ``score`` (``suneung_lit.exam``), beside the best
    constant predictor's points and full marks; no rows when no item of the runs has a score."""
    import torch

    rows = []
    for run in runs:
        frame = run.frame()
        scores = [score_or_zero(items.get(i)) for i in frame["id"]]
        sources = sorted({source_of(items[i]) for i, score in zip(frame["id"], scores, strict=True) if score})
        if not sources:
            continue
        index = {name: n for n, name in enumerate(sources)}
        metric = ExamPoints(sources, int(frame["num_choices"].max()))
        metric.update(
            torch.tensor(frame["prediction"].to_numpy() - 1),
            torch.tensor(frame["answer"].to_numpy() - 1),
            torch.tensor([index.get(source_of(items[i]), -1) if i in items else -1 for i in frame["id"]]),
            torch.tensor(scores),
        )
        for source, result in metric.compute().items():
            rows.append(
                {
                    "run": run.name,
                    "source": source,
                    "points": float(result["points"]),
                    "full marks": float(result["total"]),
                    "best constant": float(result["constant"]),
                    "constant answers": int(result["constant_position"]) + 1,
                }
            )
    return pd.DataFrame(rows, columns=["run", "source", "points", "full marks", "best constant", "constant answers"])


def accuracy_by_position(run: Run) -> pd.DataFrame:
    """Accuracy on the items whose gold answer is at each position (a position bias shows as uneven rows)."""
    frame = run.frame()
    rows = []
    for position, part in frame.groupby("answer", sort=True):
        result = accuracy(part["prediction"].tolist(), part["answer"].tolist())
        rows.append(
            {"answer": int(position), "items": result.total, "accuracy": result.value, "low": result.low,
             "high": result.high, "predicted here": int((frame["prediction"] == position).sum())}
        )  # fmt: skip
    return pd.DataFrame(rows)


def confusion(run: Run) -> pd.DataFrame:
    """Counts of (gold answer, predicted answer) pairs, every pair of positions present (zeros included)."""
    frame = run.frame()
    width = int(frame["num_choices"].max())
    counts = frame.groupby(["answer", "prediction"]).size()
    rows = [
        {"answer": a, "prediction": p, "count": int(counts.get((a, p), 0))}
        for a in range(1, width + 1)
        for p in range(1, width + 1)
    ]
    return pd.DataFrame(rows)


def reliability(run: Run, bins: int = 10) -> tuple[pd.DataFrame, float]:
    """Calibration: per confidence bin, mean confidence against accuracy; and the expected calibration error."""
    frame = run.frame()
    edges = [n / bins for n in range(bins + 1)]
    frame["bin"] = pd.cut(frame["confidence"], edges, include_lowest=True, labels=False)
    table = (
        frame.groupby("bin")
        .agg(confidence=("confidence", "mean"), accuracy=("correct", "mean"), items=("id", "size"))
        .reset_index()
    )
    error = float((table["items"] * (table["confidence"] - table["accuracy"]).abs()).sum() / len(frame))
    return table, error


def comparison(runs: Sequence[Run]) -> pd.DataFrame:
    """Per common id: each run's prediction, the gold answer, and whether the runs disagree or all are wrong."""
    ids = common_ids(runs)
    frame = pd.DataFrame({"id": ids, "answer": [runs[0].answers[i] for i in ids]})
    for run in runs:
        frame[run.name] = [run.prediction(i) for i in ids]
    predictions = frame[[r.name for r in runs]]
    frame["disagree"] = predictions.nunique(axis=1) > 1
    frame["all wrong"] = predictions.ne(frame["answer"], axis=0).all(axis=1)
    return frame


# --- training -------------------------------------------------------------------------------------------------


def event_files(log_root: str | Path) -> list[Path]:
    return sorted(Path(log_root).rglob("events.out.tfevents.*"))


# TensorBoardLogger writes a placeholder hyperparameter metric (-1) that no run of this package sets.
PLACEHOLDER_TAGS = {"hp_metric"}


def training_scalars(log_root: str | Path) -> pd.DataFrame:
    """Every scalar in the TensorBoard event files under ``log_root``: run (the folder), tag, step, value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = Path(log_root)
    rows = []
    for path in event_files(root):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        run = str(path.parent.relative_to(root)) if path.parent != root else root.name
        for tag in set(accumulator.Tags()["scalars"]) - PLACEHOLDER_TAGS:
            rows.extend((run, tag, event.step, event.value) for event in accumulator.Scalars(tag))
    return pd.DataFrame(rows, columns=["run", "tag", "step", "value"])


# --- sweeps ---------------------------------------------------------------------------------------------------

# The columns of a sweep's results.csv around its parameters (``suneung_lit.sweep.write_results``).
SWEEP_HEAD = ("trial", "state")
SWEEP_TAIL = ("val_acc", "val_acc_low", "val_acc_high", "best_constant", "items", "steps", "seconds", "dir", "error")
MODEL_KEY = "model.model_name_or_path"


class SweepError(ValueError):
    """A file that is not a sweep's results table."""


def read_sweep(path: str | Path) -> pd.DataFrame:
    """A sweep's ``results.csv``: one row per trial, its parameters between ``state`` and ``val_acc``."""
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise SweepError(f"{path}: cannot read a sweep's results ({err})") from err
    columns = list(frame.columns)
    missing = [c for c in (*SWEEP_HEAD, *SWEEP_TAIL) if c not in columns]
    if missing or columns[:2] != list(SWEEP_HEAD):
        raise SweepError(f"{path}: not a sweep's results.csv (missing {', '.join(missing) or 'trial, state first'})")
    return frame


def sweep_parameters(frame: pd.DataFrame) -> list[str]:
    """The swept keys, in the search space's order."""
    columns = list(frame.columns)
    return columns[len(SWEEP_HEAD) : columns.index("val_acc")]


def parameter_effect(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per value of ``key``, over the complete trials: how many, the best and mean val/acc, and the best constant
    predictor (the same validation items in every trial of a sweep that does not change the split)."""
    done = frame[frame["state"] == "complete"]
    grouped = done.groupby(key, sort=True)
    return pd.DataFrame(
        {
            "trials": grouped.size(),
            "best val_acc": grouped["val_acc"].max(),
            "mean val_acc": grouped["val_acc"].mean(),
            "best constant": grouped["best_constant"].max(),
        }
    ).reset_index()
