"""The LightningModule: a quantized causal LM with LoRA adapters, trained and scored at the answer position.

It composes the parts: the base and its adapters (``backbone``), answering a batch (``answering``: scoring with
``debias``, or generation with ``reasoning``), adapter-only checkpoints (``checkpoints``) and the optimizer
(``optimization``); each step here reads in a few lines.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from suneung_lit import sharding
from suneung_lit.adapter_training import AdapterTraining
from suneung_lit.answering import Answerer, ItemAnswers, Stage, build_answerer
from suneung_lit.backbone import (
    BaseSettings,
    LoraSettings,
    cast_unquantized,
    check_trainable,
)
from suneung_lit.data.records import DEFAULT_MAX_CHOICES
from suneung_lit.data.shifting import DebiasChoice
from suneung_lit.data.tokenization import option_token_ids
from suneung_lit.debias import PositionOffsets
from suneung_lit.metrics import SourceReport
from suneung_lit.optimization import OptimizationSettings
from suneung_lit.prefix_reuse import PrefixLayout
from suneung_lit.reasoning.rationale import rationale_loss
from suneung_lit.scoring import batch_option_scores


class QLoRAMultipleChoice(AdapterTraining):
    """Fine-tunes LoRA adapters on a 4-bit causal LM to put the answer digit after a multiple-choice prompt.

    Args:
        model_name_or_path: hub name or local folder of the base model (and its tokenizer).
        base: how the base is loaded: quantization, dtypes, attention (``backbone.BaseSettings``).
        lora: the adapters: rank, alpha, dropout, targets, rsLoRA/DoRA, top layers (``backbone.LoraSettings``).
        optimization: optimizer, learning rate, weight decay and schedule (``optimization.OptimizationSettings``).
        gradient_checkpointing: recompute activations in backward to save memory.
        loss_over: ``vocab`` (cross-entropy of the answer token over the full vocabulary) or ``options``
            (over the option tokens only).
        max_choices: number of option tokens scored ("1".."max_choices").
        debias: option-position debiasing in validate, test and predict (``suneung_lit.debias``): ``none``,
            ``cyclic`` (all ``n`` cyclic shifts averaged), ``pride`` (a position prior from the cyclic passes of
            ``data.pride_fraction`` of the items) or ``offsets`` (fitted on labelled validation data, kept in the
            checkpoint, applied by test and predict). Training is never debiased.
        answer_mode: ``logits`` reads the answer from the option logits at the answer position; ``generate``
            writes a chain of thought first (template ``cot_json``) and extracts the answer from it
            (``suneung_lit.reasoning``; unusable texts are scored after them). Validate, test and predict only.
        max_new_tokens: longest generated text in ``generate`` mode.
        inference_in_compute_dtype: validate, test and predict cast every unquantized weight (norms, embeddings,
            head, LoRA) to ``base.compute_dtype``; training keeps them float32, which would make every activation
            of an inference pass float32 (see the GPU profile on the Benchmarks docs page). Such a module is not
            trained further.
        prefix_layout: how rows that share a prompt prefix (an item's shifted copies, items of one paragraph) are
            scored (``suneung_lit.prefix_reuse``): ``cached`` runs the prefixes and then the suffixes from their
            key/value cache; ``packed`` runs each prefix with all its suffixes in one pass under a 4D mask
            (attention ``sdpa`` or ``eager``, no sliding-window layers). Both give the plain probabilities.
        init_adapter: a LoRA adapter folder (``adapter_export`` or peft's ``save_pretrained``, e.g. the output of
            ``python -m suneung_lit pretrain``) whose weights the adapters start from; its rank and targets must
            equal ``lora``'s. Null: freshly initialised adapters.
    """

    def __init__(
        self,
        model_name_or_path: str,
        base: BaseSettings = BaseSettings(),
        lora: LoraSettings = LoraSettings(),
        optimization: OptimizationSettings = OptimizationSettings(),
        gradient_checkpointing: bool = False,
        loss_over: Literal["vocab", "options"] = "vocab",
        max_choices: int = DEFAULT_MAX_CHOICES,
        debias: DebiasChoice = "none",
        answer_mode: Literal["logits", "generate"] = "logits",
        max_new_tokens: int = 256,
        inference_in_compute_dtype: bool = True,
        prefix_layout: PrefixLayout = "cached",
        init_adapter: str | None = None,
    ):
        super().__init__()
        self._keep_settings(base, lora, optimization, inspect.currentframe())
        self.option_ids: list[int] = []
        metric = dict(num_classes=max_choices, average="micro")
        self.train_acc, self.val_acc, self.test_acc = (MulticlassAccuracy(**metric) for _ in range(3))
        self.by_source = torch.nn.ModuleDict()  # a SourceReport per stage ("val", "test"), once the data has sources
        # A metric, not a logged tensor: Lightning's own mean of a tensor over ranks with uneven shards is off.
        self.eval_loss = torch.nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})
        self.position_offsets = PositionOffsets()
        self.answerer: Answerer | None = None
        self._cast_for_inference = False

    # ---- model: loaded and wrapped with LoRA by ``AdapterTraining.configure_model`` -------------------------------

    def setup(self, stage: str) -> None:
        """Option token ids, the answerer and the data sources, from the data module's tokenizer and template."""
        hp = self.hparams
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        tokenizer = getattr(datamodule, "tokenizer", None)
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(
                hp.model_name_or_path, trust_remote_code=self.base.trust_remote_code
            )
        self.option_ids = option_token_ids(tokenizer, hp.max_choices)
        prefix = getattr(getattr(datamodule, "template", None), "assistant_prefix", "")
        chosen = (hp.answer_mode, self.option_ids, hp.debias, self.position_offsets, tokenizer, prefix)
        self.answerer = build_answerer(*chosen, hp.max_new_tokens, hp.get("prefix_layout", "cached"))
        names, scored = list(getattr(datamodule, "groups", []) or []), bool(getattr(datamodule, "scored", False))
        if names and not self.by_source:
            self.by_source.update({s: SourceReport(names, hp.max_choices, scored) for s in ("val", "test")})

    # ---- checkpoints hold the adapter only (``suneung_lit.checkpoints``) -------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.position_offsets:
            checkpoint["position_offsets"] = self.position_offsets.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.position_offsets.fitted = PositionOffsets.from_state(checkpoint.get("position_offsets", {})).fitted
        super().on_load_checkpoint(checkpoint)

    # ---- training ------------------------------------------------------------------------------------------------

    def _loss(self, logits: torch.Tensor, scores: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        if self.hparams.loss_over == "options":
            return F.cross_entropy(scores, batch["answer"])
        return F.cross_entropy(logits.float(), batch["labels"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        answer_loss = lambda logits, scores: self._loss(logits, scores, batch)  # noqa: E731
        if int(batch["reasoning_length"].max()) > 0:
            loss, logits, scores = rationale_loss(self.model, batch, self.option_ids, answer_loss)
        else:
            logits, scores = batch_option_scores(self.model, batch, self.option_ids)
            loss = answer_loss(logits, scores)
        self.train_acc(scores.argmax(-1), batch["answer"])
        size = len(batch["id"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def on_fit_start(self) -> None:
        check_trainable(self.base.quantization, self._cast_for_inference)

    # ---- validate, test, predict: every batch through ``self.answerer`` --------------------------------------------

    def _evaluate(self, batch: dict[str, Any], stage: str, metric: MulticlassAccuracy) -> ItemAnswers:
        answers = self.answerer(self.model, batch)
        # Generation's prompt ends where the text starts, not at the answer digit: no digit loss to log there.
        if answers.row_logits is not None:
            self.eval_loss[stage](self._loss(answers.row_logits, answers.row_scores, batch), len(batch["id"]))
            self.log(f"{stage}/loss", self.eval_loss[stage], batch_size=len(batch["id"]))
        metric(answers.prediction, answers.answer)
        self.log(f"{stage}/acc", metric, prog_bar=True, batch_size=len(answers.id))
        if stage in self.by_source:
            self.by_source[stage].update(answers.prediction, answers.answer, answers.group, answers.score)
        return answers

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self.answerer(self.model, batch).prediction_record()

    def _start(self, stage: Stage, inference_run: bool = True) -> None:
        """Before an epoch's first batch; inference runs cast first (see ``inference_in_compute_dtype``)."""
        # Under FSDP the weights are flat shards, cast for compute by FSDP's own mixed precision.
        casting = self.hparams.inference_in_compute_dtype and not sharding.is_sharded(self._trainer)
        if inference_run and casting and self.model is not None:
            self._cast_for_inference |= cast_unquantized(self.model, self.base.torch_compute_dtype) > 0
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
        if metric_prefix in self.by_source:
            metrics, lines = self.by_source[metric_prefix].report(metric_prefix, stage)
            self.log_dict(metrics)
            for line in lines:
                rank_zero_info(line)
