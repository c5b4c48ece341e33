import inspect
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rsa_lightning.data.sampling import (
    DenseSampler,
    FrameSampler,
    SegmentSampler,
    segment_centre_indices,
    segment_random_indices,
    segment_view_indices,
)

SAMPLER_CONFIGS = Path(__file__).resolve().parents[1] / "conf" / "data" / "sampler"


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
    assert SegmentSampler(num_frames=4, training=False)(10).tolist() == [1, 3, 6, 8]
    assert len(SegmentSampler(num_frames=4, training=True)(10, np.random.default_rng(0))) == 4
    with pytest.raises(ValueError, match="num_frames"):
        SegmentSampler(num_frames=0, training=True)
    with pytest.raises(ValueError, match="0 frames"):
        segment_centre_indices(0, 4)
    with pytest.raises(ValueError, match="short_video"):
        SegmentSampler(num_frames=4, training=True, short_video="pad")
    with pytest.raises(TypeError, match="num_segments"):
        SegmentSampler(num_segments=4, training=True)  # one name: num_frames


# --- short videos: the official rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 7])
def test_official_short_video_rule_takes_frame_0_in_training_below_t(n):
    official = SegmentSampler(num_frames=8, training=True, short_video="official")
    spread = SegmentSampler(num_frames=8, training=True)
    rng = np.random.default_rng(0)
    assert all(official(n, rng).tolist() == [0] * 8 for _ in range(50))  # TSM/RSA _sample_indices: n // T == 0
    assert len({tuple(spread(n, rng).tolist()) for _ in range(50)}) > 1 or n == 1, "spread keeps drawing"


@pytest.mark.parametrize("n", [8, 9, 20])
def test_official_short_video_rule_training_from_t_on_is_tsn(n):
    # n == T: average_duration 1, every frame once (not frame 0 everywhere); longer videos: the usual draw
    official = SegmentSampler(num_frames=8, training=True, short_video="official")
    spread = SegmentSampler(num_frames=8, training=True)
    for seed in range(20):
        a, b = official(n, np.random.default_rng(seed)), spread(n, np.random.default_rng(seed))
        assert a.tolist() == b.tolist()
    assert official(8, np.random.default_rng(0)).tolist() == list(range(8))


def test_official_short_video_rule_in_evaluation():
    official = SegmentSampler(num_frames=8, training=False, short_video="official")
    spread = SegmentSampler(num_frames=8, training=False)
    # one view, n <= T: RSA _get_val_indices (n > T is required for the centres) -> frame 0 (their "frame 1")
    for n in (1, 5, 8):
        assert official(n).tolist() == [0] * 8
    assert spread(8).tolist() == list(range(8)) and spread(5).tolist() == [0, 0, 1, 2, 2, 3, 4, 4]
    assert official(9).tolist() == spread(9).tolist() == [int(9 / 8 / 2 + 9 / 8 * i) for i in range(8)]
    # two views: TSM's twice sample has no short-video case, so both rules agree
    for n in (3, 5, 8, 40):
        for v in range(2):
            assert official(n, view=v, num_views=2).tolist() == spread(n, view=v, num_views=2).tolist()
    assert official(5, view=1, num_views=2).tolist() == [0, 0, 1, 1, 2, 3, 3, 4]


# --- temporal views (multi-view evaluation) --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 7, 8, 10, 16, 17, 50, 99, 100, 301])
@pytest.mark.parametrize("t", [1, 3, 4, 8, 16])
def test_view_0_of_1_is_the_old_centre(n, t):
    sampler = SegmentSampler(num_frames=t, training=False)
    assert sampler(n).tolist() == sampler(n, None, 0, 1).tolist() == segment_centre_indices(n, t).tolist()
    assert segment_view_indices(n, t, 0, 1).tolist() == [min(int(n / t / 2 + n / t * i), n - 1) for i in range(t)]


def tsm_twice_sample(n: int, t: int) -> list[list[int]]:
    """TSM ops/dataset.py ``_get_test_indices`` with ``twice_sample`` (``new_length=1``), 0-based (TSM adds 1)."""
    tick = n / float(t)
    return [[int(tick / 2.0 + tick * x) for x in range(t)], [int(tick * x) for x in range(t)]]


def mmaction2_twice_sample(n: int, t: int) -> list[list[int]]:
    """mmaction2 1.x ``SampleFrames(clip_len=1, num_clips=t, twice_sample=True, test_mode=True)``: the 2D branch of
    ``_get_test_clips``, then ``frame_inds.astype(np.int32)``."""
    avg_interval = n / float(t)
    base_offsets = np.arange(t) * avg_interval
    offsets = np.concatenate([base_offsets + avg_interval / 2.0, base_offsets]).astype(np.int32)
    return offsets.reshape(2, t).tolist()


