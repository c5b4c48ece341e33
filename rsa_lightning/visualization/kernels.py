"""Pictures of the dynamic kernels of RSA layers (Kim et al., NeurIPS 2021, arXiv 2111.01673).

For a query position, an RSA layer aggregates its local ``kt x kh x kw`` window with one weight per window offset and
head, kappa_h = H2^T kappa_latent (:meth:`RelationalSelfAttention.effective_kernels`): the basic kernel kappa^V
(from the query alone, the same pattern wherever the query looks alike), the relational kernel kappa^R (from the
query's correlations with the keys of its window: it follows the content, e.g. a moving object) and their sum, the
kernel the layer applies. :func:`render_kernels` draws them as ``kt`` small heat maps over ``kh x kw`` per head, under
the input frames of the window with the window outlined, each kernel on its own symmetric colour scale
``[-a, a]`` (a diverging map: red positive, blue negative, white zero).

Positions are given in pixels of the network's input clip ``(t, y, x)`` (frame, row, column of the clip after the
evaluation transform) and mapped to a cell of the layer's input feature map (``y_cell = floor(y * H' / H)``, the
stem and the stages before the layer having reduced H to H'; time is mapped the same way, and is not reduced by
the TSN-style networks here). A cell covers ``H / H'`` input pixels per side; the outlined window covers
``kh x kw`` cells, which is where the layer looks, not its whole receptive field in the input.

Used by ``python -m rsa_lightning.tools.visualize_kernels`` and by the
:class:`~rsa_lightning.callbacks.kernel_images.KernelImages` callback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from rsa_lightning.errors import ConfigError
from rsa_lightning.layers.rsa import RelationalSelfAttention
from rsa_lightning.visualization.figures import new_figure

log = logging.getLogger(__name__)

KIND_TITLES = {
    "basic": "basic kernel κ^V",
    "relational": "relational kernel κ^R",
    "combined": "combined κ^V + κ^R",
}
AUTO = "auto"
GAP = 1  # blank cells between kernel tiles
FRAME_GAP = 4  # blank pixels between frames
WINDOW_COLOUR = "#ffd400"
QUERY_COLOUR = "#ff2d2d"
CELL_INCHES = 0.075  # size of one kernel cell in the figure (a 56-pixel frame of rsa_tiny at about its size)
DIVERGING = colormaps["RdBu_r"].with_extremes(bad="white")  # NaN (between tiles) is white


@dataclass
class KernelPicture:
    """What one kernel figure shows.

    Attributes:
        frames: the network's input clip, uint8 (T, H, W, 3).
        kernels: ``{"basic" | "relational" | "combined": (nh, kt, kh, kw) float array}`` (the terms of the layer's
            kernel type, :meth:`RelationalSelfAttention.effective_kernels`).
        layer: module path of the layer (``layer1.0.conv2``).
        cell: query position (t, y, x) at the layer input's resolution.
        scale: input-clip pixels per layer cell along (t, y, x).
        title: a first line for the figure (e.g. the video id and the epoch).
    """

    frames: np.ndarray
    kernels: dict[str, np.ndarray]
    layer: str
    cell: tuple[int, int, int]
    scale: tuple[float, float, float]
    title: str = ""

    @property
    def pixel(self) -> tuple[int, int, int]:
        """The query cell's centre in input-clip pixels (t, y, x)."""
        return tuple(int((c + 0.5) * s) for c, s in zip(self.cell, self.scale))


def rsa_layers(net: nn.Module) -> dict[str, RelationalSelfAttention]:
    """``{module path: layer}`` of every RSA layer of ``net``, in the order of ``net.named_modules()``."""
    return {name: m for name, m in net.named_modules() if isinstance(m, RelationalSelfAttention)}


def select_layer(net: nn.Module, name: Optional[str]) -> tuple[str, RelationalSelfAttention]:
    """The RSA layer named ``name`` (a module path such as ``layer2.0.conv2``); ``None`` or ``"auto"``: the first.

    Raises ``ConfigError``: ``net`` has no RSA layer, or ``name`` is not one of them (the message lists them).
    """
    layers = rsa_layers(net)
    if not layers:
        raise ConfigError(
            f"the model ({type(net).__name__}) has no RSA layer, so it has no relational kernel to picture: use a "
            "checkpoint of an RSA model (model=rsa_tiny, rsa_r50)"
        )
    if name is None or str(name) == AUTO:
        return next(iter(layers.items()))
    if str(name) not in layers:
        raise ConfigError(f"layer={name} is not an RSA layer of the model; its RSA layers: {', '.join(layers)}")
    return str(name), layers[str(name)]


