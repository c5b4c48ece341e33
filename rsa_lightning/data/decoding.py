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

What a file is, and which backend reads it
------------------------------------------
A video file is what the sequential reference decode of :func:`rsa_lightning.data.video_io.iter_frames` makes of it:
its frames in presentation order, RGB, oriented by the display matrix as a player shows them. Both video backends
return exactly these frames at these indices, or raise :class:`VideoDecodeError`.

:class:`PyAVBackend` seeks by presentation timestamp to the keyframe before each wanted frame and decodes forward,
checking every timestamp it sees against the file's packets (strictly increasing, each a packet's, the target
reached); files whose timestamps cannot locate a frame (AVI with B-frames: decode-order timestamps) and any failed
check are decoded sequentially from the start and counted (the reference decode itself). It is exact on every file
it can open, open GOPs included.

:class:`DecordBackend` (fast) trusts decord only where decord is known to be exact. decord returns wrong frames
after seeking in open-GOP H.264 files and in files with decode-order timestamps (measured and explained in
:mod:`rsa_lightning.data.probing`), so with ``seek_mode="auto"`` it decodes files known (``open_gop_files``, the list
``rsa_lightning.tools.scan_videos`` writes after comparing decord's seeks with the reference decode where training
reads, last frames included) or detected (:func:`~rsa_lightning.data.probing.probe_video`, packets only) to be such
sequentially from frame 0. Files decord cannot read exactly or at all are decoded by :class:`PyAVBackend`: files
the scan lists as ``pyav``, files with a rotation or mirror display matrix (decord fails on 90-degree rotations and
ignores mirrors), files whose frames decord converts to RGB otherwise than the reference (its own libswscale
interpolates chroma otherwise wherever the unscaled converter is not used: yuv420p / yuvj420p / yuva420p / yuv422p
of odd height, 10-bit 4:2:0, nv12, 4:4:0, 4:1:0 at any size; up to ~100/255 off on every frame, measured and explained
in :mod:`rsa_lightning.data.probing`; found from the header's pixel format and height, logged once per file), and
any file decord refuses (a VP9 webm written live, without duration or cues; a one-frame webm;
"broken metadata"), logged once per file. Only a file neither can read raises :class:`VideoDecodeError`.
``rsa_lightning.tools.reencode_videos`` rewrites such files as closed-GOP H.264 once and for all.

:class:`TorchCodecBackend` (fast, optional: ``pip install torchcodec==0.13.0`` and FFmpeg's shared libraries, imported
only when the backend is built) follows the same rules with torchcodec's exact mode (a scan of the packets, then a
seek to the keyframe before each wanted frame by presentation timestamp). Checked against the reference decode:
torchcodec is exact on the files decord seeks in, applies rotations by multiples of 90 degrees, and is exact on
open-GOP H.264 in mp4; it returns other frames in AVI files with B-frames (decode-order timestamps, also when the
probe reports them as open GOPs, as for MPEG-4 Part 2) and reads mirrors as rotations (a left-right mirror as a
rotation by 180 degrees, a mirrored rotation as the rotation alone). So files the scan lists, files the probe finds
any seek risk in (open-GOP mp4 included: the probe cannot tell them from AVI), mirrored files and files whose rotation
torchcodec reports otherwise (a matrix that is no multiple of 90 degrees, which the reference does not apply) are
read by :class:`PyAVBackend`, as are files whose frames torchcodec converts to RGB otherwise than the reference (the
same formats as decord's, plus 4:1:1 and odd-sized 4:2:2; logged once) and files torchcodec refuses (logged once).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Protocol, Union

import numpy as np

from rsa_lightning.data.annotations import VideoRecord
from rsa_lightning.data.probing import (
    EXACT,
    SEQUENTIAL,
    count_decodable_frames,
    probe_orientation_cached,
    probe_pixel_format,
    probe_video_cached,
    read_decode_modes,
    rgb_conversion_risk,
    timestamps_may_be_decode_order,
)
from rsa_lightning.data.video_io import (
    IDENTITY,
    NO_FRAMES,
    Orientation,
    VideoDecodeError,
    check_file,
    decord_sequential,
    describe,
    frame_orientation,
    frame_to_rgb,
    iter_frames,
    no_video_error,
    open_container,
    open_decord,
)
from rsa_lightning.errors import ConfigError

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


class _SameChoice:
    """``choose`` called at most once per clip length: a backend that falls back to another decoder after choosing
    decodes the same frames (and the sampler's random state advances once)."""

    def __init__(self, choose: ChooseFn) -> None:
        self.choose = choose
        self.choices: dict[int, np.ndarray] = {}

    def __call__(self, n: int) -> np.ndarray:
        if n not in self.choices:
            self.choices[n] = self.choose(n)
        return self.choices[n]


_logged: set[tuple[str, int]] = set()


def _log_once(level: int, path: str, text: str) -> None:
    """Log ``text`` about ``path`` once per file, level and process."""
    if (path, level) not in _logged:
        _logged.add((path, level))
        log.log(level, "%s: %s", path, text)


def _choose(choose: ChooseFn, n: int) -> np.ndarray:
    indices = np.asarray(choose(n), dtype=np.int64).reshape(-1)
    if indices.size == 0 or indices.min() < 0 or indices.max() >= n:
        raise SamplerIndexError(f"the sampler returned indices {indices.tolist()} for a clip of {n} frames")
    return indices


OpenGopFiles = Optional[Union[str, Path, Iterable[Union[str, Path]]]]


def _check_backend_options(num_threads: object, fallback: object) -> None:
    """ValueError naming the key for a ``data.backend.num_threads`` that is no integer >= 0 or a
    ``data.backend.fallback`` that is no boolean (Hydra reads ``maybe`` as a string)."""
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
        raise ValueError(f"data.backend.num_threads must be an integer >= 0, got {num_threads!r}")
    if not isinstance(fallback, bool):
        raise ValueError(f"data.backend.fallback must be true or false, got {fallback!r}")


def _listed_modes(open_gop_files: OpenGopFiles) -> dict[str, str]:
    """``{normalised path: "sequential" | "pyav"}`` of the files a fast backend must not seek in: the list
    ``rsa_lightning.tools.scan_videos`` writes (ignored while it does not exist), or paths (``"sequential"``)."""
    if isinstance(open_gop_files, (str, Path)):
        if Path(open_gop_files).is_file():
            return read_decode_modes(open_gop_files)
        # like the exclusion list: used once a scan has written it
        log.info("no open-GOP list at %s yet (scan_videos writes it); relying on detection", open_gop_files)
        return {}
    return {os.path.normpath(str(p)): SEQUENTIAL for p in open_gop_files or ()}


def _read_or_fall_back(
    decoder: str, record: VideoRecord, choose: ChooseFn, read: Callable[[], tuple], fallback: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``read()``; when it raises :class:`VideoDecodeError` (``decoder`` refuses the file: a valid file it cannot read,
    or a broken one) and ``fallback``, :class:`PyAVBackend`'s read of the same clip (``choose`` a :class:`_SameChoice`),
    logged once per file. A file without video is not retried; a file neither reads raises PyAV's error."""
    path = Path(record.path)
    try:
        return read()
    except VideoDecodeError as err:
        if not fallback or isinstance(err, _NoVideo):
            raise
        # only the text is kept: the error's traceback holds the decoder's reader, which must be freed now, not by a
        # later garbage collection (in a forked DataLoader worker that crashes inside decord)
        reason = str(err).removeprefix(f"{path}: ")
    frames, indices = PyAVBackend().read(record, choose)
    _log_once(logging.WARNING, str(path), f"{decoder} cannot read it ({reason}); decoded with PyAV instead")
    return frames, indices


def _rgb_risk(path: Path, decoder: str) -> Optional[str]:
    """Why ``decoder`` may convert ``path``'s frames to RGB otherwise than the reference, from the file's header
    (:func:`~rsa_lightning.data.probing.rgb_conversion_risk`; None: exact, or no header to read)."""
    header = probe_pixel_format(str(path))
    return None if header is None else rgb_conversion_risk(*header, decoder=decoder)


def _read_with_pyav(decoder: str, record: VideoRecord, choose: ChooseFn) -> tuple[np.ndarray, np.ndarray]:
    """:class:`PyAVBackend`'s read of a file ``decoder`` must not read; logged once per file when the reason is the
    conversion to RGB (a display matrix or the scan's list are not logged)."""
    why = _rgb_risk(Path(record.path), decoder)
    if why is not None:
        text = f"{decoder} converts its {why} to RGB otherwise than the reference; decoded with PyAV instead"
        _log_once(logging.INFO, str(record.path), text)
    return PyAVBackend().read(record, choose)


def _read_decodable_part(
    record: VideoRecord, choose: ChooseFn, num_file_frames: int, err: Exception
) -> tuple[np.ndarray, np.ndarray]:
    """After a fast decoder failed with ``err`` on a file whose container says ``num_file_frames``: when fewer frames
    decode (:func:`~rsa_lightning.data.probing.count_decodable_frames`, a damaged tail), the clip sampled again over
    them and read by :class:`PyAVBackend`; else (or when PyAV fails too) ``err`` is raised again.

    Fast decoders read ahead into the damaged tail (decord's threads fail nondeterministically near it); PyAV decodes
    the frames before the damage exactly.
    """
    path = Path(record.path)
    decodable = count_decodable_frames(path)
    if decodable >= num_file_frames or decodable <= (record.start_frame or 0):
        raise err
    log.debug("%s: the container says %d frames, %d decode", path, num_file_frames, decodable)
    truncated = replace(record, num_frames=clip_length(record, decodable))
    try:
        return PyAVBackend().read(truncated, choose)
    except VideoDecodeError:
        raise err from None


# --------------------------------------------------------------------------------------------------------------------
# backends


class DecordBackend:
    """Decode video files with decord (one reader per call, opened and closed inside :meth:`read`), exactly.

    Args:
        num_threads: decoding threads per reader (1: the DataLoader workers are the parallelism).
        seek_mode: ``"seek"``: decord's random access (fast; wrong frames in files with open GOPs or decode-order
            timestamps); ``"sequential"``: read contiguously from frame 0 (slower the later the last sampled frame);
            ``"auto"``: per file, what is exact: seek, sequential (files listed or detected, see the module
            docstring) or :class:`PyAVBackend` (files listed as ``pyav``). Whatever the mode, rotated or mirrored
            files and files decord converts to RGB otherwise than the reference (odd heights, ...) are read by PyAV.
        open_gop_files: with ``"auto"``, the files decord must not seek in: paths (decoded sequentially), or the path
            of the list ``rsa_lightning.tools.scan_videos`` writes (one path a line, a ``pyav`` note sends the file to
            :class:`PyAVBackend`; ignored while it does not exist).
        detect_open_gop: with ``"auto"``, also probe files not listed
            (:func:`~rsa_lightning.data.probing.probe_video`: open GOPs, decode-order timestamps, display matrix; once
            per file and process, cached). Whatever the mode, files with a display matrix are read by PyAV.
        fallback: decode a file decord cannot open or decode with :class:`PyAVBackend` (logged once per file);
            False: raise :class:`VideoDecodeError` (the scan uses it to learn what decord itself reads).

    The frame count of the container is trusted only once the sampled frames decode: when a read fails, the decodable
    frames are counted (:func:`~rsa_lightning.data.probing.count_decodable_frames`) and, if fewer, the clip is sampled
    again over them.
    """

    def __init__(
        self,
        *,
        num_threads: int = 1,
        seek_mode: str = "auto",
        open_gop_files: OpenGopFiles = None,
        detect_open_gop: bool = True,
        fallback: bool = True,
    ) -> None:
        if seek_mode not in SEEK_MODES:
            raise ValueError(f"seek_mode must be one of {SEEK_MODES}, got {seek_mode!r}")
        _check_backend_options(num_threads, fallback)
        self.num_threads = num_threads
        self.seek_mode = seek_mode
        self.listed_modes = _listed_modes(open_gop_files)
        self.detect_open_gop = detect_open_gop
        self.fallback = fallback

    @property
    def open_gop_files(self) -> set[str]:
        """The listed files (decoded sequentially or with PyAV)."""
        return set(self.listed_modes)

    def mode_for(self, path: Path) -> str:
        """How ``path`` is read: ``"seek"``, ``"sequential"`` (decord from frame 0) or ``"pyav"`` (exact decoder).

        In every mode a file with a rotation or mirror display matrix (decord fails on 90-degree rotations and ignores
        mirrors) or whose frames decord converts to RGB otherwise than the reference (:func:`_rgb_risk`: odd heights,
        10-bit 4:2:0, ...) is read by PyAV; both are probed once per file and process.
        """
        listed = self.listed_modes.get(os.path.normpath(str(path))) if self.seek_mode == "auto" else None
        if listed == EXACT or _rgb_risk(path, "decord") is not None:
            return EXACT
        if listed is not None:
            return listed
        if self.seek_mode == "auto" and self.detect_open_gop:
            probe = probe_video_cached(str(path))
            if probe.orientation != IDENTITY:
                return EXACT
            return SEQUENTIAL if probe.seek_risk else "seek"
        if probe_orientation_cached(str(path)) != IDENTITY:
            return EXACT
        return "seek" if self.seek_mode == "auto" else self.seek_mode

    def sequential_for(self, path: Path) -> bool:
        """Whether ``path`` is decoded contiguously from frame 0 (by decord, or by PyAV's exact decoder)."""
        return self.mode_for(path) != "seek"

    def read(self, record: VideoRecord, choose: ChooseFn) -> tuple[np.ndarray, np.ndarray]:
        path = Path(record.path)
        check_file(path)
        choose = _SameChoice(choose)
        mode = self.mode_for(path)
        if mode == EXACT:
            return _read_with_pyav("decord", record, choose)
        read = lambda: self._read(path, record, choose, sequential=mode == SEQUENTIAL)
        return _read_or_fall_back("decord", record, choose, read, self.fallback)

    def _read(self, path: Path, record: VideoRecord, choose: ChooseFn, sequential: bool):
        try:
            reader = open_decord(path, self.num_threads)
            num_file_frames = len(reader)
            if num_file_frames < 1:
                raise VideoDecodeError(f"{path}: no frames")
            start = record.start_frame or 0
            indices = _choose(choose, clip_length(record, num_file_frames))
            try:
                frames = self._decode(reader, start + indices, sequential)
            except Exception as err:
                del reader
                return _read_decodable_part(record, choose, num_file_frames, err)
        except (VideoDecodeError, SamplerIndexError):
            raise
        except Exception as err:  # decord raises DECORDError and plain RuntimeErrors
            if "cannot find video stream" in str(err):  # decord's "Check failed: st_nb >= 0" on audio-only files
                raise _NoVideo(str(no_video_error(path))) from None
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
            f"open_gop_files=<{len(self.listed_modes)} files>, detect_open_gop={self.detect_open_gop})"
        )


TORCHCODEC_INSTALL = (
    "install it with `make install` (on Debian 12 it also installs FFmpeg's shared libraries), or `pip install "
    "torchcodec==0.13.0` plus FFmpeg 4-8 shared libraries (libavcodec, libavformat, ...); or use data/backend=decord"
)


def load_torchcodec():
    """torchcodec's ``VideoDecoder`` class, imported on first use (the package imports without torchcodec).

    Raises :class:`~rsa_lightning.errors.ConfigError` naming ``data/backend=torchcodec`` and how to install it when
    torchcodec is missing or cannot load (no FFmpeg shared libraries, or a build for another torch).
    """
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as err:
        raise ConfigError(
            f"data/backend=torchcodec: torchcodec cannot be loaded ({describe(err)}); {TORCHCODEC_INSTALL}"
        ) from None
    except Exception as err:  # RuntimeError / OSError: its native library does not load
        import torch

        raise ConfigError(
            f"data/backend=torchcodec: torchcodec is installed but its native library does not load: FFmpeg 4-8 "
            f"shared libraries (libavutil, libavcodec, ...) not found, or a torchcodec release built for another "
            f"torch than this {torch.__version__} (torchcodec 0.13.0 loads beside torch 2.13.0); {TORCHCODEC_INSTALL}"
            f" (its own message: {describe(err)})"
        ) from None
    return VideoDecoder


# the orientations without a mirror, as the rotation torchcodec reports and applies (VideoStreamMetadata.rotation,
# degrees counter-clockwise, modulo 360); torchcodec reads a mirror as a rotation, so mirrored files are not here
_ROTATION_DEGREES = {
    IDENTITY: 0,
    Orientation(transpose=True, flip_rows=True): 90,
    Orientation(flip_rows=True, flip_cols=True): 180,
    Orientation(transpose=True, flip_cols=True): 270,
}


class TorchCodecBackend:
    """Decode video files with torchcodec's exact mode (one ``VideoDecoder`` per call), exactly.

    Args:
        num_threads: FFmpeg decoding threads per decoder (1: the DataLoader workers are the parallelism; 0: FFmpeg's
            choice).
        open_gop_files: the scan's list of files decord must not seek in (see :class:`DecordBackend`): every file it
            lists is read by :class:`PyAVBackend`.
        fallback: decode a file torchcodec cannot open or decode with :class:`PyAVBackend` (logged once per file);
            False: raise :class:`VideoDecodeError`.

    Every file is probed once per process (:func:`~rsa_lightning.data.probing.probe_video`, cached): files with a
    seek risk (open GOPs, decode-order timestamps, AVI) or a mirrored display matrix are read by
    :class:`PyAVBackend`, and so is a file whose rotation torchcodec reports otherwise than the reference applies
    (see the module docstring for what was measured). The frame count is that of torchcodec's scan of the packets;
    when a read fails, the decodable frames are counted and the clip sampled again over them, as
    :class:`DecordBackend` does.

    Raises:
        ConfigError: at construction, when torchcodec cannot be loaded (the message says how to install it).
    """

    def __init__(self, *, num_threads: int = 1, open_gop_files: OpenGopFiles = None, fallback: bool = True) -> None:
        _check_backend_options(num_threads, fallback)
        load_torchcodec()
        self.num_threads = num_threads
        self.listed_modes = _listed_modes(open_gop_files)
        self.fallback = fallback

    def mode_for(self, path: Path) -> str:
        """How ``path`` is read: ``"seek"`` (torchcodec) or ``"pyav"`` (listed, a seek risk, mirrored, or a pixel
        format torchcodec converts to RGB otherwise than the reference)."""
        if os.path.normpath(str(path)) in self.listed_modes or _rgb_risk(path, "torchcodec") is not None:
            return EXACT
        probe = probe_video_cached(str(path))
        return EXACT if probe.seek_risk or probe.orientation not in _ROTATION_DEGREES else "seek"

    def read(self, record: VideoRecord, choose: ChooseFn) -> tuple[np.ndarray, np.ndarray]:
        path = Path(record.path)
        check_file(path)
        choose = _SameChoice(choose)
        if self.mode_for(path) == EXACT:
            return _read_with_pyav("torchcodec", record, choose)
        return _read_or_fall_back("torchcodec", record, choose, lambda: self._read(path, record, choose), self.fallback)

    def _read(self, path: Path, record: VideoRecord, choose: ChooseFn) -> tuple[np.ndarray, np.ndarray]:
        video_decoder = load_torchcodec()
        try:
            decoder = video_decoder(
                str(path), seek_mode="exact", num_ffmpeg_threads=self.num_threads, dimension_order="NHWC"
            )
            num_file_frames = decoder.metadata.num_frames or 0
            if num_file_frames < 1:
                raise VideoDecodeError(f"{path}: no frames")
            rotation = decoder.metadata.rotation or 0.0  # torchcodec applies it rounded to a multiple of 90
            expected = _ROTATION_DEGREES[probe_video_cached(str(path)).orientation]
            if abs((rotation - expected + 180) % 360 - 180) > 0.5:
                why = f"its rotation is {rotation:.0f} degrees to torchcodec, {expected} to us"
                raise VideoDecodeError(f"{path}: {why}")
            start = record.start_frame or 0
            indices = _choose(choose, clip_length(record, num_file_frames))
            # each frame once, in increasing order (no backward seek), then in the sampler's order
            wanted, order = np.unique(start + indices, return_inverse=True)
            try:
                frames = decoder.get_frames_at(wanted.tolist()).data.numpy()[order.reshape(-1)]
            except Exception as err:
                del decoder
                return _read_decodable_part(record, choose, num_file_frames, err)
        except (VideoDecodeError, SamplerIndexError):
            raise
        except Exception as err:  # torchcodec raises RuntimeErrors and ValueErrors
            if "best video stream is unknown" in str(err):  # no video stream (an audio-only file)
                raise _NoVideo(str(no_video_error(path))) from None
            raise VideoDecodeError(f"{path}: {describe(err)}") from err
        return frames, indices

    def __repr__(self) -> str:
        return (
            f"TorchCodecBackend(num_threads={self.num_threads}, open_gop_files=<{len(self.listed_modes)} files>, "
            f"fallback={self.fallback})"
        )


class _NoVideo(VideoDecodeError):
    """A file without video: no other decoder is tried."""


class _TimestampMismatch(Exception):
    """The decoded timestamps do not locate the wanted frames: decode the file sequentially instead."""


@dataclass
class _PacketIndex:
    """The video packets of a file, demuxed (not decoded): presentation timestamps sorted, keyframe timestamps."""

    timestamps: np.ndarray  # int64 (N,): frame i is shown at timestamps[i]
    keyframes: np.ndarray  # int64 (K,)
    usable: bool  # False: the timestamps may not locate a frame (maybe decode order, missing, repeated)

    @classmethod
    def demux(cls, container, stream) -> _PacketIndex:
        pts_in_order, keyframes, sizes = [], [], 0
        for packet in container.demux(stream):
            if not packet.size:
                continue
            sizes += 1
            pts_in_order.append(packet.pts)
            if packet.is_keyframe and packet.pts is not None:
                keyframes.append(packet.pts)
        known = [pts for pts in pts_in_order if pts is not None]
        timestamps = np.unique(np.asarray(known, dtype=np.int64))
        usable = len(timestamps) == sizes and not timestamps_may_be_decode_order(stream.codec_context, pts_in_order)
        if not usable:  # frames are counted, not located by timestamp
            timestamps = np.arange(sizes, dtype=np.int64)
        return cls(timestamps, np.unique(np.asarray(keyframes, dtype=np.int64)), usable)


class PyAVBackend:
    """Decode video files with PyAV, exactly: the frames of the reference decode
    (:func:`rsa_lightning.data.video_io.iter_frames`) at the wanted indices, on every file PyAV can open.

    The packets are demuxed once per call (no decoding). Where their presentation timestamps locate the frames
    (frame ``i`` is the ``i``-th smallest timestamp), each wanted frame is reached by seeking to the keyframe at or
    before it (unless the decoder is already inside that stretch) and decoding forward; every decoded timestamp is
    checked (one of the packets', strictly increasing, the target reached), and frames shown before the keyframe
    seeked to (open-GOP leading pictures) are never kept. Files whose timestamps cannot locate a frame (decode-order
    timestamps of AVI with B-frames, missing or repeated ones) and any failed check are decoded sequentially from
    the first frame, counting frames, as the reference does (logged once per file).
    """

    def read(self, record: VideoRecord, choose: ChooseFn) -> tuple[np.ndarray, np.ndarray]:
        path = Path(record.path)
        check_file(path)
        try:
            with open_container(path) as container:
                if not container.streams.video:
                    raise no_video_error(path)
                stream = container.streams.video[0]
                index = _PacketIndex.demux(container, stream)
                if index.timestamps.size == 0:
                    raise no_video_error(path, NO_FRAMES)
                start = record.start_frame or 0
                indices = _choose(choose, clip_length(record, len(index.timestamps)))
                try:
                    frames = self._decode(container, stream, index, start + indices, path)
                except Exception as err:
                    decodable = count_decodable_frames(path)
                    if decodable >= len(index.timestamps) or decodable <= start:
                        raise
                    indices = _choose(choose, clip_length(record, decodable))
                    try:
                        frames = self._decode(container, stream, index, start + indices, path)
                    except Exception:
                        raise err from None
        except (VideoDecodeError, SamplerIndexError):
            raise
        except Exception as err:
            raise VideoDecodeError(f"{path}: {describe(err)}") from err
        return frames, indices

    def _decode(self, container, stream, index: _PacketIndex, wanted: np.ndarray, path: Path) -> np.ndarray:
        if index.usable:
            try:
                return self._decode_by_timestamp(container, stream, index, wanted, path)
            except _TimestampMismatch as why:
                _log_once(logging.INFO, str(path), f"{why}; decoding it sequentially (exact, slower)")
        else:
            _log_once(logging.DEBUG, str(path), "timestamps do not locate frames; decoding it sequentially")
        return self._decode_sequentially(path, wanted)

    @staticmethod
    def _decode_sequentially(path: Path, wanted: np.ndarray) -> np.ndarray:
        """Frames ``wanted`` of the reference decode (sequential from frame 0, counted)."""
        wanted_set, last = set(wanted.tolist()), int(wanted.max())
        out: dict[int, np.ndarray] = {}
        count = 0
        for count, frame in enumerate(iter_frames(path), start=1):
            if count - 1 in wanted_set:
                out[count - 1] = frame
            if count > last:
                break
        if count <= last:
            raise VideoDecodeError(f"{path}: frame {last} requested, the file decodes {count} frames")
        return np.stack([out[int(i)] for i in wanted])

    @staticmethod
    def _decode_by_timestamp(container, stream, index: _PacketIndex, wanted: np.ndarray, path: Path) -> np.ndarray:
        targets = index.timestamps[wanted]
        known, wanted_set = set(index.timestamps.tolist()), set(targets.tolist())
        out: dict[int, np.ndarray] = {}
        orientation = None
        frames_iter, position, floor = None, None, None  # decoder state: last timestamp seen, keyframe seeked to
        for target in np.unique(targets).tolist():
            at_or_before = index.keyframes[index.keyframes <= target]
            keyframe = int(at_or_before[-1]) if at_or_before.size else int(index.timestamps[0])
            if frames_iter is None or position is None or keyframe > position:
                container.seek(keyframe, stream=stream, backward=True, any_frame=False)
                stream.codec_context.flush_buffers()
                frames_iter, position, floor = container.decode(stream), None, keyframe
            for frame in frames_iter:
                if frame.pts is None or frame.pts not in known:
                    raise _TimestampMismatch(f"a decoded frame has timestamp {frame.pts}, no packet's")
                if position is not None and frame.pts <= position:
                    raise _TimestampMismatch("decoded timestamps do not increase")
                if position is None and frame.pts > target:
                    raise _TimestampMismatch(f"the seek to {keyframe} went past {target}")
                position = frame.pts
                if orientation is None:
                    orientation = frame_orientation(frame, path)
                if frame.pts >= floor and frame.pts in wanted_set and frame.pts not in out:
                    out[frame.pts] = orientation.apply(frame_to_rgb(frame))
                if position >= target:
                    break
            if target not in out:
                raise _TimestampMismatch(f"the frame at timestamp {target} was not decoded after a seek")
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
