"""The LightningModule: a quantized causal LM with LoRA adapters, trained and scored at the answer position.

It composes the parts: the base and its adapters (``backbone``), answering a batch (``answering``: scoring with
``debias``, or generation with ``reasoning``), adapter-only checkpoints (``checkpoints``) and the optimizer
(``optimization``); each step here reads in a few lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.classification import MulticlassAccuracy

from suneung_lit import checkpoints
from suneung_lit.answering import Answerer, ItemAnswers, Stage, build_answerer
from suneung_lit.backbone import (
    DEFAULT_TARGET_MODULES,
    DtypeChoice,
    QuantizationChoice,
    add_lora,
    cast_unquantized,
    load_base_model,
    quantize_dynamic_int8,
)
from suneung_lit.data.records import DEFAULT_MAX_CHOICES
from suneung_lit.data.shifting import DebiasChoice
from suneung_lit.data.tokenization import option_token_ids
from suneung_lit.debias import PositionOffsets
from suneung_lit.metrics import GroupedAccuracy
from suneung_lit.optimization import OptimizerChoice, build_optimizer, warmup_cosine
from suneung_lit.reasoning.rationale import rationale_loss
from suneung_lit.scoring import batch_option_scores


class QLoRAMultipleChoice(L.LightningModule):
    """Fine-tunes LoRA adapters on a 4-bit causal LM to put the answer digit after a multiple-choice prompt.

    Args:
        model_name_or_path: hub name or local folder of the base model (and its tokenizer).
        quantization: ``nf4``/``fp4`` (4-bit), ``int8`` (bitsandbytes), ``none``, or ``dynamic_int8``: torch's
            dynamic int8 matmuls for CPU validate/test/predict, 2.8x float32 but changing 7 of 19 Qwen answers.
        double_quant: quantize the 4-bit quantization constants too (saves ~0.4 bit per weight).
        compute_dtype: dtype the 4-bit matmuls run in.
        dtype: dtype of the weights that are not quantized (embeddings, norms) when loading.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rsLoRA).
        lora_dropout: dropout on the LoRA input.
        target_modules: module names that get adapters.
        use_rslora: rank-stabilised scaling.
        use_dora: weight-decomposed LoRA.
        lora_top_layers: adapters on the last N transformer layers only (default: every layer); backward stops
            at the lowest adapted layer, which makes a CPU fine-tune of a real 1.5B model fit an afternoon.
        gradient_checkpointing: recompute activations in backward to save memory.
        loss_over: ``vocab`` (cross-entropy of the answer token over the full vocabulary) or ``options``
            (over the option tokens only).
        max_choices: number of option tokens scored ("1".."max_choices").
        optimizer: ``adamw`` or a bitsandbytes 8-bit/paged AdamW.
        learning_rate: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_ratio: share of the optimizer steps spent warming up linearly.
        scheduler_total_steps: steps of the cosine schedule; default: the trainer's estimated stepping batches.
        trust_remote_code: run model code from the hub (off unless you trust the repository).
        attn_implementation: e.g. ``sdpa``, ``eager`` or ``flash_attention_2``; default: transformers' choice.
        debias: option-position debiasing in validate, test and predict (``suneung_lit.debias``): ``none``,
            ``cyclic`` (all ``n`` cyclic shifts averaged), ``pride`` (a position prior from the cyclic passes of
            ``data.pride_fraction`` of the items) or ``offsets`` (fitted on labelled validation data, kept in the
            checkpoint, applied by test and predict). Training is never debiased.
        answer_mode: ``logits`` reads the answer from the option logits at the answer position; ``generate``
            writes a chain of thought first (template ``cot_json``) and extracts the answer from it
            (``suneung_lit.reasoning``; unusable texts are scored after them). Validate, test and predict only.
        max_new_tokens: longest generated text in ``generate`` mode.
        inference_in_compute_dtype: validate, test and predict cast every unquantized weight (norms, embeddings,
            head, LoRA) to ``compute_dtype``; training keeps them float32, which would make every activation of an
            inference pass float32 (40% of a 32B predict's H100 time). Such a module is not trained further.
    """

    def __init__(
        self,
        model_name_or_path: str,
        quantization: QuantizationChoice = "nf4",
        double_quant: bool = True,
        compute_dtype: DtypeChoice = "bfloat16",
        dtype: DtypeChoice = "bfloat16",
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES,
        use_rslora: bool = False,
        use_dora: bool = False,
        lora_top_layers: int | None = None,
        gradient_checkpointing: bool = False,
        loss_over: Literal["vocab", "options"] = "vocab",
        max_choices: int = DEFAULT_MAX_CHOICES,
        optimizer: OptimizerChoice = "adamw",
        learning_rate: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.1,
        scheduler_total_steps: int | None = None,
        trust_remote_code: bool = False,
        attn_implementation: str | None = None,
        debias: DebiasChoice = "none",
        answer_mode: Literal["logits", "generate"] = "logits",
        max_new_tokens: int = 256,
        inference_in_compute_dtype: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model: torch.nn.Module | None = None
        self.option_ids: list[int] = []
        metric = dict(num_classes=max_choices, average="micro")
        self.train_acc, self.val_acc, self.test_acc = (MulticlassAccuracy(**metric) for _ in range(3))
        self.group_names: list[str] = []
        self.val_group_acc: GroupedAccuracy | None = None
        self.position_offsets = PositionOffsets()
        self.answerer: Answerer | None = None
        self._cast_for_inference = False

    # ---- model ---------------------------------------------------------------------------------------------------

    def configure_model(self) -> None:
        """Loads the base model once per process, on the strategy's device, and wraps it with LoRA."""
        if self.model is not None:
            return
        hp = self.hparams
        device = self.trainer.strategy.root_device if self._trainer is not None else None
        dtypes = {"compute_dtype": getattr(torch, hp.compute_dtype), "dtype": getattr(torch, hp.dtype)}
        loading = ("quantization", "double_quant", "trust_remote_code", "attn_implementation")
        base = load_base_model(hp.model_name_or_path, device, **dtypes, **{k: hp[k] for k in loading})
        lora = ("lora_r", "lora_alpha", "lora_dropout", "use_rslora", "use_dora", "gradient_checkpointing")
        self.model = add_lora(
            base, target_modules=list(hp.target_modules), top_layers=hp.lora_top_layers, **{k: hp[k] for k in lora}
        )
        if hp.quantization == "dynamic_int8":
            quantize_dynamic_int8(self.model, getattr(torch, hp.compute_dtype))

    def setup(self, stage: str) -> None:
        """Option token ids, the answerer and the data sources, from the data module's tokenizer and template."""
        hp = self.hparams
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        tokenizer = getattr(datamodule, "tokenizer", None)
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(hp.model_name_or_path, trust_remote_code=hp.trust_remote_code)
        self.option_ids = option_token_ids(tokenizer, hp.max_choices)
        prefix = getattr(getattr(datamodule, "template", None), "assistant_prefix", "")
        self.answerer = build_answerer(
            hp.answer_mode, self.option_ids, hp.debias, self.position_offsets, tokenizer, prefix, hp.max_new_tokens
        )
        self.group_names = list(getattr(datamodule, "groups", []) or [])
        if self.group_names and self.val_group_acc is None:
            self.val_group_acc = GroupedAccuracy(len(self.group_names))

    # ---- checkpoints hold the adapter only (``suneung_lit.checkpoints``) -------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["base_model"] = checkpoints.base_model_fingerprint(self.model, self.hparams.model_name_or_path)
        if self.position_offsets:
            checkpoint["position_offsets"] = self.position_offsets.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.position_offsets.fitted = PositionOffsets.from_state(checkpoint.get("position_offsets", {})).fitted
        if checkpoint.get("base_model") is not None:
            self.configure_model()
            current = checkpoints.base_model_fingerprint(self.model, self.hparams.model_name_or_path)
            checkpoints.check_same_base(checkpoint["base_model"], current)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Only trainable (LoRA) weights: a 32B run checkpoints in megabytes, not the frozen base."""
        return checkpoints.trainable_state(self, kwargs.get("prefix", args[1] if len(args) > 1 else ""))

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """Load adapter weights, refusing checkpoints made for another base model or LoRA shape."""
        self.configure_model()
        hp = self.hparams
        described = f"{hp.model_name_or_path}, LoRA r={hp.lora_r}, targets={list(hp.target_modules)}"
        checkpoints.load_trainable_state(self, state_dict, described)
        return torch.nn.modules.module._IncompatibleKeys([], [])

    # ---- training ------------------------------------------------------------------------------------------------

    def _scores(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch_option_scores(self.model, batch, self.option_ids)

    def _loss(self, logits: torch.Tensor, scores: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        if self.hparams.loss_over == "options":
            return F.cross_entropy(scores, batch["answer"])
        return F.cross_entropy(logits.float(), batch["labels"])

    def _rationale_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        answer_loss = lambda logits, scores: self._loss(logits, scores, batch)  # noqa: E731
        return rationale_loss(self.model, batch, self.option_ids, answer_loss)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if int(batch["reasoning_length"].max()) > 0:
            loss, logits, scores = self._rationale_loss(batch)
        else:
            logits, scores = self._scores(batch)
            loss = self._loss(logits, scores, batch)
        self.train_acc(scores.argmax(-1), batch["answer"])
        size = len(batch["id"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def on_fit_start(self) -> None:
        if self.hparams.quantization == "dynamic_int8":
            raise RuntimeError("model.quantization dynamic_int8 is for validate/test/predict; fit with none or nf4")
        if self._cast_for_inference:
            raise RuntimeError(
                "this module ran validate/test/predict with its weights cast to model.compute_dtype and cannot be "
                "trained further; build a new one (or set model.inference_in_compute_dtype false)"
            )

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = build_optimizer(params, hp.optimizer, hp.learning_rate, hp.weight_decay)
        total = hp.scheduler_total_steps or int(self.trainer.estimated_stepping_batches)
        scheduler = warmup_cosine(optimizer, hp.warmup_ratio, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- validate, test, predict: every batch through ``self.answerer`` --------------------------------------------

    def _evaluate(self, batch: dict[str, Any], stage: str, metric: MulticlassAccuracy) -> ItemAnswers:
        answers = self.answerer(self.model, batch)
        # Generation's prompt ends where the text starts, not at the answer digit: no digit loss to log there.
        if answers.row_logits is not None:
            loss = self._loss(answers.row_logits, answers.row_scores, batch)
            self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=len(batch["id"]))
        metric(answers.prediction, answers.answer)
        self.log(f"{stage}/acc", metric, prog_bar=True, batch_size=len(answers.id))
        return answers

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        answers = self._evaluate(batch, "val", self.val_acc)
        if self.val_group_acc is not None:
            self.val_group_acc.update(answers.prediction, answers.answer, answers.group)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self.answerer(self.model, batch).prediction_record()

    def _start(self, stage: Stage, inference_run: bool = True) -> None:
        """Before an epoch's first batch; inference runs cast first (see ``inference_in_compute_dtype``)."""
        if inference_run and self.hparams.inference_in_compute_dtype and self.model is not None:
            self._cast_for_inference |= cast_unquantized(self.model, getattr(torch, self.hparams.compute_dtype)) > 0
        self.answerer.start(stage)

    def on_validation_epoch_start(self) -> None:
        # A validate run casts for inference; the validation inside fit keeps the training dtypes.
        validating = self.trainer.state.fn == TrainerFn.VALIDATING
        self._start("sanity" if self.trainer.sanity_checking else "val", inference_run=validating)

    def on_test_epoch_start(self) -> None:
        self._start("test")

    def on_predict_epoch_start(self) -> None:
        self._start("predict")

    def on_validation_epoch_end(self) -> None:
        self._finish("validation", "val")
        if self.val_group_acc is not None:
            for name, value in zip(self.group_names, self.val_group_acc.compute(), strict=True):
                self.log(f"val/acc/{name}", value)
            self.val_group_acc.reset()

    def on_test_epoch_end(self) -> None:
        self._finish("test", "test")

    def on_predict_epoch_end(self) -> None:
        self._finish("predict", None)

    def _finish(self, stage: str, metric_prefix: str | None) -> None:
        lines, metrics = self.answerer.finish()
        for line in lines:
            rank_zero_info(f"{stage} {line}")
        for name, value in metrics.items() if metric_prefix else ():
            self.log(f"{metric_prefix}/{name}", value, sync_dist=True)
