"""Decoding backends: read exactly the sampled frames of one clip, from a video file or a folder of frames.

Every backend has one method, ``read(record, choose) -> (frames, indices)``:

1. the backend determines ``n``, the number of frames of the clip: ``record.num_frames`` when the annotation states
   it, else frames ``[start_frame, end_frame)`` of the file (defaults: the first frame and the decoder's count), cut
   to the frames the file has;
2. it calls ``choose(n)`` for the clip-relative indices to decode (a sampler bound to its random state and view);
3. it decodes exactly those frames and returns ``(uint8 (T, H, W, 3) RGB frames, int64 (T,) clip-relative indices)``.

Any failure of the file (missing, zero-byte, unreadable, corrupt, truncated, no frames) raises
:class:`VideoDecodeError` naming the file; :class:`rsa_lightning.data.dataset.VideoDataset` skips such videos. The
error and the low-level decord reads live in :mod:`rsa_lightning.data.video_io`, shared with the probes of
:mod:`rsa_lightning.data.probing`.

Open-GOP H.264 and decord
-------------------------
decord returns wrong frames after seeking in open-GOP H.264 files and seeks the others exactly (measured and
explained in :mod:`rsa_lightning.data.probing`). Hence ``DecordBackend(seek_mode="auto")`` decodes files known
(``open_gop_files``, written by ``rsa_lightning.tools.scan_videos``) or detected
(:func:`~rsa_lightning.data.probing.detect_open_gop`, a demux-only check) to be open-GOP sequentially from frame 0,
and everything else with decord's fast seeking. :class:`PyAVBackend` seeks by timestamp to the keyframe preceding
each wanted frame and decodes forward, which is exact on open-GOP files too; ``rsa_lightning.tools.reencode_videos``
rewrites a data set as closed-GOP H.264 once and for all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Optional, Protocol, Union

import numpy as np

from rsa_lightning.data.annotations import VideoRecord
from rsa_lightning.data.probing import count_decodable_frames, detect_open_gop_cached, read_path_list
from rsa_lightning.data.video_io import VideoDecodeError, check_file, decord_sequential, describe, open_decord

log = logging.getLogger(__name__)

ChooseFn = Callable[[int], np.ndarray]

SEEK_MODES = ("auto", "seek", "sequential")


class SamplerIndexError(ValueError):
    """``choose(n)`` returned indices outside ``[0, n)``: a sampler bug, never skipped as a broken video."""


class VideoBackend(Protocol):
    """What :class:`~rsa_lightning.data.dataset.VideoDataset` needs from a decoder."""

    def read(self, record: VideoRecord, choose: ChooseFn) -> tuple[np.ndarray, np.ndarray]: ...


# --------------------------------------------------------------------------------------------------------------------
# helpers shared by the backends


def clip_length(record: VideoRecord, num_file_frames: int) -> int:
    """Frames in the clip of ``record`` when its file holds ``num_file_frames`` decodable frames.

    ``record.num_frames`` when given, else ``end_frame - start_frame`` (defaults ``0`` and ``num_file_frames``); in
    both cases cut to the ``num_file_frames - start_frame`` frames the file has. Raises :class:`VideoDecodeError`
    when that leaves no frame.
    """
    start = record.start_frame or 0
    end = num_file_frames if record.end_frame is None else record.end_frame
    n = end - start
    if record.num_frames is not None:
        n = min(n, record.num_frames) if record.end_frame is not None else record.num_frames
    n = min(n, num_file_frames - start)
    if n < 1:
        raise VideoDecodeError(
            f"{record.path}: the clip [{start}, {end}) holds no frame of the {num_file_frames} frames decoded"
        )
    return n


def _choose(choose: ChooseFn, n: int) -> np.ndarray:
    indices = np.asarray(choose(n), dtype=np.int64).reshape(-1)
    if indices.size == 0 or indices.min() < 0 or indices.max() >= n:
        raise SamplerIndexError(f"the sampler returned indices {indices.tolist()} for a clip of {n} frames")
    return indices


# --------------------------------------------------------------------------------------------------------------------
# backends


class DecordBackend:
    """Decode video files with decord (one reader per call, opened and closed inside :meth:`read`).

    Args:
        num_threads: decoding threads per reader (1: the DataLoader workers are the parallelism).
        seek_mode: ``"seek"``: decord's random access (fast; wrong frames on open-GOP files); ``"sequential"``:
            read contiguously from frame 0 (exact everywhere, slower the later the last sampled frame); ``"auto"``:
            sequential for open-GOP files, seek for the others.
        open_gop_files: with ``"auto"``, files to decode sequentially: paths, or the path of a list file (one path
            a line, as written by ``rsa_lightning.tools.scan_videos``; ignored while it does not exist).
        detect_open_gop: with ``"auto"``, also run :func:`~rsa_lightning.data.probing.detect_open_gop` on files not
            listed (once per file and process, cached).

    The frame count of the container is trusted only once the sampled frames decode: when a read fails, the
    decodable frames are counted (:func:`~rsa_lightning.data.probing.count_decodable_frames`) and, if fewer, the
    clip is sampled again over them.
    """

    def __init__(
        self,
        *,
        num_threads: int = 1,
        seek_mode: str = "auto",
        open_gop_files: Optional[Union[str, Path, Iterable[Union[str, Path]]]] = None,
        detect_open_gop: bool = True,
    ) -> None:
        if seek_mode not in SEEK_MODES:
            raise ValueError(f"seek_mode must be one of {SEEK_MODES}, got {seek_mode!r}")
        if num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {num_threads}")
        self.num_threads = num_threads
        self.seek_mode = seek_mode
        if isinstance(open_gop_files, (str, Path)):
            if Path(open_gop_files).is_file():
                self.open_gop_files = read_path_list(open_gop_files)
            else:  # like the exclusion list: used once a scan has written it
                log.info("no open-GOP list at %s yet (scan_videos writes it); relying on detection", open_gop_files)
                self.open_gop_files = set()
        else:
            self.open_gop_files = {os.path.normpath(str(p)) for p in open_gop_files or ()}
        self.detect_open_gop = detect_open_gop

    def sequential_for(self, path: Path) -> bool:
        """Whether ``path`` is decoded contiguously from frame 0 instead of with seeks."""
        if self.seek_mode != "auto":
            return self.seek_mode == "sequential"
        if os.path.normpath(str(path)) in self.open_gop_files:
            return True
        return self.detect_open_gop and detect_open_gop_cached(str(path))

    def read(self, record: VideoRecord, choose: ChooseFn) -> tuple[np.ndarray, np.ndarray]:
        path = Path(record.path)
        check_file(path)
        try:
            sequential = self.sequential_for(path)
            reader = open_decord(path, self.num_threads)
            num_file_frames = len(reader)
            if num_file_frames < 1:
                raise VideoDecodeError(f"{path}: no frames")
            start = record.start_frame or 0
            indices = _choose(choose, clip_length(record, num_file_frames))
            try:
                frames = self._decode(reader, start + indices, sequential)
            except Exception as err:
                decodable = count_decodable_frames(path)
                if decodable >= num_file_frames or decodable <= start:
                    raise
                log.debug("%s: the container says %d frames, %d decode", path, num_file_frames, decodable)
                del reader
                # decord's threaded decoder reads ahead into the damaged tail and fails nondeterministically near
                # it; PyAV decodes the frames before the damage exactly
                truncated = replace(record, num_frames=clip_length(record, decodable))
                try:
                    return PyAVBackend().read(truncated, choose)
                except VideoDecodeError:
                    raise err from None
        except (VideoDecodeError, SamplerIndexError):
            raise
        except Exception as err:  # decord raises DECORDError and plain RuntimeErrors
            raise VideoDecodeError(f"{path}: {describe(err)}") from err
        return frames, indices

    @staticmethod
    def _decode(reader, indices: np.ndarray, sequential: bool) -> np.ndarray:
        if sequential:
            return decord_sequential(reader, indices)
        return reader.get_batch(indices.tolist()).asnumpy()

    def __repr__(self) -> str:
        return (
            f"DecordBackend(num_threads={self.num_threads}, seek_mode={self.seek_mode!r}, "
            f"open_gop_files=<{len(self.open_gop_files)} files>, detect_open_gop={self.detect_open_gop})"
        )


class PyAVBackend:
    """Decode video files with PyAV, exactly, also where decord mis-seeks (open-GOP H.264).

    The packets are demuxed once per call (no decoding) for the presentation timestamps: frame ``i`` is the ``i``-th
    smallest timestamp. For each wanted frame the decoder seeks to the keyframe at or before it (unless it is
    already decoding inside that stretch) and decodes forward, keeping frames by timestamp; frames shown before the
    keyframe it seeked to (open-GOP leading pictures) are never kept.
    """

    def read(self, record: VideoRecord, choose: ChooseFn) -> tuple[np.ndarray, np.ndarray]:
        import av

        path = Path(record.path)
        check_file(path)
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise VideoDecodeError(f"{path}: no video stream")
                stream = container.streams.video[0]
                timestamps, keyframes = [], []
                for packet in container.demux(stream):
                    pts = packet.pts if packet.pts is not None else packet.dts
                    if not packet.size or pts is None:
                        continue
                    timestamps.append(pts)
                    if packet.is_keyframe:
                        keyframes.append(pts)
                timestamps = np.unique(np.asarray(timestamps, dtype=np.int64))
                keyframes = np.unique(np.asarray(keyframes, dtype=np.int64))
                if timestamps.size == 0:
                    raise VideoDecodeError(f"{path}: no frames")
                start = record.start_frame or 0
                indices = _choose(choose, clip_length(record, len(timestamps)))
                try:
                    frames = self._decode(container, stream, timestamps[start + indices], keyframes)
                except Exception as err:
                    decodable = count_decodable_frames(path)
                    if decodable >= len(timestamps) or decodable <= start:
                        raise
                    indices = _choose(choose, clip_length(record, decodable))
                    try:
                        frames = self._decode(container, stream, timestamps[start + indices], keyframes)
                    except Exception:
                        raise err from None
        except (VideoDecodeError, SamplerIndexError):
            raise
        except Exception as err:
            raise VideoDecodeError(f"{path}: {describe(err)}") from err
        return frames, indices

    @staticmethod
    def _decode(container, stream, targets: np.ndarray, keyframes: np.ndarray) -> np.ndarray:
        wanted = np.unique(targets)
        wanted_set = set(wanted.tolist())
        out: dict[int, np.ndarray] = {}
        frames_iter, position, floor = None, None, None  # decoder state: last timestamp seen, keyframe seeked to
        for target in wanted.tolist():
            at_or_before = keyframes[keyframes <= target]
            keyframe = int(at_or_before[-1]) if at_or_before.size else target
            if frames_iter is None or position is None or keyframe > position:
                container.seek(keyframe, stream=stream, backward=True, any_frame=False)
                stream.codec_context.flush_buffers()
                frames_iter, position, floor = container.decode(stream), None, keyframe
            for frame in frames_iter:
                if frame.pts is None:
                    raise VideoDecodeError("decoded frame without timestamp: use DecordBackend for this file")
                position = max(position, frame.pts) if position is not None else frame.pts
                if frame.pts >= floor and frame.pts in wanted_set and frame.pts not in out:
                    out[frame.pts] = frame.to_ndarray(format="rgb24")
                if position >= target:
                    break
            if target not in out:
                raise VideoDecodeError(f"frame at timestamp {target} was not decoded (damaged or truncated file)")
        return np.stack([out[int(t)] for t in targets])

    def __repr__(self) -> str:
        return "PyAVBackend()"


def _jpeg_decoder(name: str) -> tuple[str, Callable[[Path], np.ndarray]]:
    if name in ("auto", "simplejpeg"):
        try:
            import simplejpeg

            def decode_simplejpeg(path: Path) -> np.ndarray:
                return simplejpeg.decode_jpeg(path.read_bytes(), colorspace="RGB")

            return "simplejpeg", decode_simplejpeg
        except ImportError:
            if name == "simplejpeg":
                raise
    if name in ("auto", "pil"):
        from PIL import Image

        def decode_pil(path: Path) -> np.ndarray:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))

        return "pil", decode_pil
    raise ValueError(f"decoder must be 'auto', 'simplejpeg' or 'pil', got {name!r}")


class FrameFolderBackend:
    """Read clips stored as one image per frame: ``<record.path>/00001.jpg, 00002.jpg, ...`` (e.g. SSv1).

    Args:
        filename_template: file name of frame ``first_index + i``, a ``str.format`` pattern.
        first_index: number of the first frame's file (1 for ``00001.jpg``).
        decoder: ``"simplejpeg"`` (libjpeg-turbo, about twice as fast as PIL here, bit-identical output; JPEG only),
            ``"pil"`` (any image format), or ``"auto"``: simplejpeg when installed and the files are JPEG, else PIL.

    The folder's frame count is ``record.num_frames`` when the annotation gives it (no directory listing), else the
    number of consecutively numbered files from ``first_index`` on.
    """

    def __init__(self, *, filename_template: str = "{:05d}.jpg", first_index: int = 1, decoder: str = "auto") -> None:
        try:
            filename_template.format(first_index)
        except (IndexError, KeyError, ValueError) as err:
            raise ValueError(f"filename_template {filename_template!r} must format one integer: {err}") from err
        self.filename_template = filename_template
        self.first_index = first_index
        is_jpeg = filename_template.lower().endswith((".jpg", ".jpeg"))
        self.decoder, self._decode = _jpeg_decoder("pil" if decoder == "auto" and not is_jpeg else decoder)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_decode"]  # a closure: rebuilt after unpickling (DataLoader workers)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.decoder, self._decode = _jpeg_decoder(self.decoder)

    def count_frames(self, folder: Path) -> int:
        names = set(os.listdir(folder))
        n = 0
        while self.filename_template.format(self.first_index + n) in names:
            n += 1
        return n

    def read(self, record: VideoRecord, choose: ChooseFn) -> tuple[np.ndarray, np.ndarray]:
        folder = Path(record.path)
        if not folder.is_dir():
            raise VideoDecodeError(f"{folder}: frame folder does not exist")
        try:
            start = record.start_frame or 0
            if record.num_frames is not None:
                num_folder_frames = start + record.num_frames
            else:
                num_folder_frames = self.count_frames(folder)
            if num_folder_frames < 1:
                first = self.filename_template.format(self.first_index)
                raise VideoDecodeError(f"{folder}: no frame file (the first would be {first})")
            indices = _choose(choose, clip_length(record, num_folder_frames))
            cache: dict[int, np.ndarray] = {}
            for i in np.unique(indices).tolist():
                file = folder / self.filename_template.format(self.first_index + start + i)
                if not file.is_file():
                    raise VideoDecodeError(f"{file}: frame file does not exist")
                try:
                    cache[i] = self._decode(file)
                except Exception as err:
                    raise VideoDecodeError(f"{file}: {describe(err)}") from err
            shapes = {frame.shape for frame in cache.values()}
            if len(shapes) > 1:
                raise VideoDecodeError(f"{folder}: frames of different sizes {sorted(shapes)}")
            frames = np.stack([cache[i] for i in indices.tolist()])
        except (VideoDecodeError, SamplerIndexError):
            raise
        except OSError as err:
            raise VideoDecodeError(f"{folder}: {err}") from err
        return frames, indices

    def __repr__(self) -> str:
        return (
            f"FrameFolderBackend(filename_template={self.filename_template!r}, first_index={self.first_index}, "
            f"decoder={self.decoder!r})"
        )
