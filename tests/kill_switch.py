"""A callback that SIGKILLs its own process once, at the start of a given optimiser step (for resume tests)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from pytorch_lightning.callbacks import Callback


class KillAtStep(Callback):
    """Kills the process (SIGKILL: no clean-up, as a pre-empted node) when training reaches ``step``, unless
    ``marker`` exists; creates ``marker`` first, so the resumed run, whose config still lists the callback, goes on."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(f"killed at step {self.step}, batch {batch_idx} of epoch {trainer.current_epoch}\n")
            os.kill(os.getpid(), signal.SIGKILL)
