import numpy as np
import pytest

from rsa_lightning.data.sampling import SegmentSampler, segment_centre_indices, segment_random_indices


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
