"""Clip transforms: TSN multi-scale crop positions and sizes, flip policies, eval crops, mirror classes.

Most tests crop an index-coded clip: channel 0 holds the row, channel 1 the column and channel 2 the frame number,
so an output pixel tells where (and from which frame) it was taken.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rsa_lightning.data.augment import RandAugment
from rsa_lightning.data.transforms import (
    EvalTransform,
    TrainTransform,
    center_crop,
    mirror_pairs,
    normalize,
    resize_frames,
    resize_short_side,
    source_span,
)

SSV2_NAMES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "ssv2_class_names.txt"


def coded_clip(height: int, width: int, num_frames: int = 3) -> torch.Tensor:
    """uint8 (3, T, H, W): channel 0 = row, channel 1 = column, channel 2 = 10 * frame + 5."""
    rows = torch.arange(height).view(1, height, 1).expand(num_frames, height, width)
    cols = torch.arange(width).view(1, 1, width).expand(num_frames, height, width)
    frames = (10 * torch.arange(num_frames) + 5).view(num_frames, 1, 1).expand(num_frames, height, width)
    return torch.stack([rows, cols, frames]).to(torch.uint8)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tsn_offsets(height: int, width: int, crop_h: int, crop_w: int) -> set[tuple[int, int]]:
    """(top, left) of the 13 fixed TSN positions, written out from TSN's GroupMultiScaleCrop.fill_fix_offset."""
    w, h = (width - crop_w) // 4, (height - crop_h) // 4
    xy = [(0, 0), (4 * w, 0), (0, 4 * h), (4 * w, 4 * h), (2 * w, 2 * h)]  # corners, centre
    xy += [(0, 2 * h), (4 * w, 2 * h), (2 * w, 4 * h), (2 * w, 0)]  # mid-edges
    xy += [(w, h), (3 * w, h), (w, 3 * h), (3 * w, 3 * h)]  # quarter points
    return {(y, x) for x, y in xy}


def test_multi_scale_crop_sizes_positions_and_same_crop_in_all_frames():
    """64 x 128 frames: crop sides from {64, 56, 48, 42} (scales of the short side), neighbouring scales only."""
    transform = TrainTransform(resize=[64, 128], crop_size=56, flip="off")
    clip = coded_clip(64, 128)
    scale_pairs = {(64, 64), (64, 56), (56, 64), (56, 56), (56, 48), (48, 56), (48, 48), (48, 42), (42, 48), (42, 42)}
    seen_sizes = set()
    for seed in range(300):
        p = transform.sample_params(64, 128, label=0, generator=seeded(seed))
        assert (p.height, p.width) in scale_pairs
        fixed = tsn_offsets(64, 128, p.height, p.width)
        assert (p.top, p.left) in fixed
        seen_sizes.add((p.height, p.width))
        if seed >= 100:
            continue
        out, label = transform(clip, label=0, generator=seeded(seed))
        assert out.shape == (3, 3, 56, 56) and out.dtype == torch.uint8 and label == 0
        for t in range(3):  # the same window in every frame, and frames stay in order
            assert torch.equal(out[:2, t], out[:2, 0])
            assert (out[2, t] == 10 * t + 5).all()
        rows, cols = out[0, 0].float(), out[1, 0].float()
        # the output spans the window: corners within one resize step of the window's corners
        tol_h, tol_w = p.height / 56 + 0.5, p.width / 56 + 0.5
        assert abs(rows[0, 0] - p.top) <= tol_h and abs(rows[-1, 0] - (p.top + p.height - 1)) <= tol_h
        assert abs(cols[0, 0] - p.left) <= tol_w and abs(cols[0, -1] - (p.left + p.width - 1)) <= tol_w
        if (p.height, p.width) == (56, 56):  # no resize: exact pixels
            assert rows[0, 0] == p.top and cols[0, 0] == p.left and cols[-1, -1] == p.left + 55
    assert seen_sizes == scale_pairs
    # one scale (42 x 42 crops): all 13 positions are distinct, and all are used
    one_scale = TrainTransform(resize=[64, 128], crop_size=56, scales=[0.66])
    positions = {
        (p.top, p.left) for p in (one_scale.sample_params(64, 128, label=0, generator=seeded(s)) for s in range(200))
    }
    assert positions == tsn_offsets(64, 128, 42, 42) and len(positions) == 13


