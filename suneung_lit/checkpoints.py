"""Adapter-only checkpoints: the trainable weights, and a fingerprint of the frozen base they were trained on.

A checkpoint holds the LoRA weights only (a 32B run checkpoints in megabytes, not the frozen base) and a
fingerprint of the base model; loading refuses weights of another shape and adapters trained on another base.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import torch

# Where the model was loaded from and how it was loaded do not change which base it is.
CONFIG_KEYS_NOT_IN_FINGERPRINT = {
    "_name_or_path",
    "transformers_version",
    "_commit_hash",
    "quantization_config",
    "dtype",
    "torch_dtype",
    "use_cache",
}
FINGERPRINT_KEYS = ("config_sha256", "embedding_sha256")


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's adapter weights do not fit the configured model."""


def base_model_fingerprint(model: torch.nn.Module, name_or_path: str) -> dict[str, str]:
    """Identifies a (peft-wrapped) frozen base: name, architecture, and a hash of a slice of its embedding.

    Adapters trained on one base are meaningless on another of the same shape; the weights hash tells
    them apart where shapes cannot.
    """
    embedding = model.get_input_embeddings().weight
    # Rounded to bf16 so that the same base loaded in another dtype still matches.
    sample = embedding[: min(8, embedding.shape[0])].detach().to(torch.bfloat16).float().cpu().contiguous()
    config = model.get_base_model().config.to_dict()
    architecture = {k: v for k, v in config.items() if k not in CONFIG_KEYS_NOT_IN_FINGERPRINT}
    return {
        "model_name_or_path": str(name_or_path),
        "config_sha256": _short_sha256(json.dumps(architecture, sort_keys=True, default=str).encode()),
        "embedding_sha256": _short_sha256(sample.numpy().tobytes()),
    }


def _short_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def check_same_base(saved: Mapping[str, str], current: Mapping[str, str]) -> None:
    """Raise unless a checkpoint's fingerprint ``saved`` names the same base as ``current``."""
    differs = [key for key in FINGERPRINT_KEYS if saved.get(key) != current[key]]
    if differs:
        raise CheckpointMismatchError(
            f"checkpoint was trained on base model {saved.get('model_name_or_path')!r}, but the configured base "
            f"{current['model_name_or_path']!r} differs ({', '.join(differs)}); use the base model the adapter "
            "was trained on"
        )


def trainable_state(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The trainable (LoRA) parameters of ``module`` by name: what a checkpoint keeps."""
    return {f"{prefix}{name}": p.detach() for name, p in module.named_parameters() if p.requires_grad}


def load_trainable_state(module: torch.nn.Module, state: Mapping[str, torch.Tensor], described_as: str) -> None:
    """Copy ``state`` into the trainable parameters of ``module``, which it must match name for name and shape
    for shape; ``described_as`` names the configured model in the error."""
    copy_into({name: p for name, p in module.named_parameters() if p.requires_grad}, state, described_as)


def copy_into(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], described_as: str) -> None:
    """Copy ``state`` into the tensors of ``expected`` (by name), refusing any missing, extra or reshaped one."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{name}: checkpoint {tuple(state[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in set(expected) & set(state)
        if state[name].shape != expected[name].shape
    ]
    if missing or unexpected or wrong_shape:
        raise CheckpointMismatchError(
            f"checkpoint does not match the configured model ({described_as}): {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong_shape)} with other shapes; "
            f"e.g. {(missing + unexpected + wrong_shape)[:3]}"
        )
    with torch.no_grad():
        for name, value in state.items():
            expected[name].copy_(value)
