"""Low-level access to video files, shared by the decoding backends (:mod:`rsa_lightning.data.decoding`), the probes
(:mod:`rsa_lightning.data.probing`) and the tools: the error a bad file raises, the file check, decord reads, and the
reference decode that defines what a video file *is*.

What a video file is
--------------------
:func:`iter_frames` (and :func:`decode_all_frames`) decode a file with PyAV sequentially from its first packet to its
end, without a seek, and keep every frame the decoder outputs, in the order it outputs them (presentation order).
That sequence is the video: its length is the frame count, frame ``i`` is the ``i``-th frame of it, its pixels are
``frame.to_ndarray(format="rgb24")`` (FFmpeg's conversion: grey replicated to three channels, alpha dropped), and its
orientation is the display matrix applied (see below). Container metadata (duration, frame count, time base,
timestamps, frame rate) never changes it. Every backend returns these frames at these indices, or fails with a
:class:`VideoDecodeError`.

Display matrix (rotation / mirror side data)
--------------------------------------------
One rule, applied everywhere (backends, ``extract_frames``, ``reencode_videos``, ``scan_videos``): a frame is returned
as a player shows it, the way FFmpeg's command-line tools autorotate. The display matrix ``[a b u; c d v; x y w]``
maps a stored pixel ``(x, y)`` (column, row; rows counted downwards) to the shown pixel ``(a x + c y, b x + d y)``
(FFmpeg ``libavutil/display.h``); :class:`Orientation` applies the rotations by multiples of 90 degrees and mirrors
this expresses (seven of the eight EXIF orientations: an upside-down mirror, whose rotation reads as 0, is not
applied, see :func:`frame_orientation`). Other matrices (a rotation by 30 degrees, a scaling) are not applied and
are logged once per file. Rotated by 90 or 270 degrees, a stored ``W x H`` video is ``H x W``.
"""

from __future__ import annotations

import functools
import logging
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np
import torch  # noqa: F401  (imported before decord, which otherwise can fail to load its own torch bridge)

from rsa_lightning.errors import UserError

log = logging.getLogger(__name__)

_SEQUENTIAL_CHUNK = 16  # frames per contiguous decord get_batch when decoding sequentially


class VideoDecodeError(UserError, RuntimeError):
    """A video file (or frame folder) that cannot be opened or decoded; the message names the file. Datasets skip
    such videos; one that reaches an entry point is bad input (exit code 2, :mod:`rsa_lightning.errors`)."""


# decord's "[18:06:42] /github/.../video_reader.cc:270: [/path/of/the/file.webm] " before its message
_DECORD_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: (\[[^\]]*\] )?")
# torchcodec's "SingleStreamDecoder, /__w/.../SingleStreamDecoder.cpp:52, " before its message
_TORCHCODEC_PREFIX = re.compile(r"^\w+, \S+\.cpp:\d+, ")


def describe(err: BaseException) -> str:
    """``Type: message`` cut to its first line (decord appends C++ stack traces to its messages and starts them
    with a time and its source file, torchcodec with a function and its source file: left out)."""
    lines = str(err).strip().splitlines()
    first = _TORCHCODEC_PREFIX.sub("", _DECORD_PREFIX.sub("", lines[0]))[:300] if lines else ""
    return f"{type(err).__name__}: {first}"


def check_file(path: Path) -> None:
    """Raise :class:`VideoDecodeError` unless ``path`` is an existing, non-empty file."""
    if not path.exists():
        raise VideoDecodeError(f"{path}: file does not exist")
    if not path.is_file():
        raise VideoDecodeError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: zero-byte file")


NO_STREAM = "no video stream (an audio-only file?)"
NO_FRAMES = "no video stream frames (the file ends before its first video frame: an empty or cut recording)"


def no_video_error(path: Union[str, Path], what: str = NO_STREAM) -> VideoDecodeError:
    """The error of a file without video: no video stream (``NO_STREAM``), or no frame in it (``NO_FRAMES``)."""
    return VideoDecodeError(f"{path}: {what}; leave it out of the list or re-export it")


