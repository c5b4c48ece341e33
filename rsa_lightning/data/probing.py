"""Probe video files once, before training on them: decodable frames, open GOPs, and decord's seek accuracy.

:func:`count_decodable_frames` (the true length of a damaged file), :func:`detect_open_gop` and :func:`probe_video`
(from the packets alone, plus the first frame's display matrix) and :func:`check_seek_accuracy` (per pixel, seeks
against a sequential decode) serve two users: ``rsa_lightning.tools.scan_videos``, which writes the list of files
decord must not seek in (``open_gop.txt``, read by :func:`read_decode_modes`), and
:class:`~rsa_lightning.data.decoding.DecordBackend`, which decodes those files sequentially or with PyAV.

Timestamps in decode order (AVI)
--------------------------------
AVI stores no presentation timestamps: its packets count frames in *decode* order. With B-frames (MPEG-4 Part 2,
H.264) the decoder shows frames in another order than it receives them, so a timestamp no longer says which frame
a packet is: measured here, decord returns other frames after most seeks in such files (also for the last frames,
e.g. frame 71 read as 68), and a decoder that stops at the first frame whose timestamp reaches the target returns the
wrong frame or none. :func:`probe_video` flags these files (B-frames, and packet timestamps that never go back);
they are read sequentially (decord) or counted from the start (:class:`~rsa_lightning.data.decoding.PyAVBackend`).
decord's seeks were also found wrong in an AVI H.264 file without B-frames (x264 scene-cut I-frames that are not
IDR, marked as keyframes in the AVI index): decord reads every AVI file sequentially.

Open-GOP H.264 and decord
-------------------------
decord returns *wrong frames* after seeking in open-GOP H.264 (non-IDR keyframes, whose leading B-frames reference
the previous GOP): measured here on x264 ``open-gop=1`` clips, a sparse ``get_batch`` or a fresh ``reader[i]`` returns
frame ``i + k`` (``k`` = the leading B-frames the decoder drops after the seek) for most frames, and reading a
contiguous range that starts at a later keyframe is shifted the same way; ``skip_frames`` is wrong too. Only a
decode that starts at frame 0 and reads contiguously (``get_batch`` of consecutive ranges, no seek) is exact. Since
neighbouring frames look alike the error hardly moves pixel means: only a per-pixel comparison shows it
(:func:`check_seek_accuracy`). Closed-GOP H.264, VP9 webm and single-keyframe files decode bit-exactly with seeks.

Conversion to RGB (odd heights, other chroma layouts)
-----------------------------------------------------
decord and torchcodec convert decoded frames to RGB with their own FFmpeg (libswscale), the reference with PyAV's.
The pixels agree where libswscale takes the same path in both: its unscaled YUV-to-RGB converter, which it uses for
yuv420p, yuvj420p, yuva420p and yuv422p only when the height is even, or no chroma interpolation at all (4:4:4,
grey, RGB). Elsewhere its general scaler runs, whose chroma upsampling differs between the two builds: measured
here, frames of odd height in those four formats (any codec and container: VP9 webm, MPEG-4 AVI, FFV1 mkv) and
frames in formats that interpolate chroma vertically at any height (yuv420p10le, yuv420p16le, nv12, yuv440p,
yuv410p) come back up to ~100/255 off on every frame, silently; odd widths are exact. :func:`rgb_conversion_risk`
trusts only the formats measured exact (:func:`probe_pixel_format` reads the format and height from the header);
the backends decode other files with PyAV.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from rsa_lightning.data.video_io import (
    IDENTITY,
    Orientation,
    VideoDecodeError,
    check_file,
    decord_sequential,
    describe,
    frame_orientation,
    open_container,
    open_decord,
)

log = logging.getLogger(__name__)


def count_decodable_frames(path: Union[str, Path]) -> int:
    """Frames PyAV decodes from the start of ``path`` before the first error (the true count of a damaged file)."""

    count = 0
    try:
        with open_container(path) as container:
            for _ in container.decode(video=0):
                count += 1
    except Exception as err:  # av.FFmpegError and friends: the damaged tail starts here
        log.debug("%s: decoding stopped after %d frames: %s", path, count, err)
    return count


_H264_IDR, _H264_NON_IDR = 5, 1
_HEVC_IRAP_IDR = (19, 20)  # IDR_W_RADL, IDR_N_LP; 16-18 BLA and 21 CRA start open GOPs


def _nal_units(data: bytes, length_size: Optional[int]) -> Iterable[bytes]:
    """NAL units of one packet: length-prefixed (mp4 'avcC'/'hvcC') or Annex B start codes."""
    if length_size:
        i = 0
        while i + length_size < len(data):
            size = int.from_bytes(data[i : i + length_size], "big")
            yield data[i + length_size : i + length_size + size]
            i += length_size + size
        return
    for chunk in data.split(b"\x00\x00\x01"):
        if chunk.strip(b"\x00"):
            yield chunk


def _keyframe_is_closed(codec: str, data: bytes, length_size: Optional[int]) -> bool:
    """False for an H.264 keyframe without IDR slice, or an HEVC keyframe that is not IDR (CRA/BLA)."""
    if codec == "h264":
        types = {nal[0] & 0x1F for nal in _nal_units(data, length_size) if nal}
        return _H264_IDR in types or _H264_NON_IDR not in types
    if codec == "hevc":
        types = {(nal[0] >> 1) & 0x3F for nal in _nal_units(data, length_size) if nal}
        irap = {t for t in types if 16 <= t <= 23}
        return not irap or irap <= set(_HEVC_IRAP_IDR)
    return True


class _OpenGopCheck:
    """Fed a video stream's packets in decode order; ``found`` once one shows an open GOP (see
    :func:`detect_open_gop`)."""

    def __init__(self, stream) -> None:
        self.codec = stream.codec_context.name
        extradata = bytes(stream.codec_context.extradata or b"")
        self.length_size = (extradata[4] & 0x03) + 1 if extradata[:1] == b"\x01" and len(extradata) > 4 else None
        self.keyframes_seen, self.keyframe_pts, self.found = 0, None, False

    def feed(self, packet) -> bool:
        if self.found or not packet.size:
            return self.found
        pts = packet.pts if packet.pts is not None else packet.dts
        if packet.is_keyframe:
            self.keyframes_seen += 1
            self.keyframe_pts = pts
            if self.keyframes_seen > 1 and not _keyframe_is_closed(self.codec, bytes(packet), self.length_size):
                self.found = True
        elif self.keyframes_seen > 1 and pts is not None and self.keyframe_pts is not None and pts < self.keyframe_pts:
            self.found = True
        return self.found


def _is_webm(path: Union[str, Path]) -> bool:
    # WebM holds only VP8, VP9 and AV1: no open GOPs that decord mis-seeks in, no B-frame reordering
    return Path(path).suffix.lower() == ".webm"


def detect_open_gop(path: Union[str, Path]) -> bool:
    """Whether ``path`` has open GOPs, from its packets alone (demuxed, not decoded; about 2 ms for a 3-s mp4).

    Open means: a keyframe after the first is followed, in decode order, by a frame shown before it (leading
    pictures that reference the previous GOP), or (H.264 / HEVC) a keyframe is a non-IDR recovery point. decord
    mis-seeks in both cases (see the module docstring). ``.webm`` files are not opened (WebM holds only VP8, VP9
    and AV1, which decord seeks exactly; demuxing one costs about 5 ms). Unreadable files return False (the
    decode reports them).
    """

    if _is_webm(path):
        return False
    try:
        with open_container(path) as container:
            stream = container.streams.video[0]
            check = _OpenGopCheck(stream)
            return any(check.feed(packet) for packet in container.demux(stream))
    except Exception as err:
        log.debug("%s: open-GOP detection failed: %s", path, err)
    return False


@functools.lru_cache(maxsize=1 << 16)
def detect_open_gop_cached(path: str) -> bool:
    """:func:`detect_open_gop`, remembered per path and process."""
    return detect_open_gop(path)


@dataclass(frozen=True)
class VideoProbe:
    """What :func:`probe_video` learns about a file from its packets and first frame.

    ``seek_risk``: why decord's seek cannot be trusted in it (None: nothing known against it); ``orientation``: the
    display matrix of its first frame (see :mod:`rsa_lightning.data.video_io`); ``decode_order_timestamps``: its
    packet timestamps count frames in decode order although the decoder reorders them (AVI with B-frames).
    """

    seek_risk: Optional[str] = None
    orientation: Orientation = IDENTITY
    decode_order_timestamps: bool = False


def timestamps_may_be_decode_order(codec_context, packet_pts: list[Optional[int]]) -> bool:
    """True when a stream whose decoder may reorder frames (B-frames) has packet timestamps that never go back (or
    none): either no frame is reordered, or they number the frames in decode order (AVI) and cannot locate a frame.
    :func:`probe_video` tells the two apart by decoding the first frames."""
    if not codec_context.has_b_frames or len(packet_pts) < 2:
        return False
    if any(pts is None for pts in packet_pts):
        return True
    return all(b >= a for a, b in zip(packet_pts, packet_pts[1:]))


_HEAD_PACKETS = 48  # packets decoded to see whether decoded timestamps follow presentation order


def probe_video(path: Union[str, Path]) -> VideoProbe:
    """One pass over ``path``'s packets (none for a ``.webm`` file), decoding only its first frame, or its first 48
    packets when its timestamps may be in decode order: open GOPs (:func:`detect_open_gop`), decode-order timestamps
    (decoded frames whose timestamps go back), AVI, orientation.

    Unreadable files return ``VideoProbe()`` (the decode reports them).
    """

    try:
        with open_container(path) as container:
            if not container.streams.video:
                return VideoProbe()
            stream = container.streams.video[0]
            codec = stream.codec_context
            avi = container.format.name == "avi"
            check = None if _is_webm(path) else _OpenGopCheck(stream)
            packet_pts, head = [], []
            if check is not None or codec.has_b_frames:
                for packet in container.demux(stream):
                    if packet.size:
                        if check is not None:
                            check.feed(packet)
                        packet_pts.append(packet.pts)
                        if len(head) < _HEAD_PACKETS:
                            head.append(packet)
            suspect = timestamps_may_be_decode_order(codec, packet_pts)
            orientation, decoded_pts = None, []
            for packet in head:
                for frame in codec.decode(packet):
                    orientation = orientation or frame_orientation(frame, path)
                    decoded_pts.append(frame.pts)
                if orientation is not None and not suspect:
                    break
            if orientation is None and not head:  # not demuxed: the first frame
                for frame in container.decode(stream):
                    orientation = frame_orientation(frame, path)
                    break
    except Exception as err:
        log.debug("%s: probe failed: %s", path, err)
        return VideoProbe()
    decode_order = suspect and (None in decoded_pts or any(b <= a for a, b in zip(decoded_pts, decoded_pts[1:])))
    risk = (
        "open GOPs"
        if check is not None and check.found
        else "timestamps in decode order (B-frames in an AVI-like container)"
        if decode_order
        else "AVI container (decord's seeks in AVI files were found wrong, with and without B-frames)"
        if avi
        else None
    )
    return VideoProbe(seek_risk=risk, orientation=orientation or IDENTITY, decode_order_timestamps=decode_order)


@functools.lru_cache(maxsize=1 << 16)
def probe_video_cached(path: str) -> VideoProbe:
    """:func:`probe_video`, remembered per path and process."""
    return probe_video(path)


def probe_orientation(path: Union[str, Path]) -> Orientation:
    """The display-matrix orientation of ``path``'s first frame (identity when there is none or the file does not
    decode: the decode reports it)."""

    try:
        with open_container(path) as container:
            for frame in container.decode(video=0):
                return frame_orientation(frame, path)
    except Exception as err:
        log.debug("%s: orientation probe failed: %s", path, err)
    return IDENTITY


@functools.lru_cache(maxsize=1 << 16)
def probe_orientation_cached(path: str) -> Orientation:
    """:func:`probe_orientation`, remembered per path and process."""
    return probe_orientation(path)


# pixel formats decord and torchcodec convert to RGB exactly as the reference does, at every size / at even heights
# only (libswscale's unscaled converter; see the module docstring)
_RGB_EXACT = frozenset({"yuv444p", "yuvj444p", "yuv444p10le", "gray", "gray16le", "rgb24", "rgba", "bgr0"})
_RGB_EXACT_EVEN_HEIGHT = frozenset({"yuv420p", "yuvj420p", "yuva420p", "yuv422p"})
# (yuv411p, yuvj422p and yuv422p10le measured exact in some codecs only: 10-bit 4:2:2 H.264 was up to 82/255 off)
_RGB_EXACT_DECORD = _RGB_EXACT


def rgb_conversion_risk(pix_fmt: Optional[str], height: int, decoder: str = "decord") -> Optional[str]:
    """Why ``decoder`` (``"decord"`` or ``"torchcodec"``) may convert frames of ``pix_fmt`` and ``height`` to RGB
    otherwise than the reference (None: a format measured exact, see the module docstring)."""
    exact = _RGB_EXACT_DECORD if decoder == "decord" else _RGB_EXACT
    if pix_fmt in exact or (pix_fmt in _RGB_EXACT_EVEN_HEIGHT and height % 2 == 0):
        return None
    if pix_fmt in _RGB_EXACT_EVEN_HEIGHT:
        return f"{pix_fmt} frames of odd height {height}"
    return f"{pix_fmt or 'unknown'} frames"


@functools.lru_cache(maxsize=1 << 16)
def probe_pixel_format(path: str) -> Optional[tuple[Optional[str], int]]:
    """``(pixel format, height)`` of ``path``'s video stream as its header states them (opened, nothing decoded);
    None when the file has no video stream or cannot be opened (the decode reports it). Remembered per process."""
    try:
        with open_container(path) as container:
            if not container.streams.video:
                return None
            codec = container.streams.video[0].codec_context
            return codec.pix_fmt, int(codec.height)
    except Exception as err:
        log.debug("%s: pixel format probe failed: %s", path, err)
    return None


# modes of the scan's list of files decord must not seek in (the second field of a line)
SEQUENTIAL, EXACT = "sequential", "pyav"


def read_decode_modes(path: Union[str, Path]) -> dict[str, str]:
    """``{path: mode}`` of a list as :func:`read_path_list` reads it; the mode is the second field's first word,
    ``pyav`` (decord cannot read the file exactly: decode it with PyAV) or else ``sequential``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"open-GOP list {path} does not exist (rsa_lightning.tools.scan_videos writes one)")
    modes = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            fields = line.split("\t")
            note = fields[1].strip() if len(fields) > 1 else ""
            modes[os.path.normpath(fields[0])] = EXACT if note.split(":")[0].strip() == EXACT else SEQUENTIAL
    return modes


