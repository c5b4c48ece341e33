"""Stronger augmentation: per-clip RandAugment and random erasing (uint8), batch-level Mixup / CutMix (float).

Per-clip means every frame of a clip gets the same operation with the same parameters (one rotation angle, one
erased rectangle, one CutMix box), so augmentation never adds motion that is not in the video. Statistics that
colour operations need (contrast mean, autocontrast range, equalisation histogram) are taken over the whole clip
for the same reason: a per-frame statistic would make the clip flicker.

Layouts: a clip is uint8 ``(C, T, H, W)``; a batch is float ``(B, C, T, H, W)`` with int labels ``(B,)``.
All randomness comes from an optional ``torch.Generator`` (``None`` means torch's global RNG), so a seeded
generator reproduces a sample.

Deviations from torchvision's ``RandAugment`` (whose magnitude table is followed) and timm's ``Mixup``:
- no horizontal flip among the operations: on direction-sensitive datasets (Something-Something) a flip changes
  the label; :class:`~rsa_lightning.data.transforms.TrainTransform` applies flips with a label-aware policy instead.
  Shear, rotation and translation keep the left/right direction of motion.
- geometric operations interpolate bilinearly (torchvision: nearest) and fill uncovered pixels with ``fill``.
- contrast, autocontrast and equalize use clip-wide statistics (torchvision: per image).
- Mixup/CutMix only in timm's ``mode="batch"`` (one lambda per batch), with label smoothing left to the loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

COLOR_OPS = ("Brightness", "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
GEOMETRY_OPS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
RAND_AUGMENT_OPS = ("Identity",) + COLOR_OPS + GEOMETRY_OPS


def _uniform(generator: Optional[torch.Generator]) -> float:
    return float(torch.rand((), generator=generator))


def _randint(low: int, high: int, generator: Optional[torch.Generator]) -> int:
    """An integer in ``[low, high]`` (both included)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _to_uint8(video: torch.Tensor) -> torch.Tensor:
    return video.round().clamp_(0, 255).to(torch.uint8)