def test_max_distort_zero_gives_square_crops_and_random_offsets_leave_the_grid():
    square = TrainTransform(resize=[64, 128], crop_size=56, max_distort=0)
    sizes = {
        (p.height, p.width) for p in (square.sample_params(64, 128, label=0, generator=seeded(s)) for s in range(60))
    }
    assert sizes == {(64, 64), (56, 56), (48, 48), (42, 42)}

    free = TrainTransform(resize=[64, 128], crop_size=56, fixed_offsets=False)
    off_grid = 0
    for seed in range(100):
        p = free.sample_params(64, 128, label=0, generator=seeded(seed))
        assert 0 <= p.top <= 64 - p.height and 0 <= p.left <= 128 - p.width
        off_grid += (p.top, p.left) not in tsn_offsets(64, 128, p.height, p.width)
    assert off_grid > 50


def test_resize_short_side_or_exact_size():
    clip = torch.randint(0, 256, (3, 2, 60, 100), dtype=torch.uint8)
    by_short_side = TrainTransform(resize=30, crop_size=16, scales=[1.0], flip="off")
    assert by_short_side.sample_params(30, 50, label=0, generator=seeded(0)).height == 30
    assert by_short_side(clip, label=0)[0].shape == (3, 2, 16, 16)
    with pytest.raises(ValueError, match="resize"):
        TrainTransform(resize=[240, 320, 3], crop_size=224)
    with pytest.raises(ValueError, match="uint8"):
        by_short_side(clip.float(), label=0)


def flips(transform: TrainTransform, label: int, seeds: range) -> list[tuple[bool, int]]:
    """(was the output mirrored, output label) per seed, read from the column code of a full-frame 'crop'."""
    clip = coded_clip(32, 32, num_frames=2)
    results = []
    for seed in seeds:
        out, new_label = transform(clip, label=label, generator=seeded(seed))
        assert torch.equal(out[:2, 1], out[:2, 0])  # both frames flipped alike
        mirrored = torch.equal(out[1], clip[1].flip(-1))
        assert mirrored or torch.equal(out, clip)
        results.append((mirrored, new_label))
    return results


def policy(flip: str) -> TrainTransform:
    # scales [1.0] on a 32 x 32 frame with crop 32: the crop is the whole frame, only the flip changes pixels
    return TrainTransform(resize=[32, 32], crop_size=32, scales=[1.0], flip=flip, mirror={0: 1, 1: 0, 5: 6, 6: 5})


def test_flip_policy_skip_never_flips_mirrored_classes():
    assert flips(policy("skip"), 0, range(40)) == [(False, 0)] * 40
    assert flips(policy("skip"), 6, range(40)) == [(False, 6)] * 40
    other = flips(policy("skip"), 2, range(200))
    assert {label for _, label in other} == {2}
    assert 60 < sum(m for m, _ in other) < 140  # p = 0.5


def test_flip_policy_swap_relabels_flipped_clips():
    results = flips(policy("swap"), 0, range(100))
    assert {(m, label) for m, label in results} == {(True, 1), (False, 0)}
    assert {(m, label) for m, label in flips(policy("swap"), 6, range(100))} == {(True, 5), (False, 6)}
    assert {(m, label) for m, label in flips(policy("swap"), 3, range(100))} == {(True, 3), (False, 3)}


def test_flip_policy_off_and_always():
    assert flips(policy("off"), 3, range(40)) == [(False, 3)] * 40
    results = flips(policy("always"), 0, range(200))
    assert {label for _, label in results} == {0}
    assert 60 < sum(m for m, _ in results) < 140
    with pytest.raises(ValueError, match="flip"):
        TrainTransform(resize=32, crop_size=32, flip="random")
    with pytest.raises(ValueError, match="mirror"):
        TrainTransform(resize=32, crop_size=32, flip="swap", mirror={0: 1})


