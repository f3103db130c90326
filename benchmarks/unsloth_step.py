"""The baseline training step of ``train_memory.py`` (full-sequence logits, every label but the answer set to -100,
as a completion-only SFT script does) on a model that unsloth loads in NF4 and patches, with unsloth's LoRA of the
same rank, scaling and targets as ours: what a user who trains with unsloth gets. Started by
``train_memory.py --unsloth`` in a process of its own, since unsloth must be imported before transformers and
peft, which it patches; prints one JSON line per length.

    python benchmarks/unsloth_step.py --folder FOLDER --lengths 1024 2048 [train_memory.py's options]
"""

import unsloth  # noqa: F401, I001  (first: it patches transformers, peft and trl as they are imported)

import json
import sys
from pathlib import Path

import torch
from unsloth import FastLanguageModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_memory import make_parser, measure  # noqa: E402

from suneung_lit.backbone import LoraSettings  # noqa: E402


def load(folder: Path, max_length: int, gradient_checkpointing: bool):
    """The folder's model in NF4 (double quantization, as ours) with unsloth's LoRA, in training mode."""
    gpu = torch.cuda.is_available()
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(folder),
        max_seq_length=max_length,
        dtype=torch.bfloat16 if gpu else torch.float32,  # train_memory.py's dtypes
        load_in_4bit=True,
        local_files_only=True,
    )
    ours = LoraSettings(dropout=0.0)
    model = FastLanguageModel.get_peft_model(
        model,
        r=ours.r,
        lora_alpha=ours.alpha,
        lora_dropout=0.0,
        target_modules=list(ours.target_modules),
        use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,
        random_state=0,
    )
    model.train()
    return model, tokenizer


def main() -> None:
    parser = make_parser()
    parser.add_argument("--folder", type=Path, required=True, help="a model folder (common.save_random_preset)")
    args = parser.parse_args()
    model, tokenizer = load(args.folder, max(args.lengths) + 1, args.gradient_checkpointing)
    print(f"unsloth {unsloth.__version__}: {type(model).__name__} from {args.folder}", file=sys.stderr)
    for length in args.lengths:
        print(json.dumps(measure(model, tokenizer, "baseline", length, args)), flush=True)


if __name__ == "__main__":
    main()
