"""Exam points: items that carry a score report points per exam beside the best constant predictor and full marks."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import torch

from suneung_lit.data.converters import convert
from suneung_lit.data.datamodule import MultipleChoiceDataModule
from suneung_lit.data.records import DataValidationError, write_items
from suneung_lit.data.synthetic import make_items
from suneung_lit.exam import ExamPoints, item_score, points_line

from .conftest import run_in_process


def test_points_count_each_right_answer_by_its_score_and_the_constant_by_its_best_position():
    metric = ExamPoints(["a", "b"], max_choices=5)
    # Source a: answers 1, 1, 3 worth 2, 3, 2; right on the first and the last. Source b: one 3-point item, wrong.
    preds, target = torch.tensor([0, 2, 2, 4]), torch.tensor([0, 0, 2, 1])
    metric.update(preds, target, torch.tensor([0, 0, 0, 1]), torch.tensor([2.0, 3.0, 2.0, 3.0]))
    # An item without a score, one without a source and an unlabelled one count nowhere.
    metric.update(
        torch.tensor([0, 0, 0]), torch.tensor([0, 0, -1]), torch.tensor([0, -1, 0]), torch.tensor([0.0, 2, 2])
    )
    result = metric.compute()
    assert {k: float(v) for k, v in result["a"].items()} == {
        "points": 4.0, "total": 7.0, "constant": 5.0, "constant_position": 0.0,
    }  # fmt: skip
    assert float(result["b"]["points"]) == 0 and float(result["b"]["constant"]) == 3
    assert points_line("validation", "a", result["a"]) == (
        "validation exam points, a: 4 / 7 (best constant predictor, always 1: 5; full marks 7)"
    )


def test_a_score_that_is_not_points_is_named_by_file_item_and_column(tiny_model_dir, tmp_path):
    items = make_items(3, seed=4, prefix="paper")
    items[2] = replace(items[2], metadata={"score": "three"})
    write_items(items, tmp_path / "val.csv", "flat")
    with pytest.raises(ValueError, match="not a positive number"):
        item_score(items[2])
    datamodule = MultipleChoiceDataModule(str(tiny_model_dir), val_path=str(tmp_path / "val.csv"))
    with pytest.raises(DataValidationError) as raised:
        datamodule.setup("validate")
    (problem,) = raised.value.problems
    assert (problem.path, problem.item_id, problem.column) == (str(tmp_path / "val.csv"), "paper-0002", "score")


def kice_paper(path, seed: int = 7) -> None:
    """A KICE-format paper of 45 five-choice items, 35 worth 2 points and 10 worth 3 (100 in all), in 15 sets; the
    3-point ones marked as the papers do, by "[3점]" after the question."""
    generator = torch.Generator().manual_seed(seed)
    sets = []
    for s in range(15):
        problems = []
        for p in range(3):
            number = 3 * s + p
            three = number % 9 == 0 or number % 9 == 4  # 10 of the 45
            answer = int(torch.randint(1, 6, (1,), generator=generator))
            question = f"{number + 1}번 문제: 윗글에서 {answer}번이 맞는 이유는?" + (" [3점]" if three else "")
            problem = {"question": question, "choices": [f"선택지 {c}" for c in range(1, 6)], "answer": answer}
            if not three:
                problem["score"] = 2
            problems.append(problem)
        sets.append(
            {"id": f"paper_{s}", "paragraph": f"{s}번 지문입니다. 정답은 문제가 말합니다.", "problems": problems}
        )
    path.write_text(json.dumps(sets, ensure_ascii=False), encoding="utf-8")


@pytest.mark.slow
def test_a_converted_kice_paper_validates_to_points_out_of_100_in_the_log_metrics_and_dashboard(
    tiny_model_dir, tmp_path, capsys
):
    from suneung_lit.dashboard import analysis

    kice_paper(tmp_path / "2024_11_KICE.json")
    items = convert("kice", [tmp_path / "2024_11_KICE.json"]).items
    assert len(items) == 45 and sum(item_score(item) for item in items) == 100
    write_items(items, tmp_path / "paper.csv")
    common = [
        "--config", "demo.yaml", "--model.model_name_or_path", str(tiny_model_dir), "--data.train_path", "null",
        "--data.val_path", str(tmp_path / "paper.csv"), "--data.predict_path", str(tmp_path / "paper.csv"),
        "--prediction_writer.output_dir", str(tmp_path / "predictions"), "--trainer.default_root_dir", str(tmp_path),
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    output = run_in_process(["validate", *common], capsys)
    line = re.search(
        r"validation exam points, kice/2024_11_KICE: (\d+) / 100 \(best constant predictor, always (\d): (\d+); "
        r"full marks 100\)",
        output,
    )
    assert line, output[-3000:]
    points, position, constant = (int(g) for g in line.groups())
    gold = [item.answer for item in items]
    assert constant == max(sum(item_score(i) for i in items if i.answer == k) for k in range(1, 6))
    assert position == max(range(1, 6), key=lambda k: sum(item_score(i) for i in items if i.answer == k))
    assert re.search(r"val/points_total/kice/2024_11_KICE\s*│\s*100", output), output[-3000:]
    assert re.search(rf"val/points/kice/2024_11_KICE\s*│\s*{points}\b", output), output[-3000:]
    # The dashboard reads the same points from a predict run's probabilities.csv and the items.
    run_in_process(["predict", *common], capsys)
    (run,) = analysis.load_runs([tmp_path / "predictions" / "probabilities.csv"])
    earned = sum(item_score(i) for i, g in zip(items, gold, strict=True) if run.prediction(i.id) == g)
    table = analysis.points_table([run], {item.id: item for item in items})
    assert table.to_dict("records") == [
        {"run": "predictions", "source": "kice/2024_11_KICE", "points": earned, "full marks": 100.0,
         "best constant": float(constant), "constant answers": position},
    ]  # fmt: skip
    assert earned == points