def test_seeded_generator_reproduces_a_sample():
    transform = TrainTransform(
        resize=[48, 64],
        crop_size=32,
        flip="always",
        randaugment=RandAugment(num_ops=3, magnitude=15),
        random_erasing=0.5,
    )
    clip = torch.randint(0, 256, (3, 4, 60, 80), dtype=torch.uint8, generator=seeded(123))
    first, _ = transform(clip, label=1, generator=seeded(7))
    again, _ = transform(clip, label=1, generator=seeded(7))
    assert torch.equal(first, again)
    others = [transform(clip, label=1, generator=seeded(s))[0] for s in range(8, 12)]
    assert not any(torch.equal(first, o) for o in others)


def test_eval_crops_on_a_landscape_frame():
    """48 x 80 frames, crop 32: centred vertically (top 8); 3 crops at 0, 48, 24 (TSM's left, right, centre)."""
    clip = coded_clip(48, 80)
    transform = EvalTransform(resize=[48, 80], crop_size=32)

    def position(out: torch.Tensor) -> tuple[int, int]:
        assert out.shape == (3, 3, 32, 32)
        assert int(out[0, 0, -1, 0]) - int(out[0, 0, 0, 0]) == 31 and int(out[1, 0, 0, -1]) - int(out[1, 0, 0, 0]) == 31
        return int(out[0, 0, 0, 0]), int(out[1, 0, 0, 0])

    assert position(transform(clip)) == (8, 24)
    assert [position(transform(clip, crop_index=i, num_crops=3)) for i in range(3)] == [(8, 0), (8, 48), (8, 24)]
    assert [position(transform(clip, crop_index=i, num_crops=5)) for i in range(5)] == [
        (8, x) for x in (0, 12, 24, 36, 48)
    ]
    assert torch.equal(transform(clip), center_crop(clip, 32))


def test_eval_crops_on_a_portrait_frame_and_short_side_resize():
    clip = coded_clip(80, 48)
    three = [EvalTransform(resize=[80, 48], crop_size=32)(clip, crop_index=i, num_crops=3) for i in range(3)]
    assert [(int(o[0, 0, 0, 0]), int(o[1, 0, 0, 0])) for o in three] == [(0, 8), (48, 8), (24, 8)]
    # short side 24: frames become 40 x 24, three 24 x 24 crops start at rows 0, 16, 8 (of 40)
    small = EvalTransform(resize=24, crop_size=24)
    assert small.crop_offsets(40, 24, 3) == [(0, 0), (16, 0), (8, 0)]
    assert small(clip, crop_index=2, num_crops=3).shape == (3, 3, 24, 24)


def tsm_full_res_sample(height: int, width: int, crop: int) -> list[tuple[int, int]]:
    """TSM ops/transforms.py ``GroupFullResSample`` offsets (``(o_w, o_h)`` there), as ``(top, left)``."""
    w_step, h_step = (width - crop) // 4, (height - crop) // 4
    return [(2 * h_step, 0 * w_step), (2 * h_step, 4 * w_step), (2 * h_step, 2 * w_step)]  # left, right, centre


def mmaction2_three_crop(height: int, width: int, crop: int) -> list[tuple[int, int]]:
    """mmaction2 ``ThreeCrop`` offsets (``(x, y)`` there) for a landscape frame whose height the crop spans."""
    assert crop == height
    w_step = (width - crop) // 2
    return [(0, 0), (0, 2 * w_step), (0, w_step)]  # left, right, middle


