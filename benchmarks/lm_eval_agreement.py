"""Agreement with lm-evaluation-harness: our predict and lm-eval's ``hf`` model on the exported task, item by item.

Both score the same items with the same base weights: ours through ``Trainer.predict`` with plain scoring, theirs
through ``lm_eval.simple_evaluate`` on the task ``python -m suneung_lit.export lm-eval`` writes. (That an adapter
exported by ``adapter_export`` loads there through ``peft=`` and agrees too is what ``tests/test_export.py``
checks on the tiny model.) Printed and recorded: both accuracies, the best constant
predictor on the same items, the items whose choice differs (with our probability margin, to tell a near tie
from a real disagreement) and the wall time of each side.

    python benchmarks/lm_eval_agreement.py --model artifacts/qwen2.5-coder-1.5b-instruct     # data/klue, ~10 min
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, append_result, cpu_flags, set_threads  # noqa: E402

from suneung_lit.backbone import BaseSettings
from suneung_lit.data.datamodule import MultipleChoiceDataModule  # noqa: E402
from suneung_lit.data.records import load_items  # noqa: E402
from suneung_lit.evaluation import accuracy, best_constant  # noqa: E402
from suneung_lit.export.__main__ import main as export  # noqa: E402
from suneung_lit.module import QLoRAMultipleChoice  # noqa: E402


def ours(args) -> tuple[dict[str, list[float]], float]:
    module = QLoRAMultipleChoice(
        args.model, base=BaseSettings(quantization="none", dtype=args.dtype, compute_dtype=args.dtype)
    )
    data = MultipleChoiceDataModule(args.model, predict_path=args.data, max_length=args.max_length, eval_batch_size=2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    started = time.perf_counter()
    outputs = trainer.predict(module, data)
    seconds = time.perf_counter() - started
    rows = {i: p.tolist() for b in outputs for i, p in zip(b["id"], b["probabilities"], strict=True)}
    return rows, seconds


def theirs(args, task_dir: Path, task: str) -> tuple[dict[str, list[float]], float, float]:
    import lm_eval

    model_args = f"pretrained={args.model},dtype={args.dtype}"
    started = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=model_args,
        tasks=[task],
        task_manager=lm_eval.tasks.TaskManager(include_path=str(task_dir)),
        device="cpu",
        batch_size=2,
        log_samples=True,
    )
    seconds = time.perf_counter() - started
    loglikelihoods = {s["doc"]["id"]: [r[0] for r in s["filtered_resps"]] for s in results["samples"][task]}
    return loglikelihoods, results["results"][task]["acc,none"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=str(ROOT / "data" / "klue" / "klue_reading.jsonl"))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--max-length", type=int, default=2048)
    args = parser.parse_args()
    threads = set_threads()
    items = {item.id: item for item in load_items(args.data)}
    with tempfile.TemporaryDirectory() as folder:
        task = "suneung_lit_agreement"
        export(["lm-eval", args.data, "--output", folder, "--model", args.model, "--task", task])
        their_ll, their_acc, their_seconds = theirs(args, Path(folder), task)
    our_p, our_seconds = ours(args)
    ours_choice = {i: max(range(len(p)), key=p.__getitem__) for i, p in our_p.items()}
    their_choice = {i: max(range(len(ll)), key=ll.__getitem__) for i, ll in their_ll.items()}
    differing = sorted(i for i in ours_choice if ours_choice[i] != their_choice[i])
    gold = [items[i].answer for i in our_p]
    our_acc = accuracy([ours_choice[i] + 1 for i in our_p], gold)
    position, constant = best_constant(gold, [items[i].num_choices for i in our_p])
    print(f"\n{Path(args.model).name}, {len(our_p)} items of {args.data}, {args.dtype}")
    print(f"ours   {our_acc}  in {our_seconds:.0f} s")
    print(f"lm-eval acc {their_acc:.3f}  in {their_seconds:.0f} s")
    print(f"best constant (always {position}) {constant}")
    for i in differing:
        top = sorted(our_p[i], reverse=True)
        print(
            f"  differs: {i} ours {ours_choice[i] + 1} lm-eval {their_choice[i] + 1} (our margin {top[0] - top[1]:.2e})"
        )
    append_result(
        "agreement with lm-evaluation-harness",
        ["model", "data", "dtype", "items", "ours acc", "lm-eval acc", "best constant", "items differing",
         "ours s", "lm-eval s", "machine"],
        [Path(args.model).name, Path(args.data).name, args.dtype,
         len(our_p), f"{our_acc.value:.3f}", f"{their_acc:.3f}", f"{constant.value:.3f}", len(differing),
         f"{our_seconds:.0f}", f"{their_seconds:.0f}", f"{threads} threads, {cpu_flags()}"],
    )  # fmt: skip


if __name__ == "__main__":
    main()
