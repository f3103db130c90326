"""The LightningDataModule: files -> validated, cleaned items -> token ids -> left-padded batches."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Literal

import datasets
import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from suneung_lit import sharding
from suneung_lit.data.augmenting import balanced_shift_rows
from suneung_lit.data.batching import LeftPadCollator, ResumableBatchSampler, ResumableDataLoader
from suneung_lit.data.cleaning import DEFAULT_STEPS, CleaningReport, clean
from suneung_lit.data.few_shot import FewShotSelection, example_ids, with_examples
from suneung_lit.data.prefixes import prefix_groups, tokens_not_recomputed
from suneung_lit.data.prompts import PromptTemplate, load_template, resolve_chat_template
from suneung_lit.data.records import (
    DEFAULT_MAX_CHOICES,
    DataValidationError,
    Item,
    Problem,
    answers_elsewhere,
    load_items,
)
from suneung_lit.data.shifting import DebiasChoice, ScoredCopy, scored_copies
from suneung_lit.data.splitting import grouped_split
from suneung_lit.data.tokenization import encode_items, encoding_stats, option_token_ids
from suneung_lit.exam import score_problems


def shared_context(item: Item) -> tuple[str, ...]:
    """The text before the choices that rows likely share: the paragraph, or for an item without one (KMMLU,
    CLIcK) its question and <보기>, which its shifted copies share."""
    if item.paragraph.strip():
        return (item.paragraph,)
    return ("", item.question, item.question_plus or "")


class MultipleChoiceDataModule(L.LightningDataModule):
    """Reads the CSV/JSONL files named in the config and serves batches whose last position is the answer slot.

    Args:
        tokenizer_name_or_path: hub name or local folder of the tokenizer (the CLI links it to the model's).
        train_path: labelled training file. Without ``val_path`` a validation split is carved out of it.
        val_path: labelled validation file.
        test_path: labelled file for ``test``.
        predict_path: file to predict (answers optional) for ``predict``.
        template: bundled prompt template name (base, rules_ko, tutor_en, cot_json, support) or a folder.
        chat_template: how the template's turns become text. null: the tokenizer's chat template, or plain text
            (BOS, turns separated by blank lines) when it has none, as base models such as Gemma 3 270M; ``plain``:
            plain text even when the tokenizer has a chat template; otherwise a path to a Jinja chat template.
        enable_thinking: Qwen3's thinking switch, passed to the chat template as ``enable_thinking`` (never by editing
            its text). ``false`` ends the generation prompt with the template's empty ``<think>`` block, so in
            ``logits`` mode the answer digit follows it; ``true`` lets a ``generate`` run think first (the answer is
            read after ``</think>``, the whole text kept in reasoning.jsonl); null leaves the template's default.
        max_length: longest prompt in tokens; longer paragraphs are shortened, never dropped.
        max_choices: most choices an item may have (option tokens "1".."max_choices" are scored).
        cleaning: cleaning steps, in order (see ``suneung_lit.data.cleaning.STEPS``).
        corrections_path: CSV of reviewed label fixes (``id, action, value``) applied to labelled files.
        answer_column: read answers from this column (e.g. ``answer_true``) instead of ``problems.answer`` or
            ``answer``, in every file. A file whose answers sit in such a column but is read without this setting
            stops with a message naming the column (train/val/test) or prints a warning (predict).
        val_fraction: share of train items (by paragraph group) held out when ``val_path`` is not given.
        split_seed: seed of that split.
        balance_train: train on answer-balanced cyclic shifts of the items' choices, drawn anew each epoch, so that
            every answer position is equally common and the answer prior cannot be learned (the competition train
            set is 46.7% "1"). Every shift is tokenized once; an epoch still sees each item once. Not for data whose
            text names choice numbers ("정답은 3번", "①과 ②"): shifting the choices would make that text wrong.
        train_batch_size: items per training batch (per device).
        eval_batch_size: items per validation/test/predict batch (per device).
        eval_tokens_per_batch: a padded-token budget (rows x longest row) per validation/test/predict batch,
            replacing ``eval_batch_size``: batches are filled longest first, so short items share large batches
            and long ones come a few at a time. null keeps the fixed item count.
        group_by_length: batch items of similar length together to cut padding.
        seed: seed of the training batch order.
        num_workers: DataLoader worker processes.
        cache_dir: where tokenized datasets are cached (default ``~/.cache/suneung_lit/tokenized``).
        debias: which shifted copies validation/test/predict items are scored under (the CLI links it to
            ``model.debias``): ``cyclic`` all ``n`` cyclic shifts of every item; ``pride`` all shifts of a
            ``pride_fraction`` share of the items (per choice count, at least one) and the rest once.
        pride_fraction: share of evaluation items that calibrate PriDe's position prior.
        answer_mode: ``generate`` ends evaluation prompts where generation starts (the CLI links it to
            ``model.answer_mode``).
        prefix_reuse: in validate, test and predict, items whose prompts share a paragraph compute the common
            prompt prefix once and reuse its key/value cache for each question (see ``suneung_lit.prefix_reuse``);
            the probabilities equal the plain path's up to float rounding. With ``debias`` the group also holds
            the items' shifted copies. Items without a paragraph (KMMLU, CLIcK) group on their question and <보기>,
            which an item's shifted copies share.
        shift_prefix_reuse: with ``debias`` cyclic or pride, an item's shifted copies compute the prompt they share
            (everything before the choices) once and score only their choices from its key/value cache: cyclic
            costs little more than one pass instead of ``n`` (see README 'Debiasing'). Same probabilities up to
            float rounding; off scores every copy in full.
        trust_remote_code: allow tokenizer code from the hub (off unless you trust the repository).
        few_shot: solved examples put before each item as earlier user/assistant turns (plain text without a chat
            template); 0: none. Never the item itself, an item of its paragraph group, or a validation, test or
            predict item; deterministic for ``seed``. Too long a prompt drops examples (the last first) before its
            paragraph is shortened. Each item's examples are written to ``few_shot.csv`` beside the predictions.
        few_shot_selection: ``random`` (per item, seeded by ``seed`` and its id), ``bm25`` (the most similar
            paragraphs and questions of the pool, by the retrieval module's Kiwi analyser) or ``dense`` (the
            nearest by cosine similarity of ``few_shot_encoder``'s embeddings).
        few_shot_path: the pool of examples (a file of labelled items); null: the training file.
        few_shot_encoder: a local sentence-transformers folder, for ``few_shot_selection: dense``.
    """

    def __init__(
        self,
        tokenizer_name_or_path: str,
        train_path: str | None = None,
        val_path: str | None = None,
        test_path: str | None = None,
        predict_path: str | None = None,
        template: str = "base",
        chat_template: str | None = None,
        enable_thinking: bool | None = None,
        max_length: int = 1024,
        max_choices: int = DEFAULT_MAX_CHOICES,
        cleaning: tuple[str, ...] = DEFAULT_STEPS,
        corrections_path: str | None = None,
        answer_column: str | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 42,
        balance_train: bool = False,
        train_batch_size: int = 1,
        eval_batch_size: int = 8,
        eval_tokens_per_batch: int | None = None,
        group_by_length: bool = True,
        seed: int = 42,
        num_workers: int = 0,
        cache_dir: str | None = None,
        trust_remote_code: bool = False,
        debias: DebiasChoice = "none",
        pride_fraction: float = 0.05,
        prefix_reuse: bool = False,
        shift_prefix_reuse: bool = True,
        answer_mode: Literal["logits", "generate"] = "logits",
        few_shot: int = 0,
        few_shot_selection: FewShotSelection = "random",
        few_shot_path: str | None = None,
        few_shot_encoder: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer_name_or_path = tokenizer_name_or_path
        self.paths = {"train": train_path, "val": val_path, "test": test_path, "predict": predict_path}
        self.template_name = template
        self.chat_template = chat_template
        self.enable_thinking = enable_thinking
        self.few_shot, self.few_shot_selection, self.few_shot_path = few_shot, few_shot_selection, few_shot_path
        self.few_shot_encoder = few_shot_encoder
        self.few_shot_ids: dict[str, dict[str, list[str]]] = {}  # split -> item id -> its examples' ids
        self._few_shot_pool: list[Item] | None = None
        self.max_length = max_length
        self.max_choices = max_choices
        self.cleaning = list(cleaning)
        self.corrections_path = corrections_path
        self.answer_column = answer_column
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.balance_train = balance_train
        self.train_batch_size = train_batch_size
        self.eval_batch_size = eval_batch_size
        self.eval_tokens_per_batch = eval_tokens_per_batch
        self.group_by_length = group_by_length
        self.seed = seed
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self.trust_remote_code = trust_remote_code
        if not 0.0 < pride_fraction <= 1.0:
            raise ValueError(f"data.pride_fraction must be in (0, 1], got {pride_fraction}")
        self.debias = debias
        self.pride_fraction = pride_fraction
        self.prefix_reuse = prefix_reuse
        self.shift_prefix_reuse = shift_prefix_reuse
        self.answer_mode = answer_mode
        self.tokenizer = None
        self.template: PromptTemplate | None = None
        self.items: dict[str, list[Item]] = {}
        self.encoded: dict[str, datasets.Dataset] = {}
        self.reports: dict[str, CleaningReport] = {}
        self.groups: list[str] = []
        self.scored = False

    # ---- preparation -------------------------------------------------------------------------------------------

    def check_inputs(self, stage: str) -> None:
        """Fail before any model is loaded: the files a stage needs exist and the template is known."""
        needed = {
            "fit": ["train"] + (["val"] if self.paths["val"] else []),
            "validate": ["val"] if self.paths["val"] else ["train"],
            "test": ["test"],
            "predict": ["predict"],
        }[stage]
        problems = []
        for split in needed:
            path = self.paths[split]
            if not path:
                problems.append(Problem("<config>", None, None, f"data.{split}_path", f"required for `{stage}`"))
            elif not Path(path).is_file():
                problems.append(Problem(str(path), None, None, f"data.{split}_path", "file not found"))
        if problems:
            raise DataValidationError(problems)
        load_template(self.template_name)
        if self.few_shot and self.few_shot_selection == "dense" and not self.few_shot_encoder:
            raise DataValidationError(
                [Problem("<config>", None, None, "data.few_shot_encoder", "few_shot_selection dense needs an encoder")]
            )
        if self.chat_template not in (None, "plain") and not Path(self.chat_template).is_file():
            raise DataValidationError(
                [Problem(str(self.chat_template), None, None, "data.chat_template", "not 'plain' nor a Jinja file")]
            )

    def _load_tokenizer(self):
        if self.tokenizer is None:
            self.tokenizer = AutoTokenizer.from_pretrained(
                self.tokenizer_name_or_path, trust_remote_code=self.trust_remote_code
            )
            option_token_ids(self.tokenizer, self.max_choices)  # fail early on a tokenizer we cannot score
            if self.chat_template is None and not self.tokenizer.chat_template:
                rank_zero_info(
                    f"{self.tokenizer_name_or_path}: the tokenizer has no chat template; prompts are plain text "
                    "(set data.chat_template to a Jinja file to change that)"
                )
            self.tokenizer.chat_template = resolve_chat_template(self.chat_template, self.tokenizer)
        return self.tokenizer

    def _load_split(self, split: str) -> list[Item]:
        path = self.paths[split]
        items = load_items(path, self.max_choices, answer_column=self.answer_column)
        elsewhere = answers_elsewhere(items) if not self.answer_column else None
        if elsewhere:
            message = (
                f"{path}: no answers in the usual place, but column {elsewhere!r} holds answer numbers; "
                f"set data.answer_column: {elsewhere} to use them"
            )
            if split != "predict":
                raise DataValidationError([Problem(str(path), None, None, elsewhere, message.split(": ", 1)[1])])
            rank_zero_warn(message + " (predict reads the file as unlabelled)")
        bad_scores = score_problems(items, str(path))
        if bad_scores:
            raise DataValidationError(bad_scores[:50], len(bad_scores))
        if split in ("val", "test") and any(item.answer is None for item in items):
            # Accuracy and the loss are read against the answers: an unlabelled item cannot be scored there.
            missing = [item.id for item in items if item.answer is None]
            reason = f"{'validation' if split == 'val' else 'test'} items need answers (use predict)"
            raise DataValidationError(
                [Problem(str(path), None, i, "answer", reason) for i in missing[:50]], len(missing)
            )
        return items

    def _with_few_shot(self, items: list[Item]) -> list[Item]:
        """``items`` with ``few_shot`` examples each from the pool: ``few_shot_path`` or the (cleaned) training
        items, less every validation, test and predict item of this run (``suneung_lit.data.few_shot``)."""
        if self._few_shot_pool is None:
            if self.few_shot_path:
                pool, _ = clean(load_items(self.few_shot_path, self.max_choices), self.cleaning)
            elif self.paths["train"]:
                # fit/validate: the training items after the validation split; test/predict: the whole file.
                pool = (
                    self.items.get("train") or clean(self._load_split("train"), self.cleaning, self.corrections_path)[0]
                )
            else:
                needs = "data.few_shot needs a pool: set it or data.train_path"
                raise DataValidationError([Problem("<config>", None, None, "data.few_shot_path", needs)])
            scored = {item.id for split in ("val", "test", "predict") for item in self.items.get(split, [])}
            self._few_shot_pool = [item for item in pool if item.id not in scored]
        chosen = (self.few_shot, self.few_shot_selection, self.seed)
        return with_examples(items, self._few_shot_pool, *chosen, encoder=self.few_shot_encoder)

    def _labelled_items(self, with_train: bool = True) -> tuple[list[Item], list[Item]]:
        """Train and validation items after cleaning; validation carved out of train when no val_path is set."""
        train = self._load_split("train") if self.paths["train"] and with_train else []
        val = self._load_split("val") if self.paths["val"] else []
        # Cleaned together so that duplicates across the two files and corrections for either are handled once.
        val_ids = {item.id for item in val}
        shared = [item.id for item in train if item.id in val_ids]
        if shared:
            rank_zero_warn(
                f"{len(shared)} of {len(train)} train ids are also validation ids (e.g. {shared[:3]}); "
                "those items are used for validation only"
            )
        # A validation file alone may be a part of the corrected set, or another set: its corrections are optional.
        cleaned, report = clean(train + val, self.cleaning, self.corrections_path, every_correction_present=with_train)
        self._report("train", report)
        kept_train = [item for item in cleaned if item.id not in val_ids]
        val = [item for item in cleaned if item.id in val_ids]
        if train and not kept_train:
            raise DataValidationError(
                [
                    Problem(
                        str(self.paths["train"]),
                        None,
                        None,
                        None,
                        f"no training items left: {len(shared)} of its {len(train)} ids are validation ids "
                        f"and cleaning dropped {len(report.dropped_ids)}; give a train file apart from val_path",
                    )
                ]
            )
        train = kept_train
        if not self.paths["val"] and train:
            train, val = grouped_split(train, self.val_fraction, self.split_seed)
        return train, val

    def _report(self, split: str, report: CleaningReport) -> None:
        self.reports[split] = report
        rank_zero_info(f"cleaning {split}:\n  " + str(report).replace("\n", "\n  "))

    def setup(self, stage: str) -> None:
        self.check_inputs(stage)
        tokenizer = self._load_tokenizer()
        self.template = replace(load_template(self.template_name), enable_thinking=self.enable_thinking)
        if stage in ("fit", "validate") and "val" not in self.items:
            # `validate` on a file of its own reads nothing else: a user checking an adapter on new items has no
            # training file at hand.
            with_train = stage == "fit" or not self.paths["val"]
            self.items["train"], self.items["val"] = self._labelled_items(with_train)
        for split in ("test", "predict"):
            if stage == split and split not in self.items:
                self.items[split], report = clean(self._load_split(split), self.cleaning, allow_drops=False)
                self._report(split, report)
        for split, items in self.items.items():
            # `validate` with only val_path set has no train items; there is nothing to encode for them.
            if split in self.encoded or (split == "train" and not items):
                continue
            if self.few_shot:
                items = self.items[split] = self._with_few_shot(items)
                self.few_shot_ids[split] = {item.id: example_ids(item) for item in items}
            self.template.check_items(items, str(self.paths[split] or self.paths["train"]))
            if split == "train":
                copies = scored_copies(items, "cyclic" if self.balance_train else "none", 1.0, self.seed)
            else:
                copies = scored_copies(items, self.debias, self.pride_fraction, self.seed)
            encoded = encode_items(
                [copy.item for copy in copies],
                tokenizer,
                self.template,
                self.max_length,
                self.max_choices,
                self.cache_dir,
            )
            encoded = encoded.add_column("item_index", [copy.item_index for copy in copies])
            encoded = encoded.add_column("shift", [copy.shift for copy in copies])
            encoded = encoded.add_column("calibration", [copy.calibration for copy in copies])
            keys = self._prefix_keys(copies) if split != "train" else None
            if keys is not None:
                group, shared = prefix_groups(encoded["input_ids"], keys)
                encoded = encoded.add_column("prefix_group", group).add_column("prefix_length", shared)
                rank_zero_info(
                    f"prefix reuse: {sum(g >= 0 for g in group)} of {len(group)} rows in {len(set(group) - {-1})} "
                    f"groups share a prompt prefix ({tokens_not_recomputed(group, shared)} prompt tokens not "
                    "recomputed)"
                )
            self.encoded[split] = encoded
            stats = encoding_stats(self.encoded[split])
            # Shifted copies (balance_train, cyclic and pride debiasing) are rows, not items: say both.
            rows = f" in {stats.rows} rows (cyclic shifts)" if stats.rows != len(items) else ""
            rank_zero_info(
                f"{split}: {len(items)} items{rows}, {len(stats.shortened_ids)} with the paragraph shortened "
                f"to fit {self.max_length} tokens"
            )
        self.groups = sorted({g for ds in self.encoded.values() for g in ds.unique("group") if g})
        # Items with exam points (a `score` column): validation and test then report points per source too.
        self.scored = any(score > 0 for ds in self.encoded.values() for score in ds["score"])

    def _prefix_keys(self, copies: list[ScoredCopy]) -> list | None:
        """What makes evaluation rows share a prompt prefix: their paragraph (for items without one, the question),
        or the item they are copies of."""
        if self.answer_mode == "generate":  # the prompts end where generation starts: nothing is scored there
            return None
        if self.prefix_reuse:
            # PriDe's calibration items are scored before the rest (they estimate the prior): never one group.
            return [(shared_context(copy.item), copy.calibration) for copy in copies]
        if self.shift_prefix_reuse and self.debias in ("cyclic", "pride"):
            return [copy.item_index for copy in copies]
        return None

    # ---- loaders -----------------------------------------------------------------------------------------------

    def item_ids(self, split: str) -> list[str]:
        """The ids of a split's items in input order (evaluation rows may hold several copies of each)."""
        return [item.id for item in self.items[split]]

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _collator(self) -> LeftPadCollator:
        return LeftPadCollator(self.tokenizer.pad_token_id, self.groups)

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = self.encoded[split]
        rank, world_size = self._rank()
        sampler = ResumableBatchSampler(
            dataset["length"],
            self.eval_batch_size,
            shuffle=False,
            group_by_length=self.group_by_length,
            rank=rank,
            world_size=world_size,
            leading=dataset["calibration"] if self.debias == "pride" else None,
            max_tokens=self.eval_tokens_per_batch,
            even_batches=sharding.is_sharded(self.trainer),
            **self._units(dataset),
        )
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=self._collator(), num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        dataset = self.encoded["train"]
        rank, world_size = self._rank()
        sampler = ResumableBatchSampler(
            dataset["length"],
            self.train_batch_size,
            seed=self.seed,
            shuffle=True,
            group_by_length=self.group_by_length,
            rank=rank,
            world_size=world_size,
            rows_for_epoch=self._balanced_rows(dataset) if self.balance_train else None,
        )
        trainer = self.trainer

        def consumed() -> int | None:
            # Batches the trainer has finished with in this epoch; Lightning prefetches past them.
            if trainer is None:
                return None
            return trainer.fit_loop.epoch_loop.batch_progress.current.processed

        return ResumableDataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self._collator(),
            num_workers=self.num_workers,
            consumed=consumed,
        )

    def _units(self, dataset: datasets.Dataset) -> dict:
        """Rows that must share a batch: a prefix-sharing group, or an item's shifted copies (debiasing)."""
        if "prefix_group" in dataset.column_names:
            groups, items = dataset["prefix_group"], dataset["item_index"]
            # A group holds whole items (their copies share the key), so group and item units never overlap.
            return {"units": [len(groups) + g if g >= 0 else item for g, item in zip(groups, items, strict=True)]}
        if self.debias in ("cyclic", "pride"):
            return {"units": dataset["item_index"]}
        return {}

    @staticmethod
    def _balanced_rows(dataset: datasets.Dataset):
        columns = [dataset[name] for name in ("item_index", "answer", "num_choices")]
        return partial(balanced_shift_rows, *columns)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict")