@pytest.mark.parametrize(
    "n, t, centres, starts",
    [
        (40, 8, [2, 7, 12, 17, 22, 27, 32, 37], [0, 5, 10, 15, 20, 25, 30, 35]),
        (10, 4, [1, 3, 6, 8], [0, 2, 5, 7]),  # n not divisible by T: tick 2.5
        (8, 8, list(range(8)), list(range(8))),  # n == T: both views take every frame
        (5, 8, [0, 0, 1, 2, 2, 3, 4, 4], [0, 0, 1, 1, 2, 3, 3, 4]),  # n < T: tick 0.625
        (1, 4, [0, 0, 0, 0], [0, 0, 0, 0]),
    ],
)
def test_two_views_are_tsm_twice_sample_exact(n, t, centres, starts):
    sampler = SegmentSampler(num_frames=t, training=False)
    assert [sampler(n, view=v, num_views=2).tolist() for v in range(2)] == [centres, starts]
    assert tsm_twice_sample(n, t) == [centres, starts] == mmaction2_twice_sample(n, t)


@pytest.mark.parametrize("n", [1, 3, 5, 7, 8, 9, 10, 16, 17, 37, 40, 99, 100, 301])
@pytest.mark.parametrize("t", [1, 3, 4, 8, 16])
def test_two_views_follow_tsm_for_any_length(n, t):
    views = [segment_view_indices(n, t, v, 2).tolist() for v in range(2)]
    assert views == tsm_twice_sample(n, t) == mmaction2_twice_sample(n, t)


def test_more_views_take_evenly_spaced_fractions_of_each_segment():
    # V > 2: view v at fraction (v + 1) / (V + 1) of each segment; n=40, T=8: tick 5, offsets 1.25, 2.5, 3.75
    sampler = SegmentSampler(num_frames=8, training=False)
    assert [sampler(40, view=v, num_views=3).tolist() for v in range(3)] == [
        [5 * i + k for i in range(8)] for k in (1, 2, 3)
    ]
    # n=10, T=4, 4 views: tick 2.5, offsets 0.5, 1, 1.5, 2
    four = SegmentSampler(num_frames=4, training=False)
    assert [four(10, view=v, num_views=4).tolist() for v in range(4)] == [
        [0, 3, 5, 8],
        [1, 3, 6, 8],
        [1, 4, 6, 9],
        [2, 4, 7, 9],
    ]


@pytest.mark.parametrize("n, t, views", [(100, 8, 3), (48, 8, 2), (300, 16, 5), (25, 4, 4), (33, 3, 10), (16, 8, 2)])
def test_views_differ_and_stay_inside_their_segments(n, t, views):
    idx = np.stack([segment_view_indices(n, t, v, views) for v in range(views)])  # (views, T)
    tick = n / t
    lo, hi = np.floor(np.arange(t) * tick), np.arange(1, t + 1) * tick
    assert ((idx >= lo) & (idx < hi)).all(), "each view keeps one frame inside each segment"
    if views == 2:
        assert (idx[1] < idx[0]).all(), "twice sample: the segment starts lie before the centres"
    else:
        assert (np.diff(idx, axis=0) > 0).all(), "with tick >= views + 1, later views take strictly later frames"
    assert (np.diff(idx, axis=1) > 0).all()


def test_short_video_views_in_range():
    for v in range(4):
        idx = segment_view_indices(3, 8, v, 4)
        assert idx.min() >= 0 and idx.max() <= 2 and (np.diff(idx) >= 0).all()


def test_training_ignores_the_view_and_views_are_checked():
    sampler = SegmentSampler(num_frames=4, training=True)
    a = sampler(40, np.random.default_rng(5), view=0, num_views=3)
    b = sampler(40, np.random.default_rng(5), view=2, num_views=3)
    assert a.tolist() == b.tolist()
    with pytest.raises(ValueError, match=r"view must be in \[0, 2\)"):
        SegmentSampler(num_frames=4, training=False)(40, view=2, num_views=2)
    with pytest.raises(ValueError, match="num_views"):
        SegmentSampler(num_frames=4, training=False)(40, num_views=0)


# --- dense clips -----------------------------------------------------------------------------------------------------


def test_dense_training_start_uniform_and_stride():
    sampler = DenseSampler(num_frames=4, stride=2, training=True)
    assert sampler.span == 8  # mmaction2 _get_train_clips: clip_len * frame_interval
    rng = np.random.default_rng(0)
    draws = np.stack([sampler(20, rng) for _ in range(500)])  # span 8, starts 0 .. 12
    assert set(draws[:, 0].tolist()) == set(range(13))
    assert (np.diff(draws, axis=1) == 2).all()
    assert draws.max() == 18 and draws.min() == 0
    same_seed = [DenseSampler(num_frames=4, stride=2, training=True)(20, np.random.default_rng(3), view=v, num_views=3)
                 for v in range(3)]  # fmt: skip
    assert all(s.tolist() == same_seed[0].tolist() for s in same_seed)


