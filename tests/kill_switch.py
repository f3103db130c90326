"""A callback that SIGKILLs its own training process at a given optimizer step: a crash at a known point.

Used by the crash-recovery test through the CLI (``--trainer.callbacks+=tests.kill_switch.KillAtStep``), so the
kill happens at the same step on every machine instead of racing a watcher process.
"""

from __future__ import annotations

import os
import signal

import lightning as L


class KillAtStep(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        # Checkpoint callbacks save at the end of the previous batch, so last.ckpt already holds step `step`.
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
