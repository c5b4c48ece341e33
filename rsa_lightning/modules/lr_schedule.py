"""Learning-rate schedule: linear warm-up, then cosine decay (a pure function of progress, wrapped in LambdaLR)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(
    step: int, *, total_steps: int, warmup_steps: int, start_factor: float = 0.001, end_factor: float = 0.001
) -> float:
    """Multiplier of the base lr after ``step`` completed steps (or epochs) out of ``total_steps``.

    Warm-up rises linearly from ``start_factor`` towards 1 over ``warmup_steps``; then a half cosine falls from 1 to
    ``end_factor`` at ``total_steps``. The lr used for step ``s`` (0-based) is the factor at ``s + 1`` during warm-up,
    so the first step already trains (as in the official TSM/RSA schedule, epoch e uses ``(e + 1) / warmup``).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    s = step + 1
    if s < warmup_steps:
        return start_factor + (1.0 - start_factor) * s / warmup_steps
    progress = min(max(s - warmup_steps, 0) / max(total_steps - warmup_steps, 1), 1.0)
    return end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    steps_per_epoch: float = 1.0,
    warmup_epochs: float = 5.0,
    start_factor: float = 0.001,
    end_factor: float = 0.001,
) -> LambdaLR:
    """The official RSA/TSM schedule as a ``LambdaLR``: :func:`warmup_cosine_factor` over ``total_steps`` scheduler
    steps, the warm-up lasting ``warmup_epochs`` epochs of ``steps_per_epoch`` steps (rounded to whole steps).

    Configured as a ``_partial_`` (``model.scheduler``); :class:`rsa_lightning.modules.VideoClassifier` supplies
    ``total_steps`` and ``steps_per_epoch`` (1 and ``max_epochs`` when stepped per epoch, as the official runs).
    """
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    warmup = min(round(warmup_epochs * steps_per_epoch), total_steps)

    def factor(step: int) -> float:
        return warmup_cosine_factor(
            step, total_steps=total_steps, warmup_steps=warmup, start_factor=start_factor, end_factor=end_factor
        )

    return LambdaLR(optimizer, factor)
