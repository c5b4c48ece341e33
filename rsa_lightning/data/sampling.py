"""Frame-index samplers: which frames of a video of ``n`` frames make a clip of ``T`` frames.

Every sampler is a :class:`FrameSampler`: ``sampler(num_video_frames, rng=None, view=0, num_views=1) -> indices``,
``T`` int64 indices in ``[0, num_video_frames)``. The DataModule builds one from its config factory with the clip
length it owns, ``factory(num_frames=T, training=...)``. Indices here are 0-based; the reference implementations
quoted below add 1 for their 1-based frame folders (``img_00001.jpg``), which changes nothing else.

:class:`SegmentSampler`: TSN segment sampling (Wang et al., "Temporal Segment Networks", ECCV 2016), as in TSM and
the official RSA code (``ops/dataset.py``). The video is cut into ``T`` segments of ``tick = n / T`` frames.

* Training (TSM/RSA ``_sample_indices``): one uniformly random frame in each segment of ``n // T`` frames (the
  ``n mod T`` trailing frames are never drawn, as in the reference).
* Evaluation, temporal view ``v`` of ``V`` (``int`` truncates):

  - ``V = 1``: the segment centres, ``int(tick / 2 + tick * i)`` (TSM/RSA ``_get_val_indices``, ``_get_test_indices``).
  - ``V = 2``: TSM's "twice sample" (``_get_test_indices`` with ``twice_sample``), which the paper's 2-clip results
    follow: view 0 the centres, view 1 the segment starts ``int(tick * i)``. Current mmaction2 (1.x main,
    ``mmaction/datasets/transforms/loading.py``) gives the same frames: ``SampleFrames(clip_len=1, num_clips=T,
    twice_sample=True, test_mode=True)``, the 2D-recognizer branch of ``_get_test_clips``, ``frame_inds`` truncated
    to int (mmaction2 0.x ``_get_test_clips`` computed the same). E.g. ``n = 40``, ``T = 8``: view 0
    ``[2, 7, ..., 37]``, view 1 ``[0, 5, ..., 35]``.
  - ``V > 2``: neither TSM nor mmaction2's ``SampleFrames`` has a segment rule for more than two clips; we take
    the rule of mmaction2's segment-based multi-clip test sampler (``UniformSample`` in test mode, after
    PySlowFast's SSv2 loader): view ``v`` takes the frame at fraction ``(v + 1) / (V + 1)`` of every segment,
    ``int(tick * i + tick * (v + 1) / (V + 1))``. mmaction2 applies the fractions to segments of ``(n - 1) / T``
    frames starting at ``round(i * (n - 1) / T)``; we keep TSN's segments, so its indices can differ by a frame.

Short videos, ``short_video=``:

* ``"spread"`` (default): no special case. In training a video with ``n < T`` maps segment ``i`` (``n / T < 1``
  frame long) to the frame it falls in, ``floor((i + u) * n / T)`` with ``u ~ U[0, 1)``; evaluation uses the
  formulas above, which do the same deterministically. The clip plays forward in time, frames repeated.
* ``"official"``: the official RSA code (``ops/dataset.py``, TSM's rules): training with ``n < T``
  (``_sample_indices``: ``n // T == 0``) and single-view evaluation with ``n <= T`` (``_get_val_indices``, which
  RSA's ``main.py`` uses for validation and for its ``-e`` test runs: ``n > T`` is required for the centres) take
  frame 0 at every position. Training with ``n == T`` takes every frame once, as "spread" does (segments of one
  frame). Multi-view evaluation follows TSM's ``_get_test_indices``, which has no short-video case (as mmaction2),
  so it equals "spread".

:class:`DenseSampler` is the other common scheme (I3D, SlowFast, X3D): one clip of ``T`` frames ``stride`` apart,
after mmaction2's ``SampleFrames`` (see the class).
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import numpy as np

SHORT_VIDEO_RULES = ("spread", "official")


@runtime_checkable
class FrameSampler(Protocol):
    """The sampler contract: the ``T`` frame indices (int64, in ``[0, num_video_frames)``) of one clip.

    Training passes ``rng`` (the sample's own generator) and ignores the view; evaluation passes temporal view
    ``view`` of ``num_views`` and must be deterministic.
    """

    def __call__(
        self, num_video_frames: int, rng: Optional[np.random.Generator] = None, view: int = 0, num_views: int = 1
    ) -> np.ndarray: ...


def _check(num_video_frames: int, num_frames: int) -> None:
    if num_video_frames < 1:
        raise ValueError(f"cannot sample from a video with {num_video_frames} frames")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")


def _check_view(view: int, num_views: int) -> None:
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if not 0 <= view < num_views:
        raise ValueError(f"view must be in [0, {num_views}), got {view}")


def _check_short_video(short_video: str) -> None:
    if short_video not in SHORT_VIDEO_RULES:
        raise ValueError(f"short_video must be one of {SHORT_VIDEO_RULES}, got {short_video!r}")


def segment_centre_indices(num_video_frames: int, num_frames: int) -> np.ndarray:
    """Deterministic evaluation indices: the centre frame of each of ``num_frames`` equal segments."""
    return segment_view_indices(num_video_frames, num_frames, 0, 1)


def view_fraction(view: int, num_views: int) -> float:
    """Where in its segment temporal view ``view`` of ``num_views`` samples (0: segment start, 1: next segment):
    1/2 for one view; 1/2 then 0 for two (TSM's twice sample); ``(view + 1) / (num_views + 1)`` beyond."""
    _check_view(view, num_views)
    if num_views == 1:
        return 0.5
    if num_views == 2:
        return (0.5, 0.0)[view]
    return (view + 1) / (num_views + 1)


def segment_view_indices(
    num_video_frames: int, num_frames: int, view: int, num_views: int, *, short_video: str = "spread"
) -> np.ndarray:
    """Evaluation indices of temporal view ``view`` of ``num_views``: in each of the ``num_frames`` segments of
    ``tick = n / T`` frames, ``int(tick * i + tick * f)`` with ``f = view_fraction(view, num_views)``.

    ``short_video="official"``: a single view of a video with ``n <= T`` frames is frame 0 ``T`` times (RSA's
    ``_get_val_indices``); see the module docstring.
    """
    _check(num_video_frames, num_frames)
    fraction = view_fraction(view, num_views)
    _check_short_video(short_video)
    if short_video == "official" and num_views == 1 and num_video_frames <= num_frames:
        return np.zeros(num_frames, dtype=np.int64)
    tick = num_video_frames / num_frames
    offset = tick * fraction
    idx = np.array([int(tick * i + offset) for i in range(num_frames)], dtype=np.int64)
    return np.minimum(idx, num_video_frames - 1)  # guards float round-up only: tick * (T - 1 + f) < n


def segment_random_indices(
    num_video_frames: int, num_frames: int, rng: np.random.Generator, *, short_video: str = "spread"
) -> np.ndarray:
    """Training indices: one uniformly random frame inside each of ``num_frames`` equal segments.

    ``n >= T``: segments of ``n // T`` frames. ``n < T``: ``"spread"`` draws inside the ``n / T``-frame segments
    (frames repeat, in order); ``"official"`` returns frame 0 ``T`` times (TSM/RSA ``_sample_indices``).
    """
    _check(num_video_frames, num_frames)
    _check_short_video(short_video)
    if num_video_frames >= num_frames:
        duration = num_video_frames // num_frames
        return np.arange(num_frames, dtype=np.int64) * duration + rng.integers(0, duration, size=num_frames)
    if short_video == "official":
        return np.zeros(num_frames, dtype=np.int64)
    u = rng.random(num_frames)
    idx = np.floor((np.arange(num_frames) + u) * num_video_frames / num_frames).astype(np.int64)
    return np.minimum(idx, num_video_frames - 1)


class SegmentSampler:
    """TSN segment sampler: a random frame per segment for training, the evaluation views otherwise.

    Args:
        num_frames: frames per clip ``T`` (= segments), passed by the DataModule (``data.num_frames``).
        training: draw random indices (True) or the deterministic evaluation views (False).
        short_video: ``"spread"`` (default) or ``"official"``, the rule for videos of ``n <= T`` frames (module
            docstring).

    Call (:class:`FrameSampler`): ``sampler(num_video_frames, rng=None, view=0, num_views=1)``; evaluation returns
    temporal view ``view`` of ``num_views`` (:func:`segment_view_indices`), training ignores the view.
    """

    def __init__(self, *, num_frames: int, training: bool, short_video: str = "spread") -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames (data.num_frames) must be >= 1, got {num_frames}")
        _check_short_video(short_video)
        self.num_frames = num_frames
        self.training = training
        self.short_video = short_video

    def __call__(
        self, num_video_frames: int, rng: Optional[np.random.Generator] = None, view: int = 0, num_views: int = 1
    ) -> np.ndarray:
        _check_view(view, num_views)
        if not self.training:
            return segment_view_indices(
                num_video_frames, self.num_frames, view, num_views, short_video=self.short_video
            )
        return segment_random_indices(
            num_video_frames, self.num_frames, rng or np.random.default_rng(), short_video=self.short_video
        )

    def __repr__(self) -> str:
        return (
            f"SegmentSampler(num_frames={self.num_frames}, training={self.training}, short_video={self.short_video!r})"
        )


class DenseSampler:
    """Dense clip sampler: ``num_frames`` frames ``stride`` apart, after mmaction2 1.x ``SampleFrames`` (one clip
    per call; mmaction2 1.x main, ``mmaction/datasets/transforms/loading.py``: ``_get_ori_clip_len``,
    ``_get_train_clips``, ``_get_test_clips``, without ``target_fps``; 1.0.0rc computed the same spans inline).

    The indices are ``start + stride * arange(num_frames)``. A clip's span differs between the modes, as in
    mmaction2: training ``num_frames * stride`` frames, evaluation ``(num_frames - 1) * stride + 1`` (first to last
    sampled frame). With ``max_start = max(n - span, 0)`` for a video of ``n`` frames:

    * training: ``start`` uniform in ``{0, ..., max_start}`` (the view is ignored);
    * evaluation, one view: the centre clip, ``start = max_start // 2``;
    * evaluation, ``V > 1`` views: starts evenly spaced from 0 to ``max_start`` inclusive,
      ``start_v = round(v * (max_start / (V - 1)))`` (numpy rounding, half to even), so the first view starts at the
      first frame and the last one ends on the last frame (mmaction2's 3D-recognizer rule, "aligned with PySlowFast").

    E.g. 64 frames, 8 frames at stride 4: evaluation span 29, ``max_start`` 35, the centre clip starts at 17
    (mmaction2 0.x, and this class before, used the training span 32 and started at 16).

    Videos shorter than the span: ``start = 0`` and the indices wrap around, ``index mod n`` (mmaction2's default
    ``out_of_bound_opt="loop"``); e.g. ``n = 5``, 4 frames at stride 2 -> ``[0, 2, 4, 1]``.

    Args:
        num_frames: frames per clip ``T``, passed by the DataModule (``data.num_frames``).
        stride: frame interval between sampled frames (1 = consecutive frames).
        training: random start (True) or the deterministic evaluation starts (False).
    """

    def __init__(self, *, num_frames: int, stride: int, training: bool) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames (data.num_frames) must be >= 1, got {num_frames}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.num_frames = num_frames
        self.stride = stride
        self.training = training

    @property
    def span(self) -> int:
        """Frames a clip covers: ``T * stride`` in training, ``(T - 1) * stride + 1`` in evaluation (mmaction2)."""
        if self.training:
            return self.num_frames * self.stride
        return (self.num_frames - 1) * self.stride + 1

    def start(
        self, num_video_frames: int, rng: Optional[np.random.Generator] = None, view: int = 0, num_views: int = 1
    ) -> int:
        """First frame of the clip (before wrapping)."""
        _check(num_video_frames, self.num_frames)
        _check_view(view, num_views)
        max_start = max(num_video_frames - self.span, 0)
        if self.training:
            return int((rng or np.random.default_rng()).integers(0, max_start + 1))
        if num_views == 1:
            return max_start // 2
        return int(np.round(view * (max_start / (num_views - 1))))

    def __call__(
        self, num_video_frames: int, rng: Optional[np.random.Generator] = None, view: int = 0, num_views: int = 1
    ) -> np.ndarray:
        start = self.start(num_video_frames, rng, view, num_views)
        idx = start + self.stride * np.arange(self.num_frames, dtype=np.int64)
        return np.mod(idx, num_video_frames)

    def __repr__(self) -> str:
        return f"DenseSampler(num_frames={self.num_frames}, stride={self.stride}, training={self.training})"
