"""Accuracy harness on a real pretrained LM: zero-shot vs LoRA fine-tuned, beside the best constant predictor.

Held-out items come from a paragraph-grouped split of the competition train set (no passage on both sides),
plus any labelled file given with --heldout. Every held-out item is scored under all cyclic shifts of its
choices, in the same batches, which yields three readings from one pass:

- natural: the item as written (shift 0); read beside the best constant predictor on the same items;
- balanced: every shifted copy, so each position is the answer equally often (a constant predictor gets ~1/n);

each under the debiasing choices of ``model.debias`` (``suneung_lit.debias``): none; pride (prior from the cyclic
passes of 5% of the items); offsets (per-position offsets fitted on the other half of the held-out items); and
cyclic (each choice's log-probability averaged over its shifted copies, the same on natural and balanced).

Fine-tuning runs through the same module, data module and ``Trainer.fit`` as ``python -m suneung_lit fit``.
Each figure has a 95% Wilson interval; throughput is tokens/s over the scored prompts.

    python -m suneung_lit.models get gemma-3-270m --output artifacts/gemma-3-270m
    python benchmarks/accuracy.py --mode cpu     # short items (<= 448 tokens), ~30-40 min on 2 CPU cores
    python benchmarks/accuracy.py --mode full    # every item at 2048 tokens, bf16, for a GPU
    python -m suneung_lit.models get qwen2.5-coder-1.5b-instruct --output artifacts/qwen2.5-coder-1.5b-instruct
    python benchmarks/accuracy.py --mode qwen-cpu --model artifacts/qwen2.5-coder-1.5b-instruct

The competition's train rows come from two sources, told apart by their choice count: the 5-choice rows (ids
1380-2899) are reading items written from KLUE-MRC news articles, the 4-choice rows (ids 425-1379) knowledge
items from MMMLU/KMMLU. The split is paragraph-grouped within each source and every figure is reported per
source; ``--outcomes`` keeps each item's right/wrong per reading, so that two runs on the same items (a template,
a fine-tune) can be compared pairwise (``suneung_lit.evaluation.paired_difference``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    COMPETITION,
    ROOT,
    append_result,
    fitting_items,
    per_source_split,
    prompt_token_counts,
    set_threads,
)

from suneung_lit.backbone import BaseSettings, LoraSettings
from suneung_lit.data.datamodule import MultipleChoiceDataModule  # noqa: E402
from suneung_lit.data.few_shot import with_examples  # noqa: E402
from suneung_lit.data.records import Item, load_items, write_items  # noqa: E402
from suneung_lit.data.shifting import calibration_items, split_shifted_id  # noqa: E402
from suneung_lit.data.tokenization import group_of  # noqa: E402
from suneung_lit.debias import PositionPrior, cyclic_average, fit_position_offsets  # noqa: E402
from suneung_lit.evaluation import (  # noqa: E402
    Accuracy,
    accuracy,
    balanced_copies,
    best_constant,
    paired_difference,
    wilson_interval,
)
from suneung_lit.module import QLoRAMultipleChoice  # noqa: E402
from suneung_lit.optimization import OptimizationSettings  # noqa: E402
from suneung_lit.precision import resolve_dtype, this_machine, trainer_precision  # noqa: E402

MODES = {
    # Short items keep a CPU run under 40 minutes; the competition's short items are all 4-choice.
    "cpu": dict(max_tokens=448, max_heldout=120, max_train=None, epochs=1, precision="32-true", dtype="float32"),
    "full": dict(max_tokens=2048, max_heldout=None, max_train=None, epochs=2, precision="bf16-mixed", dtype="bfloat16"),
    # A real 1.5B model on a 2-core CPU, in the dtype the machine runs fastest (``suneung_lit.precision``: bf16 with
    # AVX-512 BF16 or AMX, float32 with AVX2 only); held-out and train counts are per source.
    "qwen-cpu": dict(max_tokens=1024, max_heldout=24, max_train=80, epochs=1, precision="auto", dtype="auto"),
}


@dataclass
class Scored:
    """Per original item: the log-probabilities of each shifted copy, keyed by shift."""

    items: list[Item]
    copies: dict[str, dict[int, torch.Tensor]]
    tokens: int
    seconds: float


def data_module(args, work: Path, **paths: str) -> MultipleChoiceDataModule:
    return MultipleChoiceDataModule(
        args.model,
        template=args.template,
        # Items are chosen to fit max_tokens on their own; their few-shot examples get room of their own.
        max_length=args.max_tokens * (1 + args.few_shot),
        train_batch_size=args.train_batch_size,
        eval_batch_size=args.eval_batch_size,
        cache_dir=str(work / "cache"),
        # The same on-the-fly answer balancing as `fit` with data.balance_train (new positions every epoch).
        balance_train=args.balance_train,
        # The shifted copies of an item share its paragraph: one prefix pass scores them all (in predict).
        prefix_reuse=args.prefix_reuse,
        **paths,
    )


def trainer(args, **overrides) -> L.Trainer:
    settings = dict(
        accelerator="auto",
        devices=1,
        precision=args.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    return L.Trainer(**{**settings, **overrides})


def score(args, module: QLoRAMultipleChoice, items: list[Item], work: Path, name: str) -> Scored:
    """Score every cyclic shift of every item with ``Trainer.predict`` (one batched pass)."""
    path = work / f"{name}-copies.csv"
    write_items(balanced_copies(items), path)
    datamodule = data_module(args, work, predict_path=str(path))
    started = time.perf_counter()
    outputs = trainer(args).predict(module, datamodule=datamodule)
    seconds = time.perf_counter() - started
    copies: dict[str, dict[int, torch.Tensor]] = defaultdict(dict)
    for batch in outputs:
        for copy_id, probabilities, n in zip(batch["id"], batch["probabilities"], batch["num_choices"], strict=True):
            original, shift = split_shifted_id(copy_id)
            copies[original][shift] = probabilities[: int(n)].clamp_min(1e-12).log()
    tokens = sum(datamodule.encoded["predict"]["length"])
    return Scored(items, dict(copies), tokens, seconds)


def cross_fitted_offsets(scored: Scored) -> list[dict[int, torch.Tensor]]:
    """Per item, position offsets fitted on the other half of the items (even/odd): no item sees its own label."""
    items = scored.items
    width = max(item.num_choices for item in items)
    plain = torch.full((len(items), width), torch.finfo(torch.float32).min)
    for row, item in enumerate(items):
        plain[row, : item.num_choices] = scored.copies[item.id][0]
    answers = torch.tensor([item.answer - 1 for item in items])
    counts = torch.tensor([item.num_choices for item in items])
    fitted: list[dict[int, torch.Tensor]] = [{} for _ in items]
    for half in (0, 1):
        fit_rows = torch.arange(len(items)) % 2 != half
        offsets = fit_position_offsets(plain[fit_rows], answers[fit_rows], counts[fit_rows])
        for row in range(half, len(items), 2):
            fitted[row] = offsets
    return fitted


def outcomes(scored: Scored, pride_fraction: float, seed: int) -> dict[str, list[bool]]:
    """Each reading's right/wrong per scored row (natural: one per item; balanced: one per shifted copy).

    Every reading comes from the same forward passes: ``pride`` uses the cyclic passes of its calibration
    items and one pass (per copy) for the rest, ``offsets`` is fitted on the other half of the items.
    """
    items = scored.items
    calibration = calibration_items(items, pride_fraction, seed)
    prior = PositionPrior()
    for index in sorted(calibration):
        shifts = scored.copies[items[index].id]
        prior.update(torch.stack([shifts[s] for s in range(items[index].num_choices)]), items[index].num_choices)
    offsets = cross_fitted_offsets(scored)
    right: dict[str, list[bool]] = defaultdict(list)
    for index, item in enumerate(items):
        n, shifts = item.num_choices, scored.copies[item.id]
        cyclic = int(cyclic_average(shifts, n).argmax())
        right["cyclic"].append(cyclic + 1 == item.answer)
        for shift, log_probs in sorted(shifts.items()):
            answer = (item.answer - 1 + shift) % n + 1
            pride = (cyclic + shift) % n if index in calibration else int((log_probs - prior.log_prior(n)).argmax())
            choices = {
                "none": int(log_probs.argmax()),
                "pride": pride,
                "offsets": int((log_probs - offsets[index].get(n, torch.zeros(n))).argmax()),
            }
            for name, choice in choices.items():
                for reading in ("balanced",) + (("natural",) if shift == 0 else ()):
                    right[f"{name} {reading}"].append(choice + 1 == answer)
    return dict(right)


def row_items(items: list[Item], reading: str) -> list[str]:
    """The item id of each row of a reading, in ``outcomes`` order: balanced readings have one row per shifted
    copy, so an item's copies form one unit of a paired test."""
    if reading.endswith("balanced"):
        return [item.id for item in items for _ in range(item.num_choices)]
    return [item.id for item in items]


