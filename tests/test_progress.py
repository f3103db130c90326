"""The training progress bar's label."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.demos.boring_classes import BoringModel

from suneung_lit.progress import EpochProgressBar, epoch_description


def test_a_run_bounded_by_epochs_shows_the_last_epoch():
    assert epoch_description(2, 10) == "Epoch 2/9"


def test_a_run_bounded_by_steps_shows_no_last_epoch():
    assert epoch_description(15, -1) == "Epoch 15"
    assert epoch_description(0, None) == "Epoch 0"


class RecordingBar(EpochProgressBar):
    def __init__(self):
        super().__init__()
        self.labels: list[str] = []

    def _get_train_description(self, current_epoch: int) -> str:
        self.labels.append(super()._get_train_description(current_epoch))
        return self.labels[-1]


def test_the_bar_of_a_max_steps_fit_never_shows_a_negative_epoch(tmp_path):
    bar = RecordingBar()
    trainer = L.Trainer(
        max_steps=70, callbacks=[bar], default_root_dir=tmp_path, logger=False, enable_checkpointing=False
    )
    trainer.fit(BoringModel())  # 64 batches an epoch: 70 steps run into a second epoch
    assert [label.strip() for label in bar.labels] == ["Epoch 0", "Epoch 1"]
