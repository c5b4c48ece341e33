"""The console's account of training: one line when it starts (global batch, lr, precision, devices) and one line per
epoch (losses, accuracies, lr, time, clips per second), also readable in ``train.log`` where no progress bar renders.

Throughput, logged per epoch to every logger (``csv/metrics.csv``, TensorBoard, W&B) by this callback:

- ``train/clips_per_s``: training clips per second over the epoch's training steps, all processes together: the
  clips of the epoch's training batches (per-device batch x processes, per batch) over the time of those steps on
  global rank 0, from the epoch's start (or the end of a validation inside the epoch) to each batch's end: data
  loading is included; the validation at the end of the epoch and its checkpoints are not.
- ``train/epoch_time_s``: the wall-clock time of the whole epoch, its validation included, as the summary line says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from rsa_lightning.modules.optim import global_batch_size
from rsa_lightning.utils.console import epoch_label

log = logging.getLogger(__name__)

CLIPS_PER_S = "train/clips_per_s"
EPOCH_TIME_S = "train/epoch_time_s"


def batch_clips(batch: Any) -> Optional[int]:
    """The number of clips in a training batch (``batch["video"]``: (B, C, T, H, W)), or None for another layout."""
    video = batch.get("video") if isinstance(batch, Mapping) else None
    return int(video.shape[0]) if isinstance(video, torch.Tensor) else None


def device_description(trainer: pl.Trainer) -> str:
    """``"cpu"``, ``"2 x NVIDIA A100-SXM4-40GB"``, ``"4 x cuda x 2 nodes"``: the devices the trainer runs on."""
    device = trainer.strategy.root_device
    name = device.type
    if device.type == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(device)
    text = name if trainer.num_devices == 1 else f"{trainer.num_devices} x {name}"
    return text if trainer.num_nodes == 1 else f"{text} x {trainer.num_nodes} nodes"


class EpochSummary(Callback):
    """Logs the start line of training and one line per epoch, and the epoch's throughput metrics.

    Start (on rank 0, once the optimiser exists, so the lr is the one ``auto_scale_lr`` set):
    ``training: 18 epochs, global batch 16 = 16 clips x 1 device(s) x 1 accumulated, lr 2.00e-03 (not scaled),
    precision 32-true on cpu``.
    Per epoch: ``epoch 3/18: train/loss_epoch 1.2345, ..., lr 1.95e-03, 42 s, 57.1 clips/s``. Epochs count from 1,
    as the progress bar's ``Epoch 3/18`` (:func:`rsa_lightning.utils.console.epoch_label`).

    Args:
        keys: the logged metrics the epoch line shows, when present (e.g. no ``val/...`` in an epoch without
            validation).
    """

    DEFAULT_KEYS = ("train/loss_epoch", "train/acc1", "val/loss", "val/acc1", "val/acc5", "val/mean_class_acc")

    def __init__(self, keys: tuple[str, ...] = DEFAULT_KEYS):
        self.keys = tuple(keys)
        self._epoch_start = time.monotonic()
        self._mark = self._epoch_start  # the start of the current stretch of training steps
        self._train_time = 0.0  # seconds of training steps in this epoch
        self._clips = 0  # clips of this epoch's training batches on this process

    # ---------------------------------------------------------------------------------------------------------------
    # start

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        parts = [f"{trainer.max_epochs} epochs" if trainer.max_epochs and trainer.max_epochs > 0 else "open epochs"]
        per_device = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
        if per_device is not None:
            batch = global_batch_size(
                per_device_batch_size=int(per_device),
                world_size=trainer.world_size,
                accumulate_grad_batches=trainer.accumulate_grad_batches,
            )
            parts.append(
                f"global batch {batch} = {per_device} clips x {trainer.world_size} device(s) x "
                f"{trainer.accumulate_grad_batches} accumulated"
            )
        if trainer.optimizers:
            group = trainer.optimizers[0].param_groups[0]
            lr = group.get("initial_lr", group["lr"])  # a scheduler's start (warm-up) factor is not the lr
            # VideoClassifier's auto_scale_lr: {"enabled": bool (default true), "base_batch_size": int} or None
            scaling = getattr(pl_module, "hparams", {}).get("auto_scale_lr")
            if scaling is not None and bool(scaling.get("enabled", True)):
                parts.append(f"lr {lr:.3g} (scaled from a global batch of {scaling['base_batch_size']})")
            else:
                parts.append(f"lr {lr:.3g} (not scaled)")
        parts.append(f"precision {trainer.precision} on {device_description(trainer)}")
        log.info("training: %s", ", ".join(parts))

    # ---------------------------------------------------------------------------------------------------------------
    # throughput

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = self._mark = time.monotonic()
        self._train_time = 0.0
        self._clips = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        self._train_time += now - self._mark
        self._mark = now
        clips = batch_clips(batch)
        if clips is None:
            clips = int(getattr(getattr(trainer, "datamodule", None), "batch_size", 0) or 0)
        self._clips += clips

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._mark = time.monotonic()  # a validation inside the epoch is not training time

    def clips_per_second(self, world_size: int) -> Optional[float]:
        """Training clips per second of the current epoch, all ``world_size`` processes together (None: no step)."""
        if self._clips == 0 or self._train_time <= 0:
            return None
        return self._clips * world_size / self._train_time

    # ---------------------------------------------------------------------------------------------------------------
    # end of epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # runs after the epoch's validation, so both train and val metrics of this epoch are in callback_metrics
        # read on every rank: reading computes (and so syncs) the epoch's metrics, a collective that every process
        # must enter in the same order
        metrics = trainer.callback_metrics
        if not trainer.is_global_zero:
            return
        epoch_time = time.monotonic() - self._epoch_start
        throughput = self.clips_per_second(trainer.world_size)
        # logged from rank 0 only (rank_zero_only: no collective); with the epoch's other metrics in the loggers
        pl_module.log(EPOCH_TIME_S, epoch_time, on_step=False, on_epoch=True, rank_zero_only=True)
        if throughput is not None:
            pl_module.log(CLIPS_PER_S, throughput, on_step=False, on_epoch=True, rank_zero_only=True)
        parts = [f"{k} {float(metrics[k]):.4f}" for k in self.keys if isinstance(metrics.get(k), torch.Tensor)]
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        parts.append(f"lr {lr:.2e}")
        parts.append(f"{epoch_time:.0f} s")
        if throughput is not None:
            parts.append(f"{throughput:.1f} clips/s")
        log.info("epoch %s: %s", epoch_label(trainer.current_epoch, trainer.max_epochs), ", ".join(parts))