def readings(scored: Scored, right: dict[str, list[bool]]) -> dict[str, Accuracy]:
    """Accuracy of each reading beside the best constant predictors on the same items."""
    items = scored.items
    natural_gold = [item.answer for item in items]
    constant_position, constant = best_constant(natural_gold, [item.num_choices for item in items])
    # Each item's shifted copies put the answer at every position once: a constant is right once per item.
    balanced_gold = [
        (item.answer - 1 + shift) % item.num_choices + 1 for item in items for shift in range(item.num_choices)
    ]
    balanced_counts = [item.num_choices for item in items for _ in range(item.num_choices)]
    _, balanced_constant = best_constant(balanced_gold, balanced_counts)
    result = {
        name: Accuracy(sum(values), len(values), *wilson_interval(sum(values), len(values)))
        for name, values in sorted(right.items())
    }
    result[f"constant natural (always {constant_position})"] = constant
    result["constant balanced"] = balanced_constant
    return result


def source_subsets(items: list[Item]) -> dict[str, list[Item]]:
    """The whole set, then one subset per source/category column (when the items carry more than one)."""
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        if group_of(item):
            groups[group_of(item)].append(item)
    return {"all": items, **(dict(sorted(groups.items())) if len(groups) > 1 else {})}


def by_source(scored: Scored) -> dict[str, Scored]:
    """``source_subsets`` of a scored set, each keeping the scores of its items."""
    return {name: dataclasses.replace(scored, items=members) for name, members in source_subsets(scored.items).items()}


