"""Divergence: optimiser steps with a non-finite loss or gradients are skipped and counted; too many stop the run.

:class:`NonFiniteGuard` looks at every optimiser step after the backward pass (after AMP's unscaling, before gradient
clipping): when the loss of one of its micro-batches or one of the gradients is NaN or infinite, it drops the
gradients, so the optimiser leaves every weight and its own state (moments) unchanged, puts back the module's buffers
as they were before the step (BatchNorm statistics and counts, which the step's forward passes updated with the same
non-finite activations; one copy of the buffers per step), and counts the step
(``train/nonfinite_steps``, the total so far, logged every epoch; one warning per skipped step). The learning-rate
schedule and ``global_step`` still advance, as when AMP's grad scaler skips a step. After ``max_consecutive`` skipped
steps in a row or ``max_total`` in all it raises :class:`TrainingDiverged` (exit code 1) with how many, where, the
checkpoint kept from before and the likely causes. The counts are saved in checkpoints (a resumed run goes on
counting).

fp16 (``trainer.precision=16-mixed``): AMP's grad scaler already skips steps whose gradients overflow and lowers its
scale; those are part of its normal working and are not counted here. A non-finite *loss* is counted under every
precision.

DDP: after the backward pass every process holds the same (all-reduced) gradients, so all see the same non-finite
gradients; the loss differs per process, so whether to skip is all-reduced (one flag per optimiser step), and a step
skipped on one process is skipped on all (otherwise the processes' weights would drift apart). Tested on one process.

:class:`FiniteModelCheckpoint` is Lightning's ``ModelCheckpoint`` that never keeps an epoch whose monitored metric is
NaN or infinite as a best checkpoint (Lightning's own keeps one as the first "best" with a score of -inf). Validation
logs NaN accuracies when any video's scores are not finite (:mod:`rsa_lightning.evaluation.metrics`).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from rsa_lightning.callbacks.resume import LastCheckpoint
from rsa_lightning.errors import RunFault
from rsa_lightning.utils.console import epoch_label

log = logging.getLogger(__name__)

METRIC_KEY = "train/nonfinite_steps"


class TrainingDiverged(RunFault):
    """Too many optimiser steps with a non-finite loss or gradients (exit code 1)."""


def _grads_are_finite(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """A bool scalar tensor on the gradients' device (no host synchronisation)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return torch.tensor(True)
    # NaN / inf when any element is (or when finite gradients are so large that the norm overflows, which gradient
    # clipping would turn into zeros anyway)
    return torch.isfinite(torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False))


