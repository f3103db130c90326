"""Ensembles average runs' probabilities and refuse runs that do not cover the same items."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from suneung_lit.ensemble import EnsembleInputError, average, main, read_probabilities

HEADER = "id,p1,p2,p3,p4,p5,prediction,answer\n"


def write(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture()
def runs(tmp_path) -> list[Path]:
    a = write(tmp_path / "a.csv", ["q1,0.6,0.4,0,0,,1,2", "q2,0.1,0.2,0.3,0.1,0.3,3,5"])
    b = write(tmp_path / "b.csv", ["q1,0.2,0.8,0,0,,2,2", "q2,0.1,0.1,0.1,0.1,0.6,5,5"])
    return [a, b]


def test_weighted_average_picks_the_combined_best_choice(runs, tmp_path):
    assert main([*map(str, runs), "--weights", "1", "3", "--output", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "predictions.csv", encoding="utf-8") as handle:
        assert list(csv.reader(handle)) == [["id", "answer"], ["q1", "2"], ["q2", "5"]]
    with open(tmp_path / "out" / "probabilities.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["p2"] == "0.700000" and rows[0]["p5"] == "" and rows[0]["answer"] == "2"


def test_equal_weights_are_the_mean(runs):
    averaged = average([read_probabilities(p) for p in runs])
    assert averaged["q1"] == pytest.approx([0.4, 0.6, 0.0, 0.0])


def test_runs_over_other_ids_are_refused_and_nothing_is_written(runs, tmp_path, capsys):
    other = write(tmp_path / "c.csv", ["q1,0.5,0.5,0,0,,1,2", "q3,0.2,0.2,0.2,0.2,0.2,1,1"])
    assert main([str(runs[0]), str(other), "--output", str(tmp_path / "out")]) == 2
    assert "missing ['q2'], unexpected ['q3']" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_bad_row_is_named_with_file_row_and_id(tmp_path):
    bad = write(tmp_path / "bad.csv", ["q1,0.5,0.5,0,0,,1,2", "q2,0.5,x,0,0,,1,2"])
    with pytest.raises(EnsembleInputError, match=r"bad.csv: row 3, id 'q2': a p column is not a number"):
        read_probabilities(bad)
    unnormalised = write(tmp_path / "sum.csv", ["q1,0.5,0.9,0,0,,1,2"])
    with pytest.raises(EnsembleInputError, match="do not sum to 1"):
        read_probabilities(unnormalised)


def test_choice_counts_must_agree(runs, tmp_path):
    five = write(tmp_path / "five.csv", ["q1,0.2,0.2,0.2,0.2,0.2,1,2", "q2,0.1,0.1,0.1,0.1,0.6,5,5"])
    with pytest.raises(EnsembleInputError, match="id 'q1' has 5 choices"):
        average([read_probabilities(runs[0]), read_probabilities(five)])
