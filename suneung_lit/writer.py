"""Prediction outputs: the submission CSV and a per-option probability CSV, written atomically."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from suneung_lit.atomic_write import write_atomically
from suneung_lit.evaluation import accuracy, best_constant


class PredictionSetMismatchError(RuntimeError):
    """The predicted ids are not exactly the input ids: writing would produce an invalid submission."""


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def merge_predictions(outputs: Sequence[dict[str, Any]], expected_ids: Sequence[str]) -> list[dict[str, Any]]:
    """One row per input item, in input order; refuses a set of predictions that differs from the input ids."""
    rows: dict[int, dict[str, Any]] = {}
    for batch in outputs:
        for i, index in enumerate(batch["index"].tolist()):
            rows[index] = {
                "id": batch["id"][i],
                "probabilities": batch["probabilities"][i].tolist(),
                "prediction": int(batch["prediction"][i]),
                "answer": int(batch["answer"][i]),
                "num_choices": int(batch["num_choices"][i]),
                # Generated chain-of-thought text and the extraction step (``answer_mode: generate``).
                "text": batch["text"][i] if "text" in batch else None,
                "path": batch["path"][i] if "path" in batch else None,
            }
    ordered = [rows[i] for i in sorted(rows)]
    predicted = [row["id"] for row in ordered]
    if predicted != list(expected_ids):
        missing = sorted(set(expected_ids) - set(predicted))
        extra = sorted(set(predicted) - set(expected_ids))
        raise PredictionSetMismatchError(
            f"predictions cover {len(predicted)} ids but the input has {len(expected_ids)}: "
            f"missing {missing[:5]}, unexpected {extra[:5]}; nothing was written"
        )
    return ordered


def write_prediction_files(output_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``predictions.csv`` (``id,answer``, the submission) and ``probabilities.csv`` (``id, p1..pN, prediction``
    and ``answer`` when any row has one), each written atomically.

    Each row holds ``id``, ``probabilities`` (at least ``num_choices`` values), ``num_choices``, ``prediction``
    and ``answer`` (0 when unknown).
    """
    width = max(row["num_choices"] for row in rows)
    has_answers = any(row["answer"] > 0 for row in rows)
    write_atomically(
        output_dir / "predictions.csv", csv_text(["id", "answer"], [[r["id"], r["prediction"]] for r in rows])
    )
    header = ["id"] + [f"p{n}" for n in range(1, width + 1)] + ["prediction"] + (["answer"] if has_answers else [])
    table = []
    for row in rows:
        probabilities = [f"{p:.6f}" if n < row["num_choices"] else "" for n, p in enumerate(row["probabilities"])]
        probabilities += [""] * (width - len(probabilities))
        table.append(
            [row["id"], *probabilities[:width], row["prediction"]] + ([row["answer"] or ""] if has_answers else [])
        )
    write_atomically(output_dir / "probabilities.csv", csv_text(header, table))


class PredictionCSVWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` (``id,answer``, the submission format) and ``probabilities.csv``.

    Args:
        output_dir: folder for the two files; created if missing.
    """

    def __init__(self, output_dir: str = "predictions"):
        super().__init__(write_interval="epoch")
        self.output_dir = Path(output_dir)

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        outputs = list(predictions[0] if predictions and isinstance(predictions[0], list) else predictions)
        if trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, outputs)
            outputs = [batch for rank_outputs in gathered for batch in rank_outputs]
        if not trainer.is_global_zero:
            return
        expected = trainer.datamodule.item_ids("predict")
        rows = merge_predictions(outputs, expected)
        write_prediction_files(self.output_dir, rows)
        examples = getattr(trainer.datamodule, "few_shot_ids", {}).get("predict")
        if examples:  # which solved examples each prompt held (``data.few_shot``), so a run can be audited
            table = [[row["id"], " ".join(examples.get(row["id"], []))] for row in rows]
            write_atomically(self.output_dir / "few_shot.csv", csv_text(["id", "examples"], table))
        if any(row["text"] is not None for row in rows):
            lines = [
                json.dumps(
                    {"id": r["id"], "text": r["text"], "answer": r["prediction"], "path": r["path"]}, ensure_ascii=False
                )
                for r in rows
            ]
            write_atomically(self.output_dir / "reasoning.jsonl", "\n".join(lines) + "\n")
            print(f"wrote the generated texts to {self.output_dir / 'reasoning.jsonl'}")
        scored = [row for row in rows if row["answer"] > 0]
        if scored:
            print(labelled_accuracy_line(scored))
        print(f"wrote {len(rows)} predictions to {self.output_dir / 'predictions.csv'}")


def labelled_accuracy_line(rows: Sequence[dict]) -> str:
    """Accuracy of labelled prediction rows with its interval, beside the best constant predictor on them."""
    answers = [row["answer"] for row in rows]
    result = accuracy([row["prediction"] for row in rows], answers)
    position, constant = best_constant(answers, [row["num_choices"] for row in rows])
    return (
        f"predict accuracy on {len(rows)} labelled items: {result}; "
        f"best constant predictor (always {position}): {constant.value:.3f}"
    )
