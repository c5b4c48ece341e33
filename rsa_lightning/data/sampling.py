"""Frame-index samplers.

TSN segment sampling (Wang et al., "Temporal Segment Networks", ECCV 2016), as used by TSN/TSM and the official RSA
code: a video of ``n`` frames is cut into ``T`` segments; training draws one random frame inside each segment and
evaluation takes the segment centres ``int(tick / 2 + tick * i)`` with ``tick = n / T``.

Training segments: when ``n >= T`` the segments are ``n // T`` frames long (the reference implementations drop the
``n mod T`` trailing frames the same way). Videos shorter than ``T`` are not padded with frame 0 as in those
implementations; each of the ``T`` equal segments of length ``n / T < 1`` frame maps to the frame it falls in, so the
clip still plays forward in time with frames repeated (train: ``floor((i + u) * n / T)`` with ``u ~ U[0, 1)``;
evaluation: the centres formula, which does the same deterministically).
"""

from __future__ import annotations

import numpy as np


def _check(num_video_frames: int, num_segments: int) -> None:
    if num_video_frames < 1:
        raise ValueError(f"cannot sample from a video with {num_video_frames} frames")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")


def segment_centre_indices(num_video_frames: int, num_segments: int) -> np.ndarray:
    """Deterministic evaluation indices: the centre frame of each of ``num_segments`` equal segments."""
    _check(num_video_frames, num_segments)
    tick = num_video_frames / num_segments
    idx = np.array([int(tick / 2.0 + tick * i) for i in range(num_segments)], dtype=np.int64)
    return np.minimum(idx, num_video_frames - 1)


def segment_random_indices(num_video_frames: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Training indices: one uniformly random frame inside each of ``num_segments`` equal segments."""
    _check(num_video_frames, num_segments)
    if num_video_frames >= num_segments:
        duration = num_video_frames // num_segments
        return np.arange(num_segments, dtype=np.int64) * duration + rng.integers(0, duration, size=num_segments)
    u = rng.random(num_segments)
    idx = np.floor((np.arange(num_segments) + u) * num_video_frames / num_segments).astype(np.int64)
    return np.minimum(idx, num_video_frames - 1)


class SegmentSampler:
    """TSN segment sampler: random frame per segment for training, segment centres otherwise.

    Args:
        num_segments: frames per clip ``T``.
        training: draw random indices (True) or the deterministic centres (False).
    """

    def __init__(self, *, num_segments: int, training: bool) -> None:
        if num_segments < 1:
            raise ValueError(f"num_segments (data.num_frames) must be >= 1, got {num_segments}")
        self.num_segments = num_segments
        self.training = training

    def __call__(self, num_video_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        if not self.training:
            return segment_centre_indices(num_video_frames, self.num_segments)
        return segment_random_indices(num_video_frames, self.num_segments, rng or np.random.default_rng())

    def __repr__(self) -> str:
        return f"SegmentSampler(num_segments={self.num_segments}, training={self.training})"