class NonFiniteGuard(Callback):
    """Skips and counts optimiser steps with a non-finite loss or gradients; stops a diverged run (module docstring).

    Args:
        max_consecutive: stop after this many skipped steps in a row.
        max_total: stop after this many skipped steps in all (None: no limit).
    """

    def __init__(self, *, max_consecutive: int = 10, max_total: Optional[int] = 100) -> None:
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be >= 1, got {max_consecutive}")
        if max_total is not None and max_total < 1:
            raise ValueError(f"max_total must be >= 1 or null, got {max_total}")
        self.max_consecutive = max_consecutive
        self.max_total = max_total
        self.total = 0
        self.consecutive = 0
        self.first_of_streak: Optional[tuple[int, int]] = None  # (epoch, step) of the streak's first skipped step
        self._loss_finite: Optional[torch.Tensor] = None  # over the micro-batches of this optimiser step
        self._buffers: Optional[list[torch.Tensor]] = None  # the module's buffers before this optimiser step
        self._skipped = False  # the last optimiser step was skipped

    # ---------------------------------------------------------------------------------------------------------------
    # checking

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._buffers is None:  # the first micro-batch of an optimiser step
            self._buffers = [b.detach().clone() for b in pl_module.buffers()]

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).all()
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        loss_finite = self._loss_finite if self._loss_finite is not None else torch.tensor(True)
        self._loss_finite = None
        uses_grad_scaler = getattr(trainer.precision_plugin, "scaler", None) is not None
        finite = loss_finite if uses_grad_scaler else loss_finite & _grads_are_finite(optimizer).to(loss_finite)
        skip = not bool(finite)  # the one host synchronisation per optimiser step
        skip = bool(trainer.strategy.reduce_boolean_decision(skip, all=False))
        self._skipped = skip
        buffers, self._buffers = self._buffers, None
        if skip:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None  # the optimiser leaves parameters without gradients (and their state) as they are
            if buffers is not None:  # the BatchNorm statistics the step's forward passes updated
                with torch.no_grad():
                    for buffer, saved in zip(pl_module.buffers(), buffers):
                        buffer.copy_(saved)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.fit_loop.epoch_loop._should_accumulate():
            return
        skipped, self._skipped = self._skipped, False
        if not skipped:
            self.consecutive, self.first_of_streak = 0, None
            return
        self.total += 1
        self.consecutive += 1
        step = trainer.global_step  # already counts the skipped step
        if self.first_of_streak is None:
            self.first_of_streak = (trainer.current_epoch, step)
        limits = f"stop at {self.max_consecutive} in a row" + (
            f" or {self.max_total} in all" if self.max_total is not None else ""
        )
        log.warning(
            "epoch %d, step %d: non-finite loss or gradients, optimiser step skipped (%d in a row, %d in all; %s)",
            trainer.current_epoch,
            step,
            self.consecutive,
            self.total,
            limits,
        )
        if self.consecutive >= self.max_consecutive or (self.max_total is not None and self.total >= self.max_total):
            raise TrainingDiverged(self._message(trainer, pl_module))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log(METRIC_KEY, float(self.total), on_step=False, on_epoch=True, reduce_fx="max")

    def _message(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        epoch, step = trainer.current_epoch, trainer.global_step
        first_epoch, first_step = self.first_of_streak or (epoch, step)
        kept = []
        last = next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, LastCheckpoint)), None)
        if last is not None and last.path.is_file() and last._last_saved_step is not None:
            kept.append(f"{last.path} (step {last._last_saved_step}; skipped steps never changed the weights)")
        best = trainer.checkpoint_callback
        if isinstance(best, ModelCheckpoint) and best.best_model_path:
            kept.append(f"best {best.best_model_path}")
        optimizers = trainer.optimizers
        lr = optimizers[0].param_groups[0]["lr"] if optimizers else None
        precision = str(trainer.precision)
        causes = [f"the learning rate is too high (now {lr:.3g}; lower model.optimizer.lr)" if lr else "a too high lr"]
        if "16" in precision and "bf16" not in precision:
            causes.append(f"fp16 overflow (trainer.precision={precision}): use trainer.precision=bf16-mixed")
        else:
            causes.append("fp16 overflow if trained in 16-mixed: use bf16-mixed")
        causes.append("bad input data (check data for NaN)")
        limit = (
            f"callbacks.nonfinite.max_consecutive={self.max_consecutive}"
            if self.consecutive >= self.max_consecutive
            else f"callbacks.nonfinite.max_total={self.max_total}"
        )
        return (
            f"training diverged: {self.consecutive} optimiser steps in a row had a non-finite loss or gradients "
            f"(epoch {epoch_label(first_epoch, trainer.max_epochs)} step {first_step} to epoch "
            f"{epoch_label(epoch, trainer.max_epochs)} step {step}; {self.total} skipped in all, "
            f"limit {limit}); stopped. Kept: {'; '.join(kept) or 'no checkpoint yet'}. Likely causes: "
            + "; ".join(causes)
        )

    # ---------------------------------------------------------------------------------------------------------------
    # checkpoint state: a resumed run goes on counting

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "consecutive": self.consecutive, "first_of_streak": self.first_of_streak}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.total = int(state_dict.get("total", 0))
        self.consecutive = int(state_dict.get("consecutive", 0))
        first = state_dict.get("first_of_streak")
        self.first_of_streak = tuple(first) if first is not None else None  # type: ignore[assignment]


class FiniteModelCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that never saves an epoch whose monitored value is NaN or infinite as a top-k
    checkpoint (such an epoch diverged, or its scores were not finite); it logs why instead."""

    def check_monitor_top_k(self, trainer: pl.Trainer, current: Optional[torch.Tensor] = None) -> bool:
        if current is not None and not math.isfinite(float(current)):
            log.warning(
                "%s is %s at epoch %d: not a candidate for the best checkpoint",
                self.monitor,
                float(current),
                trainer.current_epoch,
            )
            return False
        return super().check_monitor_top_k(trainer, current)
