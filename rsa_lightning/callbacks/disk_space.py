"""Before training: is the checkpoint folder writable, and is there room for the checkpoints the run will keep?

A 70-hour run that finds a full disk at its first checkpoint, hours in, has lost those hours.
:class:`DiskSpaceCheck` runs when fitting is set up (before the first step; the model exists, so its size is known)
and stops the run with one message when the folder cannot be written (exit code 2, ``cannot write <folder>: ...``)
or has less free space than :func:`expected_checkpoint_bytes` x the checkpoint files kept (exit code 2,
:class:`NotEnoughDiskSpace`). A disk that fills up later anyway (other jobs, logs) is caught at the save:
:mod:`rsa_lightning.utils.checkpoint_io` never leaves a half-written file, and :mod:`rsa_lightning.utils.faults`
names the resume command.

Checkpoint files kept: the ``ModelCheckpoint`` callbacks' ``save_top_k`` (``-1``: one per epoch) and ``save_last``,
one ``last.ckpt`` (:class:`~rsa_lightning.callbacks.LastCheckpoint`), one SLURM ``hpc_ckpt`` under auto-requeue, plus
one being written (a save writes the new file before the old one goes). Checkpoint files already in the folder (a
resumed run) count as space the run has.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch import nn

from rsa_lightning.callbacks.preemption import lightning_requeue_signal
from rsa_lightning.callbacks.resume import LastCheckpoint
from rsa_lightning.errors import UserError

log = logging.getLogger(__name__)

# optimiser state tensors per parameter (same size as the parameter): Adam's two moments, SGD's momentum buffer
OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "nadam": 2, "radam": 2, "adamax": 2, "sgd": 1, "rmsprop": 2, "lamb": 2}
DEFAULT_OPTIMIZER_STATES = 2
GB = 1024**3


class NotEnoughDiskSpace(UserError):
    """The checkpoint folder has less free space than the run's checkpoints need (exit code 2)."""


def optimizer_states_per_parameter(optimizer: Any) -> int:
    """State tensors per parameter of an optimiser class, partial or instance (2 when unknown)."""
    target = optimizer.func if isinstance(optimizer, functools.partial) else optimizer
    name = getattr(target, "__name__", type(target).__name__).lower()
    return OPTIMIZER_STATES.get(name, DEFAULT_OPTIMIZER_STATES)


def expected_checkpoint_bytes(module: nn.Module, optimizer_states: int = DEFAULT_OPTIMIZER_STATES) -> int:
    """Bytes of one training checkpoint of ``module``: its state dict plus ``optimizer_states`` fp32 tensors per
    trainable parameter (the loops' and callbacks' state is small next to them)."""
    weights = sum(t.numel() * t.element_size() for t in module.state_dict().values() if hasattr(t, "numel"))
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return int(weights + 4 * optimizer_states * trainable)


def checkpoint_files_kept(trainer: pl.Trainer) -> int:
    """How many checkpoint files the trainer's callbacks keep at once (module docstring), without the one in writing."""
    kept = 0
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            top_k = callback.save_top_k if callback.save_top_k >= 0 else max(int(trainer.max_epochs or 1), 1)
            kept += top_k + int(bool(callback.save_last))
        elif isinstance(callback, LastCheckpoint):
            kept += 1
    if lightning_requeue_signal(trainer) is not None:
        kept += 1
    return kept


def _free_bytes(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _existing_checkpoint_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.glob("*.ckpt") if p.is_file())


def _human(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(num_bytes) < 1024 or unit == "TB":
            return f"{num_bytes:.1f} {unit}" if unit != "B" else f"{int(num_bytes)} B"
        num_bytes /= 1024
    return f"{num_bytes:.1f} TB"


def check_checkpoint_folder(folder: Path) -> None:
    """Creates ``folder`` and writes a probe file into it.

    Raises:
        OSError: the folder cannot be created or written (its ``filename`` is the folder).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(folder)) from err


class DiskSpaceCheck(Callback):
    """Stops a run before its first step when the checkpoint folder is unwritable or too full (module docstring).

    Args:
        dirpath: the checkpoint folder (the run's ``checkpoints/``).
        reserve_gb: free space to leave besides the checkpoints (logs, predictions, other jobs).
    """

    def __init__(self, dirpath: str, *, reserve_gb: float = 0.5) -> None:
        if reserve_gb < 0:
            raise ValueError(f"reserve_gb must be >= 0, got {reserve_gb}")
        self.dirpath = Path(dirpath)
        self.reserve_gb = reserve_gb

    def problem(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Optional[str]:
        """Why the checkpoints will not fit in the folder, or None (raises ``OSError`` for an unwritable folder)."""
        check_checkpoint_folder(self.dirpath)
        kept = checkpoint_files_kept(trainer)
        if kept == 0:
            return None
        states = optimizer_states_per_parameter(getattr(pl_module, "optimizer_factory", None))
        per_file = expected_checkpoint_bytes(pl_module, states)
        needed = per_file * (kept + 1) - _existing_checkpoint_bytes(self.dirpath)
        needed = max(needed, per_file) + int(self.reserve_gb * GB)
        free = _free_bytes(self.dirpath)
        log.info(
            "checkpoints: ~%s each, up to %d kept (+1 while writing) in %s; %s free",
            _human(per_file),
            kept,
            self.dirpath,
            _human(free),
        )
        if free >= needed:
            return None
        return (
            f"not enough free space for this run's checkpoints in {self.dirpath}: {_human(free)} free, "
            f"{_human(needed)} needed ({kept} + 1 checkpoint files of ~{_human(per_file)}: weights + optimiser state, "
            f"plus callbacks.disk_space.reserve_gb={self.reserve_gb}); free space there, write elsewhere "
            "(paths.log_dir=...), or keep fewer checkpoints (callbacks.model_checkpoint.save_top_k=1)"
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        problem: Optional[str] = None
        error: Optional[OSError] = None
        if trainer.is_global_zero:  # rank 0 writes the checkpoints
            try:
                problem = self.problem(trainer, pl_module)
            except OSError as err:
                error = err
        # every process stops, or none
        errno_, strerror = trainer.strategy.broadcast(
            (error.errno, error.strerror) if error is not None else (None, None)
        )
        problem = trainer.strategy.broadcast(problem)
        if errno_ is not None:
            if error is not None:
                raise error
            raise OSError(errno_, strerror, str(self.dirpath))
        if problem:
            raise NotEnoughDiskSpace(problem)
