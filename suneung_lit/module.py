"""The LightningModule: a quantized causal LM with LoRA adapters, trained and scored at the answer position."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from suneung_lit.backbone import QuantizationChoice, add_lora, cast_unquantized, load_base_model
from suneung_lit.data.records import DEFAULT_MAX_CHOICES
from suneung_lit.data.tokenization import option_token_ids
from suneung_lit.debias import (
    DebiasChoice,
    EvaluationCost,
    PositionPrior,
    apply_offsets,
    combine,
    fit_position_offsets,
    masked_log_softmax,
)
from suneung_lit.prefix_reuse import shared_prefix_answer_logits
from suneung_lit.reasoning.generation import Generated, generate_answers
from suneung_lit.reasoning.rationale import rationale_token_loss
from suneung_lit.scoring import answer_logits, last_logits, option_scores

log = logging.getLogger(__name__)

DtypeChoice = Literal["bfloat16", "float16", "float32"]
OptimizerChoice = Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"]
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
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's adapter weights do not fit the configured model."""


class GroupedAccuracy(Metric):
    """Accuracy per data source (a ``source``/``category`` column), synced across devices."""

    def __init__(self, num_groups: int):
        super().__init__()
        self.add_state("correct", torch.zeros(num_groups), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(num_groups), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, groups: torch.Tensor) -> None:
        known = groups >= 0
        groups, hits = groups[known], (preds[known] == target[known]).float()
        self.correct.index_add_(0, groups, hits)
        self.total.index_add_(0, groups, torch.ones_like(hits))

    def compute(self) -> torch.Tensor:
        return self.correct / self.total.clamp(min=1)


