"""Clip transforms on uint8 video tensors of layout (C, T, H, W).

Clips stay uint8 through the data loader (4x less to copy between processes); conversion to float and
mean/std normalisation happen on the device, in :meth:`VideoDataModule.on_after_batch_transfer`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_short_side(video: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (C, T, H, W) uint8 frames so that the shorter side is ``size`` (bilinear, antialiased)."""
    _, _, h, w = video.shape
    if min(h, w) == size:
        return video
    scale = size / min(h, w)
    new_hw = (max(size, round(h * scale)), max(size, round(w * scale)))
    frames = video.permute(1, 0, 2, 3).float()  # (T, C, H, W)
    frames = F.interpolate(frames, size=new_hw, mode="bilinear", align_corners=False, antialias=True)
    return frames.round_().clamp_(0, 255).to(torch.uint8).permute(1, 0, 2, 3)


def crop(video: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    return video[:, :, top : top + size, left : left + size]


def center_crop(video: torch.Tensor, size: int) -> torch.Tensor:
    _, _, h, w = video.shape
    return crop(video, (h - size) // 2, (w - size) // 2, size)


def random_crop(video: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The same random ``size`` x ``size`` window in every frame."""
    _, _, h, w = video.shape
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    return crop(video, top, left, size)


class ClipTransform:
    """Resize the short side to ``scale_size``, then crop ``crop_size`` (random when training, centre otherwise)."""

    def __init__(self, *, scale_size: int, crop_size: int, training: bool) -> None:
        if crop_size > scale_size:
            raise ValueError(f"data.crop_size ({crop_size}) must not exceed data.scale_size ({scale_size})")
        self.scale_size = scale_size
        self.crop_size = crop_size
        self.training = training

    def __call__(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        video = resize_short_side(video, self.scale_size)
        if self.training:
            return random_crop(video, self.crop_size, generator)
        return center_crop(video, self.crop_size)

    def __repr__(self) -> str:
        return f"ClipTransform(scale_size={self.scale_size}, crop_size={self.crop_size}, training={self.training})"


def normalize(video: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, T, H, W) in [0, 255] -> float, ``(x / 255 - mean) / std`` per channel."""
    video = video.float().div_(255.0)
    shape = (1, -1, 1, 1, 1)
    return video.sub_(mean.view(shape)).div_(std.view(shape))