def per_group(scored: Scored) -> dict[str, Accuracy]:
    """Natural accuracy per source/category column, or per choice count when the file has neither."""
    groups: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for item in scored.items:
        name = group_of(item) or f"{item.num_choices}-choice"
        groups[name][0].append(int(scored.copies[item.id][0].argmax()) + 1)
        groups[name][1].append(item.answer)
    return {name: accuracy(p, g) for name, (p, g) in sorted(groups.items())}


def report(title: str, scored: Scored, args) -> dict[str, tuple[dict[str, Accuracy], dict[str, list[bool]]]]:
    """Print and return every reading, for the whole set and per source, with each row's right/wrong."""
    predicted = Counter(int(scored.copies[item.id][0].argmax()) + 1 for item in scored.items)
    print(f"\n{title}: {len(scored.items)} items, {scored.tokens / scored.seconds:.0f} tokens/s scored")
    print(f"  natural predictions by position   {dict(sorted(predicted.items()))}")
    result = {}
    for name, subset in by_source(scored).items():
        right = outcomes(subset, args.pride_fraction, args.seed)
        result[name] = (readings(subset, right), right)
        print(f"  -- {name} ({len(subset.items)} items)")
        for reading, value in result[name][0].items():
            print(f"  {reading:32s} {value}")
    return result


def competition_split(args, tokenizer) -> tuple[list[Item], list[Item]]:
    """A paragraph-grouped split within each source; ``max_train``/``max_heldout`` count per source."""
    items = load_items(Path(args.data_dir) / "train.csv")
    limits = dict(max_train=args.max_train, max_heldout=args.max_heldout, heldout_offset=args.heldout_offset)
    return per_source_split(
        items, tokenizer, args.max_tokens, args.template, args.val_fraction, args.split_seed, **limits
    )


READING_COLUMNS = [
    "model",
    "held-out",
    "phase",
    "none natural / balanced",
    "pride natural / balanced",
    "offsets natural / balanced",
    "cyclic",
    "best constant natural / balanced",
    "95% interval, none balanced",
    "train",
    "tok/s train / eval",
]


def record(args, name: str, phase: str, values: dict[str, Accuracy], train: str, rates: str) -> None:
    constant_key = next(k for k in values if k.startswith("constant natural"))
    append_result(
        "accuracy on a real model",
        READING_COLUMNS,
        [
            f"{Path(args.model).name} {args.quantization} {args.template} r{args.lora_r}"
            f"{f' top{args.lora_top_layers}' if args.lora_top_layers else ''} lr{args.learning_rate:g} "
            f"{args.loss_over}{' balanced-train' if args.balance_train else ''}"
            f"{f', few-shot {args.few_shot} {args.few_shot_selection}' if args.few_shot else ''}",
            f"{name}, {values['cyclic'].total} items <= {args.max_tokens} tok",
            phase,
            *(
                f"{values[f'{m} natural'].value:.3f} / {values[f'{m} balanced'].value:.3f}"
                for m in ("none", "pride", "offsets")
            ),
            f"{values['cyclic'].value:.3f}",
            f"{values[constant_key].value:.3f} / {values['constant balanced'].value:.3f}",
            f"[{values['none balanced'].low:.3f}, {values['none balanced'].high:.3f}]",
            train,
            rates,
        ],
    )