def open_container(path: Union[str, Path], thread_count: int = 1):
    """``av.open(path)`` with ``thread_count`` decoding threads per video stream (0: FFmpeg's choice); a file that
    ends before its first packet (a zero-frame recording) raises :class:`VideoDecodeError` ``no video stream frames``.

    One thread by default: the DataLoader workers are the parallelism, and a decoder without threads can be freed in
    a forked worker (PyAV frees some decoders only at a garbage collection; one with threads, inherited from the
    parent process, crashes the worker that collects it).
    """
    import av

    try:
        container = av.open(str(path))
    except av.error.EOFError:
        raise no_video_error(path, NO_FRAMES) from None
    for stream in container.streams.video:
        stream.codec_context.thread_count = thread_count
        if thread_count != 1:
            stream.thread_type = "AUTO"
    return container


# --------------------------------------------------------------------------------------------------------------------
# orientation (display matrix)


class Orientation(NamedTuple):
    """How a stored frame becomes the shown frame: transpose rows and columns, then mirror rows and / or columns."""

    transpose: bool = False
    flip_rows: bool = False  # upside down
    flip_cols: bool = False  # left-right mirror

    @property
    def identity(self) -> bool:
        return not any(self)

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """``frames`` (..., H, W, C) as shown: (..., W, H, C) when transposed. Returns a contiguous array."""
        if self.identity:
            return frames
        if self.transpose:
            frames = np.swapaxes(frames, -3, -2)
        if self.flip_rows:
            frames = np.flip(frames, axis=-3)
        if self.flip_cols:
            frames = np.flip(frames, axis=-2)
        return np.ascontiguousarray(frames)


IDENTITY = Orientation()


