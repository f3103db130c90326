"""Build the Qwen2.5 tokenizer and a tiny random Qwen2 model offline, for tests and the CPU demo.

The Hugging Face hub is not always reachable (CI, air-gapped clusters). Qwen2.5's byte-level BPE ranks are
published as ``qwen.tiktoken`` inside the ``dashscope`` PyPI package; with Qwen's pre-tokenizer pattern and its
special tokens they tokenize exactly like ``Qwen/Qwen2.5-*-Instruct``. The tiny model shares that vocabulary
and architecture, so every code path (4-bit loading, LoRA, option-token scoring) runs as it would on the real
model, only with random weights.

    python -m suneung_lit.tiny artifacts/tiny-qwen2
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

# Qwen2's split pattern: like cl100k's, but digits are split one by one (\p{N}, not \p{N}{1,3}).
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# Qwen2.5's added tokens, in id order starting right after the 151,643 BPE ranks.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN_PLAIN_ADDED_TOKENS = ("<tool_call>", "</tool_call>")
QWEN_FIM_TOKENS = (
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
# Qwen3 adds these after Qwen2.5's (ids 151665-151668), as plain added tokens: the thinking block is text to it.
QWEN3_ADDED_TOKENS = ("<tool_response>", "</tool_response>", "<think>", "</think>")
# Qwen3's own chat template (provenance: suneung_lit/data/chat_templates/README.md).
QWEN3_CHAT_TEMPLATE = Path(__file__).resolve().parent / "data" / "chat_templates" / "qwen3.jinja"
FAMILIES = ("qwen2", "qwen3")
# ChatML as Qwen2.5 renders it (without tool calling): a default system turn when none is given.
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def find_qwen_tiktoken() -> Path:
    """Locate ``qwen.tiktoken`` in the installed dashscope package without importing it.

    The package is installed with ``--no-deps`` (only its data file is needed), so importing it would fail.
    """
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "qwen.tiktoken not found: install it with `pip install --no-deps dashscope==2.0.2` or pass --tiktoken PATH"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "resources" / "qwen.tiktoken"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"dashscope is installed but has no resources/qwen.tiktoken in {spec.origin}")


def build_tokenizer(tiktoken_path: str | Path | None = None, family: str = "qwen2"):
    """A Qwen2TokenizerFast-equivalent tokenizer built from the tiktoken ranks (151,665 ids; Qwen3's 151,669, with its
    thinking tokens and chat template)."""
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = Path(tiktoken_path) if tiktoken_path else find_qwen_tiktoken()
    backend = TikTokenConverter(vocab_file=str(path), pattern=QWEN_PATTERN).converted()
    backend.normalizer = normalizers.NFC()
    # Added in id order so that <|endoftext|> is 151643, <|im_start|> 151644 and so on, as in Qwen2.5.
    for group, special in (
        (QWEN_SPECIAL_TOKENS, True),
        (QWEN_PLAIN_ADDED_TOKENS, False),
        (QWEN_FIM_TOKENS, True),
    ):
        backend.add_tokens([AddedToken(token, special=special, normalized=False) for token in group])
    if family == "qwen3":
        backend.add_tokens([AddedToken(token, special=False, normalized=False) for token in QWEN3_ADDED_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=32768,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE.read_text(encoding="utf-8") if family == "qwen3" else CHATML_TEMPLATE
    expected = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|file_sep|>": 151664}
    if family == "qwen3":
        expected.update({"<think>": 151667, "</think>": 151668})
    actual = {token: tokenizer.convert_tokens_to_ids(token) for token in expected}
    if actual != expected:
        raise RuntimeError(f"special token ids differ from Qwen2.5's: {actual} != {expected}")
    return tokenizer


def build_tiny_model(
    output_dir: str | Path,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 256,
    embedding_std: float = 0.5,
    seed: int = 0,
    tiktoken_path: str | Path | None = None,
    family: str = "qwen2",
) -> Path:
    """Write the offline tokenizer and a randomly initialised Qwen2ForCausalLM (``family`` qwen3:
    Qwen3ForCausalLM, with per-head query/key norms and Qwen3's chat template) to ``output_dir``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    if family not in FAMILIES:
        raise ValueError(f"family {family!r}: one of {FAMILIES}")
    output_dir = Path(output_dir)
    tokenizer = build_tokenizer(tiktoken_path, family)
    config_class, model_class = (
        (Qwen3Config, Qwen3ForCausalLM) if family == "qwen3" else (Qwen2Config, Qwen2ForCausalLM)
    )
    extra = {"head_dim": hidden_size // num_heads} if family == "qwen3" else {}
    config = config_class(
        **extra,
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = model_class(config)
    # The embedding is tied to the frozen LM head. With the usual 0.02 init, a 128-wide hidden state can raise
    # a token's logit only ~2.6 above the rest, too little to win over 151k tokens; trained models have far
    # larger logit ranges. A wider init lets the answer-token loss fall as it would on a real model.
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, embedding_std)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", choices=FAMILIES, default="qwen2", help="qwen3: Qwen3's layers and chat template")
    parser.add_argument("--tiktoken", type=Path, default=None, help="path to qwen.tiktoken")
    parser.add_argument("--force", action="store_true", help="rebuild even if output_dir holds a model")
    args = parser.parse_args(argv)
    if (args.output_dir / "config.json").is_file() and not args.force:
        print(f"{args.output_dir} already holds a model (use --force to rebuild)")
        return
    path = build_tiny_model(
        args.output_dir, args.hidden_size, args.layers, seed=args.seed, tiktoken_path=args.tiktoken, family=args.family
    )
    print(f"wrote tiny {args.family} model and tokenizer to {path}")


if __name__ == "__main__":
    main()
