import numpy as np
import pytest

from rsa_lightning.data.sampling import (
    DenseSampler,
    SegmentSampler,
    segment_centre_indices,
    segment_random_indices,
    segment_view_indices,
)


@pytest.mark.parametrize(
    "n, t, expected",
    [
        (16, 8, [1, 3, 5, 7, 9, 11, 13, 15]),
        (10, 4, [1, 3, 6, 8]),
        (8, 8, [0, 1, 2, 3, 4, 5, 6, 7]),
        (50, 3, [8, 25, 41]),
        (3, 8, [0, 0, 0, 1, 1, 2, 2, 2]),  # shorter than T: frames repeat, still in order
        (1, 4, [0, 0, 0, 0]),
    ],
)
def test_centre_indices_exact(n, t, expected):
    assert segment_centre_indices(n, t).tolist() == expected
    # the formula of the issue / official TSN code: int(tick / 2 + tick * i), tick = n / T
    tick = n / t
    assert expected == [min(int(tick / 2 + tick * i), n - 1) for i in range(t)]


@pytest.mark.parametrize("n, t", [(16, 8), (17, 8), (10, 4), (100, 16), (8, 8)])
def test_train_indices_one_random_frame_per_segment(n, t):
    rng = np.random.default_rng(0)
    duration = n // t
    draws = np.stack([segment_random_indices(n, t, rng) for _ in range(400)])
    lo = np.arange(t) * duration
    assert ((draws >= lo) & (draws < lo + duration)).all()
    # every frame of every segment is drawn sometimes (uniform inside the segment)
    for i in range(t):
        assert set(draws[:, i].tolist()) == set(range(lo[i], lo[i] + duration))


@pytest.mark.parametrize("n, t", [(3, 8), (5, 8), (1, 4), (7, 16)])
def test_train_indices_short_video(n, t):
    rng = np.random.default_rng(1)
    draws = np.stack([segment_random_indices(n, t, rng) for _ in range(400)])
    assert draws.min() >= 0 and draws.max() <= n - 1
    assert (np.diff(draws, axis=1) >= 0).all(), "short clips must still play forward"
    # segment i covers [i n / T, (i + 1) n / T): the drawn frame is the one that span falls in
    for i in range(t):
        assert set(draws[:, i].tolist()) <= set(range(int(np.floor(i * n / t)), int(np.ceil((i + 1) * n / t))))
    assert set(draws.ravel().tolist()) == set(range(n))


def test_train_indices_exact_for_seed():
    # n=16, T=4: segments of 4 frames; the offsets are the generator's integers in [0, 4)
    offsets = np.random.default_rng(123).integers(0, 4, size=4)
    assert segment_random_indices(16, 4, np.random.default_rng(123)).tolist() == (np.arange(4) * 4 + offsets).tolist()


def test_sampler_modes_and_errors():
    assert SegmentSampler(num_segments=4, training=False)(10).tolist() == [1, 3, 6, 8]
    assert len(SegmentSampler(num_segments=4, training=True)(10, np.random.default_rng(0))) == 4
    with pytest.raises(ValueError, match="num_frames"):
        SegmentSampler(num_segments=0, training=True)
    with pytest.raises(ValueError, match="0 frames"):
        segment_centre_indices(0, 4)


# --- temporal views (multi-view evaluation) --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 7, 8, 10, 16, 17, 50, 99, 100, 301])
@pytest.mark.parametrize("t", [1, 3, 4, 8, 16])
def test_view_0_of_1_is_the_old_centre(n, t):
    sampler = SegmentSampler(num_segments=t, training=False)
    assert sampler(n).tolist() == sampler(n, None, 0, 1).tolist() == segment_centre_indices(n, t).tolist()
    assert segment_view_indices(n, t, 0, 1).tolist() == [min(int(n / t / 2 + n / t * i), n - 1) for i in range(t)]


def test_views_exact():
    # n=16, T=4: segments [0, 4), [4, 8), ...; view v of 2 takes offset 4 * (v + 0.5) / 2 = 1 or 3 in each
    sampler = SegmentSampler(num_segments=4, training=False)
    assert sampler(16, view=0, num_views=2).tolist() == [1, 5, 9, 13]
    assert sampler(16, view=1, num_views=2).tolist() == [3, 7, 11, 15]
    # n=10, T=4, 3 views: tick 2.5, offsets 5/12, 15/12, 25/12
    assert [sampler(10, view=v, num_views=3).tolist() for v in range(3)] == [[0, 2, 5, 7], [1, 3, 6, 8], [2, 4, 7, 9]]


@pytest.mark.parametrize("n, t, views", [(100, 8, 3), (48, 8, 2), (300, 16, 5), (17, 4, 4), (30, 3, 10)])
def test_views_differ_and_stay_inside_their_segments(n, t, views):
    idx = np.stack([segment_view_indices(n, t, v, views) for v in range(views)])  # (views, T)
    tick = n / t
    lo, hi = np.floor(np.arange(t) * tick), np.arange(1, t + 1) * tick
    assert ((idx >= lo) & (idx < hi)).all(), "each view keeps one frame inside each segment"
    assert (np.diff(idx, axis=0) > 0).all(), "with tick >= views, later views take strictly later frames"
    assert (np.diff(idx, axis=1) > 0).all()


