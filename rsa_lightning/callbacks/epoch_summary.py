"""One log line per epoch: the summary that log files keep where no progress bar renders."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

log = logging.getLogger(__name__)


class EpochSummary(Callback):
    """Logs one line per epoch (loss, accuracies, lr, time), readable in log files where no progress bar renders."""

    DEFAULT_KEYS = ("train/loss_epoch", "train/acc1", "val/loss", "val/acc1", "val/acc5", "val/mean_class_acc")

    def __init__(self, keys: tuple[str, ...] = DEFAULT_KEYS):
        self.keys = keys
        self._start = time.time()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.time()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # runs after the epoch's validation, so both train and val metrics of this epoch are in callback_metrics
        # read on every rank: reading computes (and so syncs) the epoch's metrics, a collective that every process
        # must enter in the same order
        metrics = trainer.callback_metrics
        if not trainer.is_global_zero:
            return
        parts = [f"{k} {float(metrics[k]):.4f}" for k in self.keys if isinstance(metrics.get(k), torch.Tensor)]
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        log.info(
            "epoch %d/%d: %s, lr %.2e, %.0f s",
            trainer.current_epoch + 1,
            trainer.max_epochs,
            ", ".join(parts),
            lr,
            time.time() - self._start,
        )
