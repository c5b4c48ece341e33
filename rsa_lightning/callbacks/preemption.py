"""Pre-emption and time limits: on SIGTERM or SIGUSR1, save a resumable checkpoint and stop with a message.

A cluster stops a job with SIGTERM (pre-emption, ``scancel``, the time limit; SIGKILL follows after a grace period)
and, when asked to (``sbatch --signal=SIGUSR1@90``), warns it with SIGUSR1 before the time limit.
:class:`StopOnSignal` turns either into: finish the training step in progress, write ``checkpoints/last.ckpt``
(through :class:`~rsa_lightning.callbacks.LastCheckpoint`, the file ``train.py resume=<run dir>`` reads, with the
position inside the epoch), and end the run with :class:`Interrupted`: ``train.py`` prints
``error: training stopped by SIGTERM at epoch E, step S: ...; continue with: python train.py resume=<run dir>``,
writes ``"status": "interrupted"`` into ``result.json`` and exits with :data:`INTERRUPTED_EXIT` (3), so that a
wrapper script can tell an interruption (resume it) from a failure (1) and bad input (2).

Ctrl-C (SIGINT) in a terminal does the same: the first one finishes the step, saves and stops (it says so at once);
a second one stops at once (Python's ``KeyboardInterrupt``, handled by Lightning, with nothing saved since the last
checkpoint).

When it acts:
    at the end of the training step during which the signal arrived. A signal during the last step of an epoch or
    during the validation that ends an epoch is acted on after that validation, at the end-of-epoch checkpoint (a
    validation pass is not resumable part-way); set the warning time (``--signal=SIGUSR1@<seconds>``) to cover a
    training step plus a validation pass. Before training starts (data preparation, model set-up) the signal has
    its default effect (the process ends; nothing of this run is lost, an earlier ``last.ckpt`` stays intact).
SLURM with auto-requeue (``trainer=slurm``: Lightning's ``SLURMEnvironment(auto_requeue=True)``):
    SIGUSR1 is left to Lightning, which saves ``hpc_ckpt_<n>.ckpt`` and requeues the job (the requeued job resumes
    from the newest of that file and ``last.ckpt``: :func:`rsa_lightning.resume.requeued_run_dir`); this callback
    does not install a SIGUSR1 handler then, so the two never both act on one signal. SIGTERM (what SLURM sends
    when it stops the requeued job) is handled here.
Lightning's own SIGTERM handling:
    while training runs, this callback's handler replaces it (Lightning stops after the batch without a checkpoint
    and exits with status 0); the previous handlers are put back when training ends.
DDP:
    whether to stop is decided on all processes together (one all-reduce of a flag per training step), so they save
    the same step and stop together, whichever process received the signal.

DataLoader workers:
    a cluster signals every process of a job, DataLoader workers included. PyTorch's workers die on a SIGTERM that
    is not their parent's, and the run would then fail with "DataLoader worker is killed by signal" before anything
    is saved: the training loaders' ``worker_init_fn`` must be :func:`rsa_lightning.utils.signals.ignore_stop_signals`.
    SIGUSR1 reaches workers started after this callback's ``setup`` through the handler they inherit, which there
    only records it (the main process decides).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint

from rsa_lightning.callbacks.resume import LastCheckpoint
from rsa_lightning.errors import INTERRUPTED_EXIT, RunFault
from rsa_lightning.utils.console import epoch_label

log = logging.getLogger(__name__)

INTERRUPTED_STATUS = "interrupted"
DEFAULT_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


class Interrupted(RunFault):
    """The run stopped on a signal after saving a resumable checkpoint; exit code :data:`INTERRUPTED_EXIT`."""

    exit_code = INTERRUPTED_EXIT
    result_status = INTERRUPTED_STATUS


def lightning_requeue_signal(trainer: pl.Trainer) -> Optional[signal.Signals]:
    """The signal Lightning's SLURM auto-requeue handles for this trainer (its ``SLURMEnvironment`` with
    ``auto_requeue``), else None."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    connector = getattr(trainer, "_accelerator_connector", None)
    environment = getattr(connector, "cluster_environment", None)
    if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
        return signal.Signals(environment.requeue_signal or signal.SIGUSR1)
    return None


