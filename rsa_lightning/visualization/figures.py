"""Headless figures: create, render to an RGB array, save as PNG, log as an image to the run's loggers.

Figures are built with :class:`matplotlib.figure.Figure` and rendered by the Agg canvas, never through ``pyplot``:
no display is needed (a cluster node, CI), no global figure registry grows during a long run, and the backend chosen
by the user's ``matplotlibrc`` is irrelevant (matplotlib docs, "Embedding in a web application server").

Loggers (Lightning ``trainer.loggers``): TensorBoard receives ``add_image(key, image, step, dataformats="HWC")``
(an ``images`` entry of the event file); W&B receives ``log_image(key, [image], step)`` (a ``wandb.Image``, stored
under the run's ``files/media/images``); the CSV logger takes no images and is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

log = logging.getLogger(__name__)

DPI = 100


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches (at :data:`DPI` dots per inch) with an Agg canvas attached."""
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def figure_to_array(figure: Figure) -> np.ndarray:
    """The rendered figure as an ``(H, W, 3)`` uint8 RGB array (H, W in pixels: inches x :data:`DPI`)."""
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(figure: Figure, path: Path | str) -> Path:
    """Writes ``figure`` as a PNG to ``path`` (parent folders created) and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI)
    return path


def image_loggers(loggers: Iterable[Any]) -> list[Any]:
    """The loggers among ``loggers`` that take images: Lightning's ``TensorBoardLogger`` and ``WandbLogger``."""
    return [logger for logger in loggers if type(logger).__name__ in ("TensorBoardLogger", "WandbLogger")]


def log_images(loggers: Iterable[Any], images: Mapping[str, np.ndarray], step: Optional[int]) -> int:
    """Logs each ``{key: (H, W, 3) uint8 image}`` to every image logger among ``loggers`` at ``step`` (the trainer's
    ``global_step``) and returns the number of logger calls. Keys follow the metric convention ``split/name``
    (e.g. ``val/confusion``). A logger that fails is reported once per call and skipped: a picture never stops a run.
    """
    calls = 0
    for logger in image_loggers(loggers):
        kind = type(logger).__name__
        for key, image in images.items():
            try:
                if kind == "TensorBoardLogger":
                    logger.experiment.add_image(key, image, global_step=step, dataformats="HWC")
                else:
                    logger.log_image(key=key, images=[image], step=step)
                calls += 1
            except Exception as err:  # noqa: BLE001  (a dashboard problem must not end a training run)
                log.warning("could not log image %s to %s: %s", key, kind, err)
                break
    return calls