class _LayerInput(Exception):
    """Carries the input of a layer out of a forward pass stopped at that layer."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__("layer input captured")
        self.value = value


def layer_input(net: nn.Module, layer: nn.Module, clip: torch.Tensor) -> torch.Tensor:
    """The input (B, C, T', H', W') that ``layer`` receives when ``net`` runs on ``clip`` (B, 3, T, H, W).

    The forward pass stops at the layer (nothing after it runs). Call it under ``torch.no_grad()`` and with ``net``
    in eval mode: in training mode the BatchNorm layers before it would update their running statistics.
    Raises ``ValueError`` when the forward pass never reaches ``layer``.
    """

    def hook(module: nn.Module, args: tuple) -> None:
        raise _LayerInput(args[0])

    handle = layer.register_forward_pre_hook(hook)
    try:
        net(clip)
    except _LayerInput as captured:
        return captured.value
    finally:
        handle.remove()
    raise ValueError(f"the forward pass of {type(net).__name__} never reached the layer {type(layer).__name__}")


def motion_energy(features: torch.Tensor) -> torch.Tensor:
    """Motion energy of a feature map (C, T, H, W) -> (T, H, W): at (t, y, x), the squared difference of the
    features to the previous frame plus the one to the next frame, summed over channels (the missing term is left
    out at the first and last frame). Large where the content changes over time, e.g. on a moving object's edges."""
    diff = (features[:, 1:] - features[:, :-1]).pow(2).sum(dim=0)  # (T - 1, H, W): frame t+1 against t
    energy = torch.zeros(features.shape[1:], dtype=diff.dtype, device=diff.device)
    energy[1:] += diff
    energy[:-1] += diff
    return energy


def _cell(position: Sequence[int], clip_shape: Sequence[int], feature_shape: Sequence[int]) -> tuple[int, int, int]:
    """A clip pixel (t, y, x) -> its cell of a (T', H', W') feature map; ConfigError outside the clip."""
    if len(position) != 3 or not all(0 <= int(p) < n for p, n in zip(position, clip_shape)):
        raise ConfigError(
            f"position {tuple(int(p) for p in position)} is outside the clip: give (t, y, x) with t < "
            f"{clip_shape[0]} frames, y < {clip_shape[1]} and x < {clip_shape[2]} pixels (the network's input)"
        )
    return tuple(int(p) * f // n for p, f, n in zip(position, feature_shape, clip_shape))


def clip_title(
    net: nn.Module,
    clip: torch.Tensor,
    video_id: str,
    label: int,
    class_names: Sequence[str],
    suffix: str = "",
) -> str:
    """First line of a kernel figure: ``video_id``, its class (``label`` < 0: unlabelled, left out), the network's
    top-1 class on ``clip`` (1, 3, T, H, W; normalised as in training; ``net`` in eval mode) with its softmax
    probability, then ``suffix`` (e.g. the checkpoint, the epoch)."""
    with torch.no_grad():
        probabilities = net(clip).float().softmax(dim=-1)[0]  # (K,)
    confidence, predicted = probabilities.max(dim=0)

    def name(index: int) -> str:
        return class_names[index] if 0 <= index < len(class_names) else f"class {index}"

    parts = [video_id]
    if label >= 0:
        parts.append(f"class: {name(label)}")
    parts.append(f"predicted: {name(int(predicted))} ({float(confidence):.0%})")
    if suffix:
        parts.append(suffix)
    return ",  ".join(parts)


@torch.no_grad()
def kernel_pictures(
    net: nn.Module,
    layer_name: Optional[str],
    clip: torch.Tensor,
    frames: np.ndarray,
    positions: Optional[Sequence[Sequence[int]]] = None,
    *,
    track: bool = False,
    title: str = "",
) -> list[KernelPicture]:
    """Kernel pictures of one clip at the RSA layer ``layer_name`` (None / "auto": the first).

    Args:
        net: the network, in eval mode (see :func:`layer_input`).
        layer_name: module path of an RSA layer of ``net``.
        clip: the network's input (1, 3, T, H, W), normalised as in training.
        frames: the same clip as uint8 (T, H, W, 3), for the figure.
        positions: query positions in clip pixels (t, y, x). None: the position of largest
            :func:`motion_energy` of the layer's input at its resolution (one picture; with ``track``, one per
            frame: each frame's position of largest motion energy, which follows a moving object).
        track: with ``positions=None``, one picture per frame (see above).
        title: first line of every figure.

    Raises ``ConfigError`` for an unknown layer, a network without RSA layers or a position outside the clip.
    """
    name, layer = select_layer(net, layer_name)
    features = layer_input(net, layer, clip)  # (1, C, T', H', W')
    clip_shape, feature_shape = tuple(clip.shape[2:]), tuple(features.shape[2:])
    if positions is None:
        energy = motion_energy(features[0].float())  # (T', H', W')
        if track:
            flat = energy.flatten(1).argmax(dim=1)  # per frame
            cells = [(t, int(i) // feature_shape[2], int(i) % feature_shape[2]) for t, i in enumerate(flat)]
        else:
            cells = [tuple(int(i) for i in np.unravel_index(int(energy.argmax()), feature_shape))]
    else:
        cells = [_cell(p, clip_shape, feature_shape) for p in positions]
    index = torch.tensor([(0, *c) for c in cells], device=features.device)
    kernels = layer.effective_kernels(features, index)  # kind -> (N, nh, kt, kh, kw)
    scale = tuple(n / f for n, f in zip(clip_shape, feature_shape))
    return [
        KernelPicture(
            frames=frames,
            kernels={kind: k[i].float().cpu().numpy() for kind, k in kernels.items()},
            layer=name,
            cell=cell,
            scale=scale,
            title=title,
        )
        for i, cell in enumerate(cells)
    ]


def _frame_strip(picture: KernelPicture, kt: int) -> np.ndarray:
    """The ``kt`` input frames of the window side by side (grey where the window leaves the clip), (H, W', 3)."""
    frames = picture.frames
    num_frames, height, width = frames.shape[:3]
    strip = np.full((height, kt * (width + FRAME_GAP) - FRAME_GAP, 3), 255, np.uint8)
    for a in range(kt):
        t = round((picture.cell[0] + a - kt // 2 + 0.5) * picture.scale[0] - 0.5)
        tile = frames[t] if 0 <= t < num_frames else np.full((height, width, 3), 128, np.uint8)
        strip[:, a * (width + FRAME_GAP) : a * (width + FRAME_GAP) + width] = tile
    return strip


def _kernel_mosaic(kernel: np.ndarray) -> np.ndarray:
    """(nh, kt, kh, kw) -> one (nh * (kh + GAP) - GAP, kt * (kw + GAP) - GAP) image, NaN between the tiles."""
    nh, kt, kh, kw = kernel.shape
    mosaic = np.full((nh * (kh + GAP) - GAP, kt * (kw + GAP) - GAP), np.nan)
    for h in range(nh):
        for a in range(kt):
            mosaic[h * (kh + GAP) : h * (kh + GAP) + kh, a * (kw + GAP) : a * (kw + GAP) + kw] = kernel[h, a]
    return mosaic


def _outline_window(ax, picture: KernelPicture, kt: int, kh: int, kw: int) -> None:
    """Outline the window's cells on every frame of the strip (clipped to the frame) and the query cell."""
    height, width = picture.frames.shape[1:3]
    _, sy, sx = picture.scale
    _, cy, cx = picture.cell
    y0, y1 = max((cy - kh // 2) * sy, 0), min((cy + kh // 2 + 1) * sy, height)
    x0, x1 = max((cx - kw // 2) * sx, 0), min((cx + kw // 2 + 1) * sx, width)
    for a in range(kt):
        offset = a * (width + FRAME_GAP)
        ax.add_patch(
            Rectangle(
                (offset + x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=WINDOW_COLOUR, linewidth=1.2
            )
        )
    centre = (kt // 2) * (width + FRAME_GAP)
    ax.add_patch(
        Rectangle((centre + cx * sx - 0.5, cy * sy - 0.5), sx, sy, fill=False, edgecolor=QUERY_COLOUR, linewidth=1.2)
    )


def render_kernels(picture: KernelPicture) -> Figure:
    """The figure of one :class:`KernelPicture`: per kernel kind (basic, relational, combined) one column block with
    the ``kt`` input frames of the window on top (window outlined in yellow, query cell in red) and under them the
    kernel of every head (rows) at every temporal offset (columns, under their frame) as a ``kh x kw`` heat map on a
    symmetric diverging colour scale of its own (``[-a, a]``, ``a`` its largest absolute weight). The query's own
    offset is the centre cell of the middle column."""
    kinds = list(picture.kernels)
    nh, kt, kh, kw = picture.kernels[kinds[0]].shape
    strip = _frame_strip(picture, kt)
    mosaics = {kind: _kernel_mosaic(picture.kernels[kind]) for kind in kinds}
    # Layout in inches, fixed (no layout engine: a constrained layout doubled the drawing time).
    image_width = CELL_INCHES * mosaics[kinds[0]].shape[1]  # of the mosaic and of the frame strip above it
    mosaic_height = CELL_INCHES * mosaics[kinds[0]].shape[0]
    strip_height = image_width * strip.shape[0] / strip.shape[1]
    left, block, colorbar_width = 0.6, image_width + 0.75, 0.1
    bottom_margin, between, title_height, top_margin = 0.45, 0.3, 0.3, 0.6
    width = left + len(kinds) * block
    height = bottom_margin + mosaic_height + between + strip_height + title_height + top_margin
    figure = new_figure(width, height)

    def axes(x0: float, y0: float, w: float, h: float):
        return figure.add_axes((x0 / width, y0 / height, w / width, h / height))

    t, y, x = picture.pixel
    lines = [picture.title] if picture.title else []
    lines.append(f"{picture.layer}: query at frame {t}, pixel (y {y}, x {x}) = cell {picture.cell} of the layer input")
    lines.append(f"window {kt}x{kh}x{kw} cells of {picture.scale[1]:g} px, {nh} heads; each kernel on its own scale")
    figure.text(0.5, 1 - 0.08 / height, "\n".join(lines), ha="center", va="top", fontsize=8)
    frame_width = picture.frames.shape[2]
    first_frame = round((picture.cell[0] - kt // 2 + 0.5) * picture.scale[0] - 0.5)
    for column, kind in enumerate(kinds):
        x0 = left + column * block
        top = axes(x0, bottom_margin + mosaic_height + between, image_width, strip_height)
        top.imshow(strip, interpolation="nearest", aspect="auto")
        _outline_window(top, picture, kt, kh, kw)
        top.set_xticks([a * (frame_width + FRAME_GAP) + frame_width / 2 for a in range(kt)])
        top.set_xticklabels([f"t={first_frame + a}" for a in range(kt)], fontsize=6)
        top.set_yticks([])
        top.set_title(KIND_TITLES.get(kind, kind), fontsize=9)
        bottom = axes(x0, bottom_margin, image_width, mosaic_height)
        bound = float(np.nanmax(np.abs(mosaics[kind]))) or 1.0
        image = bottom.imshow(
            mosaics[kind], cmap=DIVERGING, vmin=-bound, vmax=bound, interpolation="nearest", aspect="auto"
        )
        bottom.set_xticks([a * (kw + GAP) + (kw - 1) / 2 for a in range(kt)])
        bottom.set_xticklabels([f"{a - kt // 2:+d}" for a in range(kt)], fontsize=6)
        bottom.set_xlabel("temporal offset", fontsize=7, labelpad=1)
        bottom.set_yticks([h * (kh + GAP) + (kh - 1) / 2 for h in range(nh)])
        bottom.set_yticklabels([f"head {h}" for h in range(nh)] if column == 0 else [], fontsize=6)
        for ax in (top, bottom):
            ax.tick_params(length=0, pad=1)
            for spine in ax.spines.values():
                spine.set_visible(False)
        bar = axes(x0 + image_width + 0.08, bottom_margin + mosaic_height / 4, colorbar_width, mosaic_height / 2)
        figure.colorbar(image, cax=bar).ax.tick_params(labelsize=6, length=2)
    return figure


def write_gif(images: Sequence[np.ndarray], path: Path | str, frame_ms: int = 500) -> Path:
    """Writes uint8 (H, W, 3) ``images`` (all the same size) as an animated GIF looping forever, ``frame_ms``
    milliseconds per image (Pillow), and returns the path."""
    from PIL import Image

    if not images:
        raise ValueError("write_gif needs at least one image")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first, *rest = [Image.fromarray(image) for image in images]
    first.save(path, format="GIF", save_all=True, append_images=rest, duration=frame_ms, loop=0)
    return path
