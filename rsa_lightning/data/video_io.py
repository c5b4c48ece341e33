"""Low-level access to video files, shared by the decoding backends (:mod:`rsa_lightning.data.decoding`) and the
probes (:mod:`rsa_lightning.data.probing`): the error a bad file raises, the file check, and decord reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch  # noqa: F401  (imported before decord, which otherwise can fail to load its own torch bridge)

_SEQUENTIAL_CHUNK = 16  # frames per contiguous decord get_batch when decoding sequentially


class VideoDecodeError(RuntimeError):
    """A video file (or frame folder) that cannot be opened or decoded; the message names the file."""


def describe(err: BaseException) -> str:
    """``Type: message`` cut to its first line (decord appends C++ stack traces to its messages)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"


def check_file(path: Path) -> None:
    """Raise :class:`VideoDecodeError` unless ``path`` is an existing, non-empty file."""
    if not path.exists():
        raise VideoDecodeError(f"{path}: file does not exist")
    if not path.is_file():
        raise VideoDecodeError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: zero-byte file")


def open_decord(path: Path, num_threads: int):
    """A fresh ``decord.VideoReader`` of ``path``."""
    import decord

    return decord.VideoReader(str(path), num_threads=num_threads)


def decord_sequential(reader, indices: np.ndarray) -> np.ndarray:
    """Frames ``indices`` (absolute) read contiguously from frame 0 without seeking: exact on open-GOP files."""
    wanted = np.unique(indices)
    frames: dict[int, np.ndarray] = {}
    for begin in range(0, int(wanted[-1]) + 1, _SEQUENTIAL_CHUNK):
        end = min(begin + _SEQUENTIAL_CHUNK, int(wanted[-1]) + 1)
        batch = reader.get_batch(list(range(begin, end))).asnumpy()  # (chunk, H, W, 3)
        for i in wanted[(wanted >= begin) & (wanted < end)]:
            frames[int(i)] = batch[int(i) - begin]
    return np.stack([frames[int(i)] for i in indices])