def test_short_video_views_in_range():
    for v in range(4):
        idx = segment_view_indices(3, 8, v, 4)
        assert idx.min() >= 0 and idx.max() <= 2 and (np.diff(idx) >= 0).all()


def test_training_ignores_the_view_and_views_are_checked():
    sampler = SegmentSampler(num_segments=4, training=True)
    a = sampler(40, np.random.default_rng(5), view=0, num_views=3)
    b = sampler(40, np.random.default_rng(5), view=2, num_views=3)
    assert a.tolist() == b.tolist()
    with pytest.raises(ValueError, match=r"view must be in \[0, 2\)"):
        SegmentSampler(num_segments=4, training=False)(40, view=2, num_views=2)
    with pytest.raises(ValueError, match="num_views"):
        SegmentSampler(num_segments=4, training=False)(40, num_views=0)


# --- dense clips -----------------------------------------------------------------------------------------------------


def test_dense_training_start_uniform_and_stride():
    sampler = DenseSampler(num_frames=4, stride=2, training=True)
    rng = np.random.default_rng(0)
    draws = np.stack([sampler(20, rng) for _ in range(500)])  # span 8, starts 0 .. 12
    assert set(draws[:, 0].tolist()) == set(range(13))
    assert (np.diff(draws, axis=1) == 2).all()
    assert draws.max() == 18 and draws.min() == 0
    same_seed = [DenseSampler(num_frames=4, stride=2, training=True)(20, np.random.default_rng(3), view=v, num_views=3)
                 for v in range(3)]  # fmt: skip
    assert all(s.tolist() == same_seed[0].tolist() for s in same_seed)


def test_dense_evaluation_centre_and_evenly_spaced_views():
    sampler = DenseSampler(num_frames=4, stride=2, training=False)
    assert sampler(20).tolist() == [6, 8, 10, 12]  # max_start 12: centre clip starts at 6
    assert sampler(21).tolist() == [6, 8, 10, 12]  # max_start 13 // 2
    assert [sampler(20, view=v, num_views=3)[0] for v in range(3)] == [0, 6, 12]
    assert [sampler(20, view=v, num_views=4)[0] for v in range(4)] == [0, 4, 8, 12]
    last = sampler(20, view=3, num_views=4)
    assert last.tolist() == [12, 14, 16, 18]  # the last view reaches the end of the video
    # starts rounded half to even like numpy / mmaction2: max_start 5 over 2 gaps -> 0, round(2.5) = 2, 5
    five, three = (
        DenseSampler(num_frames=5, stride=1, training=False),
        DenseSampler(num_frames=3, stride=1, training=False),
    )
    assert [five(10, view=v, num_views=3)[0] for v in range(3)] == [0, 2, 5]
    assert [three(10, view=v, num_views=3)[0] for v in range(3)] == [0, 4, 7]  # max_start 7: round(3.5) = 4
    assert DenseSampler(num_frames=8, stride=1, training=False)(8).tolist() == list(range(8))


@pytest.mark.parametrize("training", [True, False])
def test_dense_short_videos_loop(training):
    sampler = DenseSampler(num_frames=4, stride=2, training=training)
    rng = np.random.default_rng(0)
    assert sampler(5, rng).tolist() == [0, 2, 4, 1]  # span 8 > 5: start 0, indices wrap (mmaction2 "loop")
    assert sampler(1, rng).tolist() == [0, 0, 0, 0]
    assert sampler(7, rng, view=1, num_views=2).tolist() == [0, 2, 4, 6]  # 7 < span 8: every view starts at 0


def test_dense_indices_always_in_range():
    rng = np.random.default_rng(1)
    for _ in range(300):
        n, frames, stride = int(rng.integers(1, 80)), int(rng.integers(1, 17)), int(rng.integers(1, 9))
        views = int(rng.integers(1, 6))
        for training in (True, False):
            idx = DenseSampler(num_frames=frames, stride=stride, training=training)(
                n, rng, view=int(rng.integers(0, views)), num_views=views
            )
            assert idx.shape == (frames,) and idx.dtype == np.int64
            assert idx.min() >= 0 and idx.max() < n


def test_dense_errors():
    with pytest.raises(ValueError, match="stride"):
        DenseSampler(num_frames=4, stride=0, training=True)
    with pytest.raises(ValueError, match="num_frames"):
        DenseSampler(num_frames=0, stride=1, training=True)
    with pytest.raises(ValueError, match="0 frames"):
        DenseSampler(num_frames=4, stride=1, training=False)(0)
    with pytest.raises(ValueError, match="view"):
        DenseSampler(num_frames=4, stride=1, training=False)(10, view=1, num_views=1)
