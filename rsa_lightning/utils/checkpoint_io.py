"""Checkpoint files that are always complete: written to a temporary file, synced to disk, then renamed.

A process killed (``kill -9``, a node lost, the OOM killer) or a disk that fills up while a checkpoint is being
written must never leave a file under a checkpoint's name that is cut short: ``resume=`` would pick it up, and
``eval.py`` would fail on it, or a "best" checkpoint would silently be a broken one. Lightning's own
``TorchCheckpointIO`` serialises the checkpoint into memory and then writes the bytes straight to the final path, so a
kill during that write leaves a truncated file there.

:class:`AtomicCheckpointIO` (``conf/trainer/default.yaml`` passes it as a Trainer plugin) writes every checkpoint
(``last.ckpt``, ModelCheckpoint's best / epoch files, Lightning's SLURM ``hpc_ckpt_<n>.ckpt``) to
``<folder>/.ckpt-partial-<pid>-<random>.tmp``, flushes and ``fsync``\\ s it, renames it over the final name with
``os.replace`` (atomic within one file system, POSIX) and ``fsync``\\ s the folder, so that after a crash the name
holds either the old complete file or the new complete file. A failed write (no space left, quota) removes its
temporary file and raises ``OSError`` naming the checkpoint, not the temporary file. Temporary files left by a killed
process (its pid no longer running) are removed at the next save into that folder. The temporary name does not end in
``.ckpt`` and does not contain ``hpc_ckpt_`` (Lightning numbers SLURM checkpoints by the digits after that prefix).

Remote paths (``s3://...``: fsspec URLs) keep Lightning's behaviour.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol
from pytorch_lightning.plugins import TorchCheckpointIO

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".ckpt-partial-"
PARTIAL_SUFFIX = ".tmp"
_PARTIAL_NAME = re.compile(rf"^{re.escape(PARTIAL_PREFIX)}(?P<pid>\d+)-.*{re.escape(PARTIAL_SUFFIX)}$")


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform that cannot open folders: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_partial_files(folder: Path) -> list[Path]:
    """Removes the temporary files of :func:`atomic_write` in ``folder`` whose writing process no longer runs."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _PARTIAL_NAME.match(name)
        if match and int(match["pid"]) != os.getpid() and not _running(int(match["pid"])):
            try:
                (folder / name).unlink()
                removed.append(folder / name)
            except OSError:
                pass
    if removed:
        log.info("removed %d partial checkpoint file(s) of a killed process in %s", len(removed), folder)
    return removed


def atomic_write(path: Union[str, Path], write: Callable[[Any], None]) -> None:
    """Calls ``write(file)`` on a temporary file in ``path``'s folder, syncs it and renames it to ``path``.

    Raises:
        OSError: the write failed (e.g. ``ENOSPC``); the temporary file is removed, ``path`` is unchanged and the
            error's ``filename`` is ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partial_files(path.parent)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f"{PARTIAL_PREFIX}{os.getpid()}-", suffix=PARTIAL_SUFFIX)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # the permissions of a file opened for writing (mkstemp makes it 0600)
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno is not None and err.filename != str(path):
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    _fsync_folder(path.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with :func:`atomic_write` for local files (module docstring)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Union[str, Path], storage_options: Optional[Any] = None
    ) -> None:
        if not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_write(path, lambda file: torch.save(checkpoint, file))
