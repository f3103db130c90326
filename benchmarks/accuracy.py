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
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import COMPETITION, ROOT, append_result, fitting_items, prompt_token_counts, set_threads  # noqa: E402

from suneung_lit.data.cleaning import clean  # noqa: E402
from suneung_lit.data.datamodule import MultipleChoiceDataModule  # noqa: E402
from suneung_lit.data.records import Item, load_items, write_items  # noqa: E402
from suneung_lit.data.splitting import grouped_split  # noqa: E402
from suneung_lit.data.tokenization import group_of  # noqa: E402
from suneung_lit.debias import (  # noqa: E402
    PositionPrior,
    calibration_items,
    cyclic_average,
    fit_position_offsets,
    split_shifted_id,
)
from suneung_lit.evaluation import Accuracy, accuracy, balanced_copies, best_constant  # noqa: E402
from suneung_lit.module import QLoRAMultipleChoice  # noqa: E402

MODES = {
    # Short items keep a CPU run under 40 minutes; the competition's short items are all 4-choice.
    "cpu": dict(max_tokens=448, max_heldout=120, max_train=None, epochs=1, precision="32-true", dtype="float32"),
    "full": dict(max_tokens=2048, max_heldout=None, max_train=None, epochs=2, precision="bf16-mixed", dtype="bfloat16"),
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
        max_length=args.max_tokens,
        train_batch_size=args.train_batch_size,
        eval_batch_size=args.eval_batch_size,
        cache_dir=str(work / "cache"),
        # The same on-the-fly answer balancing as `fit` with data.balance_train (new positions every epoch).
        balance_train=args.balance_train,
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


def readings(scored: Scored, pride_fraction: float, seed: int) -> dict[str, Accuracy]:
    """Accuracy with each debiasing (natural and balanced copies) beside the best constant predictors.

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
    predicted: dict[str, list[int]] = defaultdict(list)
    gold: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        n, shifts = item.num_choices, scored.copies[item.id]
        cyclic = int(cyclic_average(shifts, n).argmax())
        predicted["cyclic"].append(cyclic + 1)
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
                    predicted[f"{name} {reading}"].append(choice + 1)
                    gold[f"{name} {reading}"].append(answer)
    natural_gold = [item.answer for item in items]
    constant_position, constant = best_constant(natural_gold, [item.num_choices for item in items])
    balanced_counts = [item.num_choices for item in items for _ in range(item.num_choices)]
    _, balanced_constant = best_constant(gold["none balanced"], balanced_counts)
    result = {"cyclic": accuracy(predicted.pop("cyclic"), natural_gold)}
    result.update({name: accuracy(values, gold[name]) for name, values in sorted(predicted.items())})
    result[f"constant natural (always {constant_position})"] = constant
    result["constant balanced"] = balanced_constant
    return result


def per_group(scored: Scored) -> dict[str, Accuracy]:
    """Natural accuracy per source/category column, or per choice count when the file has neither."""
    groups: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for item in scored.items:
        name = group_of(item) or f"{item.num_choices}-choice"
        groups[name][0].append(int(scored.copies[item.id][0].argmax()) + 1)
        groups[name][1].append(item.answer)
    return {name: accuracy(p, g) for name, (p, g) in sorted(groups.items())}


def report(title: str, scored: Scored, args) -> dict[str, Accuracy]:
    values = readings(scored, args.pride_fraction, args.seed)
    predicted = Counter(int(scored.copies[item.id][0].argmax()) + 1 for item in scored.items)
    print(f"\n{title}: {len(scored.items)} items, {scored.tokens / scored.seconds:.0f} tokens/s scored")
    print(f"  natural predictions by position   {dict(sorted(predicted.items()))}")
    for name, value in {**values, **{f"group {k}": v for k, v in per_group(scored).items()}}.items():
        print(f"  {name:32s} {value}")
    return values


def competition_split(args, tokenizer) -> tuple[list[Item], list[Item]]:
    items, _ = clean(load_items(Path(args.data_dir) / "train.csv"))
    train, heldout = grouped_split(items, args.val_fraction, args.split_seed)
    train = fitting_items(train, tokenizer, args.max_tokens, args.template, args.max_train)
    heldout = fitting_items(heldout, tokenizer, args.max_tokens, args.template, args.max_heldout)
    return train, heldout


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
    parser.add_argument("--max-heldout", type=int, help="first N short held-out items (mode default)")
    parser.add_argument("--max-train", type=int, help="first N short train items (mode default: all)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--precision")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"])
    parser.add_argument("--quantization", default="none", choices=["none", "nf4"])
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--loss-over", choices=["options", "vocab"], default="options")
    parser.add_argument("--balance-train", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--train-batch-size", type=int, default=4)
    parser.add_argument("--accumulate", type=int, default=2)
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--pride-fraction", type=float, default=0.05)
    parser.add_argument("--skip-zero-shot", action="store_true")
    args = parser.parse_args()
    for key, value in MODES[args.mode].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    threads = set_threads()
    L.seed_everything(args.seed, verbose=False)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train, heldout = competition_split(args, tokenizer)
    extra = {
        Path(f).name: fitting_items(load_items(f), tokenizer, args.max_tokens, args.template, args.max_heldout)
        for f in args.heldout
    }
    print(
        f"{args.model}: train {len(train)} items (balanced={args.balance_train}), held-out {len(heldout)} "
        f"competition items + {', '.join(f'{k}: {len(v)}' for k, v in extra.items()) or 'no extra files'}; "
        f"<= {args.max_tokens} tokens, {args.mode} mode"
    )
    module = QLoRAMultipleChoice(
        args.model,
        quantization=args.quantization,
        compute_dtype=args.dtype,
        dtype=args.dtype,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        loss_over=args.loss_over,
        learning_rate=args.learning_rate,
        attn_implementation="sdpa",
    )
    sets = {"competition split": heldout, **extra}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        zero_shot, zero_shot_rates = {}, {}
        if not args.skip_zero_shot:
            for name, items in sets.items():
                scored = score(args, module, items, work, f"zs-{len(zero_shot)}")
                zero_shot[name] = report(f"zero-shot, {name}", scored, args)
                zero_shot_rates[name] = scored.tokens / scored.seconds
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
            f"{train_tokens / train_seconds:.0f} tokens/s"
        )
        tuned = {}
        for index, (name, items) in enumerate(sets.items()):
            scored = score(args, module, items, work, f"ft-{index}")
            tuned[name] = report(f"fine-tuned, {name}", scored, args)
            eval_rate = scored.tokens / scored.seconds
            for phase, values, rate in (
                ("zero-shot", zero_shot.get(name), zero_shot_rates.get(name)),
                ("fine-tuned", tuned[name], eval_rate),
            ):
                if values is None:
                    continue
                constant_key = next(k for k in values if k.startswith("constant natural"))
                append_result(
                    "accuracy on a real model",
                    [
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
                    ],
                    [
                        f"{Path(args.model).name} {args.quantization} r{args.lora_r} lr{args.learning_rate:g} "
                        f"{args.loss_over}{' balanced-train' if args.balance_train else ''}",
                        f"{name}, {len(items)} items <= {args.max_tokens} tok",
                        phase,
                        *(
                            f"{values[f'{m} natural'].value:.3f} / {values[f'{m} balanced'].value:.3f}"
                            for m in ("none", "pride", "offsets")
                        ),
                        f"{values['cyclic'].value:.3f}",
                        f"{values[constant_key].value:.3f} / {values['constant balanced'].value:.3f}",
                        f"[{values['none balanced'].low:.3f}, {values['none balanced'].high:.3f}]",
                        f"{len(train)} x {args.epochs}",
                        f"{train_tokens / train_seconds:.0f} / {rate:.0f}",
                    ],
                )
    main_set = tuned["competition split"]
    margin = main_set["none balanced"].value - main_set["constant balanced"].value
    excludes = main_set["none balanced"].low > main_set["constant balanced"].value
    print(
        f"accuracy model={Path(args.model).name} threads={threads} balanced={main_set['none balanced'].value:.4f} "
        f"constant_balanced={main_set['constant balanced'].value:.4f} margin={margin:+.4f} "
        f"interval_excludes_constant={str(excludes).lower()} natural={main_set['none natural'].value:.4f} "
        f"cyclic={main_set['cyclic'].value:.4f}"
    )


if __name__ == "__main__":
    main()
