"""Optimiser parameter groups and the linear learning-rate scaling rule."""

from __future__ import annotations

from torch import nn

NO_DECAY_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed group (conv/linear weights, RSA tensors such as P1 and I) and an
    undecayed one (every normalisation-layer parameter and every bias).

    Each parameter appears exactly once, in registration order, so the grouping is deterministic.
    """
    norm_params = {id(p) for m in model.modules() if isinstance(m, NO_DECAY_NORMS) for p in m.parameters(False)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in norm_params or name.endswith(".bias") or name == "bias":
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def global_batch_size(*, per_device_batch_size: int, world_size: int, accumulate_grad_batches: int = 1) -> int:
    """Clips per optimiser step: per-device batch x processes (devices x nodes) x accumulated batches."""
    for name, value in (
        ("per_device_batch_size", per_device_batch_size),
        ("world_size", world_size),
        ("accumulate_grad_batches", accumulate_grad_batches),
    ):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    return per_device_batch_size * world_size * accumulate_grad_batches


def linear_scaled_lr(base_lr: float, *, global_batch_size: int, base_batch_size: int) -> float:
    """The linear scaling rule (Goyal et al., arXiv 1706.02677): ``base_lr`` is tuned for ``base_batch_size`` clips
    per step, so ``global_batch_size`` clips per step train with ``base_lr * global_batch_size / base_batch_size``.
    """
    if base_batch_size < 1 or global_batch_size < 1:
        raise ValueError(
            f"batch sizes must be positive, got global_batch_size={global_batch_size}, "
            f"base_batch_size={base_batch_size}"
        )
    return base_lr * global_batch_size / base_batch_size
