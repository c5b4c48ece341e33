"""Per-clip RandAugment and random erasing, batch Mixup / CutMix, and VideoClassifier's soft-target training step."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rsa_lightning.data.augment import (
    RAND_AUGMENT_OPS,
    MixupCutmix,
    RandAugment,
    RandomErasing,
    affine,
    autocontrast,
    rotate,
)
from rsa_lightning.data.transforms import TrainTransform
from rsa_lightning.modules import VideoClassifier


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def repeated_frame_clip(num_frames: int = 4, size: tuple[int, int] = (24, 32)) -> torch.Tensor:
    """uint8 (3, T, H, W) whose T frames are one random image with values in [40, 200]."""
    frame = torch.randint(40, 201, (3, 1) + size, dtype=torch.uint8, generator=seeded(0))
    return frame.expand(3, num_frames, *size).contiguous()


@pytest.mark.parametrize("op", RAND_AUGMENT_OPS)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_every_randaugment_op_keeps_shape_dtype_and_treats_all_frames_alike(op, sign):
    clip = repeated_frame_clip()
    out = RandAugment(magnitude=20).apply_op(clip, op, sign)
    assert out.shape == clip.shape and out.dtype == torch.uint8
    for t in range(1, clip.shape[1]):
        assert torch.equal(out[:, t], out[:, 0]), f"{op} treated frame {t} differently"
    if op != "Identity":
        assert not torch.equal(out, clip), f"{op} at magnitude 20 left the clip unchanged"


def test_randaugment_draws_per_clip_and_never_flips():
    assert not any("flip" in op.lower() for op in RAND_AUGMENT_OPS)
    augment = RandAugment(num_ops=3, magnitude=12)
    clip = repeated_frame_clip()
    outputs = [augment(clip, generator=seeded(s)) for s in range(6)]
    for out in outputs:
        assert out.shape == clip.shape and out.dtype == torch.uint8
        assert all(torch.equal(out[:, t], out[:, 0]) for t in range(clip.shape[1]))
    assert torch.equal(augment(clip, generator=seeded(3)), outputs[3])
    assert len({o.sum().item() for o in outputs}) > 1
    with pytest.raises(ValueError, match="magnitude"):
        RandAugment(magnitude=31)
    with pytest.raises(ValueError, match="ops"):
        RandAugment(ops=["FlipLR"])


def test_geometry_ops_move_pixels_where_expected():
    clip = torch.randint(0, 256, (3, 2, 16, 16), dtype=torch.uint8, generator=seeded(1))
    assert torch.equal(rotate(clip, 90.0), torch.rot90(clip, 1, dims=(-2, -1)))  # counter-clockwise
    shifted = affine(clip, [[1.0, 0.0, -5.0], [0.0, 1.0, 0.0]], fill=(1, 2, 3))  # content moves 5 px right
    assert torch.equal(shifted[..., 5:], clip[..., :-5])
    assert (shifted[..., :5] == torch.tensor([1, 2, 3], dtype=torch.uint8).view(3, 1, 1, 1)).all()


def test_autocontrast_uses_the_clip_range():
    clip = torch.tensor([50, 100, 150], dtype=torch.uint8).view(1, 3, 1, 1).expand(3, 3, 2, 2)
    out = autocontrast(clip)
    assert out[:, 0].eq(0).all() and out[:, 1].eq(128).all() and out[:, 2].eq(255).all()


@pytest.mark.parametrize("fill", ["random", "mean"])
def test_random_erasing_erases_one_rectangle_in_every_frame(fill):
    """Frames are distinct constants; the erased pixels are the same rectangle in each."""
    levels = torch.tensor([10, 20, 30, 100], dtype=torch.uint8)
    clip = levels.view(1, 4, 1, 1).expand(3, 4, 32, 40).contiguous()
    eraser = RandomErasing(probability=1.0, fill=fill)
    for seed in range(5):
        box = eraser.sample_box(32, 40, seeded(seed))
        assert box is not None
        top, left, h, w = box
        assert 0.02 * 32 * 40 * 0.9 <= h * w <= 32 * 40 / 3 * 1.1
        out = eraser(clip, generator=seeded(seed))
        inside = torch.zeros(32, 40, dtype=torch.bool)
        inside[top : top + h, left : left + w] = True
        assert torch.equal(out[:, :, ~inside], clip[:, :, ~inside])
        patch = out[:, :, top : top + h, left : left + w]
        assert all(torch.equal(patch[:, t], patch[:, 0]) for t in range(4))
        if fill == "mean":
            assert (patch == 40).all()  # (10 + 20 + 30 + 100) / 4
    assert torch.equal(RandomErasing(probability=0.0)(clip, generator=seeded(0)), clip)


def test_train_transform_erases_the_same_rectangle_in_all_frames():
    levels = torch.tensor([10, 20, 30, 100], dtype=torch.uint8)
    clip = levels.view(1, 4, 1, 1).expand(3, 4, 48, 64).contiguous()
    transform = TrainTransform(resize=[48, 64], crop_size=32, random_erasing=1.0, erasing_fill="mean")
    out, _ = transform(clip, label=0, generator=seeded(0))
    erased = out != levels.view(1, 4, 1, 1)  # (3, T, H, W)
    assert erased.any()
    assert all(torch.equal(erased[:, t], erased[:, 0]) for t in range(4))
    rows, cols = erased[0, 0].any(1).nonzero(), erased[0, 0].any(0).nonzero()
    assert erased[0, 0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # a full rectangle


def mixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """6 float clips (3, 2, 8, 10) whose flipped partners have different labels; clip b is filled with b."""
    video = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1, 1).expand(6, 3, 2, 8, 10).contiguous()
    return video, torch.tensor([0, 1, 2, 3, 4, 4])


def test_mixup_mixes_with_the_flipped_batch():
    mixup = MixupCutmix(num_classes=5, mixup_alpha=1.0, cutmix_alpha=0.0)
    video = torch.randn(6, 3, 2, 8, 10, generator=seeded(0))
    labels = torch.tensor([0, 1, 2, 3, 4, 4])
    out, targets = mixup(video, labels, generator=seeded(1))
    assert targets.shape == (6, 5) and torch.allclose(targets.sum(1), torch.ones(6))
    lam = float(targets[0, 0])
    assert 0.0 < lam < 1.0
    assert torch.allclose(out, lam * video + (1 - lam) * video.flip(0), atol=1e-6)
    one_hot = F.one_hot(labels, 5).float()
    assert torch.allclose(targets, lam * one_hot + (1 - lam) * one_hot.flip(0))


def test_cutmix_pastes_one_box_whose_area_matches_lam():
    cutmix = MixupCutmix(num_classes=5, mixup_alpha=0.0, cutmix_alpha=1.0)
    video, labels = mixed_batch()
    boxes = 0
    for seed in range(10):
        out, targets = cutmix(video, labels, generator=seeded(seed))
        assert torch.allclose(targets.sum(1), torch.ones(6))
        lam = float(targets[0, 0])
        pasted = out[0] == 5  # clip 0 takes pixels from clip 5
        assert torch.equal(pasted | (out[0] == 0), torch.ones_like(pasted))
        assert all(torch.equal(pasted[c, t], pasted[0, 0]) for c in range(3) for t in range(2))  # one box
        assert float(pasted[0, 0].float().mean()) == pytest.approx(1 - lam)
        assert float(targets[0, 4]) == pytest.approx(1 - lam)
        if pasted.any():
            boxes += 1
            rows, cols = pasted[0, 0].any(1).nonzero(), pasted[0, 0].any(0).nonzero()
            assert pasted[0, 0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
    assert boxes >= 5


def test_mixup_cutmix_switch_and_prob():
    both = MixupCutmix(num_classes=5, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5)
    video, labels = mixed_batch()
    modes = set()
    for seed in range(20):
        out, targets = both(video, labels, generator=seeded(seed))
        lam = float(targets[0, 0])
        if torch.allclose(out[0], torch.full_like(out[0], 5 * (1 - lam))):
            modes.add("mixup")
        elif ((out[0] == 0) | (out[0] == 5)).all():
            modes.add("cutmix")
    assert modes == {"mixup", "cutmix"}
    never = MixupCutmix(num_classes=5, prob=0.0)
    out, targets = never(video, labels, generator=seeded(0))
    assert torch.equal(out, video) and torch.equal(targets, F.one_hot(labels, 5).float())
    with pytest.raises(ValueError, match="alpha"):
        MixupCutmix(num_classes=5, mixup_alpha=0.0, cutmix_alpha=0.0)
    with pytest.raises(ValueError, match="float"):
        both(video.to(torch.uint8), labels)


def tiny_classifier(mixup=None, label_smoothing: float = 0.1) -> VideoClassifier:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 5))
    return VideoClassifier(
        net=net,
        num_classes=5,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        label_smoothing=label_smoothing,
        mixup=mixup,
    )


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_training_step_with_mixup_uses_soft_targets_and_hard_label_metrics():
    mixup = MixupCutmix(num_classes=5, mixup_alpha=1.0, cutmix_alpha=0.0)
    model = tiny_classifier(mixup)
    assert "mixup" not in model.hparams
    video = torch.randn(4, 3, 2, 4, 4, generator=seeded(0))
    labels = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(5)
    loss = model.training_step({"video": video, "label": labels}, 0)
    loss.backward()
    assert model.net[1].weight.grad is not None

    # by hand: the same mixing (same global RNG state), smoothed soft targets, cross-entropy
    torch.manual_seed(5)
    mixed, targets = mixup(video, labels)
    lam = float(targets[0, 0])
    assert torch.allclose(mixed, lam * video + (1 - lam) * video.flip(0), atol=1e-6)
    with torch.no_grad():
        logits = model.net(mixed)
    smoothed = targets * 0.9 + 0.1 / 5
    expected = -(smoothed * logits.log_softmax(-1)).sum(-1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    unmixed = F.cross_entropy(logits, labels, label_smoothing=0.1)
    assert loss.item() != pytest.approx(unmixed.item(), rel=1e-3)
    # metrics see the hard labels
    acc = float((logits.argmax(-1) == labels).float().mean())
    assert float(model.train_acc["acc1"].compute()) == pytest.approx(acc)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_mixup_is_training_only():
    model = tiny_classifier(mixup=lambda video, labels: pytest.fail("mixup called outside training"))
    batch = {"video": torch.randn(2, 3, 2, 4, 4), "label": torch.tensor([0, 1])}
    model.validation_step(batch, 0)
    model.test_step(batch, 0)