class QLoRAMultipleChoice(L.LightningModule):
    """Fine-tunes LoRA adapters on a 4-bit causal LM to put the answer digit after a multiple-choice prompt.

    Args:
        model_name_or_path: hub name or local folder of the base model (and its tokenizer).
        quantization: ``nf4``/``fp4`` (4-bit), ``int8`` or ``none``.
        double_quant: quantize the 4-bit quantization constants too (saves ~0.4 bit per weight).
        compute_dtype: dtype the 4-bit matmuls run in.
        dtype: dtype of the weights that are not quantized (embeddings, norms) when loading.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rsLoRA).
        lora_dropout: dropout on the LoRA input.
        target_modules: module names that get adapters.
        use_rslora: rank-stabilised scaling.
        use_dora: weight-decomposed LoRA.
        lora_top_layers: adapters on the last N transformer layers only (default: every layer). Backward then
            stops at the lowest adapted layer, so a fine-tune of a few top layers costs little more than the
            forward pass (what makes a CPU fine-tune of a real 1.5B model fit an afternoon).
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
        debias: option-position debiasing for validate, test and predict (see ``suneung_lit.debias``): ``none``;
            ``cyclic`` (every item under all ``n`` cyclic shifts of its choices, log-probabilities averaged: ``n``
            passes per item); ``pride`` (the position prior estimated from the cyclic passes of
            ``data.pride_fraction`` of the items, subtracted from the others: ``1 + fraction * (n - 1)`` passes);
            ``offsets`` (per-position offsets fitted on labelled validation data and saved in the checkpoint,
            applied by test and predict: one pass). Training is never debiased.
        answer_mode: ``logits`` reads the answer from the option logits at the answer position; ``generate``
            writes a chain of thought first (use the ``cot_json`` template), greedily, stopping at EOS or at the end
            of the JSON object, and extracts the answer (``suneung_lit.reasoning``); texts without a usable answer
            are scored at an answer position appended after them. Validate, test and predict only.
        max_new_tokens: longest generated text in ``generate`` mode.
        inference_in_compute_dtype: validate, test and predict runs put every unquantized weight (norms,
            embeddings, head, LoRA adapters) in ``compute_dtype``. Training keeps them in float32 for stability,
            which would make every activation of an inference pass float32 too (a 32B predict on an H100 spent
            40% of its GPU time in float32 attention and dtype casts). Validation inside ``fit`` keeps the training
            dtypes; a module that ran validate, test or predict this way is not trained further.
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
        if answer_mode == "generate" and debias != "none":
            raise ValueError("model.answer_mode generate and model.debias are not combined; set debias: none")
        self.save_hyperparameters()
        self.model: torch.nn.Module | None = None
        self.option_ids: list[int] = []
        metric = dict(num_classes=max_choices, average="micro")
        self.train_acc = MulticlassAccuracy(**metric)
        self.val_acc = MulticlassAccuracy(**metric)
        self.test_acc = MulticlassAccuracy(**metric)
        self.group_names: list[str] = []
        self.val_group_acc: GroupedAccuracy | None = None
        self.prior = PositionPrior()
        self.position_offsets: dict[int, torch.Tensor] = {}
        self._validation_scores: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._cost = EvaluationCost()
        self.tokenizer = None
        self.assistant_prefix = ""
        self._paths: Counter = Counter()
        self._cast_for_inference = False

    # ---- model ---------------------------------------------------------------------------------------------------

    def configure_model(self) -> None:
        """Loads the base model once per process, on the strategy's device, and wraps it with LoRA."""
        if self.model is not None:
            return
        hp = self.hparams
        base = load_base_model(
            hp.model_name_or_path,
            device=self._load_device(),
            quantization=hp.quantization,
            double_quant=hp.double_quant,
            compute_dtype=getattr(torch, hp.compute_dtype),
            dtype=getattr(torch, hp.dtype),
            trust_remote_code=hp.trust_remote_code,
            attn_implementation=hp.attn_implementation,
        )
        self.model = add_lora(
            base,
            lora_r=hp.lora_r,
            lora_alpha=hp.lora_alpha,
            lora_dropout=hp.lora_dropout,
            target_modules=list(hp.target_modules),
            use_rslora=hp.use_rslora,
            use_dora=hp.use_dora,
            gradient_checkpointing=hp.gradient_checkpointing,
            top_layers=hp.lora_top_layers,
        )

    def _load_device(self) -> torch.device:
        """The strategy's device inside a Trainer; outside one (scripts, notebooks) the GPU when there is one."""
        if self._trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        tokenizer = getattr(datamodule, "tokenizer", None)
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(
                self.hparams.model_name_or_path, trust_remote_code=self.hparams.trust_remote_code
            )
        self.option_ids = option_token_ids(tokenizer, self.hparams.max_choices)
        self.tokenizer = tokenizer
        template = getattr(datamodule, "template", None)
        self.assistant_prefix = template.assistant_prefix if template is not None else ""
        self.group_names = list(getattr(datamodule, "groups", []) or [])
        if self.group_names and self.val_group_acc is None:
            self.val_group_acc = GroupedAccuracy(len(self.group_names))

    # ---- checkpoints hold the adapter only -------------------------------------------------------------------------

    def base_model_fingerprint(self) -> dict[str, str]:
        """Identifies the frozen base: name, architecture, and a hash of a slice of its (unquantized) embedding.

        Adapters trained on one base are meaningless on another of the same shape; the weights hash tells
        them apart where shapes cannot.
        """
        embedding = self.model.get_input_embeddings().weight
        # Rounded to bf16 so that the same base loaded in another dtype still matches.
        sample = embedding[: min(8, embedding.shape[0])].detach().to(torch.bfloat16).float().cpu().contiguous()
        config = self.model.get_base_model().config.to_dict()
        architecture = {k: v for k, v in config.items() if k not in CONFIG_KEYS_NOT_IN_FINGERPRINT}
        return {
            "model_name_or_path": str(self.hparams.model_name_or_path),
            "config_sha256": hashlib.sha256(json.dumps(architecture, sort_keys=True, default=str).encode()).hexdigest()[
                :16
            ],
            "embedding_sha256": hashlib.sha256(sample.numpy().tobytes()).hexdigest()[:16],
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["base_model"] = self.base_model_fingerprint()
        if self.position_offsets:
            checkpoint["position_offsets"] = {n: t.tolist() for n, t in self.position_offsets.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.position_offsets = {int(n): torch.tensor(v) for n, v in checkpoint.get("position_offsets", {}).items()}
        saved = checkpoint.get("base_model")
        if saved is None:
            return
        if self.model is None:
            self.configure_model()
        current = self.base_model_fingerprint()
        differs = [k for k in ("config_sha256", "embedding_sha256") if saved.get(k) != current[k]]
        if differs:
            raise CheckpointMismatchError(
                f"checkpoint was trained on base model {saved.get('model_name_or_path')!r}, but the configured base "
                f"{current['model_name_or_path']!r} differs ({', '.join(differs)}); use the base model the adapter "
                "was trained on"
            )

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Only trainable (LoRA) weights: a 32B run checkpoints in megabytes, not the frozen base."""
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        return {f"{prefix}{name}": p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """Load adapter weights, refusing checkpoints made for another base model or LoRA shape."""
        if self.model is None:
            self.configure_model()
        expected = {name: p for name, p in self.named_parameters() if p.requires_grad}
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        wrong_shape = [
            f"{name}: checkpoint {tuple(state_dict[name].shape)} vs model {tuple(expected[name].shape)}"
            for name in set(expected) & set(state_dict)
            if state_dict[name].shape != expected[name].shape
        ]
        if missing or unexpected or wrong_shape:
            raise CheckpointMismatchError(
                "checkpoint does not match the configured model "
                f"({self.hparams.model_name_or_path}, LoRA r={self.hparams.lora_r}, "
                f"targets={list(self.hparams.target_modules)}): "
                f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong_shape)} with other shapes; "
                f"e.g. {(missing + unexpected + wrong_shape)[:3]}"
            )
        with torch.no_grad():
            for name, value in state_dict.items():
                expected[name].copy_(value)
        return torch.nn.modules.module._IncompatibleKeys([], [])

    # ---- steps ---------------------------------------------------------------------------------------------------

    def _scores(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        groups = batch.get("prefix_group")
        if groups is not None and len(groups) > 1 and bool((groups == groups[0]).all()) and groups[0] >= 0:
            prefix_length = int(batch["prefix_length"][0])
            logits = shared_prefix_answer_logits(self.model, batch["input_ids"], batch["attention_mask"], prefix_length)
        else:
            logits = answer_logits(self.model, batch["input_ids"], batch["attention_mask"])
        return logits, option_scores(logits, self.option_ids, batch["num_choices"])

    def _loss(self, logits: torch.Tensor, scores: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        if self.hparams.loss_over == "options":
            return F.cross_entropy(scores, batch["answer"])
        return F.cross_entropy(logits.float(), batch["labels"])

    def _rationale_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss over the assistant turn (reasoning tokens and the answer), with the answer-position scores."""
        keep = int(batch["reasoning_length"].max()) + 1
        window = last_logits(self.model, batch["input_ids"], batch["attention_mask"], keep)
        logits = window[:, -1, :]
        scores = option_scores(logits, self.option_ids, batch["num_choices"])
        reasoning_sum, tokens = rationale_token_loss(window, batch["input_ids"], batch["reasoning_length"])
        rows = len(batch["id"])
        loss = (self._loss(logits, scores, batch) * rows + reasoning_sum) / (rows + tokens)
        return loss, logits, scores

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

    def _item_scores(self, batch: dict[str, Any], log_probs: torch.Tensor) -> dict[str, Any]:
        """One row per item: debiased option log-probabilities, original answers, groups and item indices."""
        mode = self.hparams.debias
        if mode in ("cyclic", "pride"):
            prior = self.prior if mode == "pride" else None
            groups, item_log_probs = combine(
                log_probs, batch["item_index"], batch["shift"], batch["num_choices"], prior
            )
            first = torch.stack([rows[0] for rows in groups.rows])
        else:
            first = torch.arange(len(batch["id"]), device=log_probs.device)
            item_log_probs = log_probs
            if mode == "offsets" and self.position_offsets:
                item_log_probs = apply_offsets(log_probs, batch["num_choices"], self.position_offsets)
        n, shift, answer = batch["num_choices"][first], batch["shift"][first], batch["answer"][first]
        self._cost.add(items=len(first), passes=len(batch["id"]))
        return {
            "log_probs": item_log_probs,
            # A shifted copy's answer moved with its text; map it back to the original position.
            "answer": torch.where(answer >= 0, (answer - shift) % n, answer),
            "num_choices": n,
            "group": batch["group"][first],
            "index": batch["item_index"][first],
            "id": [batch["id"][i] for i in first.tolist()],
        }

    def _generate(self, batch: dict[str, Any]) -> list[Generated]:
        generated = generate_answers(
            self.model,
            self.tokenizer,
            batch["input_ids"],
            batch["attention_mask"],
            batch["num_choices"],
            self.option_ids,
            self.assistant_prefix,
            self.hparams.max_new_tokens,
        )
        self._paths.update(g.path for g in generated)
        return generated

    def _generated_items(self, batch: dict[str, Any]) -> tuple[dict[str, Any], list[Generated]]:
        """Per-item outputs in ``generate`` mode, shaped like ``_item_scores``'s."""
        generated = self._generate(batch)
        probabilities = torch.tensor([g.probabilities for g in generated], device=batch["input_ids"].device)
        items = {
            "log_probs": probabilities.clamp_min(1e-12).log(),
            "answer": batch["answer"],
            "num_choices": batch["num_choices"],
            "group": batch["group"],
            "index": batch["item_index"],
            "id": list(batch["id"]),
            "prediction": torch.tensor([g.answer - 1 for g in generated], device=probabilities.device),
        }
        return items, generated

    def _evaluate(self, batch: dict[str, Any], stage: str, metric: MulticlassAccuracy) -> None:
        size = len(batch["id"])
        if self.hparams.answer_mode == "generate":
            # The prompt ends where generation starts, not at the answer digit: a digit loss there would measure
            # something else (and cost a forward pass), so generate mode logs accuracy only.
            items, _ = self._generated_items(batch)
            metric(items["prediction"], items["answer"])
            self.log(f"{stage}/acc", metric, prog_bar=True, batch_size=size)
            return
        logits, scores = self._scores(batch)
        self.log(f"{stage}/loss", self._loss(logits, scores, batch), sync_dist=True, batch_size=size)
        items = self._item_scores(batch, masked_log_softmax(scores, batch["num_choices"]))
        if stage == "val" and self.hparams.debias == "offsets":
            self._validation_scores.append(
                (items["log_probs"].cpu(), items["answer"].cpu(), items["num_choices"].cpu())
            )
        preds = items["log_probs"].argmax(-1)
        metric(preds, items["answer"])
        self.log(f"{stage}/acc", metric, prog_bar=True, batch_size=len(preds))
        if stage == "val" and self.val_group_acc is not None:
            self.val_group_acc.update(preds, items["answer"], items["group"])

    def _start_evaluation(self) -> None:
        self._paths = Counter()
        self.prior = PositionPrior()
        self._validation_scores = []
        self._cost = EvaluationCost()

    def _cast_for_inference_pass(self) -> None:
        hp = self.hparams
        if not hp.inference_in_compute_dtype or self.model is None:
            return
        if cast_unquantized(self.model, getattr(torch, hp.compute_dtype)):
            self._cast_for_inference = True

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == TrainerFn.VALIDATING:  # a validate run, not the validation inside fit
            self._cast_for_inference_pass()

    def on_test_start(self) -> None:
        self._cast_for_inference_pass()

    def on_predict_start(self) -> None:
        self._cast_for_inference_pass()

    def on_fit_start(self) -> None:
        if self._cast_for_inference:
            raise RuntimeError(
                "this module ran validate/test/predict with its weights cast to model.compute_dtype and cannot be "
                "trained further; build a new one (or set model.inference_in_compute_dtype false)"
            )

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def on_test_epoch_start(self) -> None:
        self._require_offsets("test")
        self._start_evaluation()

    def on_predict_epoch_start(self) -> None:
        self._require_offsets("predict")
        self._start_evaluation()

    def _require_offsets(self, stage: str) -> None:
        if self.hparams.debias == "offsets" and not self.position_offsets:
            raise ValueError(
                f"model.debias offsets: {stage} needs a checkpoint (--ckpt_path) from a fit run with model.debias "
                "offsets, whose validation fitted the position offsets"
            )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def on_validation_epoch_end(self) -> None:
        if self.hparams.debias == "offsets" and self._validation_scores and not self.trainer.sanity_checking:
            self._fit_offsets()
        self._report_cost("validation")
        if self.val_group_acc is None:
            return
        for name, value in zip(self.group_names, self.val_group_acc.compute(), strict=True):
            self.log(f"val/acc/{name}", value)
        self.val_group_acc.reset()

    def _fit_offsets(self) -> None:
        log_probs, answers, counts = (torch.cat(parts) for parts in zip(*self._validation_scores, strict=True))
        labelled = answers >= 0
        # Fitted on the undebiased scores: offsets from an earlier validation must not compound.
        plain = log_probs[labelled]
        for n, offset in self.position_offsets.items():
            rows = counts[labelled] == n
            plain[rows, :n] += offset
        self.position_offsets = fit_position_offsets(plain, answers[labelled], counts[labelled])
        corrected = apply_offsets(plain, counts[labelled], self.position_offsets).argmax(-1)
        accuracy = (corrected == answers[labelled]).float().mean()
        self.log("val/acc_offsets_in_sample", accuracy, sync_dist=True)
        shown = {n: [round(v, 3) for v in t.tolist()] for n, t in self.position_offsets.items()}
        rank_zero_info(f"fitted position offsets on {int(labelled.sum())} validation items: {shown}")

    def _report_cost(self, stage: str) -> None:
        if self.hparams.answer_mode == "generate" and self._paths:
            total = sum(self._paths.values())
            rank_zero_info(f"{stage} answers extracted from {total} generated texts: {dict(self._paths)}")
            if not self.trainer.predicting:
                for path, count in self._paths.items():
                    self.log(f"{'val' if stage == 'validation' else stage}/extraction/{path}", count / total)
        if self.hparams.debias != "none" and self._cost.items:
            rank_zero_info(f"{stage} debias={self.hparams.debias}: {self._cost}")
            if self.hparams.debias == "pride":
                rank_zero_info(f"  {self.prior}")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def on_test_epoch_end(self) -> None:
        self._report_cost("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        if self.hparams.answer_mode == "generate":
            items, generated = self._generated_items(batch)
            return {
                "index": items["index"].cpu(),
                "id": items["id"],
                "probabilities": items["log_probs"].exp().cpu(),
                "prediction": items["prediction"].cpu() + 1,
                "answer": items["answer"].cpu() + 1,
                "num_choices": items["num_choices"].cpu(),
                "text": [g.text for g in generated],
                "path": [g.path for g in generated],
            }
        _, scores = self._scores(batch)
        items = self._item_scores(batch, masked_log_softmax(scores, batch["num_choices"]))
        probabilities = items["log_probs"].exp()
        return {
            "index": items["index"].cpu(),
            "id": items["id"],
            "probabilities": probabilities.cpu(),
            "prediction": probabilities.argmax(-1).cpu() + 1,
            "answer": items["answer"].cpu() + 1,  # 0 where the input has no answer
            "num_choices": items["num_choices"].cpu(),
        }

    def on_predict_epoch_end(self) -> None:
        self._report_cost("predict")

    # ---- optimisation --------------------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        from transformers import get_cosine_schedule_with_warmup

        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "adamw":
            optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
        else:
            import bitsandbytes as bnb

            cls = {
                "adamw_8bit": bnb.optim.AdamW8bit,
                "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
                "paged_adamw_32bit": bnb.optim.PagedAdamW32bit,
            }[hp.optimizer]
            optimizer = cls(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
        total = hp.scheduler_total_steps or int(self.trainer.estimated_stepping_batches)
        scheduler = get_cosine_schedule_with_warmup(optimizer, int(hp.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
