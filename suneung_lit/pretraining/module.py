"""The language-model stage: LoRA on the same (quantized) base, causal-LM loss on every token of the corpus."""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torchmetrics import MeanMetric

from suneung_lit.adapter_training import AdapterTraining
from suneung_lit.backbone import BaseSettings, LoraSettings
from suneung_lit.optimization import OptimizationSettings


class CausalLMPretraining(AdapterTraining):
    """Continued pretraining: trains LoRA adapters on a text corpus with the next-token loss over every token; the
    adapter it exports is where the multiple-choice ``fit`` starts (``model.init_adapter``).

    Args:
        model_name_or_path: hub name or local folder of the base model (the one the fine-tune will use).
        base: how the base is loaded (``backbone.BaseSettings``), as in the fine-tune.
        lora: the adapters (``backbone.LoraSettings``); the fine-tune's ``model.lora`` must match them.
        optimization: optimizer, learning rate and schedule (``optimization.OptimizationSettings``).
        gradient_checkpointing: recompute activations in backward to save memory (long blocks).
        init_adapter: an adapter folder to continue from (null: fresh adapters).
    """

    def __init__(
        self,
        model_name_or_path: str,
        base: BaseSettings = BaseSettings(),
        lora: LoraSettings = LoraSettings(),
        optimization: OptimizationSettings = OptimizationSettings(),
        gradient_checkpointing: bool = False,
        init_adapter: str | None = None,
    ):
        super().__init__()
        self._keep_settings(base, lora, optimization, inspect.currentframe())
        # Mean loss per predicted token over the whole validation split (rows of different lengths weigh by tokens).
        self.val_loss = MeanMetric()

    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        output = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
        predicted = int((batch["labels"][:, 1:] != -100).sum())  # transformers shifts the labels by one
        return output.loss, predicted

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, tokens = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        self.log("train/tokens", float(tokens), reduce_fx="sum", on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, tokens = self._loss(batch)
        self.val_loss.update(loss.detach().float(), tokens)

    def on_validation_epoch_end(self) -> None:
        if self.val_loss.update_count == 0:
            return
        value = self.val_loss.compute()
        self.log("val/loss", value, prog_bar=True)
        self.log("val/perplexity", torch.exp(value) if value < 50 else torch.tensor(math.inf))
        self.val_loss.reset()
