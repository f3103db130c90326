"""Two accuracy-harness runs compared item by item (``accuracy.py --outcomes``): a template, a lever, a fine-tune.

Rows are matched by item id (and shift, for balanced copies), so runs whose held-out sets differ slightly (a
longer template leaves a few items out of the token limit) are compared on the items both scored. For each
source and reading: the paired difference B - A with its interval and an exact p-value, items as the units (an
item's shifted copies are one unit: they share its passage, so they are not independent rows; for natural
readings, one row per item, the test is McNemar's).

    python benchmarks/compare_runs.py A.json B.json [A2.json B2.json ...] [--phase-a zero-shot] [--phase-b zero-shot]

Further A B pairs (a replication on fresh held-out items) are pooled with the first: one difference over all their
items, each item still one unit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import COMPETITION, append_result, with_source  # noqa: E402

from suneung_lit.data.records import load_items  # noqa: E402
from suneung_lit.evaluation import paired_difference  # noqa: E402

READINGS = ("none natural", "none balanced", "pride natural", "offsets natural", "cyclic")


def keyed(run: dict, phase: str, choices: dict[str, int], sources: dict[str, str]) -> dict[str, dict[tuple, bool]]:
    """``{subset: {(reading, id, shift): right}}`` rebuilt from a run's held-out order."""
    result = {}
    for subset, readings in run["outcomes"][phase]["competition split"].items():
        ids = [i for i in run["heldout_ids"] if subset == "all" or sources[i] == subset]
        rows: dict[tuple, bool] = {}
        for reading, values in readings.items():
            if reading.endswith("balanced"):
                keys = [(reading, i, shift) for i in ids for shift in range(choices[i])]
            else:
                keys = [(reading, i, 0) for i in ids]
            if len(keys) != len(values):
                raise ValueError(f"{subset}/{reading}: {len(values)} outcomes for {len(keys)} rows")
            rows.update(zip(keys, values, strict=True))
        result[subset] = rows
    return result


def pooled(parts: list[dict[str, dict[tuple, bool]]], paths: list[Path]) -> dict[str, dict[tuple, bool]]:
    """The rows of several runs on disjoint held-out items as one set; an item in two runs would count twice."""
    result: dict[str, dict[tuple, bool]] = {}
    for part, path in zip(parts, paths, strict=True):
        for subset, rows in part.items():
            into = result.setdefault(subset, {})
            repeated = sorted({key[1] for key in rows.keys() & into.keys()})
            if repeated:
                raise ValueError(f"{path}: item {repeated[0]} is already in an earlier run of the same side")
            into.update(rows)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument(
        "more",
        type=Path,
        nargs="*",
        help="further A B pairs on other held-out items (a replication), pooled with the first pair",
    )
    parser.add_argument("--phase-a", default="zero-shot")
    parser.add_argument("--phase-b", default="zero-shot")
    parser.add_argument("--label", help="what B changes, for RESULTS.md (default: the file names)")
    parser.add_argument("--data-dir", default=str(COMPETITION), help="folder holding the competition train.csv")
    args = parser.parse_args()
    if len(args.more) % 2:
        parser.error(f"runs come in A B pairs; {len(args.more)} files after the first pair")
    items = load_items(Path(args.data_dir) / "train.csv")
    choices = {item.id: item.num_choices for item in items}
    sources = {item.id: with_source(item).metadata["source"] for item in items}  # the harness's two sources
    paths = [args.a, args.b, *args.more]
    runs = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    a = pooled([keyed(run, args.phase_a, choices, sources) for run in runs[0::2]], paths[0::2])
    b = pooled([keyed(run, args.phase_b, choices, sources) for run in runs[1::2]], paths[1::2])
    label = args.label or " + ".join(
        f"{pb.stem} ({args.phase_b}) vs {pa.stem} ({args.phase_a})"
        for pa, pb in zip(paths[0::2], paths[1::2], strict=True)
    )
    print(label)
    for subset in a:
        for reading in READINGS:
            common = sorted(k for k in a[subset] if k[0] == reading and k in b[subset])
            if not common:
                continue
            clusters = [k[1] for k in common]  # the item id: its shifted copies are one unit
            diff = paired_difference([a[subset][k] for k in common], [b[subset][k] for k in common], clusters)
            low, high = diff.interval
            print(f"  {subset} / {reading}: {diff}")
            append_result(
                "paired comparisons on a real model, items as units",
                ["B vs A", "held-out", "reading", "A", "B", "B - A [95%]", "B-only / A-only rows", "items", "p"],
                [
                    label,
                    subset,
                    reading,
                    f"{sum(a[subset][k] for k in common) / len(common):.3f}",
                    f"{sum(b[subset][k] for k in common) / len(common):.3f}",
                    f"{diff.difference:+.3f} [{low:+.3f}, {high:+.3f}]",
                    f"{diff.only_b} / {diff.only_a} of {diff.total}",
                    diff.clusters,
                    f"{diff.p_value:.3g}",
                ],
            )


if __name__ == "__main__":
    main()
