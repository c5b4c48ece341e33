"""Map-style video dataset: sample, decode and transform one view of one video; skip broken videos.

A sample is ``{"video": uint8 (C, T, H, W), "label": int, "video_id": str, "view": int, "flipped": bool,
"replaced": str, "replaced_reason": str}``; the default collate turns a list of samples into
``video: (B, C, T, H, W)``, ``label: (B,)``, ``view: (B,)``, ``flipped: (B,)`` and lists of ids and reasons.
``flipped`` says whether the training transform mirrored the clip (a
:class:`~rsa_lightning.data.transforms.TrainTransform` reports it; False in evaluation and for other transforms).
``C`` is always 3 (RGB): a backend's grey (one channel, or no channel axis) or RGBA frames become RGB here; any other
channel count is a broken video.

Views: in evaluation every video is read ``num_clips`` x ``num_crops`` times; dataset index
``(video * num_clips + clip) * num_crops + crop`` is view ``clip * num_crops + crop`` of video ``video``. In training
each video is one index with a fresh random clip and augmentation per epoch.

Broken videos: a video whose decode raises :class:`VideoDecodeError` (or exceeds ``decode_timeout``) is skipped with
one warning per file and process, and replaced by the next record of the list (same view), deterministically; the
sample's ``"replaced"`` names the skipped video (empty otherwise) and ``"replaced_reason"`` says why (``<file>:
<reason>``), so :class:`rsa_lightning.callbacks.SkippedSamplesMonitor` can count skips across DataLoader workers.
When every candidate fails (``max_decode_retries + 1`` videos, or every video of a split shorter than that) the sample
raises :class:`UndecodableVideosError`, a :class:`~rsa_lightning.errors.DataError` naming each file and its reason
(each distinct video once: a one-video split says that its one video failed, and why). Known broken files are best
left out beforehand: ``rsa_lightning.tools.scan_videos`` writes an exclusion list
(:mod:`rsa_lightning.data.exclusions`).

Decode timeout: a native hang (a decoder stuck inside FFmpeg) must not freeze training. With ``decode_timeout`` set,
each read runs in a fresh daemon thread that the sample waits for with ``join(timeout)``; past it, the video is
skipped like a broken one and the thread is abandoned (it holds one reader until it returns, if ever, and never
blocks process exit). This works identically in the main process and in DataLoader workers. ``signal.alarm`` was
rejected: Python runs signal handlers only in the main thread and only between bytecodes, so it cannot interrupt a
hang inside a C call, which is the case to guard against (decord and PyAV release the GIL while decoding, so the
waiting thread keeps running). The thread costs about 0.1 ms per sample; ``decode_timeout=None`` calls directly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from rsa_lightning.data.annotations import VideoRecord
from rsa_lightning.data.decoding import VideoBackend
from rsa_lightning.data.resumable import SampleKey
from rsa_lightning.data.sampling import FrameSampler
from rsa_lightning.data.transforms import TrainTransform
from rsa_lightning.data.video_io import VideoDecodeError
from rsa_lightning.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "DecodeTimeoutError",
    "UndecodableVideosError",
    "VideoDataset",
    "VideoDecodeError",
    "as_rgb",
]

_LISTED_FAILURES = 3  # failures named in full in an UndecodableVideosError


class DecodeTimeoutError(VideoDecodeError):
    """Decoding one video took longer than ``decode_timeout`` seconds."""


class UndecodableVideosError(DataError, VideoDecodeError):
    """Every video a sample could come from failed to decode (bad data, exit code 2); names each file and reason."""


def failure_reason(record: VideoRecord, err: BaseException) -> str:
    """``<file>: <reason>`` of a failed read (the backends' messages usually start with the file already)."""
    text = str(err).strip() or type(err).__name__
    return text if str(record.path) in text else f"{record.path}: {text}"


def as_rgb(frames: np.ndarray, path: object) -> np.ndarray:
    """Decoded frames as uint8 (T, H, W, 3): grey (T, H, W) or (T, H, W, 1) frames are repeated into three
    channels, RGBA / BGRA-like (T, H, W, 4) frames lose their fourth (alpha) channel; anything else is
    :class:`VideoDecodeError` naming ``path``."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[0] < 1 or frames.shape[1] < 1 or frames.shape[2] < 1:
        raise VideoDecodeError(f"{path}: decoded frames of shape {frames.shape}, expected (T, H, W, 3)")
    if frames.dtype != np.uint8:
        raise VideoDecodeError(f"{path}: decoded frames of type {frames.dtype}, expected 8-bit (uint8) pixels")
    channels = frames.shape[-1]
    if channels == 1:
        return np.repeat(frames, 3, axis=-1)
    if channels == 4:
        return frames[..., :3]
    if channels != 3:
        raise VideoDecodeError(f"{path}: decoded frames with {channels} channels, expected 1 (grey), 3 (RGB) or 4")
    return frames


def channels_first(frames: np.ndarray) -> torch.Tensor:
    """Decoded uint8 frames (T, H, W, C) as a contiguous (C, T, H, W) tensor.

    Used when the dataset has no transform, so that the batch collation copies contiguous clips: stacking (C, T, H,
    W) views of channels-last frames makes torch's uint8 strided copy do the transposition, slower than numpy's
    transposing copy here (decoding and collating 240p clips in one process: about 2 % less CPU per clip;
    ``benchmarks/README.md``).
    """
    return torch.from_numpy(np.ascontiguousarray(np.asarray(frames).transpose(3, 0, 1, 2)))


def _call_with_timeout(fn: Callable[[], tuple], timeout: float, what: str) -> tuple:
    """``fn()`` in a daemon thread; :class:`DecodeTimeoutError` if it has not returned after ``timeout`` s."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as err:  # handed to the waiting thread below
            outcome["error"] = err

    thread = threading.Thread(target=target, name="video-decode", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise DecodeTimeoutError(f"{what}: decoding took longer than {timeout:g} s (decoding thread abandoned)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class VideoDataset(Dataset):
    """Clips of the videos of ``records``, decoded by ``backend`` at the frames ``sampler`` chooses.

    Args:
        records: the videos of the split.
        backend: decoder with ``read(record, choose) -> (frames (T, H, W, 3) uint8, indices)``
            (:mod:`rsa_lightning.data.decoding`). It opens files inside ``read`` only, so the dataset pickles
            cleanly into worker processes and holds no open files.
        sampler: ``sampler(num_video_frames, rng=None, view=0, num_views=1) -> indices``. Training calls
            ``sampler(n, rng=rng)``, evaluation ``sampler(n, view=clip, num_views=num_clips)``
            (:mod:`rsa_lightning.data.sampling`).
        transform: training: ``transform(video, label=label, generator=generator) -> (video, label)``;
            evaluation: ``transform(video, crop_index=crop, num_crops=num_crops) -> video``; ``video`` is uint8
            (C, T, H, W). None: the decoded frames as they are, as a contiguous (C, T, H, W) tensor (a DataLoader
            can then batch only videos of one frame size).
        training: random clips and augmentation, one index per video; else every video x clip x crop.
        num_clips / num_crops: evaluation views per video (temporal clips x spatial crops); must be 1 in training.
        decode_timeout: seconds one decode may take before the video is skipped (None: no limit, no thread).
        max_decode_retries: replacement videos tried after a failure before giving up with an error (never more
            than the split's other videos: each video is tried once per sample).
        split: the split's name, for messages (``"train"``, ``"val"``, ...).

    Randomness: a training sample's frame indices (numpy Generator) and augmentation (torch Generator) come from one
    62-bit seed. The training loader's sampler passes it with the index (``dataset[SampleKey(index, seed)]``,
    :mod:`rsa_lightning.data.resumable`: a hash of the run's seed, the epoch and the index), so a sample is the same
    whichever worker reads it and in a resumed run. A plain integer index draws the seed from torch's global RNG.

    ``skipped`` maps the ``video_id`` of every video skipped *in this process* to the reason (DataLoader workers hold
    copies; the batches' ``"replaced"`` field is what reaches the main process).
    """

    def __init__(
        self,
        *,
        records: Sequence[VideoRecord],
        backend: VideoBackend,
        sampler: FrameSampler,
        transform: Optional[Callable] = None,
        training: bool,
        num_clips: int = 1,
        num_crops: int = 1,
        decode_timeout: Optional[float] = None,
        max_decode_retries: int = 10,
        split: Optional[str] = None,
    ) -> None:
        if not records:
            raise DataError(f"the {split or 'dataset'} split has no video to load")
        if num_clips < 1 or num_crops < 1:
            raise ValueError(f"num_clips and num_crops must be >= 1, got {num_clips} and {num_crops}")
        if training and (num_clips, num_crops) != (1, 1):
            raise ValueError(f"training reads one view per video; got num_clips={num_clips}, num_crops={num_crops}")
        if decode_timeout is not None and decode_timeout <= 0:
            raise ValueError(f"decode_timeout must be > 0 seconds or None, got {decode_timeout}")
        if max_decode_retries < 0:
            raise ValueError(f"max_decode_retries must be >= 0, got {max_decode_retries}")
        self.records = list(records)
        self.backend = backend
        self.sampler = sampler
        self.transform = transform
        self.training = training
        self.num_clips = num_clips
        self.num_crops = num_crops
        self.decode_timeout = decode_timeout
        self.max_decode_retries = max_decode_retries
        self.split = split
        self.skipped: dict[str, str] = {}

    @property
    def num_views(self) -> int:
        return self.num_clips * self.num_crops

    def __len__(self) -> int:
        return len(self.records) * self.num_views

    def locate(self, index: int) -> tuple[int, int, int]:
        """Dataset index -> (video, clip, crop)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        video, view = divmod(index, self.num_views)
        clip, crop = divmod(view, self.num_crops)
        return video, clip, crop

    def _read(self, record: VideoRecord, choose: Callable[[int], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if self.decode_timeout is None:
            return self.backend.read(record, choose)
        return _call_with_timeout(lambda: self.backend.read(record, choose), self.decode_timeout, str(record.path))

    def _skip(self, record: VideoRecord, err: VideoDecodeError) -> None:
        if record.video_id not in self.skipped:
            replaced = " (replaced by the next one in the list)" if self.max_decode_retries else ""
            log.warning("skipping video %s%s: %s", record.video_id, replaced, failure_reason(record, err))
        self.skipped[record.video_id] = str(err)

    def _undecodable(self, video_index: int, failures: list[tuple[VideoRecord, str]]) -> UndecodableVideosError:
        split = f"the {self.split} split" if self.split else "the dataset"
        total = len(self.records)
        if len(failures) == total:
            what = (
                f"the only video of {split} failed to decode"
                if total == 1
                else f"all {total} videos of {split} failed to decode"
            )
        else:
            start = self.records[video_index].path
            what = f"{len(failures)} consecutive videos of {split} starting at {start} failed to decode"
        listed = "; ".join(reason for _, reason in failures[:_LISTED_FAILURES])
        more = f"; and {len(failures) - _LISTED_FAILURES} more" if len(failures) > _LISTED_FAILURES else ""
        fix = (
            "Fix or replace the file (python -m rsa_lightning.tools.reencode_videos rewrites a video other tools play)"
            if total == 1
            else "Fix or replace these files, or leave them out (python -m rsa_lightning.tools.scan_videos writes an "
            "exclusion list)"
        )
        return UndecodableVideosError(f"{what}: {listed}{more}. {fix}")

    def __getitem__(self, index: int | SampleKey) -> dict:
        index, seed = index if isinstance(index, SampleKey) else (index, None)
        video_index, clip, crop = self.locate(index)
        failures: list[tuple[VideoRecord, str]] = []
        for attempt in range(min(self.max_decode_retries + 1, len(self.records))):
            record = self.records[(video_index + attempt) % len(self.records)]
            generator = None
            if self.training:
                if seed is None:
                    seed = int(torch.randint(0, 2**62, (1,)))
                rng = np.random.default_rng(seed)
                generator = torch.Generator().manual_seed(seed)
                choose = lambda n, rng=rng: self.sampler(n, rng=rng)
            else:
                choose = lambda n: self.sampler(n, view=clip, num_views=self.num_clips)
            try:
                frames, _ = self._read(record, choose)
                frames = as_rgb(frames, record.path)
                break
            except VideoDecodeError as err:
                self._skip(record, err)
                failures.append((record, failure_reason(record, err)))
        else:
            raise self._undecodable(video_index, failures)
        label, flipped = record.label, False
        if self.transform is None:
            video = channels_first(frames)
        else:
            # a (C, T, H, W) view of the decoded (T, H, W, C) frames: the transforms' uint8 resampling reads this
            # channels-last layout fastest, and they return contiguous clips
            video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)
            if isinstance(self.transform, TrainTransform) and self.training:  # also reports whether it flipped
                video, params = self.transform.with_params(video, label=label, generator=generator)
                label, flipped = params.label, params.flip
            elif self.training:
                video, label = self.transform(video, label=label, generator=generator)
            else:
                video = self.transform(video, crop_index=crop, num_crops=self.num_crops)
        return {
            "video": video,
            "label": label,
            "video_id": record.video_id,
            "view": clip * self.num_crops + crop,
            "flipped": flipped,
            "replaced": self.records[video_index].video_id if attempt else "",
            "replaced_reason": failures[0][1] if attempt else "",
        }
