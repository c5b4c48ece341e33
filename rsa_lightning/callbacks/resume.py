"""What a run needs to resume losing nothing: a ``last.ckpt`` inside epochs, and the state Lightning leaves out.

Lightning's checkpoint holds the weights, the optimiser, the LR schedule, the loops' progress and (through
:class:`rsa_lightning.data.resumable.ResumableDataLoader`) the training data's position. :class:`ResumeState` adds
what else decides the next steps and the logs: torch's, numpy's and Python's global RNG states (dropout, mixup), the
logging step the checkpoint belongs to (``train.py resume=...`` cuts the CSV log there) and the W&B run id (the
resumed run continues that W&B run). :class:`LastCheckpoint` writes ``last.ckpt`` at the end of every epoch and,
inside long epochs, every N optimiser steps and/or every M minutes.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, Checkpoint
from pytorch_lightning.utilities.seed import _collect_rng_states, _set_rng_states
from torch import nn
from torchmetrics import Metric

log = logging.getLogger(__name__)

# keys ResumeState adds to the checkpoint
RNG_KEY = "rng_states"
LOG_STEP_KEY = "log_step"
WANDB_ID_KEY = "wandb_run_id"
EPOCH_METRICS_KEY = "running_epoch_metrics"


def wandb_run_id(trainer: pl.Trainer) -> Optional[str]:
    """The id of the W&B run one of ``trainer.loggers`` writes to (None without a W&B logger)."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            return logger.version  # the run id; created on first use
    return None