def mmaction2_test_starts(n: int, clip_len: int, frame_interval: int, num_clips: int) -> list[int]:
    """mmaction2 1.x ``SampleFrames(test_mode=True)`` clip offsets of a 3D recognizer (``clip_len > 1``, no
    ``target_fps``): ``_get_ori_clip_len`` then ``_get_test_clips``."""
    ori_clip_len = (clip_len - 1) * frame_interval + 1
    max_offset = max(n - ori_clip_len, 0)
    if num_clips > 1:
        return np.round(np.arange(num_clips) * (max_offset / float(num_clips - 1))).astype(int).tolist()
    return [max_offset // 2]


def test_dense_evaluation_centre_and_evenly_spaced_views():
    sampler = DenseSampler(num_frames=4, stride=2, training=False)
    assert sampler.span == 7  # first to last sampled frame: (4 - 1) * 2 + 1
    assert sampler(20).tolist() == [6, 8, 10, 12]  # max_start 20 - 7 = 13: centre clip starts at 13 // 2
    assert sampler(21).tolist() == [7, 9, 11, 13]  # max_start 14
    assert [sampler(20, view=v, num_views=3)[0] for v in range(3)] == [0, 6, 13]  # round(6.5) = 6
    assert [sampler(20, view=v, num_views=4)[0] for v in range(4)] == [0, 4, 9, 13]  # 13 / 3 = 4.33
    last = sampler(20, view=3, num_views=4)
    assert last.tolist() == [13, 15, 17, 19]  # the last view ends on the last frame
    # starts rounded half to even like numpy / mmaction2: max_start 5 over 2 gaps -> 0, round(2.5) = 2, 5
    five, three = (
        DenseSampler(num_frames=5, stride=1, training=False),
        DenseSampler(num_frames=3, stride=1, training=False),
    )
    assert [five(10, view=v, num_views=3)[0] for v in range(3)] == [0, 2, 5]
    assert [three(10, view=v, num_views=3)[0] for v in range(3)] == [0, 4, 7]  # max_start 7: round(3.5) = 4
    assert DenseSampler(num_frames=8, stride=1, training=False)(8).tolist() == list(range(8))


def test_dense_evaluation_with_an_interval_matches_mmaction2():
    # 64 frames, 8 frames at interval 4: mmaction2 1.x spans (8 - 1) * 4 + 1 = 29 frames, max_offset 64 - 29 = 35
    sampler = DenseSampler(num_frames=8, stride=4, training=False)
    assert sampler(64).tolist() == [17, 21, 25, 29, 33, 37, 41, 45]  # 35 // 2 = 17 (a span of 32 would give 16)
    assert [sampler(64, view=v, num_views=2)[0] for v in range(2)] == [0, 35]
    assert [sampler(64, view=v, num_views=3)[0] for v in range(3)] == [0, 18, 35]  # round(17.5) = 18
    assert sampler(64, view=2, num_views=3)[-1] == 63
    for n in (20, 29, 30, 64, 65, 100, 301):
        for views in (1, 2, 3, 5, 10):
            got = [int(sampler(n, view=v, num_views=views)[0]) for v in range(views)]
            assert got == mmaction2_test_starts(n, 8, 4, views), (n, views)
    # training keeps mmaction2's clip_len * frame_interval = 32: starts 0 .. 32
    train = DenseSampler(num_frames=8, stride=4, training=True)
    rng = np.random.default_rng(0)
    assert {int(train(64, rng)[0]) for _ in range(2000)} == set(range(33))


@pytest.mark.parametrize("training", [True, False])
def test_dense_short_videos_loop(training):
    sampler = DenseSampler(num_frames=4, stride=2, training=training)
    rng = np.random.default_rng(0)
    assert sampler(5, rng).tolist() == [0, 2, 4, 1]  # span 8 > 5: start 0, indices wrap (mmaction2 "loop")
    assert sampler(1, rng).tolist() == [0, 0, 0, 0]
    assert sampler(7, rng, view=1, num_views=2).tolist() == [0, 2, 4, 6]  # 7 <= span (8 / 7): every view at 0


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


# --- the sampler contract and its configs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sampler",
    [SegmentSampler(num_frames=4, training=False), DenseSampler(num_frames=4, stride=2, training=True)],
    ids=repr,
)
def test_samplers_satisfy_the_frame_sampler_protocol(sampler):
    assert isinstance(sampler, FrameSampler)
    expected = inspect.signature(FrameSampler.__call__).parameters
    got = inspect.signature(type(sampler).__call__).parameters
    assert [(p.name, p.kind, p.default) for p in got.values()] == [
        (p.name, p.kind, p.default) for p in expected.values()
    ]
    idx = sampler(10, np.random.default_rng(0), view=0, num_views=1)
    assert idx.dtype == np.int64 and idx.shape == (4,)


@pytest.mark.parametrize("name, cls", [("segment", SegmentSampler), ("dense", DenseSampler)])
def test_sampler_configs_take_num_frames_from_the_caller(name, cls):
    cfg = OmegaConf.load(SAMPLER_CONFIGS / f"{name}.yaml")
    assert "num_frames" not in cfg and "num_segments" not in cfg, "the DataModule passes num_frames"
    factory = instantiate(cfg)
    sampler = factory(num_frames=6, training=False)
    assert isinstance(sampler, cls) and sampler.num_frames == 6 and len(sampler(40)) == 6
    if cls is SegmentSampler:
        assert sampler.short_video == "spread"
