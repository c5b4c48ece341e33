"""Temporal shift (TSM; J. Lin, C. Gan, S. Han, "TSM: Temporal Shift Module for Efficient Video Understanding",
ICCV 2019, arXiv 1811.08383): a zero-parameter, zero-MAC way to let a frame-wise network exchange information
between neighbouring frames.

For a clip (B, C, T, H, W) and ``fold = C // fold_div`` (fold_div 8 in TSM: 1/8 of the channels each way):
channels [0, fold) of frame t take the values of frame t + 1 (shifted towards the past), channels [fold, 2 fold) take
the values of frame t - 1 (towards the future), the rest stay. Frames shifted in from outside the clip are zeros.
This is TSM's offline, bidirectional shift; inserted on the residual branch of every block ("residual shift"), before
its first convolution.
"""

from __future__ import annotations

import torch
from torch import nn


class TemporalShift(nn.Module):
    """Shift ``1 / fold_div`` of the channels one frame back in time and another ``1 / fold_div`` one frame forward.

    Args:
        channels: input channels C (checked in forward); ``C // fold_div`` channels move each way.
        fold_div: 8 in TSM.
    """

    def __init__(self, *, channels: int, fold_div: int = 8) -> None:
        super().__init__()
        if fold_div < 2:
            raise ValueError(f"TemporalShift fold_div must be >= 2 (two folds move), got {fold_div}")
        if channels // fold_div == 0:
            raise ValueError(f"TemporalShift: {channels} channels / fold_div {fold_div} leaves no channel to shift")
        self.channels = channels
        self.fold_div = fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.channels:
            raise ValueError(f"TemporalShift expects (B, {self.channels}, T, H, W), got {tuple(x.shape)}")
        fold = self.channels // self.fold_div
        out = torch.zeros_like(x)
        out[:, :fold, :-1] = x[:, :fold, 1:]  # frame t sees frame t + 1
        out[:, fold : 2 * fold, 1:] = x[:, fold : 2 * fold, :-1]  # frame t sees frame t - 1
        out[:, 2 * fold :] = x[:, 2 * fold :]
        return out

    def extra_repr(self) -> str:
        return f"channels={self.channels}, fold_div={self.fold_div}"