class StopOnSignal(Checkpoint):
    """Saves ``last.ckpt`` and stops training with :class:`Interrupted` on one of ``signals`` (module docstring).

    A Lightning ``Checkpoint`` callback listed after ``last_checkpoint`` (``conf/callbacks/default.yaml``), so it
    runs after :class:`~rsa_lightning.callbacks.LastCheckpoint`: when that one has just saved this step, nothing is
    saved twice.

    Args:
        run_dir: the run's folder, named in the message (``python train.py resume=<run_dir>``); without a
            ``LastCheckpoint`` callback the checkpoint is written to ``<run_dir>/checkpoints/last.ckpt``.
        signals: signal names (``"SIGTERM"``, ``"SIGUSR1"``, ...).
    """

    def __init__(self, run_dir: str, *, signals: Sequence[str] = DEFAULT_SIGNALS) -> None:
        names = [str(name).upper() for name in signals]
        unknown = [name for name in names if name not in signal.Signals.__members__]
        if unknown:
            raise ValueError(f"signals: unknown signal name(s) {unknown}; e.g. {list(DEFAULT_SIGNALS)}")
        if {"SIGKILL", "SIGSTOP"} & set(names):
            raise ValueError("signals: SIGKILL and SIGSTOP cannot be handled by a process")
        self.run_dir = Path(run_dir)
        self.signals = tuple(signal.Signals[name] for name in names)
        self.received: Optional[signal.Signals] = None
        self._previous: dict[signal.Signals, Any] = {}
        self._pid = os.getpid()  # the main process (DataLoader workers inherit the handler)

    # ---------------------------------------------------------------------------------------------------------------
    # handlers

    def handled_signals(self, trainer: pl.Trainer) -> list[signal.Signals]:
        """``signals`` without the one Lightning's SLURM auto-requeue handles (see :func:`lightning_requeue_signal`)."""
        requeue = lightning_requeue_signal(trainer)
        return [s for s in self.signals if s != requeue]

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if not self._previous:  # left installed after training (Lightning's teardown restores what it found)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        # only record it: a signal handler runs between two bytecodes of whatever the main thread does (in a
        # DataLoader worker, which inherited the handler, nothing else happens: the main process decides)
        if signum == signal.SIGINT and os.getpid() == self._pid:
            if self.received == signal.SIGINT:  # Ctrl-C twice: stop at once
                raise KeyboardInterrupt
            # os.write: print() inside a signal handler can interrupt another print of this process
            os.write(2, b"\nCtrl-C: finishing this step, saving last.ckpt and stopping (Ctrl-C again: stop now)\n")
        if self.received is None:
            self.received = signal.Signals(signum)

    def install(self, trainer: pl.Trainer) -> None:
        """Puts this callback's handler in place (again: Lightning installs its own when it starts running the fit,
        after ``setup``), remembering the handlers found first."""
        if getattr(trainer, "received_sigterm", False) and signal.SIGTERM in self.signals and self.received is None:
            self.received = signal.SIGTERM  # arrived while Lightning's handler was in place
        for signum in self.handled_signals(trainer):
            current = signal.getsignal(signum)
            if current == self._handle:
                continue
            try:
                signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave the signals alone
                log.warning("training does not run in the main thread: %s will not save a checkpoint", signum.name)
                return
            self._previous.setdefault(signum, current)

    def restore(self) -> None:
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    # installed before the DataLoader workers start (they inherit it), and again over Lightning's handler
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.received = None
            self._pid = os.getpid()
            self.install(trainer)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.install(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.install(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.restore()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.restore()

    # ---------------------------------------------------------------------------------------------------------------
    # stopping

    def _should_stop(self, trainer: pl.Trainer) -> bool:
        # every process takes part in the decision, whichever received the signal
        return bool(trainer.strategy.reduce_boolean_decision(self.received is not None, all=False))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        if progress.processed >= trainer.num_training_batches:
            return  # the epoch's last step: stop after its validation, at the end-of-epoch checkpoint
        if trainer.fit_loop.epoch_loop._should_accumulate():
            return  # inside an accumulation window: stop at the optimiser step
        if self._should_stop(trainer):
            self._stop(trainer, at_epoch_end=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._should_stop(trainer):
            self._stop(trainer, at_epoch_end=True)

    def _stop(self, trainer: pl.Trainer, *, at_epoch_end: bool) -> None:
        name = self.received.name if self.received is not None else "a signal to another process"
        log.warning("%s received: saving a resumable checkpoint and stopping", name)
        last = next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, LastCheckpoint)), None)
        if last is None:
            path = self.run_dir / "checkpoints" / "last.ckpt"
            trainer.save_checkpoint(path)
        else:
            path = last.path
            if not last.has_saved(trainer, at_epoch_end=at_epoch_end):
                last.save(trainer, at_epoch_end=at_epoch_end)
        where = "the end of epoch" if at_epoch_end else "epoch"
        raise Interrupted(
            f"training stopped by {name} at {where} {epoch_label(trainer.current_epoch, trainer.max_epochs)}, step "
            f"{trainer.global_step}: saved "
            f"{path} (resumable, the position in the epoch included); continue with: "
            f"python train.py resume={self.run_dir}"
        )
