"""Ensembles: average the option probabilities of several runs' ``probabilities.csv`` into one submission.

    python -m suneung_lit.ensemble predictions/a/probabilities.csv predictions/b/probabilities.csv \\
        --weights 2 1 --output predictions/ensemble

Inputs must cover exactly the same ids with the same number of choices per id; anything else is refused with the
file, row and id. Outputs are written atomically: ``predictions.csv`` (``id,answer``, in the first file's order)
and ``probabilities.csv`` (with the ``answer`` column when every input carries the same answers).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from suneung_lit.writer import write_prediction_files


class EnsembleInputError(ValueError):
    """A probabilities file is malformed or does not match the others."""


@dataclass(frozen=True)
class RunProbabilities:
    path: Path
    ids: list[str]
    probabilities: dict[str, list[float]]  # per id, one value per choice
    answers: dict[str, int]  # empty when the run has no answer column


def read_probabilities(path: str | Path) -> RunProbabilities:
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError) as err:
        raise EnsembleInputError(f"{path}: cannot read ({err})") from err
    if not rows or "id" not in rows[0] or "p1" not in rows[0]:
        raise EnsembleInputError(f"{path}: not a probabilities.csv (needs id, p1..pN columns)")
    columns = [c for c in rows[0] if c.startswith("p") and c[1:].isdigit()]
    ids, probabilities, answers = [], {}, {}
    for number, row in enumerate(rows, start=2):
        item_id = row["id"]
        if item_id in probabilities:
            raise EnsembleInputError(f"{path}: row {number}: id {item_id!r} appears twice")
        try:
            values = [float(row[c]) for c in columns if row[c] not in ("", None)]
        except ValueError as err:
            raise EnsembleInputError(
                f"{path}: row {number}, id {item_id!r}: a p column is not a number ({err})"
            ) from err
        if len(values) < 2 or any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-3:
            raise EnsembleInputError(f"{path}: row {number}, id {item_id!r}: probabilities {values} do not sum to 1")
        ids.append(item_id)
        probabilities[item_id] = values
        if row.get("answer"):
            answers[item_id] = int(row["answer"])
    return RunProbabilities(path, ids, probabilities, answers)


def average(runs: Sequence[RunProbabilities], weights: Sequence[float] | None = None) -> dict[str, list[float]]:
    """Weighted mean of the runs' probabilities per id, in the first run's id order."""
    if not runs:
        raise EnsembleInputError("no runs given")
    weights = list(weights) if weights is not None else [1.0] * len(runs)
    if len(weights) != len(runs) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise EnsembleInputError(f"need one non-negative weight per run ({len(runs)}), got {weights}")
    first = runs[0]
    for run in runs[1:]:
        missing, extra = set(first.ids) - set(run.ids), set(run.ids) - set(first.ids)
        if missing or extra:
            raise EnsembleInputError(
                f"{run.path} covers other ids than {first.path}: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(extra)[:5]}"
            )
        for item_id in first.ids:
            if len(run.probabilities[item_id]) != len(first.probabilities[item_id]):
                raise EnsembleInputError(
                    f"{run.path}: id {item_id!r} has {len(run.probabilities[item_id])} choices, "
                    f"{first.path} has {len(first.probabilities[item_id])}"
                )
    total = sum(weights)
    return {
        item_id: [
            sum(w * run.probabilities[item_id][k] for w, run in zip(weights, runs, strict=True)) / total
            for k in range(len(first.probabilities[item_id]))
        ]
        for item_id in first.ids
    }


def write_ensemble(runs: Sequence[RunProbabilities], averaged: dict[str, list[float]], output_dir: Path) -> None:
    answers = runs[0].answers if all(run.answers == runs[0].answers for run in runs) else {}
    rows = [
        {
            "id": item_id,
            "probabilities": p,
            "num_choices": len(p),
            "prediction": max(range(len(p)), key=p.__getitem__) + 1,
            "answer": answers.get(item_id, 0),
        }
        for item_id, p in averaged.items()
    ]
    write_prediction_files(output_dir, rows)
    if answers:
        correct = sum(row["prediction"] == row["answer"] for row in rows if row["answer"])
        print(f"ensemble accuracy on {len(answers)} labelled items: {correct / len(answers):.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suneung_lit.ensemble", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="probabilities.csv files")
    parser.add_argument("--weights", nargs="+", type=float, help="one weight per run (default: equal)")
    parser.add_argument("--output", type=Path, required=True, help="folder for predictions.csv and probabilities.csv")
    args = parser.parse_args(argv)
    try:
        runs = [read_probabilities(path) for path in args.runs]
        averaged = average(runs, args.weights)
    except EnsembleInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_ensemble(runs, averaged, args.output)
    print(f"wrote {len(averaged)} ensembled predictions from {len(runs)} runs to {args.output / 'predictions.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
