"""The training progress bar: Lightning's rich bar without its "Epoch 15/-2" for step-bounded runs."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


def epoch_description(current_epoch: int, max_epochs: int | None) -> str:
    """``Epoch 3/9`` when the run is bounded by epochs (0-based, as Lightning counts), else ``Epoch 3``.

    A run bounded by ``max_steps`` has ``max_epochs`` -1 (or None): there is no last epoch to show.
    """
    if max_epochs is None or max_epochs < 1:
        return f"Epoch {current_epoch}"
    return f"Epoch {current_epoch}/{max_epochs - 1}"


class EpochProgressBar(RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        description = epoch_description(current_epoch, self.trainer.max_epochs)
        # As Lightning does: pad to the validation bar's label, so the two labels do not flicker.
        return f"{description:{len(self.validation_description)}}"
