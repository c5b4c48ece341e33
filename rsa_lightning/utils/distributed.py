"""torch.distributed helpers for exact evaluation: is this a multi-process run, and every process's Python objects."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process (DDP after ``trainer.predict`` etc.)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order, on every process (``[obj]`` when not distributed).

    Uses ``all_gather_object`` (pickles; any backend): every process gets the same list, so every process can check
    and fuse the gathered results identically and fail the same way, instead of rank 0 failing while the others wait
    at the next collective. Tensors inside ``obj`` should be on the CPU (``all_gather_object`` would otherwise restore
    them onto the sender's device index); with NCCL, Lightning has already set each process's CUDA device, which
    ``all_gather_object`` uses.
    """
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
