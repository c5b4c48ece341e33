"""The training progress bar: Lightning's tqdm bar, counting epochs as the per-epoch summary does ("Epoch 1/18")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ProgressBar, TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import convert_inf

from rsa_lightning.utils.console import epoch_label


class EpochProgressBar(TQDMProgressBar):
    """Lightning's ``TQDMProgressBar`` whose training bar reads ``Epoch 1/18`` in the first of 18 epochs.

    Lightning's bars count from 0 (tqdm: ``Epoch 0``, rich: ``Epoch 0/17``); the per-epoch summary line and the rest
    of the console count from 1 (:func:`rsa_lightning.utils.console.epoch_label`). The bar's metrics leave out the
    logger's version number (``v_num``: the run folder names the run). Log records written while the bar is shown go
    above it (:class:`rsa_lightning.utils.console.ProgressBarAwareHandler`).
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        # as Lightning's, with the description set before the bar is redrawn (no "Epoch 0" flashing in between)
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        bar = self.train_progress_bar
        bar.set_description(f"Epoch {epoch_label(trainer.current_epoch, trainer.max_epochs)}", refresh=False)
        bar.reset(total=convert_inf(self.total_train_batches))
        bar.initial = 0

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


def with_progress_bar(callbacks: Sequence[Callback], enabled: bool) -> list[Callback]:
    """``callbacks`` plus an :class:`EpochProgressBar` when the bar is ``enabled`` (``trainer.enable_progress_bar``)
    and none of them is a progress bar already (a user's own bar is kept). With the bar disabled nothing is added:
    Lightning refuses a progress bar callback when ``enable_progress_bar`` is false."""
    callbacks = list(callbacks)
    if enabled and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(EpochProgressBar())
    return callbacks
