"""Activation memory as autograd sees it: the bytes of the tensors a forward pass keeps for backward."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def saved_tensor_bytes(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages that autograd saves for backward while ``fn()`` runs.

    Counted with ``torch.autograd.graph.saved_tensors_hooks`` (PyTorch docs, "Hooks for saved tensors"), so the
    figure does not depend on the allocator or on what else the process holds: every tensor packed for backward is
    counted once per storage (views of one tensor share it), including those kept by custom autograd Functions
    (``ctx.save_for_backward``). Tensors whose storage is that of one of ``exclude`` (e.g. the parameters) are not
    counted. The output of ``fn`` is dropped, so nothing is kept after the call.

    Args:
        fn: runs one forward pass with autograd recording.
        exclude: tensors (e.g. ``module.parameters()``) whose storages are not activations.

    Returns:
        Bytes (int).
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(storages.values())
