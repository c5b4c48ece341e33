"""Map-style video dataset: decode the sampled frames of one clip with decord.

A sample is ``{"video": uint8 tensor (C, T, H, W), "label": int, "video_id": str}``; the default collate turns a
list of samples into ``video: (B, C, T, H, W)``, ``label: (B,)`` and a list of ids.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch  # imported before decord, which otherwise can fail to load its own torch bridge
from torch.utils.data import Dataset

from rsa_lightning.data.annotations import VideoRecord
from rsa_lightning.data.sampling import SegmentSampler
from rsa_lightning.data.transforms import ClipTransform

log = logging.getLogger(__name__)


class VideoDecodeError(RuntimeError):
    """A video file that cannot be opened or decoded."""


def decode_frames(
    path: Path, sampler: SegmentSampler, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """Open ``path`` with decord, sample indices for its length and decode exactly those frames.

    Returns ``(frames, indices)``: frames is uint8 (T, H, W, 3).
    """
    import decord

    try:
        reader = decord.VideoReader(str(path), num_threads=1)
        num_frames = len(reader)
        if num_frames < 1:
            raise VideoDecodeError(f"{path}: no frames")
        indices = sampler(num_frames, rng)
        frames = reader.get_batch(indices.tolist()).asnumpy()
    except VideoDecodeError:
        raise
    except Exception as err:  # decord raises its own DECORDError and plain RuntimeErrors
        raise VideoDecodeError(f"{path}: {err}") from err
    return frames, indices


class VideoDataset(Dataset):
    """Clips of ``num_frames`` frames from the videos of ``records``.

    The decord reader is opened in ``__getitem__`` (one per sample, one decoding thread), never in ``__init__``, so the
    dataset pickles cleanly into worker processes and holds no open files.

    A video that fails to decode is skipped with a warning naming the file and replaced by the next video in the list
    (deterministic), so one broken file cannot stop a long run.
    """

    def __init__(
        self,
        *,
        records: Sequence[VideoRecord],
        num_frames: int,
        training: bool,
        transform: ClipTransform | None = None,
        max_decode_retries: int = 10,
    ) -> None:
        if not records:
            raise ValueError("VideoDataset needs at least one video record")
        self.records = list(records)
        self.sampler = SegmentSampler(num_segments=num_frames, training=training)
        self.transform = transform
        self.training = training
        self.max_decode_retries = max_decode_retries
        self.skipped: set[str] = set()

    def __len__(self) -> int:
        return len(self.records)

    def _rng(self) -> np.random.Generator:
        # Drawn from torch's RNG: seeded by `seed_everything`, re-seeded per worker and per epoch by the DataLoader.
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,))))

    def __getitem__(self, index: int) -> dict:
        for attempt in range(self.max_decode_retries + 1):
            record = self.records[(index + attempt) % len(self.records)]
            try:
                rng = self._rng() if self.training else None  # evaluation indices are deterministic
                frames, _ = decode_frames(record.path, self.sampler, rng)
                break
            except VideoDecodeError as err:
                if str(record.path) not in self.skipped:
                    log.warning("skipping unreadable video (replaced by the next one): %s", err)
                    self.skipped.add(str(record.path))
        else:
            raise VideoDecodeError(
                f"{self.max_decode_retries + 1} consecutive videos starting at {self.records[index].path} failed to "
                "decode; check the files (see the warnings above)"
            )
        video = torch.from_numpy(frames).permute(3, 0, 1, 2)  # (C, T, H, W)
        if self.transform is not None:
            video = self.transform(video)
        return {"video": video, "label": record.label, "video_id": record.video_id}
