"""A grid of the first training batch's clips, as the network sees them, saved and logged once at the start."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

log = logging.getLogger(__name__)

FILE = Path("figures") / "train_clips.png"
KEY = "train/clips"


class ClipGrid(Callback):
    """Draws the first ``max_clips`` clips of the first training batch of a ``fit`` (up to ``max_frames`` frames
    each, with class name and flip; :func:`rsa_lightning.visualization.clips.clip_grid_figure`) to
    ``<run>/figures/train_clips.png`` and logs it to the image loggers as ``train/clips``.

    Args:
        mean / std: the RGB normalisation of the clips (``data.mean`` / ``data.std``), inverted to draw them.
        max_clips / max_frames: rows and frames per row of the grid (>= 1).

    It does not change training: it reads the batch the training loop hands to ``on_train_batch_start`` (already on
    the device and normalised, before mixup, which happens in the training step), copies it to the CPU and draws no
    random number; no extra sample is read from the loader. Global rank zero only, once per ``fit`` (a resumed run
    draws its first batch). matplotlib is imported at the first batch: a run without the callback never loads it.
    """

    def __init__(
        self,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        max_clips: int = 4,
        max_frames: int = 8,
    ) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"callbacks.clip_grid.mean and std need 3 values (RGB), got {list(mean)}, {list(std)}")
        if max_clips < 1 or max_frames < 1:
            raise ValueError(
                f"callbacks.clip_grid.max_clips and max_frames must be >= 1, got {max_clips}, {max_frames}"
            )
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        self.max_clips = max_clips
        self.max_frames = max_frames
        self._done = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._done = False

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._done:
            return
        self._done = True
        if not trainer.is_global_zero:
            return
        if not isinstance(batch, dict) or "video" not in batch or "label" not in batch:
            log.warning("clip grid: the training batch has no 'video' and 'label' fields; nothing drawn")
            return
        from rsa_lightning.visualization.clips import clip_grid_figure
        from rsa_lightning.visualization.figures import figure_to_array, image_loggers, log_images, save_figure

        flipped = batch.get("flipped")
        figure = clip_grid_figure(
            batch["video"],
            batch["label"].tolist(),
            list(getattr(pl_module, "class_names", []) or []),
            mean=self.mean,
            std=self.std,
            flipped=None if flipped is None else flipped.tolist(),
            max_clips=self.max_clips,
            max_frames=self.max_frames,
        )
        path = save_figure(figure, Path(trainer.default_root_dir) / FILE)
        if image_loggers(trainer.loggers):
            log_images(trainer.loggers, {KEY: figure_to_array(figure)}, step=trainer.global_step)
        log.info("training clips of the first batch: %s", path)
