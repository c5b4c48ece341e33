"""What the network sees: a batch of normalised training clips drawn back as RGB frames, one clip per row.

Clips are ``(B, C, T, H, W)`` floats normalised as :func:`rsa_lightning.data.transforms.normalize` does on the device
(``(x / 255 - mean) / std`` per RGB channel, ``mean`` and ``std`` from the data config); :func:`denormalize` inverts
that. Each row is titled with the clip's class name and whether the training transform flipped it (the batch's
``"flipped"`` field, :class:`rsa_lightning.data.dataset.VideoDataset`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from matplotlib.figure import Figure

from rsa_lightning.visualization.figures import new_figure

FRAME_INCHES = 1.1  # side of one frame in the grid (110 px at 100 dpi)
MAX_CLIPS = 4
MAX_FRAMES = 8


def denormalize(video: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised ``(B, C, T, H, W)`` clips (C = 3, RGB) -> ``(B, T, H, W, 3)`` uint8 RGB frames:
    ``round(255 * (x * std + mean))`` clipped to [0, 255]. Raises ``ValueError`` for another shape."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"expected normalised RGB clips (B, 3, T, H, W), got shape {tuple(video.shape)}")
    video = video.detach().float().cpu()
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1, 1)
    rgb = (video * std_t + mean_t).mul(255.0).round().clamp(0, 255).to(torch.uint8)  # (B, C, T, H, W)
    return rgb.permute(0, 2, 3, 4, 1).numpy()


def frame_indices(num_frames: int, shown: int) -> list[int]:
    """``shown`` frame indices spread evenly over ``num_frames`` (all of them when there are no more)."""
    if num_frames <= shown:
        return list(range(num_frames))
    return [round(i * (num_frames - 1) / (shown - 1)) for i in range(shown)] if shown > 1 else [0]


def clip_grid_figure(
    video: torch.Tensor,
    labels: Sequence[int],
    class_names: Sequence[str],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    flipped: Optional[Sequence[bool]] = None,
    max_clips: int = MAX_CLIPS,
    max_frames: int = MAX_FRAMES,
    title: str = "Training clips as the network sees them (after augmentation)",
) -> Figure:
    """The first ``max_clips`` clips of ``video`` (normalised ``(B, C, T, H, W)``) as rows of up to ``max_frames``
    frames (evenly spread over T, numbered), each row titled ``"<class name> [label] - flipped / not flipped"``
    (``flipped`` None: "flip not recorded"). ``labels``: (B,) class ids; ``class_names``: names by id (ids are shown
    when a label has no name)."""
    frames = denormalize(video[:max_clips], mean, std)  # (b, T, H, W, 3)
    clips, num_frames, height, width, _ = frames.shape
    shown = frame_indices(num_frames, max_frames)
    frame_w = FRAME_INCHES
    frame_h = FRAME_INCHES * height / width
    row_h = frame_h + 0.35  # a row: its title, then the frames
    fig_w = 0.2 + frame_w * len(shown) + 0.05 * (len(shown) - 1) + 0.2
    fig_h = 0.45 + row_h * clips + 0.1
    figure = new_figure(fig_w, fig_h)
    figure.text(0.2 / fig_w, 1 - 0.12 / fig_h, title, fontsize=9, va="top")
    for r in range(clips):
        label = int(labels[r])
        name = class_names[label] if 0 <= label < len(class_names) else f"class {label}"
        flip = "flip not recorded" if flipped is None else ("flipped" if bool(flipped[r]) else "not flipped")
        top = 0.45 + r * row_h  # inches from the top of the figure
        figure.text(0.2 / fig_w, 1 - (top + 0.05) / fig_h, f"{name} [{label}] - {flip}", fontsize=8, va="top")
        for c, t in enumerate(shown):
            left = 0.2 + c * (frame_w + 0.05)
            bottom = fig_h - (top + 0.3 + frame_h)
            ax = figure.add_axes((left / fig_w, bottom / fig_h, frame_w / fig_w, frame_h / fig_h))
            ax.imshow(frames[r, t], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == clips - 1:
                ax.set_xlabel(f"frame {t}", fontsize=7)
    return figure