def read_path_list(path: Union[str, Path]) -> set[str]:
    """Paths listed one per line in ``path`` ('#' comments; a tab ends the path), e.g. the scan's open-GOP list."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"open-GOP list {path} does not exist (rsa_lightning.tools.scan_videos writes one)")
    entries = set()
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entries.add(os.path.normpath(line.split("\t")[0]))
    return entries


@dataclass
class SeekCheck:
    """Result of :func:`check_seek_accuracy`: ``wrong`` lists the sampled frames whose seek decode differs."""

    path: str
    num_frames: int
    checked: list[int] = field(default_factory=list)
    wrong: list[int] = field(default_factory=list)
    max_abs_diff: int = 0

    @property
    def accurate(self) -> bool:
        return not self.wrong


def check_seek_accuracy(
    path: Union[str, Path], *, num_samples: int = 16, frames_per_read: int = 4, seed: int = 0, num_threads: int = 1
) -> SeekCheck:
    """Compare, per pixel, ``num_samples`` frames decoded by decord with seeks against a sequential decode.

    The sampled frames are read as a training loader reads them: sorted groups of ``frames_per_read`` with one
    ``get_batch`` on a fresh reader each. The reference is decord reading contiguously from frame 0 (no seek), so the
    colour conversion is the same and a correct seek is bit-exact. Raises :class:`VideoDecodeError` for files that
    cannot be decoded.
    """
    path = Path(path)
    check_file(path)
    try:
        num_frames = len(open_decord(path, num_threads))
        if num_frames < 1:
            raise VideoDecodeError(f"{path}: no frames")
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(num_frames, size=min(num_samples, num_frames), replace=False))
        groups = np.array_split(rng.permutation(sample), max(1, int(np.ceil(len(sample) / frames_per_read))))
        reference = dict(zip(sample.tolist(), decord_sequential(open_decord(path, num_threads), sample)))
        result = SeekCheck(path=str(path), num_frames=num_frames, checked=sample.tolist())
        for group in groups:
            group = np.sort(group)
            frames = open_decord(path, num_threads).get_batch(group.tolist()).asnumpy()
            for i, frame in zip(group.tolist(), frames):
                diff = int(np.abs(frame.astype(np.int16) - reference[i].astype(np.int16)).max())
                result.max_abs_diff = max(result.max_abs_diff, diff)
                if diff > 0:
                    result.wrong.append(i)
    except VideoDecodeError:
        raise
    except Exception as err:
        raise VideoDecodeError(f"{path}: {describe(err)}") from err
    result.wrong.sort()
    return result
