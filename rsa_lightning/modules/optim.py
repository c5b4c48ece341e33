"""Optimiser parameter groups."""

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