class ResumeState(Callback):
    """Stores in every checkpoint the global RNG states (torch CPU and CUDA, numpy, Python ``random``), the logging
    step (``trainer.fit_loop.epoch_loop._batches_that_stepped``: metrics of later steps were logged after the
    checkpoint), the W&B run id and, inside an epoch, the running epoch averages (the torchmetrics states of the
    training loss and accuracies); restores RNG states and averages when training resumes, and hands the training
    loader its position (see ``on_train_start``).

    DDP: each process has its own RNG stream (dropout masks differ per GPU) and the checkpoint keeps rank 0's, which
    every process restores; a resumed DDP run is therefore the same run up to the other ranks' dropout masks. Saving
    all ranks' states would need a collective inside ``save_checkpoint``, which Lightning also calls from the SLURM
    signal handler at an arbitrary point of each process.
    """

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        states = _collect_rng_states(include_cuda=True)
        # numpy's state as plain numbers: checkpoints load with torch.load(weights_only=True), which refuses arrays
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        states["numpy"] = (kind, keys.tolist(), int(pos), int(has_gauss), float(gauss))
        checkpoint[RNG_KEY] = states
        checkpoint[LOG_STEP_KEY] = logging_step(trainer)
        run_id = wandb_run_id(trainer)
        if run_id is not None:
            checkpoint[WANDB_ID_KEY] = run_id
        epoch_loop = trainer.fit_loop.epoch_loop
        if trainer.training and epoch_loop.batch_progress.current.processed < trainer.num_training_batches:
            checkpoint[EPOCH_METRICS_KEY] = running_metric_states(pl_module)

    def __init__(self) -> None:
        self._loader_states: list[dict[str, Any]] = []
        self._metric_states: dict[str, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning hands the training loader its saved state only when it builds the loader after restoring the
        # loops; a module that reads trainer.estimated_stepping_batches in configure_optimizers (as VideoClassifier's
        # step-wise LR schedule does) makes it build the loader, and start iterating it, before. Apply the state
        # here, where everything is restored, and start the epoch's iterator again from the saved position.
        states, self._loader_states = self._loader_states, []
        fit_loop = trainer.fit_loop
        if not states or fit_loop._combined_loader is None or fit_loop._data_fetcher is None:
            return
        # a checkpoint from the end of an epoch (or one that predates the "epoch_done" key): the epoch Lightning
        # continues with is a new one, which the loader starts from its first sample
        finished_epochs = fit_loop.epoch_progress.current.processed
        states = [
            {**state, "epoch_done": True} if state.get("epoch", finished_epochs) < finished_epochs else state
            for state in states
        ]
        fit_loop._combined_loader._load_state_dicts(states)
        iter(fit_loop._data_fetcher)
        metric_states, self._metric_states = self._metric_states, {}
        load_metric_states(pl_module, metric_states)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        fit_state = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        self._loader_states = list(fit_state.get("combined_loader", []))
        self._metric_states = checkpoint.get(EPOCH_METRICS_KEY, {})
        states = checkpoint.get(RNG_KEY)
        if states is None:
            log.info(
                "the checkpoint has no RNG states (saved without the resume_state callback): dropout and mixup "
                "draw new random numbers from here on"
            )
            return
        states = dict(states)
        if "torch.cuda" in states and not _cuda_available():
            del states["torch.cuda"]
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        states["numpy"] = (kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss)
        _set_rng_states(states)


def logging_step(trainer: pl.Trainer) -> int:
    """The last logging step whose rows belong before a checkpoint saved now: rows of later steps are logged again
    by a run resumed from it. Lightning logs with ``fit_loop.epoch_loop._batches_that_stepped``, which it increments
    after a batch's ``on_train_batch_end`` (that batch's rows are logged after a save there, and not again on resume),
    so at the end of an epoch (every batch completed) the count already points at the next epoch's first step."""
    epoch_loop = trainer.fit_loop.epoch_loop
    step = int(epoch_loop._batches_that_stepped)
    progress = epoch_loop.batch_progress.current
    return step - 1 if progress.completed == progress.processed and progress.processed > 0 else step


def running_metric_states(module: nn.Module) -> dict[str, dict[str, Any]]:
    """The accumulated states of the module's torchmetrics ``Metric`` objects that have seen data this epoch (the
    training epoch's loss and accuracies), by module name; ``"_update_count"`` included."""
    states = {}
    for name, metric in module.named_modules():
        if isinstance(metric, Metric) and metric._update_count > 0:
            states[name] = {key: getattr(metric, key) for key in metric._defaults}
            states[name]["_update_count"] = metric._update_count
    return states


def load_metric_states(module: nn.Module, states: dict[str, dict[str, Any]]) -> None:
    """Puts :func:`running_metric_states` back (on the metrics' devices)."""
    for name, saved in states.items():
        metric = module.get_submodule(name)
        for key, value in saved.items():
            if key == "_update_count":
                metric._update_count = value
            elif isinstance(value, torch.Tensor):
                setattr(metric, key, value.to(metric.device))
            else:  # list states (concatenated at compute)
                setattr(metric, key, [v.to(metric.device) for v in value])
        metric._computed = None


def _cuda_available() -> bool:
    return torch.cuda.is_available()


class LastCheckpoint(Checkpoint):
    """``<dirpath>/last.ckpt``: what ``train.py resume=<run dir>`` continues from.

    A Lightning ``Checkpoint`` callback, so Lightning runs it after the others (after ``ModelCheckpoint`` has
    recorded the epoch's best, which the file then holds). Written after every training epoch (after its validation)
    and, inside an epoch, after every
    ``every_n_train_steps`` optimiser steps and whenever ``every_n_minutes`` have passed since the last save (rank 0's
    clock decides for all processes). Each save replaces the previous one atomically (a temporary file renamed over
    it), so a process killed while saving leaves the last complete checkpoint.

    Args:
        dirpath: the run's checkpoint folder.
        every_n_train_steps: save every this many optimiser steps (None: not by steps).
        every_n_minutes: save when this many minutes have passed since the last save (None: not by time).
        filename: the file name.
    """

    def __init__(
        self,
        dirpath: str,
        *,
        every_n_train_steps: Optional[int] = None,
        every_n_minutes: Optional[float] = None,
        filename: str = "last.ckpt",
    ) -> None:
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be >= 1 or null, got {every_n_train_steps}")
        if every_n_minutes is not None and every_n_minutes <= 0:
            raise ValueError(f"every_n_minutes must be > 0 or null, got {every_n_minutes}")
        self.path = Path(dirpath) / filename
        self.every_n_train_steps = every_n_train_steps
        self.every_n_minutes = every_n_minutes
        self._last_saved_step: Optional[int] = None
        self._last_saved_at_epoch_end = False
        self._last_saved_time = time.monotonic()

    @property
    def state_key(self) -> str:
        return self._generate_state_key(path=str(self.path))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_saved_time = time.monotonic()

    def _time_is_up(self, trainer: pl.Trainer) -> bool:
        if self.every_n_minutes is None:
            return False
        due = time.monotonic() - self._last_saved_time >= 60 * self.every_n_minutes
        return bool(trainer.strategy.broadcast(due))  # every process saves, or none

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._last_saved_step or trainer.sanity_checking:
            return  # no optimiser step since the last save (gradient accumulation)
        by_steps = self.every_n_train_steps is not None and step % self.every_n_train_steps == 0
        if self._time_is_up(trainer) or by_steps:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and not trainer.fast_dev_run:
            self.save(trainer, at_epoch_end=True)

    def has_saved(self, trainer: pl.Trainer, *, at_epoch_end: bool) -> bool:
        """Whether the file already holds this state: this optimiser step, inside the epoch or at its end."""
        return self._last_saved_step == trainer.global_step and self._last_saved_at_epoch_end == at_epoch_end

    def save(self, trainer: pl.Trainer, *, at_epoch_end: bool = False) -> None:
        """Write the checkpoint (every process takes part; rank 0 writes). With the trainer's
        :class:`~rsa_lightning.utils.checkpoint_io.AtomicCheckpointIO` plugin the temporary file is also synced to
        disk before it is renamed."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp)  # ends with a barrier: the file is complete on every process's return
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        self._last_saved_step = trainer.global_step
        self._last_saved_at_epoch_end = at_epoch_end
        self._last_saved_time = time.monotonic()
