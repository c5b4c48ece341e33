"""Probe video files once, before training on them: decodable frames, open GOPs, and decord's seek accuracy.

:func:`count_decodable_frames` (the true length of a damaged file), :func:`detect_open_gop` (from the packets alone)
and :func:`check_seek_accuracy` (per pixel, seeks against a sequential decode) serve two users:
``rsa_lightning.tools.scan_videos``, which writes the open-GOP list that :func:`read_path_list` reads, and
:class:`~rsa_lightning.data.decoding.DecordBackend`, which decodes open-GOP files sequentially.

Open-GOP H.264 and decord
-------------------------
decord returns *wrong frames* after seeking in open-GOP H.264 (non-IDR keyframes, whose leading B-frames reference
the previous GOP): measured here on x264 ``open-gop=1`` clips, a sparse ``get_batch`` or a fresh ``reader[i]`` returns
frame ``i + k`` (``k`` = the leading B-frames the decoder drops after the seek) for most frames, and reading a
contiguous range that starts at a later keyframe is shifted the same way; ``skip_frames`` is wrong too. Only a
decode that starts at frame 0 and reads contiguously (``get_batch`` of consecutive ranges, no seek) is exact. Since
neighbouring frames look alike the error hardly moves pixel means: only a per-pixel comparison shows it
(:func:`check_seek_accuracy`). Closed-GOP H.264, VP9 webm and single-keyframe files decode bit-exactly with seeks.
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

from rsa_lightning.data.video_io import VideoDecodeError, check_file, decord_sequential, describe, open_decord

log = logging.getLogger(__name__)


def count_decodable_frames(path: Union[str, Path]) -> int:
    """Frames PyAV decodes from the start of ``path`` before the first error (the true count of a damaged file)."""
    import av

    count = 0
    try:
        with av.open(str(path)) as container:
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


def detect_open_gop(path: Union[str, Path]) -> bool:
    """Whether ``path`` has open GOPs, from its packets alone (demuxed, not decoded; about 2 ms for a 3-s mp4).

    Open means: a keyframe after the first is followed, in decode order, by a frame shown before it (leading
    pictures that reference the previous GOP), or (H.264 / HEVC) a keyframe is a non-IDR recovery point. decord
    mis-seeks in both cases (see the module docstring). ``.webm`` files are not opened (WebM holds only VP8, VP9
    and AV1, which decord seeks exactly; demuxing one costs about 5 ms). Unreadable files return False (the
    decode reports them).
    """
    import av

    if Path(path).suffix.lower() == ".webm":
        return False
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            extradata = bytes(stream.codec_context.extradata or b"")
            length_size = (extradata[4] & 0x03) + 1 if extradata[:1] == b"\x01" and len(extradata) > 4 else None
            keyframes_seen, keyframe_pts = 0, None
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                pts = packet.pts if packet.pts is not None else packet.dts
                if packet.is_keyframe:
                    keyframes_seen += 1
                    keyframe_pts = pts
                    if keyframes_seen > 1 and not _keyframe_is_closed(codec, bytes(packet), length_size):
                        return True
                elif keyframes_seen > 1 and pts is not None and keyframe_pts is not None and pts < keyframe_pts:
                    return True
    except Exception as err:
        log.debug("%s: open-GOP detection failed: %s", path, err)
    return False


@functools.lru_cache(maxsize=1 << 16)
def detect_open_gop_cached(path: str) -> bool:
    """:func:`detect_open_gop`, remembered per path and process."""
    return detect_open_gop(path)


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
