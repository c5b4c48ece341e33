"""Clip transforms on uint8 video tensors of layout (C, T, H, W).

Clips stay uint8 through the transforms (resizing included: :func:`_interpolate`) and the data loader (4x less to
copy between processes); conversion to float and mean/std normalisation happen on the device, in
:meth:`VideoDataModule.on_after_batch_transfer`.
Every frame of a clip gets the same crop and the same flip.

- :class:`TrainTransform`: TSN's multi-scale crop (``GroupMultiScaleCrop``), a label-aware horizontal flip
  (``flip`` policy + ``mirror`` classes from :func:`mirror_pairs`), optional RandAugment and random erasing
  (:mod:`rsa_lightning.data.augment`).
- :class:`EvalTransform`: resize, then a centre crop, TSM's three crops, or ``n`` crops along the long side.

Frame sizes: both transforms work in the frame of size ``resize`` (the shorter side, or an exact ``[H, W]``), so a
video of frames smaller than the crop is scaled up to it (bilinear) and one of very large frames is scaled down
(antialiased, a few frames at a time to bound memory); the clip that leaves a transform is always
``crop_size x crop_size``. :class:`EvalTransform` resizes every frame, then crops (one resampling, the official test
protocol). :class:`TrainTransform` draws its window in the resized frame but, by default (``crop_first``) and where the
frame is not enlarged, cuts the same window out of the decoded frame and resamples it once, straight to
``crop_size`` (as torchvision's ``RandomResizedCrop``), instead of resizing the whole frame and then the window (two
resamplings, TSN/mmaction2's ``Resize`` + ``MultiScaleCrop`` + ``Resize``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F

from rsa_lightning.data.augment import RandAugment, RandomErasing
from rsa_lightning.errors import DataError

Size = Union[int, Sequence[int]]
FLIP_POLICIES = ("skip", "swap", "off", "always")
TSN_SCALES = (1.0, 0.875, 0.75, 0.66)


# frames resized at once are at most this many values (32 MB of uint8) before and after: a 4K clip of 16 frames would
# otherwise take 400 MB per DataLoader worker for one resize
_RESIZE_CHUNK_VALUES = 2**25


def _interpolate(video: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    """Bilinear resize of uint8 (C, T, H, W) frames to ``size``, a few frames at a time (each frame is resized on its
    own, so the chunking changes no pixel; it only bounds the memory taken by very large frames).

    The frames stay uint8: PyTorch's uint8 bilinear kernel (fixed-point weights, as Pillow's ``Image.resize``) on
    channels-last frames. It is 3-30x faster than converting to float, interpolating and rounding back (the earlier
    path; ``benchmarks/README.md``), and differs from it by at most one grey level (in 15-20 % of the pixels of a
    resized frame: the rounding of the weights); frames of the same size are returned unchanged by the callers.
    """
    channels, frames, h, w = video.shape
    per_frame = channels * max(h * w, size[0] * size[1])
    chunk = max(1, _RESIZE_CHUNK_VALUES // per_frame)
    out = []
    for begin in range(0, frames, chunk):
        part = video[:, begin : begin + chunk].permute(1, 0, 2, 3)  # (t, C, H, W)
        part = part.contiguous(memory_format=torch.channels_last)  # the fast layout of the uint8 kernel
        part = F.interpolate(part, size=size, mode="bilinear", align_corners=False, antialias=antialias)
        out.append(part.permute(1, 0, 2, 3))  # (C, t, H', W')
    return out[0] if len(out) == 1 else torch.cat(out, dim=1)


def resized_size(height: int, width: int, size: Union[int, tuple[int, int]]) -> tuple[int, int]:
    """The ``(H', W')`` an ``height x width`` frame has after :func:`resize` to ``size`` (int: shorter side, aspect
    kept, each side rounded and at least ``size``; ``(H, W)``: exactly that)."""
    if not isinstance(size, int):
        return size[0], size[1]
    if min(height, width) == size:
        return height, width
    scale = size / min(height, width)
    return max(size, round(height * scale)), max(size, round(width * scale))


def resize_short_side(video: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (C, T, H, W) uint8 frames so that the shorter side is ``size`` (bilinear, antialiased). Frames smaller
    than ``size`` are scaled up, so a clip is never smaller than the crop that follows."""
    _, _, h, w = video.shape
    new_hw = resized_size(h, w, size)
    if new_hw == (h, w):
        return video
    return _interpolate(video, new_hw, antialias=True)


