"""Test-only callbacks that bring faults into a real training run (tests/reliability/test_faults.py, test_soak.py).

Each is added to a run's config with ``+callbacks.<name>._target_=fault_switch.<Class>`` (``tests/`` on the path).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Optional

import torch
from pytorch_lightning.callbacks import Callback


class MarkAtStep(Callback):
    """Writes ``marker`` (the pid) when training reaches optimiser step ``step``, then waits ``wait`` seconds inside
    that step, so that a signal the test sends on seeing the marker arrives during this step. Does nothing when
    ``marker`` exists already (the resumed run)."""

    def __init__(self, step: int, marker: str, wait: float = 2.0) -> None:
        self.step, self.marker, self.wait = step, Path(marker), wait

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            deadline = time.monotonic() + self.wait
            while time.monotonic() < deadline:  # sleeps resume after a signal handler ran
                time.sleep(0.05)


class KillDuringSave(Callback):
    """Makes checkpoint save number ``at_save`` (1-based, of this process) large (``ballast_mb`` of random bytes)
    and SIGKILLs the process from a watcher thread as soon as a partial checkpoint file in ``dirpath`` has data:
    the write is in progress. Writes ``marker`` with the file's size at the kill."""

    def __init__(self, at_save: int, dirpath: str, marker: str, ballast_mb: int = 96) -> None:
        self.at_save, self.dirpath, self.marker = at_save, Path(dirpath), Path(marker)
        self.ballast_mb = ballast_mb
        self.saves = 0

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.saves += 1
        if self.saves != self.at_save or self.marker.exists():
            return
        checkpoint["ballast"] = torch.randint(0, 255, (self.ballast_mb * 2**20,), dtype=torch.uint8)
        threading.Thread(target=self._kill_when_writing, daemon=True).start()

    def _kill_when_writing(self) -> None:
        while True:
            for path in self.dirpath.glob(".ckpt-partial-*"):
                size = _size(path)
                if size:
                    self.marker.write_text(f"{path.name} {size}\n")
                    os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.0005)


def _size(path: Path) -> Optional[int]:
    try:
        return path.stat().st_size
    except OSError:
        return None


class NonFiniteInput(Callback):
    """Fills the batch of the given optimiser ``steps`` (all steps when None) with NaN, and records in the JSON file
    ``record`` whether each of those steps left the weights and buffers (BatchNorm statistics) unchanged
    (step -> bool)."""

    def __init__(self, record: str, steps: Optional[list[int]] = None) -> None:
        self.record = Path(record)
        self.steps = None if steps is None else set(steps)
        self.unchanged: dict[int, bool] = {}
        self._before: Optional[list[torch.Tensor]] = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.steps is None or step in self.steps:
            batch["video"] = batch["video"].float().fill_(float("nan"))
            self._before = [t.detach().clone() for t in pl_module.state_dict().values()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._before is not None:
            after = list(pl_module.state_dict().values())
            same = all(torch.equal(a, b) for a, b in zip(self._before, after))
            self.unchanged[trainer.global_step - 1] = same
            self._before = None
            self.record.write_text(json.dumps(self.unchanged))


class RaiseAtStep(Callback):
    """Raises ``error`` ("cuda_oom": torch.OutOfMemoryError; "cpu_oom": the CPU allocator's RuntimeError) at
    optimiser step ``step``."""

    def __init__(self, step: int, error: str = "cuda_oom") -> None:
        self.step, self.error = step, error

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        if self.error == "cuda_oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.7 GiB total)")
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: 999 bytes")
