"""A shipped config's ``auto`` precision against forced float32 and forced bf16, warm, alternated, in one run.

Each variant is the shipped config parsed by the package's own CLI (``build_cli(run=False)``: the same `auto`
resolution a ``predict`` run prints), with ``auto`` left as shipped or overridden (``model.base.dtype``,
``compute_dtype`` and ``trainer.precision``). All three models are loaded and warmed on one batch before any timed
pass; then ``Trainer.predict`` over the same items runs ``--repeats`` times per variant, alternated, best kept.
Printed beside each: prompt tokens/s, the cost against float32, the largest probability difference and the answers
that change against float32, accuracy beside the best constant predictor, and the CPU flags that decided ``auto``.

    python benchmarks/shipped_precision.py                       # qwen1.5b.yaml on data/klue (19 items)
    python benchmarks/shipped_precision.py --limit 6 --repeats 1 # an AVX2-only CPU, where bf16 is emulated
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, alternated_timings, append_result, cpu_flags, set_threads  # noqa: E402

from suneung_lit.cli import build_cli, resolve_config_args  # noqa: E402
from suneung_lit.data.records import load_items, write_items  # noqa: E402
from suneung_lit.writer import PredictionCSVWriter  # noqa: E402

FORCED = {
    "auto (as shipped)": [],
    "float32": ["--model.base.dtype", "float32", "--model.base.compute_dtype", "float32",
                "--trainer.precision", "32-true"],
    "bfloat16": ["--model.base.dtype", "bfloat16", "--model.base.compute_dtype", "bfloat16",
                 "--trainer.precision", "bf16-mixed"],
}  # fmt: skip


def variant(args, overrides: list[str], work: Path):
    """The shipped config with ``overrides``: its model loaded, its data tokenized, its trainer built."""
    argv = [
        "--config", args.config, "--model.model_name_or_path", args.model, "--data.predict_path", args.data,
        "--data.train_path", "null", "--prediction_writer.output_dir", str(work / "predictions"),
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
        "false", *overrides,
    ]  # fmt: skip
    cli = build_cli(resolve_config_args(argv), run=False)
    cli.datamodule.setup("predict")
    cli.model.configure_model()  # loading stays outside every timed pass
    return cli


def warm_up(cli) -> None:
    """One untimed batch; the prediction writer is left out, as it rightly refuses a run that skips items."""
    callbacks = list(cli.trainer.callbacks)
    cli.trainer.callbacks = [c for c in callbacks if not isinstance(c, PredictionCSVWriter)]
    cli.trainer.limit_predict_batches = 1
    cli.trainer.predict(cli.model, datamodule=cli.datamodule)
    cli.trainer.callbacks, cli.trainer.limit_predict_batches = callbacks, 1.0


def by_id(outputs, items) -> dict:
    """Each item's option probabilities from ``Trainer.predict``'s batches."""
    rows = {}
    for batch in outputs:
        for i, p in zip(batch["id"], batch["probabilities"], strict=True):
            rows[i] = p[: items[i].num_choices].float()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "qwen1.5b.yaml"))
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "qwen2.5-coder-1.5b-instruct"))
    parser.add_argument("--data", default=str(ROOT / "data" / "klue" / "klue_reading.jsonl"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--limit", type=int, help="the first N items only (bf16 on an AVX2-only CPU is slow)")
    args = parser.parse_args()
    threads, flags = set_threads(), cpu_flags()
    with tempfile.TemporaryDirectory() as folder:
        if args.limit:
            subset = Path(folder) / f"first{args.limit}_{Path(args.data).stem}.csv"  # write_items writes CSV
            write_items(load_items(args.data)[: args.limit], subset)
            args.data = str(subset)
        items = {item.id: item for item in load_items(args.data)}
        clis = {
            name: variant(args, overrides, Path(folder) / str(i)) for i, (name, overrides) in enumerate(FORCED.items())
        }
        chosen = {name: cli.model.base.compute_dtype for name, cli in clis.items()}
        for cli in clis.values():  # warm-up, untimed: lazy initialisation, the inference cast
            warm_up(cli)

        def run(cli):
            return lambda: cli.trainer.predict(cli.model, datamodule=cli.datamodule)

        timings = alternated_timings({name: run(cli) for name, cli in clis.items()}, args.repeats)
        tokens = sum(clis["float32"].datamodule.encoded["predict"]["length"])
    probabilities = {name: by_id(out, items) for name, (_, _, out) in timings.items()}
    baseline, base_seconds = probabilities["float32"], timings["float32"][0]
    answered = [i for i in items if items[i].answer]
    constant = max(sum(items[i].answer == k for i in answered) for k in range(1, 6)) / len(answered)
    print(f"\n{Path(args.config).name} with {Path(args.model).name}, {len(items)} items ({tokens} prompt tokens) from "
          f"{Path(args.data).name}, {threads} threads, CPU flags: {flags}")  # fmt: skip
    print("variant             dtype     seconds (passes)        tok/s  vs float32  max |dp|  changed  accuracy  const")
    for name, (seconds, passes, _) in timings.items():
        rows = probabilities[name]
        difference = max(float((rows[i] - baseline[i]).abs().max()) for i in baseline)
        changed = sum(int(rows[i].argmax()) != int(baseline[i].argmax()) for i in baseline)
        accuracy = sum(int(rows[i].argmax()) + 1 == items[i].answer for i in answered) / len(answered)
        shown = " / ".join(f"{t:.1f}" for t in passes)
        print(f"{name:19s} {chosen[name]:9s} {seconds:6.1f} ({shown:13s}) {tokens / seconds:6.0f} "
              f"{base_seconds / seconds:9.2f}x {difference:9.4f} {changed:8d} {accuracy:9.3f} "
              f"{constant:6.3f}")  # fmt: skip
        append_result(
            "shipped config's auto precision against forced float32 and bf16 (warm, alternated, best pass)",
            ["config", "items", "variant", "dtype chosen", "seconds (passes)", "prompt tok/s", "speed vs float32",
             "max prob. diff. vs float32", "answers changed", "accuracy", "best constant", "machine"],
            [Path(args.config).name, f"{len(items)} from {Path(args.data).name}", name, chosen[name],
             f"{seconds:.1f} ({shown})", f"{tokens / seconds:.0f}", f"{base_seconds / seconds:.2f}x",
             f"{difference:.4f}", f"{changed} of {len(baseline)}", f"{accuracy:.3f}", f"{constant:.3f}",
             f"{threads} threads, {flags}"],
        )  # fmt: skip


if __name__ == "__main__":
    main()
