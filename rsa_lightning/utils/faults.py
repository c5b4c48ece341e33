"""Faults of a running fit turned into one message that says what to change: out of memory, disk full.

:func:`fit_faults` wraps ``trainer.fit`` / ``trainer.test`` in :func:`rsa_lightning.train.train`:

- ``torch.OutOfMemoryError`` (a GPU) and the CPU allocator's ``RuntimeError`` ("DefaultCPUAllocator: can't allocate
  memory") become :class:`OutOfMemory`, naming the per-device batch, frames, resolution and precision, and the change
  that keeps the recipe: a smaller ``data.batch_size`` with a larger ``trainer.accumulate_grad_batches`` (the same
  global batch); fewer frames or a smaller crop would train something else.
- ``OSError`` ENOSPC / EDQUOT (a checkpoint or log could not be written) becomes :class:`DiskFull`: the checkpoint
  being written was not half-written (:mod:`rsa_lightning.utils.checkpoint_io`), the earlier ones are intact, and
  the run can be resumed once there is space.

Both are :class:`rsa_lightning.errors.RunFault`: ``train.py`` prints the message and exits with code 1.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import torch

from rsa_lightning.errors import RunFault, os_error_in_chain

CPU_OOM_TEXT = "DefaultCPUAllocator: can't allocate memory"


class OutOfMemory(RunFault):
    """The device (or the host) ran out of memory during the fit; the message says what to change."""


class DiskFull(RunFault):
    """No space left (or quota exceeded) while the run wrote a checkpoint or a log."""


def is_out_of_memory(err: BaseException) -> bool:
    """A GPU out-of-memory error or the CPU allocator's failure."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and (CPU_OOM_TEXT in str(err) or "CUDA out of memory" in str(err))


def smaller_batch(batch_size: int, accumulate: int) -> Optional[tuple[int, int]]:
    """``(batch, accumulation)`` with the same product and the batch divided by its smallest factor > 1, or None
    for a batch of 1."""
    for factor in range(2, batch_size + 1):
        if batch_size % factor == 0:
            return batch_size // factor, accumulate * factor
    return None


def out_of_memory_message(
    err: BaseException,
    *,
    device: Any,
    batch_size: Optional[int],
    num_frames: Optional[int],
    crop_size: Optional[int],
    precision: Any,
    accumulate: int,
    world_size: int,
) -> str:
    where = "the host (CPU memory)" if CPU_OOM_TEXT in str(err) else str(device)
    clip = f"{num_frames} frames at {crop_size}x{crop_size} px"
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = (
        f"out of memory on {where} with data.batch_size={batch_size} clips per device of {clip} "
        f"(data.num_frames={num_frames}, data.crop_size={crop_size}, trainer.precision={precision}). "
    )
    smaller = smaller_batch(int(batch_size), int(accumulate)) if isinstance(batch_size, int) else None
    if smaller is not None:
        global_batch = batch_size * accumulate * world_size
        text += (
            f"Keep the recipe's global batch of {global_batch} with a smaller batch per step: "
            f"data.batch_size={smaller[0]} trainer.accumulate_grad_batches={smaller[1]}"
        )
    else:
        text += "The batch is already 1 clip per device: use more devices (trainer=ddp)"
    return (
        f"{text}; or trainer.precision=bf16-mixed where the device supports it. Fewer frames or a smaller crop "
        f"change what is trained (another recipe). ({first_line})"
    )


def disk_full_message(err: OSError, run_dir: Path) -> str:
    what = err.filename or "a file of the run"
    return (
        f"no space left on the device while writing {what} ({err.strerror}); nothing was half-written: the earlier "
        f"checkpoints are intact. Free space (or set paths.log_dir=... for new runs), then continue with: "
        f"python train.py resume={run_dir}"
    )


@contextmanager
def fit_faults(cfg: Any, trainer: Any, run_dir: Path) -> Iterator[None]:
    """Turns an out-of-memory error or a full disk inside the block into :class:`OutOfMemory` / :class:`DiskFull`."""
    try:
        yield
    except Exception as err:
        if is_out_of_memory(err):
            data = cfg.data
            message = out_of_memory_message(
                err,
                device=trainer.strategy.root_device,
                batch_size=data.get("batch_size"),
                num_frames=data.get("num_frames"),
                crop_size=data.get("crop_size"),
                precision=trainer.precision,
                accumulate=int(trainer.accumulate_grad_batches),
                world_size=int(trainer.world_size),
            )
            raise OutOfMemory(message) from err
        full = disk_full_error(err)
        if full is not None:
            raise DiskFull(disk_full_message(full, run_dir)) from err
        raise


def disk_full_error(err: BaseException) -> Optional[OSError]:
    """The ``OSError`` ENOSPC / EDQUOT that ``err`` is or was raised from (torch's writer turns it into a
    ``RuntimeError`` "unexpected pos ..." chained to it), else None."""
    return os_error_in_chain(err, (errno.ENOSPC, errno.EDQUOT))