def source_span(start: int, length: int, resized: int, source: int) -> tuple[int, int]:
    """The pixels ``[begin, end)`` of a ``source``-pixel side that a window ``[start, start + length)`` of the same
    side resized to ``resized`` pixels covers: both edges scaled by ``source / resized`` and rounded to the nearest
    pixel (half up), at least one pixel wide. Exactly ``(start, start + length)`` when ``resized == source``."""
    if resized == source:
        return start, start + length
    scale = source / resized
    begin = min(source - 1, max(0, math.floor(start * scale + 0.5)))
    end = min(source, max(begin + 1, math.floor((start + length) * scale + 0.5)))
    return begin, end


def resize_frames(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (C, T, H, W) uint8 frames to exactly ``size = (H', W')`` (bilinear, antialiased when downscaling)."""
    _, _, h, w = video.shape
    if (h, w) == tuple(size):
        return video
    return _interpolate(video, (size[0], size[1]), antialias=size[0] < h or size[1] < w)


def _check_size(size: Size, name: str) -> Union[int, tuple[int, int]]:
    """An int short side, or an ``(H, W)`` pair (lists from Hydra configs become tuples)."""
    if isinstance(size, int) and not isinstance(size, bool):
        if size < 1:
            raise ValueError(f"{name} must be positive, got {size}")
        return size
    try:
        pair = tuple(size)
    except TypeError:
        raise ValueError(f"{name} must be an int (short side) or [height, width], got {size!r}") from None
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be an int (short side) or [height, width] of positive ints, got {size!r}")
    return pair[0], pair[1]


def resize(video: torch.Tensor, size: Union[int, tuple[int, int]]) -> torch.Tensor:
    """``size`` int: the shorter side becomes ``size`` (aspect kept); ``(H, W)``: every frame becomes H x W."""
    if isinstance(size, int):
        return resize_short_side(video, size)
    return resize_frames(video, (size[0], size[1]))


def crop(video: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    return video[:, :, top : top + size, left : left + size]


def center_crop(video: torch.Tensor, size: int) -> torch.Tensor:
    _, _, h, w = video.shape
    return crop(video, (h - size) // 2, (w - size) // 2, size)


def hflip(video: torch.Tensor) -> torch.Tensor:
    """Mirror every frame left-right."""
    return video.flip(-1)


def multi_scale_crop_sizes(
    height: int, width: int, *, crop_size: int, scales: Sequence[float] = TSN_SCALES, max_distort: int = 1
) -> list[tuple[int, int]]:
    """TSN's candidate ``(crop_h, crop_w)`` pairs for an ``height x width`` frame.

    Side lengths are ``int(scale * min(height, width))``; a length within 3 px of ``crop_size`` snaps to it (as TSN,
    clipped to the frame); a pair takes its height and width from scales whose indices differ by ``<= max_distort``.
    """
    base = min(height, width)
    lengths = [int(base * s) for s in scales]
    crop_h = [min(crop_size, height) if abs(x - crop_size) < 3 else x for x in lengths]
    crop_w = [min(crop_size, width) if abs(x - crop_size) < 3 else x for x in lengths]
    return [(h, w) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w) if abs(i - j) <= max_distort]


def fixed_crop_offsets(height: int, width: int, crop_h: int, crop_w: int) -> list[tuple[int, int]]:
    """The 13 ``(top, left)`` positions of TSN's ``GroupMultiScaleCrop(more_fix_crop=True)``.

    With ``w_step = (width - crop_w) // 4`` and ``h_step = (height - crop_h) // 4`` (integer, as TSN), in TSN's
    order: 4 corners, centre, 4 mid-edges (left, right, bottom, top), 4 quarter points.
    """
    ws, hs = (width - crop_w) // 4, (height - crop_h) // 4
    xy = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
    return [(y * hs, x * ws) for x, y in xy]


def mirror_pairs(class_names: Sequence[str]) -> dict[int, int]:
    """Classes that become each other when the video is mirrored: ``{id: mirror id}``, both directions.

    A class's mirror is the class named like it with the whole words "left" and "right" swapped (case-insensitive;
    a word is delimited by non-letters, so "upright" and "brightness" never match). A name whose swapped version
    is not a class name ("... pulling it right out ...") has no mirror.
    """
    word = re.compile(r"(?<![a-z])(left|right)(?![a-z])", re.IGNORECASE)
    index: dict[str, int] = {}
    for i, name in enumerate(class_names):
        key = " ".join(name.split()).casefold()
        if key in index:
            raise DataError(
                f"class names {index[key]} and {i} are the same up to case and spaces: {name!r} (the flip policy pairs "
                "classes by name): make them distinct"
            )
        index[key] = i
    pairs = {}
    for key, i in index.items():
        swapped = word.sub(lambda m: "right" if m.group(1) == "left" else "left", key)
        if swapped != key and swapped in index:
            pairs[i] = index[swapped]
    return pairs


@dataclass(frozen=True)
class TrainParams:
    """The random choices of one :class:`TrainTransform` call: crop window in the resized frame, flip, label."""

    top: int
    left: int
    height: int
    width: int
    flip: bool
    label: int


class TrainTransform:
    """Training clip transform: resize, TSN multi-scale crop, label-aware flip, optional RandAugment and erasing.

    1. The frame size ``resize`` (int: shorter side; ``[H, W]``: exact size, the official recipe's [240, 320]).
    2. A window whose height and width are picked from ``scales`` of that frame's shorter side
       (:func:`multi_scale_crop_sizes`), at one of TSN's 13 fixed positions (:func:`fixed_crop_offsets`) or
       anywhere (``fixed_offsets=False``), resized to ``crop_size x crop_size``. ``crop_first=True`` (default), for
       frames that ``resize`` does not enlarge (neither side): the window is mapped to the decoded frame
       (:func:`source_span`: edges scaled, rounded to whole decoded pixels, so at most half a pixel of the resized
       frame off) and resampled once from there (antialiased when downscaling); the whole frame is never resized.
       Otherwise (``crop_first=False``, or frames smaller than ``resize`` on a side, where a decoded pixel is larger
       than a resized one and rounding to it would move the window): every frame is resized to ``resize`` first,
       then the window is cut and resized (the TSN / mmaction2 order: two resamplings, a little more blur; 1.6-1.7x
       the time of the official recipe's transform of 8 frames of 240 x 427, ``benchmarks/loader.py``; on natural or
       smooth content the two orders differ by about one grey level per pixel on average). Both give the same pixels
       when the decoded frames already have the ``resize`` size (the generated clips: 64 x 64 frames, ``resize: 64``).
    3. Flip horizontally with probability 0.5, following ``flip``:
       ``"skip"`` never flips a clip whose class has a mirror class (the official RSA policy; others flip),
       ``"swap"`` flips any clip and relabels a flipped clip of a mirrored class with its mirror class,
       ``"off"`` never flips, ``"always"`` flips regardless of class (datasets without direction semantics).
       ``mirror`` maps class -> mirror class (both directions, e.g. from :func:`mirror_pairs`).
    4. ``randaugment`` (a :class:`~rsa_lightning.data.augment.RandAugment`, never flipping), then random erasing
       with probability ``random_erasing`` (one rectangle in all frames, ``erasing_fill`` "random" or "mean").

    ``__call__(video, *, label, generator=None) -> (video, label)`` maps uint8 ``(C, T, H, W)`` to uint8
    ``(C, T, crop_size, crop_size)``; every random draw comes from ``generator``.
    """

    def __init__(
        self,
        *,
        resize: Size,
        crop_size: int,
        scales: Sequence[float] = TSN_SCALES,
        max_distort: int = 1,
        fixed_offsets: bool = True,
        flip: str = "skip",
        mirror: Optional[Mapping[int, int]] = None,
        randaugment: Optional[RandAugment] = None,
        random_erasing: float = 0.0,
        erasing_fill: str = "random",
        crop_first: bool = True,
    ) -> None:
        self.resize = _check_size(resize, "resize")
        if not isinstance(crop_size, int) or crop_size < 1:
            raise ValueError(f"crop_size must be a positive int, got {crop_size!r}")
        scales = tuple(float(s) for s in scales)
        if not scales or not all(0 < s <= 1 for s in scales):
            raise ValueError(f"scales must be a non-empty list of fractions in (0, 1], got {scales}")
        if max_distort < 0:
            raise ValueError(f"max_distort must be >= 0, got {max_distort}")
        if flip not in FLIP_POLICIES:
            raise ValueError(f"flip must be one of {FLIP_POLICIES}, got {flip!r}")
        mirror = {int(k): int(v) for k, v in (mirror or {}).items()}
        asymmetric = [(k, v) for k, v in mirror.items() if mirror.get(v) != k or k == v]
        if asymmetric:
            raise ValueError(f"mirror must pair distinct classes in both directions; {asymmetric[0]} is not")
        self.crop_size = crop_size
        self.scales = scales
        self.max_distort = max_distort
        self.fixed_offsets = fixed_offsets
        self.flip = flip
        self.mirror = mirror
        self.randaugment = randaugment
        self.random_erasing = RandomErasing(probability=random_erasing, fill=erasing_fill) if random_erasing else None
        if not isinstance(crop_first, bool):
            raise ValueError(f"crop_first must be true or false, got {crop_first!r}")
        self.crop_first = crop_first

    def sample_params(
        self, height: int, width: int, *, label: int, generator: torch.Generator | None = None
    ) -> TrainParams:
        """The crop window (in a resized ``height x width`` frame), flip and output label of one call."""
        sizes = multi_scale_crop_sizes(
            height, width, crop_size=self.crop_size, scales=self.scales, max_distort=self.max_distort
        )
        crop_h, crop_w = sizes[int(torch.randint(len(sizes), (), generator=generator))]
        if self.fixed_offsets:
            offsets = fixed_crop_offsets(height, width, crop_h, crop_w)
            top, left = offsets[int(torch.randint(len(offsets), (), generator=generator))]
        else:
            top = int(torch.randint(height - crop_h + 1, (), generator=generator))
            left = int(torch.randint(width - crop_w + 1, (), generator=generator))
        coin = float(torch.rand((), generator=generator)) < 0.5  # always drawn: policies share one random stream
        label = int(label)
        mirrored = label in self.mirror
        flip = coin and (self.flip == "always" or self.flip == "swap" or (self.flip == "skip" and not mirrored))
        if flip and self.flip == "swap" and mirrored:
            label = self.mirror[label]
        return TrainParams(top=top, left=left, height=crop_h, width=crop_w, flip=flip, label=label)

    def __call__(
        self, video: torch.Tensor, *, label: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, int]:
        video, params = self.with_params(video, label=label, generator=generator)
        return video, params.label

    def with_params(
        self, video: torch.Tensor, *, label: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, TrainParams]:
        """The transformed clip and the random choices that made it (crop window, ``flip``, output ``label``), for
        a caller that records them (the dataset's ``"flipped"`` field); the same draws as :meth:`__call__`."""
        if video.ndim != 4 or video.dtype != torch.uint8 or video.numel() == 0:
            raise ValueError(
                f"TrainTransform expects a non-empty uint8 clip (C, T, H, W), got {video.dtype} {tuple(video.shape)}"
            )
        _, _, source_h, source_w = video.shape
        h, w = resized_size(source_h, source_w, self.resize)
        p = self.sample_params(h, w, label=label, generator=generator)
        if self.crop_first and source_h >= h and source_w >= w:  # not enlarged: the window is within half a pixel
            top, bottom = source_span(p.top, p.height, h, source_h)
            left, right = source_span(p.left, p.width, w, source_w)
        else:
            video = resize(video, self.resize)
            top, bottom, left, right = p.top, p.top + p.height, p.left, p.left + p.width
        video = resize_frames(video[:, :, top:bottom, left:right], (self.crop_size, self.crop_size))
        if p.flip:
            video = hflip(video)
        if self.randaugment is not None:
            video = self.randaugment(video, generator=generator)
        if self.random_erasing is not None:
            video = self.random_erasing(video, generator=generator)
        return video.contiguous(), p

    def __repr__(self) -> str:
        return (
            f"TrainTransform(resize={self.resize}, crop_size={self.crop_size}, scales={self.scales}, "
            f"max_distort={self.max_distort}, fixed_offsets={self.fixed_offsets}, flip={self.flip!r}, "
            f"mirror={len(self.mirror)} classes, randaugment={self.randaugment}, random_erasing={self.random_erasing}, "
            f"crop_first={self.crop_first})"
        )


class EvalTransform:
    """Evaluation clip transform: resize (int shorter side or ``[H, W]``), then one of ``num_crops`` square crops.

    ``__call__(video, *, crop_index=0, num_crops=1)``; the crops of a resized ``H x W`` frame (:meth:`crop_offsets`):

    * ``num_crops=1``: the centre crop, ``((H - crop) // 2, (W - crop) // 2)`` (mmaction2 ``CenterCrop``; TSM's
      torchvision ``CenterCrop`` rounds half-way margins to even, one pixel apart when a margin is 3 mod 4).
    * ``num_crops=3``: TSM's ``GroupFullResSample`` (``ops/transforms.py``, the "3 crops" of its ``test_models.py``),
      along the longer side: with ``step = (long - crop) // 4``, the crops start at ``0, 4 * step, 2 * step`` (in
      that order: left, right, centre, as TSM and mmaction2's ``ThreeCrop``) and sit at ``2 * ((short - crop) // 4)``
      on the shorter side. The far crop is flush with the edge only when ``long - crop`` is a multiple of 4 (the
      official 240 x 320 frames: 0, 96, 48; at 256 x 341 the right crop starts at 116, one pixel short of the edge).
      mmaction2's ``ThreeCrop`` (``processing.py``) needs the crop to span the shorter side and uses
      ``step = (long - crop) // 2`` (0, 2 step, step): the same except when ``long - crop`` is 2 or 3 mod 4.
    * other ``num_crops``: ours, evenly spaced along the longer side from its start to its end (spatial order),
      centred on the shorter side.
    """

    def __init__(self, *, resize: Size, crop_size: int) -> None:
        self.resize = _check_size(resize, "resize")
        if not isinstance(crop_size, int) or crop_size < 1:
            raise ValueError(f"crop_size must be a positive int, got {crop_size!r}")
        short = self.resize if isinstance(self.resize, int) else min(self.resize)
        if crop_size > short:
            raise ValueError(f"crop_size ({crop_size}) must not exceed the resized frame ({self.resize})")
        self.crop_size = crop_size

    def crop_offsets(self, height: int, width: int, num_crops: int) -> list[tuple[int, int]]:
        """``(top, left)`` of the ``num_crops`` crops of a resized ``height x width`` frame, in crop-index order."""
        if num_crops < 1:
            raise ValueError(f"num_crops must be >= 1, got {num_crops}")
        size = self.crop_size
        if size > min(height, width):
            raise ValueError(f"crop_size ({size}) is bigger than the resized frame ({height} x {width})")
        along_width = width >= height
        long_margin = (width if along_width else height) - size
        short_margin = (height if along_width else width) - size
        if num_crops == 1:
            starts, across = [long_margin // 2], short_margin // 2
        elif num_crops == 3:  # TSM GroupFullResSample: left, right, centre
            step = long_margin // 4
            starts, across = [0, 4 * step, 2 * step], 2 * (short_margin // 4)
        else:
            starts, across = [i * long_margin // (num_crops - 1) for i in range(num_crops)], short_margin // 2
        return [(across, s) if along_width else (s, across) for s in starts]

    def __call__(self, video: torch.Tensor, *, crop_index: int = 0, num_crops: int = 1) -> torch.Tensor:
        if video.ndim != 4 or video.numel() == 0:
            raise ValueError(f"EvalTransform expects a non-empty clip (C, T, H, W), got shape {tuple(video.shape)}")
        if num_crops < 1:
            raise ValueError(f"num_crops must be >= 1, got {num_crops}")
        if not 0 <= crop_index < num_crops:
            raise ValueError(f"crop_index must be in [0, {num_crops}), got {crop_index}")
        video = resize(video, self.resize)
        _, _, h, w = video.shape
        top, left = self.crop_offsets(h, w, num_crops)[crop_index]
        return crop(video, top, left, self.crop_size).contiguous()

    def __repr__(self) -> str:
        return f"EvalTransform(resize={self.resize}, crop_size={self.crop_size})"


def normalize(video: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, T, H, W) in [0, 255] -> float, ``(x / 255 - mean) / std`` per channel."""
    video = video.float().div_(255.0)
    shape = (1, -1, 1, 1, 1)
    return video.sub_(mean.view(shape)).div_(std.view(shape))
