"""Convolutional space-time mixers with the common mixer signature ``(in_channels, out_channels, stride)``."""

from __future__ import annotations

from torch import nn


class SpatialConv(nn.Conv3d):
    """A 2D ``k x k`` convolution applied to every frame: Conv3d with kernel (1, k, k); time is never mixed."""

    def __init__(self, *, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"SpatialConv kernel_size must be odd, got {kernel_size}")
        super().__init__(
            in_channels,
            out_channels,
            kernel_size=(1, kernel_size, kernel_size),
            stride=(1, stride, stride),
            padding=(0, kernel_size // 2, kernel_size // 2),
            bias=False,
        )


class SpaceTimeConv(nn.Conv3d):
    """A full ``kt x k x k`` 3D convolution (the 3D-conv baseline at the RSA positions); stride is spatial only."""

    def __init__(
        self, *, in_channels: int, out_channels: int, stride: int = 1, kernel_size: tuple[int, int, int] = (3, 3, 3)
    ) -> None:
        if any(k % 2 == 0 for k in kernel_size):
            raise ValueError(f"SpaceTimeConv kernel_size must be odd, got {tuple(kernel_size)}")
        super().__init__(
            in_channels,
            out_channels,
            kernel_size=tuple(kernel_size),
            stride=(1, stride, stride),
            padding=tuple(k // 2 for k in kernel_size),
            bias=False,
        )
