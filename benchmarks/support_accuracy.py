"""Accuracy with and without retrieved support passages, on the same held-out items, in one run.

The held-out items are the accuracy harness's (a paragraph-grouped split of the competition train set). Support
passages come from a Kiwi BM25 index over every other competition paragraph (train + test, the item's own paragraph
left out), queried with the item's question and choices. Both prompts (``base`` and ``support``) are scored under
every cyclic shift of the choices in one pass each, so each reading stands beside the best constant predictor on
the same items: none (natural and balanced) and cyclic.

    python benchmarks/support_accuracy.py                       # Gemma 3 270M zero-shot on the CPU, ~15 minutes
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import readings, score  # noqa: E402
from common import ROOT, add_data_dir_argument, append_result, fitting_items, set_threads  # noqa: E402

from suneung_lit.backbone import BaseSettings
from suneung_lit.data.cleaning import clean  # noqa: E402
from suneung_lit.data.records import load_items  # noqa: E402
from suneung_lit.data.splitting import grouped_split  # noqa: E402
from suneung_lit.module import QLoRAMultipleChoice  # noqa: E402
from suneung_lit.retrieval.corpus import read_passages  # noqa: E402
from suneung_lit.retrieval.index import RetrievalIndex, build_index  # noqa: E402
from suneung_lit.retrieval.support import retrieve_for_items, with_support  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "gemma-3-270m"))
    add_data_dir_argument(parser)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--chunk-chars", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=768, help="items whose support prompt is longer are left out")
    parser.add_argument("--max-heldout", type=int, default=48)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--split-seed", type=int, default=42)
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument("--pride-fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    # The harness's settings that score() reads.
    args.train_batch_size, args.balance_train, args.precision = 1, False, "32-true"
    threads = set_threads()
    L.seed_everything(args.seed, verbose=False)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        paragraphs = {
            item.paragraph.strip(): None
            for name in ("train.csv", "test.csv")
            for item in load_items(args.data_dir / name)
        }
        corpus = work / "paragraphs.jsonl"
        corpus.write_text(
            "".join(
                json.dumps({"id": f"p{n}", "text": t}, ensure_ascii=False) + "\n" for n, t in enumerate(paragraphs)
            ),
            encoding="utf-8",
        )
        passages, _ = read_passages([corpus], chunk_chars=args.chunk_chars, overlap=args.chunk_chars // 5)
        build_index(passages, work / "index", progress=False)
        index = RetrievalIndex(work / "index")

        # The harness's split; its first --max-heldout items, then those whose support prompt fits.
        cleaned, _ = clean(load_items(args.data_dir / "train.csv"))
        heldout = grouped_split(cleaned, args.val_fraction, args.split_seed)[1][: args.max_heldout]
        heldout = with_support(heldout, retrieve_for_items(heldout, index, args.top_k))
        items = fitting_items(heldout, tokenizer, args.max_tokens, "support")
        with_passages = sum(bool(i.metadata["support"]) for i in items)
        print(
            f"{len(items)} held-out items <= {args.max_tokens} tokens with support; "
            f"{with_passages} got at least one passage"
        )

        module = QLoRAMultipleChoice(
            args.model, base=BaseSettings(quantization="none", compute_dtype="float32", dtype="float32")
        )
        results = {}
        for template in ("base", "support"):
            args.template = template
            started = time.perf_counter()
            scored = score(args, module, items, work, f"zs-{template}")
            values = readings(scored, args.pride_fraction, args.seed)
            results[template] = values
            constant = next(v for k, v in values.items() if k.startswith("constant natural"))
            print(
                f"{template}: none natural {values['none natural']}, balanced {values['none balanced']}, "
                f"cyclic {values['cyclic']}; best constant natural {constant.value:.3f}, balanced "
                f"{values['constant balanced'].value:.3f}; {scored.tokens / scored.seconds:.0f} tok/s, "
                f"{time.perf_counter() - started:.0f} s"
            )
            append_result(
                "accuracy with and without support passages (zero-shot)",
                ["model", "items", "prompt", "none natural / balanced", "cyclic", "best constant natural / balanced",
                 "95% interval, none balanced", "tok/s"],
                [f"{Path(args.model).name}, top-{args.top_k} of {len(passages)} passages", len(items), template,
                 f"{values['none natural'].value:.3f} / {values['none balanced'].value:.3f}",
                 f"{values['cyclic'].value:.3f}", f"{constant.value:.3f} / {values['constant balanced'].value:.3f}",
                 f"[{values['none balanced'].low:.3f}, {values['none balanced'].high:.3f}]",
                 f"{scored.tokens / scored.seconds:.0f}"],
            )  # fmt: skip
    delta = results["support"]["cyclic"].value - results["base"]["cyclic"].value
    print(f"support_accuracy threads={threads} items={len(items)} cyclic_delta={delta:+.4f}")


if __name__ == "__main__":
    main()