def _blend(video: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    """``other + factor * (video - other)`` in uint8: factor 0 gives ``other``, 1 the clip, > 1 extrapolates."""
    return _to_uint8(other + factor * (video.float() - other))


def grayscale(video: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of RGB ``(3, T, H, W)`` as float ``(1, T, H, W)`` (the channel mean if not RGB)."""
    video = video.float()
    if video.shape[0] != 3:
        return video.mean(dim=0, keepdim=True)
    r, g, b = video.unbind(0)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(0)


def adjust_brightness(video: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(video, torch.zeros(()), factor)


def adjust_saturation(video: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(video, grayscale(video), factor)


def adjust_contrast(video: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(video, grayscale(video).mean(), factor)


def adjust_sharpness(video: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with PIL's SMOOTH-filtered clip (3x3, centre weight 5, border pixels kept); factor > 1 sharpens."""
    c, t, h, w = video.shape
    if h < 3 or w < 3:
        return video
    frames = video.float().reshape(c * t, 1, h, w)
    # 3x3 box sum plus 4 x centre = the kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]], normalised by 13
    box = F.avg_pool2d(frames, 3, stride=1) * 9 + 4 * frames[:, :, 1:-1, 1:-1]
    smooth = frames.clone()
    smooth[:, :, 1:-1, 1:-1] = (box / 13).round_()
    return _blend(video, smooth.reshape(c, t, h, w), factor)


def posterize(video: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep the ``bits`` most significant bits of every value."""
    mask = (0xFF << (8 - bits)) & 0xFF
    return video & mask


def solarize(video: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert values at or above ``threshold``."""
    return torch.where(video >= threshold, 255 - video, video)


def autocontrast(video: torch.Tensor) -> torch.Tensor:
    """Stretch every channel to [0, 255] using its minimum and maximum over the whole clip."""
    flat = video.reshape(video.shape[0], -1)
    low = flat.amin(dim=1).float().view(-1, 1, 1, 1)
    high = flat.amax(dim=1).float().view(-1, 1, 1, 1)
    scale = torch.where(high > low, 255.0 / (high - low).clamp(min=1), torch.ones(()))
    low = torch.where(high > low, low, torch.zeros(()))
    return _to_uint8((video.float() - low) * scale)


def equalize(video: torch.Tensor) -> torch.Tensor:
    """Histogram-equalise every channel over the whole clip (PIL's ``ImageOps.equalize`` look-up table)."""
    out = torch.empty_like(video)
    for ch in range(video.shape[0]):
        values = video[ch].reshape(-1).long()
        hist = torch.bincount(values, minlength=256)
        last = int(hist[hist.nonzero().max()])
        step = (int(hist.sum()) - last) // 255
        if step == 0:
            out[ch] = video[ch]
            continue
        lut = (torch.cumsum(hist, 0) + step // 2) // step
        lut = torch.cat([torch.zeros(1, dtype=lut.dtype), lut[:-1]]).clamp_(0, 255).to(torch.uint8)
        out[ch] = lut[values].view_as(video[ch])
    return out


def affine(video: torch.Tensor, matrix: Sequence[Sequence[float]], fill: Union[int, Sequence[int]] = 0) -> torch.Tensor:
    """Warp every frame with one affine map (bilinear); uncovered pixels get ``fill`` (one value or one per channel).

    ``matrix`` is 2 x 3 and maps OUTPUT pixel coordinates to INPUT pixel coordinates, both (x, y) measured from
    the frame centre.
    """
    c, t, h, w = video.shape
    (m00, m01, tx), (m10, m11, ty) = matrix
    # the same map in grid_sample's normalised coordinates: p_n = p / (w/2, h/2)
    theta = torch.tensor([[m00, m01 * h / w, 2 * tx / w], [m10 * w / h, m11, 2 * ty / h]], dtype=torch.float32)
    grid = F.affine_grid(theta[None], [1, 1, h, w], align_corners=False)  # (1, H, W, 2)
    frames = torch.cat([video.float().reshape(1, c * t, h, w), torch.ones(1, 1, h, w)], dim=1)
    warped = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    coverage = warped[-1:]  # (1, H, W): 1 inside the source frame, 0 outside, fractional on the edge
    fill_values = torch.as_tensor(fill, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(c, 1, 1, 1)
    out = warped[:-1].reshape(c, t, h, w) + (1 - coverage) * fill_values
    return _to_uint8(out)


def rotate(video: torch.Tensor, degrees: float, fill: Union[int, Sequence[int]] = 0) -> torch.Tensor:
    """Rotate counter-clockwise by ``degrees`` about the frame centre."""
    a = math.radians(degrees)
    # image y points down: the inverse of a visually counter-clockwise rotation
    return affine(video, [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], fill)


class RandAugment:
    """RandAugment (Cubuk et al. 2020) for uint8 clips ``(C, T, H, W)``: ``num_ops`` operations drawn uniformly
    (with replacement) from :data:`RAND_AUGMENT_OPS`, each at ``magnitude`` and with one random sign, applied with
    the same parameters to every frame.

    Magnitudes follow torchvision's table: ``magnitude`` indexes ``num_magnitude_bins`` levels from 0 to the
    maximum (brightness / colour / contrast / sharpness factor 1 +- 0.9, rotation 30 degrees, shear 0.3,
    translation 150/331 of the frame, posterize 8 -> 4 bits, solarize threshold 255 -> 0).

    Args:
        num_ops: operations per clip (N).
        magnitude: strength index (M) in ``[0, num_magnitude_bins)``.
        num_magnitude_bins: number of strength levels.
        fill: value of pixels uncovered by geometric operations, one int or one per channel.
        ops: the operation names to draw from (default all of :data:`RAND_AUGMENT_OPS`, none of which flips).
    """

    def __init__(
        self,
        *,
        num_ops: int = 2,
        magnitude: int = 9,
        num_magnitude_bins: int = 31,
        fill: Union[int, Sequence[int]] = (124, 116, 104),
        ops: Optional[Sequence[str]] = None,
    ) -> None:
        if num_ops < 0:
            raise ValueError(f"RandAugment num_ops must be >= 0, got {num_ops}")
        if num_magnitude_bins < 2 or not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(f"RandAugment magnitude must be in [0, {num_magnitude_bins}), got {magnitude}")
        ops = tuple(RAND_AUGMENT_OPS if ops is None else ops)
        unknown = [op for op in ops if op not in RAND_AUGMENT_OPS]
        if unknown or not ops:
            raise ValueError(f"RandAugment ops must be a non-empty subset of {RAND_AUGMENT_OPS}, got {list(ops)}")
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.num_magnitude_bins = num_magnitude_bins
        self.fill = fill if isinstance(fill, int) else tuple(int(v) for v in fill)
        self.ops = ops

    def level(self) -> float:
        """The strength in [0, 1]: ``magnitude / (num_magnitude_bins - 1)``."""
        return self.magnitude / (self.num_magnitude_bins - 1)

    def apply_op(self, video: torch.Tensor, op: str, sign: float) -> torch.Tensor:
        """One operation at this transform's magnitude; ``sign`` (+1 or -1) orients signed operations."""
        level = self.level()
        _, _, h, w = video.shape
        if op == "Identity":
            return video
        if op in ("Brightness", "Color", "Contrast", "Sharpness"):
            factor = 1.0 + sign * 0.9 * level
            adjust = {
                "Brightness": adjust_brightness,
                "Color": adjust_saturation,
                "Contrast": adjust_contrast,
                "Sharpness": adjust_sharpness,
            }[op]
            return adjust(video, factor)
        if op == "Posterize":
            return posterize(video, 8 - int(round(4 * level)))
        if op == "Solarize":
            return solarize(video, 255.0 * (1.0 - level))
        if op == "AutoContrast":
            return autocontrast(video)
        if op == "Equalize":
            return equalize(video)
        if op == "Rotate":
            return rotate(video, sign * 30.0 * level, self.fill)
        if op == "ShearX":
            return affine(video, [[1.0, sign * 0.3 * level, 0.0], [0.0, 1.0, 0.0]], self.fill)
        if op == "ShearY":
            return affine(video, [[1.0, 0.0, 0.0], [sign * 0.3 * level, 1.0, 0.0]], self.fill)
        if op == "TranslateX":
            return affine(video, [[1.0, 0.0, sign * 150 / 331 * w * level], [0.0, 1.0, 0.0]], self.fill)
        if op == "TranslateY":
            return affine(video, [[1.0, 0.0, 0.0], [0.0, 1.0, sign * 150 / 331 * h * level]], self.fill)
        raise ValueError(f"unknown RandAugment op {op!r}")

    def __call__(self, video: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        for _ in range(self.num_ops):
            op = self.ops[_randint(0, len(self.ops) - 1, generator)]
            sign = 1.0 if _uniform(generator) < 0.5 else -1.0
            video = self.apply_op(video, op, sign)
        return video

    def __repr__(self) -> str:
        return f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}/{self.num_magnitude_bins - 1})"


class RandomErasing:
    """Random erasing (Zhong et al. 2020) of one rectangle, the same in every frame of a uint8 clip ``(C, T, H, W)``.

    With probability ``probability``, up to 10 attempts draw an area fraction from ``scale`` and a log-uniform
    aspect ratio from ``ratio``; the first rectangle that fits is filled with ``fill``: ``"random"`` uniform noise
    (one noise image shared by all frames: a static occluder, not flicker) or ``"mean"`` the clip's per-channel mean.
    """

    FILLS = ("random", "mean")

    def __init__(
        self,
        *,
        probability: float = 0.25,
        scale: Sequence[float] = (0.02, 1 / 3),
        ratio: Sequence[float] = (0.3, 3.3),
        fill: str = "random",
    ) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"random erasing probability must be in [0, 1], got {probability}")
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"random erasing needs 0 < scale <= 1 and 0 < ratio (ordered), got {scale}, {ratio}")
        if fill not in self.FILLS:
            raise ValueError(f"random erasing fill must be one of {self.FILLS}, got {fill!r}")
        self.probability = probability
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.fill = fill

    def sample_box(
        self, height: int, width: int, generator: Optional[torch.Generator] = None
    ) -> Optional[tuple[int, int, int, int]]:
        """``(top, left, box_height, box_width)``, or None (not erased this time)."""
        if _uniform(generator) >= self.probability:
            return None
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            area = height * width * (self.scale[0] + (self.scale[1] - self.scale[0]) * _uniform(generator))
            aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * _uniform(generator))
            box_h = int(round(math.sqrt(area * aspect)))
            box_w = int(round(math.sqrt(area / aspect)))
            if 0 < box_h < height and 0 < box_w < width:
                top = _randint(0, height - box_h, generator)
                left = _randint(0, width - box_w, generator)
                return top, left, box_h, box_w
        return None

    def __call__(self, video: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        c, _, h, w = video.shape
        box = self.sample_box(h, w, generator)
        if box is None:
            return video
        top, left, box_h, box_w = box
        if self.fill == "random":
            patch = torch.randint(0, 256, (c, 1, box_h, box_w), generator=generator, dtype=torch.uint8)
        else:
            patch = _to_uint8(video.float().mean(dim=(1, 2, 3))).view(c, 1, 1, 1)
        video = video.clone()
        video[:, :, top : top + box_h, left : left + box_w] = patch
        return video

    def __repr__(self) -> str:
        return (
            f"RandomErasing(probability={self.probability}, scale={self.scale}, ratio={self.ratio}, fill={self.fill})"
        )


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels.long(), num_classes).float()


class MixupCutmix:
    """Batch-level Mixup (Zhang et al. 2018) / CutMix (Yun et al. 2019) for video, as timm's ``Mixup(mode="batch")``.

    Clip ``i`` is mixed with clip ``B - 1 - i`` (the batch flipped) using one ``lam`` for the whole batch:
    Mixup ``lam * x + (1 - lam) * x.flip(0)``; CutMix pastes one box of the flipped batch, the same box in every
    frame, and sets ``lam`` to the exact kept area fraction. Targets are ``lam * onehot(y) + (1 - lam) *
    onehot(y.flip(0))`` (B, num_classes); label smoothing belongs to the loss (``CrossEntropyLoss(label_smoothing)``
    accepts these probability targets).

    Args:
        num_classes: K, the width of the soft targets.
        mixup_alpha: Beta(alpha, alpha) parameter of Mixup's ``lam``; 0 disables Mixup.
        cutmix_alpha: Beta(alpha, alpha) parameter of CutMix's ``lam``; 0 disables CutMix.
        prob: probability that a batch is mixed at all (otherwise targets are one-hot).
        switch_prob: with both enabled, probability of CutMix instead of Mixup.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"MixupCutmix num_classes must be positive, got {num_classes}")
        if mixup_alpha < 0 or cutmix_alpha < 0 or mixup_alpha == cutmix_alpha == 0:
            raise ValueError(f"MixupCutmix needs mixup_alpha or cutmix_alpha > 0, got {mixup_alpha}, {cutmix_alpha}")
        if not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
            raise ValueError(f"MixupCutmix prob and switch_prob must be in [0, 1], got {prob}, {switch_prob}")
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob

    def sample(self, generator: Optional[torch.Generator] = None) -> tuple[float, bool]:
        """``(lam, use_cutmix)`` for one batch; ``lam == 1`` means no mixing."""
        # Beta samples from a numpy generator seeded by the torch one (torch's Beta takes no generator)
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (), generator=generator)))
        if rng.random() >= self.prob:
            return 1.0, False
        use_cutmix = self.mixup_alpha == 0 or (self.cutmix_alpha > 0 and rng.random() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix

    @staticmethod
    def cutmix_box(
        height: int, width: int, lam: float, generator: Optional[torch.Generator] = None
    ) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` of a box of area about ``(1 - lam) * H * W`` centred at a random pixel
        and clipped to the frame (timm's ``rand_bbox``)."""
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        cy, cx = _randint(0, height - 1, generator), _randint(0, width - 1, generator)
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        return top, bottom, left, right

    def __call__(
        self, video: torch.Tensor, labels: torch.Tensor, *, generator: Optional[torch.Generator] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float ``(B, C, T, H, W)`` and int ``(B,)`` -> mixed ``(B, C, T, H, W)`` and soft targets ``(B, K)``."""
        if video.ndim != 5 or labels.shape != video.shape[:1]:
            raise ValueError(
                f"MixupCutmix expects video (B, C, T, H, W) and labels (B,), got {video.shape}, {labels.shape}"
            )
        if not video.is_floating_point():
            raise ValueError(f"MixupCutmix mixes float (normalised) clips, got {video.dtype}")
        lam, use_cutmix = self.sample(generator)
        if lam < 1.0:
            if use_cutmix:
                h, w = video.shape[-2:]
                top, bottom, left, right = self.cutmix_box(h, w, lam, generator)
                video = video.clone()
                video[..., top:bottom, left:right] = video.flip(0)[..., top:bottom, left:right]
                lam = 1.0 - (bottom - top) * (right - left) / (h * w)
            else:
                video = video * lam + video.flip(0) * (1.0 - lam)
        y = one_hot(labels, self.num_classes).to(device=video.device, dtype=video.dtype)
        targets = y * lam + y.flip(0) * (1.0 - lam)
        return video, targets

    def __repr__(self) -> str:
        return (
            f"MixupCutmix(num_classes={self.num_classes}, mixup_alpha={self.mixup_alpha}, "
            f"cutmix_alpha={self.cutmix_alpha}, prob={self.prob}, switch_prob={self.switch_prob})"
        )