def orientation_from_matrix(matrix: tuple[int, ...], path: Union[str, Path] = "") -> Orientation:
    """The :class:`Orientation` of a display matrix (9 int32 in FFmpeg's layout, 16.16 fixed point).

    The shown pixel of stored ``(x, y)`` is ``(a x + c y, b x + d y)`` (shifted into the frame). A matrix that is not a
    rotation by a multiple of 90 degrees, possibly mirrored, is not applied (logged).
    """
    a, b, c, d = (round(v / 65536) for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    exact = all(abs(v - 65536 * r) < 64 for v, r in zip((matrix[0], matrix[1], matrix[3], matrix[4]), (a, b, c, d)))
    if exact and b == c == 0 and abs(a) == abs(d) == 1:  # x' = a x, y' = d y
        return Orientation(transpose=False, flip_rows=d < 0, flip_cols=a < 0)
    if exact and a == d == 0 and abs(b) == abs(c) == 1:  # x' = c y, y' = b x: rows become columns
        return Orientation(transpose=True, flip_rows=b < 0, flip_cols=c < 0)
    _warn_unsupported_matrix(str(path), tuple(matrix))
    return IDENTITY


@functools.lru_cache(maxsize=256)
def _warn_unsupported_matrix(path: str, matrix: tuple[int, ...]) -> None:
    log.warning("%s: display matrix %s is not a rotation by a multiple of 90 degrees: not applied", path, matrix)


def frame_orientation(frame, path: Union[str, Path] = "") -> Orientation:
    """The orientation a decoded PyAV frame's display-matrix side data asks for (identity without one).

    The matrix is read only when ``frame.rotation`` is not 0: reading PyAV's ``frame.side_data`` ties the frame in a
    reference cycle that only a garbage collection frees, and a forked DataLoader worker that collects a frame its
    parent decoded crashes. So a matrix whose rotation is 0, a mirror upside down (EXIF orientation 4), is not applied
    (nor by decord).
    """
    if not frame.rotation:
        return IDENTITY
    for entry in frame.side_data:
        # PyAV up to 18.1.0 iterates the side data itself, 18.1.1 (a proper Mapping) its types
        side_data = entry if hasattr(entry, "type") else frame.side_data[entry]
        if side_data.type.name == "DISPLAYMATRIX":
            data = bytes(side_data)
            if len(data) >= 36:
                return orientation_from_matrix(struct.unpack("<9i", data[:36]), path)
    return IDENTITY


def frame_to_rgb(frame) -> np.ndarray:
    """A decoded PyAV frame as stored: uint8 (H, W, 3) RGB (grey replicated, alpha dropped), not yet oriented."""
    return frame.to_ndarray(format="rgb24")


# --------------------------------------------------------------------------------------------------------------------
# the reference decode


def iter_frames(path: Union[str, Path], *, orient: bool = True, thread_count: int = 1) -> Iterator[np.ndarray]:
    """Every frame of ``path`` in presentation order: uint8 (H, W, 3) RGB, oriented as shown (the module's rule).

    The reference decode: PyAV, sequential from the first packet, no seek, every frame the decoder outputs
    (``thread_count`` decoding threads, 0: FFmpeg's choice; threads change the speed, not the frames). Raises
    :class:`VideoDecodeError` naming the file: missing / zero-byte / unreadable file, no video stream, or an error
    after ``k`` frames (the message gives ``k``; the frames before it have been yielded). A video stream without a
    frame yields nothing (:func:`decode_all_frames` raises for it).
    """
    path = Path(path)
    check_file(path)
    count, size = 0, None
    try:
        with open_container(path, thread_count) as container:
            if not container.streams.video:
                raise no_video_error(path)
            stream = container.streams.video[0]
            orientation = None
            for frame in container.decode(stream):
                if orientation is None:
                    orientation = frame_orientation(frame, path) if orient else IDENTITY
                image = orientation.apply(frame_to_rgb(frame))
                if size is None:
                    size = image.shape
                elif image.shape != size:
                    raise VideoDecodeError(
                        f"{path}: frame {count} is {image.shape[1]}x{image.shape[0]}, the frames before it "
                        f"{size[1]}x{size[0]} (a size change inside the video); re-encode it at one size"
                    )
                yield image
                count += 1
    except VideoDecodeError:
        raise
    except Exception as err:  # av.FFmpegError and friends
        where = f"after {count} frames" if count else "before the first frame"
        raise VideoDecodeError(f"{path}: decoding failed {where}: {describe(err)}") from err


def decode_all_frames(path: Union[str, Path], *, orient: bool = True, thread_count: int = 1) -> np.ndarray:
    """All frames of ``path`` (:func:`iter_frames`) stacked: uint8 (N, H, W, 3), N >= 1; the reference decode.

    Raises :class:`VideoDecodeError` naming the file when it cannot be decoded to its end or holds no frame.
    """
    frames = list(iter_frames(path, orient=orient, thread_count=thread_count))
    if not frames:
        raise no_video_error(path, NO_FRAMES)
    return np.stack(frames)


def reference_frames(path: Union[str, Path], indices: np.ndarray) -> tuple[int, dict[int, np.ndarray]]:
    """``(frame count, {i: frame i})`` of the reference decode for the wanted ``indices`` (negative: from the end;
    the keys are absolute indices, those beyond the count left out).

    Keeps only the wanted frames (and the last few, for negative indices) in memory; raises like
    :func:`decode_all_frames`.
    """
    wanted = [int(i) for i in np.asarray(indices).reshape(-1)]
    tail = max([-i for i in wanted if i < 0], default=0)
    kept: dict[int, np.ndarray] = {}
    recent: list[tuple[int, np.ndarray]] = []
    count = 0
    positive = {i for i in wanted if i >= 0}
    for count, frame in enumerate(iter_frames(path), start=1):
        if count - 1 in positive:
            kept[count - 1] = frame
        if tail:
            recent = (recent + [(count - 1, frame)])[-tail:]
    if count == 0:
        raise no_video_error(path, NO_FRAMES)
    kept.update((i, frame) for i, frame in recent)
    absolute = [i if i >= 0 else count + i for i in wanted]
    return count, {i: kept[i] for i in absolute if 0 <= i < count}


# --------------------------------------------------------------------------------------------------------------------
# decord


@functools.lru_cache(maxsize=1)
def _quiet_decord() -> None:
    """decord's FFmpeg logs nothing (its "moov atom not found" and alike reached the console once per read and
    process, beside the one warning naming the file and the reason that every failed read gets). decord's own C++
    "ERROR opening" line is written to stderr directly and cannot be turned off."""
    import decord.logging

    decord.logging.set_level(decord.logging.QUIET)


def open_decord(path: Path, num_threads: int):
    """A fresh ``decord.VideoReader`` of ``path``."""
    import decord

    _quiet_decord()
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
