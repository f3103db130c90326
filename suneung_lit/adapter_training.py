"""What every training stage shares: the base loaded once per process with LoRA on it (optionally starting from a
saved adapter), adapter-only checkpoints that refuse another base, and the optimizer with its schedule.

The multiple-choice module (``suneung_lit.module``) and the language-model stage (``suneung_lit.pretraining``)
both derive from :class:`AdapterTraining`; each keeps only its own steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from types import FrameType
from typing import Any, TypeVar

import lightning as L
import torch

from suneung_lit import checkpoints, sharding
from suneung_lit.backbone import (
    BaseSettings,
    LoraSettings,
    add_lora,
    load_adapter_weights,
    load_base_model,
    quantize_dynamic_int8,
)
from suneung_lit.optimization import OptimizationSettings, build_optimizer, warmup_cosine

Settings = TypeVar("Settings")


def as_settings(cls: type[Settings], value: Settings | Mapping[str, Any]) -> Settings:
    """A settings dataclass as given, or rebuilt from the plain dict a checkpoint's hyperparameters keep."""
    return value if isinstance(value, cls) else cls(**value)


class AdapterTraining(L.LightningModule):
    """A LightningModule whose trainable state is the LoRA adapter of ``self.model`` (set by ``configure_model``).

    Subclasses call ``_keep_settings`` from their ``__init__``, whose arguments include ``model_name_or_path``,
    ``base``, ``lora``, ``optimization``, ``gradient_checkpointing`` and ``init_adapter``.
    """

    base: BaseSettings
    lora: LoraSettings
    optimization: OptimizationSettings
    model: torch.nn.Module | None

    def _keep_settings(self, base: Any, lora: Any, optimization: Any, frame: FrameType | None) -> None:
        """Typed settings on the module, and every argument of the subclass's ``__init__`` (``frame``) saved as a
        hyperparameter; the settings as plain dicts, which checkpoints load under ``torch.load(weights_only=True)``."""
        self.base, self.lora = as_settings(BaseSettings, base), as_settings(LoraSettings, lora)
        self.optimization = as_settings(OptimizationSettings, optimization)
        self.save_hyperparameters(frame=frame)
        self.hparams.update({k: asdict(getattr(self, k)) for k in ("base", "lora", "optimization")})
        self.model = None

    def configure_model(self) -> None:
        """Loads the base model once per process, on the strategy's device, and wraps it with LoRA, whose weights
        start from ``init_adapter`` when one is named (a checkpoint loaded afterwards still wins)."""
        if self.model is not None:
            return
        hp = self.hparams
        device = self.trainer.strategy.root_device if self._trainer is not None else None
        sharded = sharding.is_sharded(self._trainer)
        base = load_base_model(hp.model_name_or_path, device, self.base, sharded)
        self.model = add_lora(base, self.lora, hp.gradient_checkpointing, sharded)
        # Taken before any sharding: under FSDP the embedding is a flat shard outside forward passes.
        self._base_fingerprint = checkpoints.base_model_fingerprint(self.model, hp.model_name_or_path)
        # A checkpoint being restored carries its own adapter: the starting folder is neither needed nor read.
        if hp.get("init_adapter") and not getattr(self, "_restoring", False):
            loaded = load_adapter_weights(self.model, hp.init_adapter, self.lora)
            print(f"model.init_adapter: {loaded} LoRA tensors from {hp.init_adapter}")
        if self.base.quantization == "dynamic_int8":
            quantize_dynamic_int8(self.model, self.base.torch_compute_dtype)

    def _fingerprint(self) -> dict[str, str]:
        """The base's fingerprint, as taken when it was loaded (or now, for a model set from outside)."""
        if getattr(self, "_base_fingerprint", None) is None:
            self._base_fingerprint = checkpoints.base_model_fingerprint(self.model, self.hparams.model_name_or_path)
        return self._base_fingerprint

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["base_model"] = self._fingerprint()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restoring = True
        if checkpoint.get("base_model") is not None:
            self.configure_model()
            checkpoints.check_same_base(checkpoint["base_model"], self._fingerprint())

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Only trainable (LoRA) weights: a 32B run checkpoints in megabytes, not the frozen base."""
        return checkpoints.trainable_state(self, kwargs.get("prefix", args[1] if len(args) > 1 else ""))

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """Load adapter weights, refusing checkpoints made for another base model or LoRA shape."""
        self.configure_model()
        described = f"{self.hparams.model_name_or_path}, LoRA r={self.lora.r}, targets={list(self.lora.target_modules)}"
        checkpoints.load_trainable_state(self, state_dict, described)
        return torch.nn.modules.module._IncompatibleKeys([], [])

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm=None
    ) -> None:
        """Clipping by norm under FSDP through the root's ``clip_grad_norm_``, the norm over every rank's shards
        (Lightning's FSDP precision refuses it; every shipped config clips at 1.0)."""
        if gradient_clip_val and sharding.is_sharded(self._trainer) and gradient_clip_algorithm in (None, "norm"):
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> dict[str, Any]:
        optimization = self.optimization
        optimizer = build_optimizer([p for p in self.parameters() if p.requires_grad], optimization)
        total = optimization.scheduler_total_steps or int(self.trainer.estimated_stepping_batches)
        scheduler = warmup_cosine(optimizer, optimization.warmup_ratio, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
