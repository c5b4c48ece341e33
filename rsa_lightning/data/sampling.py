"""Frame-index samplers.

TSN segment sampling (Wang et al., "Temporal Segment Networks", ECCV 2016), as used by TSN/TSM and the official RSA
code: a video of ``n`` frames is cut into ``T`` segments; training draws one random frame inside each segment and
evaluation takes the segment centres ``int(tick / 2 + tick * i)`` with ``tick = n / T``.

Training segments: when ``n >= T`` the segments are ``n // T`` frames long (the reference implementations drop the
``n mod T`` trailing frames the same way). Videos shorter than ``T`` are not padded with frame 0 as in those
implementations; each of the ``T`` equal segments of length ``n / T < 1`` frame maps to the frame it falls in, so the
clip still plays forward in time with frames repeated (train: ``floor((i + u) * n / T)`` with ``u ~ U[0, 1)``;
evaluation: the centres formula, which does the same deterministically).

Multi-view evaluation (e.g. "2 clips x 3 crops"): temporal view ``v`` of ``V`` takes, in every segment, the frame at
``(v + 0.5) / V`` of its length, ``int(tick * i + tick * (v + 0.5) / V)``; view 0 of 1 is the centre above, and the
views of one video interleave inside the segments. Training ignores the view.

:class:`DenseSampler` is the other common scheme (I3D, SlowFast, X3D): one clip of consecutive frames at a fixed
stride, following mmaction2's ``SampleFrames`` (see the class).

Samplers share one call signature, ``sampler(num_video_frames, rng=None, view=0, num_views=1) -> int64 indices``,
every index in ``[0, num_video_frames)``.
"""

from __future__ import annotations

import numpy as np


def _check(num_video_frames: int, num_segments: int) -> None:
    if num_video_frames < 1:
        raise ValueError(f"cannot sample from a video with {num_video_frames} frames")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")


def _check_view(view: int, num_views: int) -> None:
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if not 0 <= view < num_views:
        raise ValueError(f"view must be in [0, {num_views}), got {view}")


def segment_centre_indices(num_video_frames: int, num_segments: int) -> np.ndarray:
    """Deterministic evaluation indices: the centre frame of each of ``num_segments`` equal segments."""
    _check(num_video_frames, num_segments)
    tick = num_video_frames / num_segments
    idx = np.array([int(tick / 2.0 + tick * i) for i in range(num_segments)], dtype=np.int64)
    return np.minimum(idx, num_video_frames - 1)


def segment_view_indices(num_video_frames: int, num_segments: int, view: int, num_views: int) -> np.ndarray:
    """Evaluation indices of temporal view ``view`` of ``num_views``: in each of the ``num_segments`` equal segments
    the frame at fraction ``(view + 0.5) / num_views`` of its length (view 0 of 1: the centres)."""
    _check(num_video_frames, num_segments)
    _check_view(view, num_views)
    tick = num_video_frames / num_segments
    offset = tick * (view + 0.5) / num_views
    idx = np.array([int(tick * i + offset) for i in range(num_segments)], dtype=np.int64)
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
        training: draw random indices (True) or the deterministic evaluation indices (False).

    Call: ``sampler(num_video_frames, rng=None, view=0, num_views=1)``; in evaluation, temporal view ``view`` of
    ``num_views`` (:func:`segment_view_indices`; view 0 of 1 = the centres); training ignores the view.
    """

    def __init__(self, *, num_segments: int, training: bool) -> None:
        if num_segments < 1:
            raise ValueError(f"num_segments (data.num_frames) must be >= 1, got {num_segments}")
        self.num_segments = num_segments
        self.training = training

    def __call__(
        self, num_video_frames: int, rng: np.random.Generator | None = None, view: int = 0, num_views: int = 1
    ) -> np.ndarray:
        _check_view(view, num_views)
        if not self.training:
            return segment_view_indices(num_video_frames, self.num_segments, view, num_views)
        return segment_random_indices(num_video_frames, self.num_segments, rng or np.random.default_rng())

    def __repr__(self) -> str:
        return f"SegmentSampler(num_segments={self.num_segments}, training={self.training})"


class DenseSampler:
    """Dense clip sampler: ``num_frames`` frames ``stride`` apart, after mmaction2's ``SampleFrames`` (one clip/call).

    A clip covers ``span = num_frames * stride`` frames (mmaction2's ``clip_len * frame_interval``) and its indices
    are ``start + stride * arange(num_frames)``. With ``max_start = max(n - span, 0)`` for a video of ``n`` frames:

    * training: ``start`` uniform in ``{0, ..., max_start}`` (the view is ignored);
    * evaluation, one view: the centre clip, ``start = max_start // 2``;
    * evaluation, ``V > 1`` views: starts evenly spaced from 0 to ``max_start`` inclusive,
      ``start_v = round(v * (max_start / (V - 1)))`` (numpy rounding, half to even), so the first view starts at the
      first frame and the last one reaches the end (mmaction2 ``_get_test_clips``, aligned with PySlowFast).

    Videos shorter than the span (``n < span``): ``start = 0`` and the indices wrap around, ``index mod n``
    (mmaction2's default ``out_of_bound_opt="loop"``); e.g. ``n = 5``, 4 frames at stride 2 -> ``[0, 2, 4, 1]``.

    Args:
        num_frames: frames per clip.
        stride: frame interval between sampled frames (1 = consecutive frames).
        training: random start (True) or the deterministic evaluation starts (False).
    """

    def __init__(self, *, num_frames: int, stride: int, training: bool) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.num_frames = num_frames
        self.stride = stride
        self.training = training

    def start(
        self, num_video_frames: int, rng: np.random.Generator | None = None, view: int = 0, num_views: int = 1
    ) -> int:
        """First frame of the clip (before wrapping)."""
        _check(num_video_frames, self.num_frames)
        _check_view(view, num_views)
        max_start = max(num_video_frames - self.num_frames * self.stride, 0)
        if self.training:
            return int((rng or np.random.default_rng()).integers(0, max_start + 1))
        if num_views == 1:
            return max_start // 2
        return int(np.round(view * (max_start / (num_views - 1))))

    def __call__(
        self, num_video_frames: int, rng: np.random.Generator | None = None, view: int = 0, num_views: int = 1
    ) -> np.ndarray:
        start = self.start(num_video_frames, rng, view, num_views)
        idx = start + self.stride * np.arange(self.num_frames, dtype=np.int64)
        return np.mod(idx, num_video_frames)

    def __repr__(self) -> str:
        return f"DenseSampler(num_frames={self.num_frames}, stride={self.stride}, training={self.training})"