@pytest.mark.parametrize(
    "size, crop, expected",
    [
        ((256, 341), 224, [(16, 0), (16, 116), (16, 58)]),  # step 117 // 4 = 29: the right crop ends 1 px short
        ((240, 320), 224, [(8, 0), (8, 96), (8, 48)]),  # the official frames: step 24, flush with the edges
        ((256, 341), 256, [(0, 0), (0, 84), (0, 42)]),  # TSM full resolution: step 85 // 4 = 21
        ((240, 320), 240, [(0, 0), (0, 80), (0, 40)]),
    ],
)
def test_three_crops_follow_tsm(size, crop, expected):
    height, width = size
    transform = EvalTransform(resize=list(size), crop_size=crop)
    assert transform.crop_offsets(height, width, 3) == expected == tsm_full_res_sample(height, width, crop)
    if crop == height:  # mmaction2's ThreeCrop (crop spanning the short side) agrees here
        assert expected == mmaction2_three_crop(height, width, crop)
    if size == (240, 320) and crop == 224:  # identical to crops flush with both edges and the centre
        assert [left for _, left in expected] == [0, width - crop, (width - crop) // 2]
    # portrait frames: the same along the height
    assert transform.crop_offsets(width, height, 3) == [(left, top) for top, left in expected]


def test_eval_transform_errors():
    with pytest.raises(ValueError, match="crop_size"):
        EvalTransform(resize=[48, 80], crop_size=64)
    with pytest.raises(ValueError, match="crop_size"):
        EvalTransform(resize=32, crop_size=48)
    transform = EvalTransform(resize=[48, 80], crop_size=32)
    with pytest.raises(ValueError, match="crop_index"):
        transform(coded_clip(48, 80), crop_index=3, num_crops=3)
    with pytest.raises(ValueError, match="crop_index"):
        transform(coded_clip(48, 80), crop_index=-1)


@pytest.mark.skipif(not SSV2_NAMES.exists(), reason=f"reference file not found: {SSV2_NAMES}")
def test_mirror_pairs_of_something_something_v2():
    names = SSV2_NAMES.read_text().splitlines()
    assert len(names) == 174
    assert mirror_pairs(names) == {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    assert names[86] == "Pulling something from left to right"


def test_mirror_pairs_whole_words_only():
    names = [
        "Turning LEFT",  # 0 <-> 1, case-insensitive
        "turning right",
        "Putting something upright",  # 2: "upright" is not the word "right"
        "Putting something upleft",
        "brightness",  # 4: nor is "brightness"
        "bleftness",
        "Pulling it right out",  # 6: "left out" is not a class
        "from left to right",  # 7 <-> 8, both words swapped
        "from right to left",
        "turn_left",  # 9 <-> 10: underscores delimit words
        "turn_right",
    ]
    assert mirror_pairs(names) == {0: 1, 1: 0, 7: 8, 8: 7, 9: 10, 10: 9}
    assert mirror_pairs(["left", "middle"]) == {}
    with pytest.raises(ValueError, match="same"):
        mirror_pairs(["a left", "A  Left"])


def test_kept_helpers_still_work():
    clip = torch.randint(0, 256, (3, 2, 40, 60), dtype=torch.uint8)
    assert resize_short_side(clip, 20).shape == (3, 2, 20, 30)
    assert center_crop(clip, 20).shape == (3, 2, 20, 20)
    mean, std = torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.25, 0.25])
    out = normalize(clip[None], mean, std)
    assert torch.allclose(out, (clip[None].float() / 255 - 0.5) / 0.25)