def evaluate_phase(args, module, sets: dict[str, list[Item]], work: Path, phase: str, train: str, train_rate: str):
    """Score every held-out set, print its readings per source and record one RESULTS row per source."""
    reports = {}
    for index, (set_name, items) in enumerate(sets.items()):
        scored = score(args, module, items, work, f"{phase}-{index}")
        reports[set_name] = report(f"{phase}, {set_name}", scored, args)
        for name, (values, _) in reports[set_name].items():
            label = set_name if name == "all" else f"{set_name}: {name}"
            record(args, label, phase, values, train, f"{train_rate} / {scored.tokens / scored.seconds:.0f}")
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "gemma-3-270m"))
    parser.add_argument("--mode", choices=sorted(MODES), default="cpu")
    parser.add_argument("--data-dir", default=str(COMPETITION), help="folder holding the competition train.csv")
    parser.add_argument("--heldout", nargs="*", default=[], help="extra labelled files, reported separately")
    parser.add_argument("--template", default="base")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--split-seed", type=int, default=42)
    parser.add_argument("--max-tokens", type=int, help="items longer than this are left out (mode default)")
    parser.add_argument("--max-heldout", type=int, help="first N short held-out items per source (mode default)")
    parser.add_argument(
        "--heldout-offset",
        type=int,
        default=0,
        help="skip the first N short held-out items per source (a replication on fresh items, same training items)",
    )
    parser.add_argument("--max-train", type=int, help="first N short train items per source (mode default: all)")
    parser.add_argument(
        "--extra-train",
        nargs="*",
        default=[],
        help="labelled files whose items (those fitting --max-tokens) join the fine-tune, e.g. `data generate` output",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--precision")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"])
    parser.add_argument("--quantization", default="none", choices=["none", "nf4"])
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-top-layers", type=int, help="adapters on the last N layers only (default: all)")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--loss-over", choices=["options", "vocab"], default="options")
    parser.add_argument("--balance-train", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--train-batch-size", type=int, default=4)
    parser.add_argument("--accumulate", type=int, default=2)
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument(
        "--prefix-reuse",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score the shifted copies of an item from one pass over their shared prompt prefix (same probabilities "
        "up to float rounding; about 2.5x fewer prompt tokens)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--few-shot", type=int, default=0, help="solved train items before each held-out item")
    parser.add_argument("--few-shot-selection", choices=["random", "bm25"], default="bm25")
    parser.add_argument("--pride-fraction", type=float, default=0.05)
    parser.add_argument("--skip-zero-shot", action="store_true")
    parser.add_argument("--skip-fine-tune", action="store_true", help="zero-shot readings only")
    parser.add_argument("--outcomes", type=Path, help="JSON of each item's right/wrong per reading, per phase")
    parser.add_argument(
        "--init-adapter",
        help="start the fine-tune from this LoRA adapter (model.init_adapter), e.g. a pretrain stage's",
    )
    parser.add_argument(
        "--write-split",
        type=Path,
        help="write the split's train.csv and heldout.csv here (e.g. to keep held-out paragraphs out of a corpus)",
    )
    args = parser.parse_args()
    if args.init_adapter and not args.skip_zero_shot:
        parser.error("--init-adapter: the first phase would not be zero-shot; add --skip-zero-shot")
    for key, value in MODES[args.mode].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if "auto" in (args.dtype, args.precision):
        dtype, reason = resolve_dtype("auto", this_machine())
        args.dtype = dtype if args.dtype == "auto" else args.dtype
        args.precision = trainer_precision(dtype) if args.precision == "auto" else args.precision
        print(f"precision auto -> {args.dtype} ({args.precision}): {reason}")
    threads = set_threads()
    L.seed_everything(args.seed, verbose=False)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train, heldout = competition_split(args, tokenizer)
    if args.write_split:
        args.write_split.mkdir(parents=True, exist_ok=True)
        write_items(train, args.write_split / "train.csv")
        write_items(heldout, args.write_split / "heldout.csv")
        print(f"wrote {args.write_split}/train.csv ({len(train)} items) and heldout.csv ({len(heldout)} items)")
    if args.few_shot:
        # Examples from the training side of the split only, attached before the shifted copies are made, so every
        # copy of an item holds the same examples (and shares them in its prompt prefix).
        heldout = with_examples(heldout, train, args.few_shot, args.few_shot_selection, args.seed)
    # After the examples are chosen: the split's training items stay the example pool.
    for path in args.extra_train:
        added = fitting_items(load_items(path), tokenizer, args.max_tokens, args.template)
        print(f"{path}: {len(added)} extra training items fit {args.max_tokens} tokens", flush=True)
        train += added
    extra = {
        Path(f).name: fitting_items(load_items(f), tokenizer, args.max_tokens, args.template, args.max_heldout)
        for f in args.heldout
    }
    print(
        f"{args.model}: train {len(train)} items (balanced={args.balance_train}), held-out {len(heldout)} "
        f"competition items ({dict(Counter(group_of(i) for i in heldout))}) + "
        f"{', '.join(f'{k}: {len(v)}' for k, v in extra.items()) or 'no extra files'}; "
        f"<= {args.max_tokens} tokens, {args.mode} mode, {threads} threads",
        flush=True,
    )
    module = QLoRAMultipleChoice(
        args.model,
        base=BaseSettings(
            quantization=args.quantization, compute_dtype=args.dtype, dtype=args.dtype, attn_implementation="sdpa"
        ),
        lora=LoraSettings(r=args.lora_r, alpha=2 * args.lora_r, top_layers=args.lora_top_layers),
        optimization=OptimizationSettings(learning_rate=args.learning_rate),
        loss_over=args.loss_over,
        # The zero-shot pass comes before training: the module must stay trainable (autocast runs it in bf16).
        inference_in_compute_dtype=False,
        init_adapter=args.init_adapter,
    )
    sets = {"competition split": heldout, **extra}
    kept: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        phases: dict[str, dict] = {}
        if not args.skip_zero_shot:
            phases["zero-shot"] = evaluate_phase(args, module, sets, work, "zero-shot", "-", "-")
        if not args.skip_fine_tune:
            write_items(train, work / "train.csv")
            write_items(heldout, work / "val.csv")
            started = time.perf_counter()
            trainer(args, max_epochs=args.epochs, accumulate_grad_batches=args.accumulate, gradient_clip_val=1.0).fit(
                module,
                datamodule=data_module(args, work, train_path=str(work / "train.csv"), val_path=str(work / "val.csv")),
            )
            train_seconds = time.perf_counter() - started
            train_tokens = sum(prompt_token_counts(train, tokenizer, args.template)) * args.epochs
            print(
                f"\nfine-tuned {len(train)} items x {args.epochs} epoch(s) in {train_seconds:.0f} s, "
                f"{train_tokens / train_seconds:.0f} tokens/s",
                flush=True,
            )
            phases["fine-tuned"] = evaluate_phase(
                args,
                module,
                sets,
                work,
                "fine-tuned",
                f"{len(train)} x {args.epochs}",
                f"{train_tokens / train_seconds:.0f}",
            )
        kept = {phase: {s: {n: right for n, (_, right) in v.items()} for s, v in sets_.items()}
                for phase, sets_ in phases.items()}  # fmt: skip
    if "zero-shot" in kept and "fine-tuned" in kept:
        print("\nfine-tuned minus zero-shot, paired on the same rows, items as units:")
        for set_name, subsets in kept["fine-tuned"].items():
            members = source_subsets(sets[set_name])  # the subsets `report` scored, in the same order
            for name, right in subsets.items():
                for reading in ("none natural", "none balanced", "pride natural", "cyclic"):
                    before = kept["zero-shot"][set_name][name][reading]
                    diff = paired_difference(before, right[reading], row_items(members[name], reading))
                    print(f"  {set_name} / {name} / {reading}: {diff}")
    if args.outcomes:
        args.outcomes.parent.mkdir(parents=True, exist_ok=True)
        args.outcomes.write_text(
            json.dumps(
                {
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "heldout_ids": [item.id for item in heldout],
                    "outcomes": kept,
                },
                ensure_ascii=False,
            ),
            encoding="utf-8",
        )
        print(f"wrote {args.outcomes}")


if __name__ == "__main__":
    main()