def float_resize(video: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    """The earlier resize path, kept as the reference: float32 bilinear interpolation, rounded back to uint8."""
    frames = video.permute(1, 0, 2, 3).float()  # (T, C, H, W)
    frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    return frames.round_().clamp_(0, 255).to(torch.uint8).permute(1, 0, 2, 3)


@pytest.mark.parametrize(
    "height, width, size",
    [(60, 107, (60, 80)), (60, 60, (56, 56)), (16, 24, (28, 42)), (25, 33, (56, 56)), (8, 200, (8, 20))],
)
def test_uint8_resize_is_within_one_level_of_the_float_path(height, width, size):
    noise = torch.randint(0, 256, (3, 5, height, width), dtype=torch.uint8, generator=seeded(height + width))
    ramp = torch.linspace(0, 255, width).round().to(torch.uint8).expand(3, 5, height, width)
    for clip in (noise, ramp.contiguous()):
        antialias = size[0] < height or size[1] < width
        out = resize_frames(clip, size)
        assert out.dtype == torch.uint8 and out.shape == (3, 5, *size)
        difference = (out.int() - float_resize(clip, size, antialias).int()).abs()
        assert difference.max() <= 1  # the rounding of the fixed-point weights, nothing more
        assert difference.float().mean() < 0.3
    # frames are resized independently: a clip gives the frames of its frames resized alone (no mixing across time)
    assert torch.equal(resize_frames(noise, size)[:, 2:3], resize_frames(noise[:, 2:3].contiguous(), size))


def test_resize_chunks_change_no_pixel(monkeypatch):
    import rsa_lightning.data.transforms as transforms

    clip = torch.randint(0, 256, (3, 7, 30, 40), dtype=torch.uint8, generator=seeded(1))
    whole = resize_frames(clip, (20, 26))
    monkeypatch.setattr(transforms, "_RESIZE_CHUNK_VALUES", 3 * 30 * 40 * 2)  # two frames per chunk
    assert torch.equal(resize_frames(clip, (20, 26)), whole)


def test_source_span_scales_and_rounds_window_edges():
    assert source_span(10, 20, 64, 64) == (10, 30)  # same size: the window itself
    assert source_span(10, 20, 60, 120) == (20, 60)  # twice the size
    assert source_span(0, 240, 240, 240) == (0, 240)
    assert source_span(24, 224, 320, 427) == (32, 331)  # 32.03 -> 32, 330.91 -> 331
    assert source_span(0, 30, 60, 20) == (0, 10)  # frames smaller than the resize target
    assert source_span(59, 1, 60, 20) == (19, 20)  # never empty, never past the frame
    assert source_span(0, 1, 60, 20) == (0, 1)


@pytest.mark.parametrize(
    "size, resize, crop_size, scales",
    [((64, 64), 64, 56, [0.875]), ((64, 128), [64, 128], 56, [1.0, 0.875, 0.75, 0.66])],
)
def test_crop_first_gives_the_two_stage_pixels_when_frames_have_the_resize_size(size, resize, crop_size, scales):
    """The generated clips (64 x 64 frames, resize 64) and any frames already at ``resize``: no pixel changes."""
    clip = torch.randint(0, 256, (3, 3, *size), dtype=torch.uint8, generator=seeded(7))
    kwargs = dict(resize=resize, crop_size=crop_size, scales=scales, fixed_offsets=False, flip="always")
    one, two = TrainTransform(**kwargs), TrainTransform(**kwargs, crop_first=False)
    for seed in range(40):
        out_one, label_one = one(clip, label=3, generator=seeded(seed))
        out_two, label_two = two(clip, label=3, generator=seeded(seed))
        assert torch.equal(out_one, out_two) and label_one == label_two == 3


@pytest.mark.parametrize(
    "source, resize, crop_size",
    [((120, 200), [60, 100], 24), ((90, 150), 45, 32), ((120, 240), [60, 80], 32)],
)
def test_crop_first_cuts_the_window_out_of_the_decoded_frame(source, resize, crop_size):
    """Frames at 2x (1.5-3x) the ``resize`` size: the window of the resized frame is the window scaled by 2 in the
    decoded frame, so the output codes (row, column of the decoded frame) follow the window's geometry; the two-stage
    transform lands on the same places."""
    clip = coded_clip(*source, num_frames=2)
    kwargs = dict(resize=resize, crop_size=crop_size, scales=[1.0, 0.75, 0.5], fixed_offsets=False, flip="off")
    one, two = TrainTransform(**kwargs), TrainTransform(**kwargs, crop_first=False)
    h, w = (resize, resize * source[1] // source[0]) if isinstance(resize, int) else resize
    scale_h, scale_w = source[0] / h, source[1] / w
    inner = slice(2, crop_size - 2)  # away from the edges, where bilinear sampling clamps
    for seed in range(20):
        p = one.sample_params(h, w, label=0, generator=seeded(seed))
        out = one(clip, label=0, generator=seeded(seed))[0].float()
        centres = torch.arange(crop_size, dtype=torch.float32) + 0.5
        rows = (p.top + centres * p.height / crop_size) * scale_h - 0.5  # output pixel centres in decoded pixels
        cols = (p.left + centres * p.width / crop_size) * scale_w - 0.5
        expected_rows = rows.clamp(0, source[0] - 1)[:, None].expand(crop_size, crop_size)
        expected_cols = cols.clamp(0, source[1] - 1)[None, :].expand(crop_size, crop_size)
        # at 3x (the 240 -> 80 columns) a rounded window edge may sit a third of a resized pixel off
        tolerance = 1.0 + (scale_w - 2) / 2
        assert (out[0, 0] - expected_rows)[inner, inner].abs().max() <= 1.0
        assert (out[1, 0] - expected_cols)[inner, inner].abs().max() <= tolerance
        assert torch.equal(out[:2, 1], out[:2, 0]) and (out[2, 1] == 15).all()
        two_stage = two(clip, label=0, generator=seeded(seed))[0].float()
        assert (two_stage - out)[:2, :, inner, inner].abs().max() <= 1.5


@pytest.mark.parametrize("source", [(30, 40), (8, 10), (240, 200), (1, 500), (1, 1)])
def test_crop_first_resizes_first_where_the_frame_is_enlarged(source):
    """Frames smaller than ``resize`` on a side: a decoded pixel is larger than a resized one, so the window cannot be
    cut out of the decoded frame to within half a resized pixel; both settings take the two-stage order (same
    pixels)."""
    clip = torch.randint(0, 256, (3, 2, *source), dtype=torch.uint8, generator=seeded(5))
    kwargs = dict(resize=[240, 320], crop_size=224, flip="always")
    one, two = TrainTransform(**kwargs), TrainTransform(**kwargs, crop_first=False)
    for seed in range(5):
        out = one(clip, label=0, generator=seeded(seed))[0]
        assert out.shape == (3, 2, 224, 224) and torch.equal(out, two(clip, label=0, generator=seeded(seed))[0])


def test_empty_clips_are_refused_in_one_line():
    train, evaluate = TrainTransform(resize=32, crop_size=16), EvalTransform(resize=32, crop_size=16)
    for shape in ((3, 0, 32, 32), (0, 2, 32, 32), (3, 2, 0, 32), (3, 2, 32, 0)):
        with pytest.raises(ValueError, match="non-empty"):
            train(torch.zeros(shape, dtype=torch.uint8), label=0)
        with pytest.raises(ValueError, match="non-empty"):
            evaluate(torch.zeros(shape, dtype=torch.uint8))


def test_crop_first_on_the_official_recipe_differs_from_two_stage_by_resampling_only():
    """240 x 427 frames (SSv2's size) through the official recipe: one resampling instead of two changes a smooth
    clip by about a grey level, never the window (a window off by a pixel or more would differ far more). On white
    noise the two orders differ more (each resampling blurs it), so the clip is smooth."""
    coarse = torch.randint(0, 256, (3, 2, 12, 22), dtype=torch.uint8, generator=seeded(3))
    clip = F.interpolate(coarse.float(), size=(240, 427), mode="bicubic", align_corners=False)
    clip = clip.round().clamp(0, 255).to(torch.uint8)
    kwargs = dict(resize=[240, 320], crop_size=224, flip="always")
    one, two = TrainTransform(**kwargs), TrainTransform(**kwargs, crop_first=False)
    for seed in range(8):
        out_one, out_two = (t(clip, label=0, generator=seeded(seed))[0] for t in (one, two))
        assert out_one.shape == out_two.shape == (3, 2, 224, 224)
        assert (out_one.float() - out_two.float()).abs().mean() < 1.0
    shifted = TrainTransform(**kwargs)(clip[..., 2:], label=0, generator=seeded(0))[0]  # the window 2 px off
    reference = two(clip, label=0, generator=seeded(0))[0]
    assert (shifted.float() - reference.float()).abs().mean() > 1.0
    with pytest.raises(ValueError, match="crop_first"):
        TrainTransform(**kwargs, crop_first="yes")
