"""Evaluation plots at the end of validation and test: PNGs next to the confusion CSV, and images on the dashboards."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

log = logging.getLogger(__name__)


class EvalPlots(Callback):
    """Draws the evaluation plots of :mod:`rsa_lightning.visualization.evaluation_plots` from the confusion matrix the
    module wrote at the end of a validation or test epoch (``pl_module.confusions[split]``: the CSV path and the
    matrix, :class:`rsa_lightning.modules.VideoClassifier`), saves them next to the CSV
    (``<run>/confusion/<split>_epoch<NNN>_matrix.png``, ``_direction.png``, ``_per_class.png``,
    ``_top_confusions.png`` and ``_top_confusions.csv``) and logs them to the image loggers (TensorBoard, W&B) as
    ``<split>/confusion``, ``<split>/direction``, ``<split>/per_class``, ``<split>/top_confusions`` at
    ``trainer.global_step``.

    Args:
        every_n_epochs: validation plots every ``n`` epochs (epochs ``n, 2n, ...``, counted from 1) and at the last
            epoch (``max_epochs``); test plots every time. Must be >= 1; drop the callback (``~callbacks.eval_plots``)
            to turn the plots off.
        max_classes: the matrix shows every class up to this many, else the classes in the most confusions.
        per_class_shown: above ``2 x`` this many classes the per-class chart shows the lowest and highest this many.
        num_top: rows of the top-confusions table and CSV.

    Runs on global rank zero only (the module keeps ``confusions`` there), after the module's epoch end
    (``on_validation_end`` / ``on_test_end``); nothing in the sanity check, for a split without labels or with
    non-finite scores (the module writes no confusion matrix then). Each matrix is drawn once (taken from the module).
    matplotlib is imported at the first plot: a run without the callback never loads it.
    """

    def __init__(
        self,
        *,
        every_n_epochs: int = 1,
        max_classes: int = 30,
        per_class_shown: int = 20,
        num_top: int = 20,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(
                f"callbacks.eval_plots.every_n_epochs must be >= 1, got {every_n_epochs} (drop the callback with "
                "~callbacks.eval_plots to turn the plots off)"
            )
        for name, value in (("max_classes", max_classes), ("per_class_shown", per_class_shown), ("num_top", num_top)):
            if value < 1:
                raise ValueError(f"callbacks.eval_plots.{name} must be >= 1, got {value}")
        self.every_n_epochs = every_n_epochs
        self.options = {"max_classes": max_classes, "per_class_shown": per_class_shown, "num_top": num_top}

    def _due(self, trainer: pl.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        return epoch % self.every_n_epochs == 0 or last

    def _plot(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        confusions = getattr(pl_module, "confusions", None)
        entry = confusions.pop(split, None) if isinstance(confusions, dict) else None
        if entry is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        from rsa_lightning.visualization.evaluation_plots import PLOT_NAMES, write_evaluation_plots
        from rsa_lightning.visualization.figures import image_loggers, log_images

        path, confusion = entry
        start = time.perf_counter()
        written = write_evaluation_plots(path, confusion, getattr(pl_module, "class_names", []), **self.options)
        images = {f"{split}/{PLOT_NAMES[name]}": plot.image for name, plot in written.items()}
        if images and image_loggers(trainer.loggers):
            log_images(trainer.loggers, images, step=trainer.global_step)
        log.debug(
            "%s evaluation plots: %d in %.2f s next to %s", split, len(written), time.perf_counter() - start, path
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._due(trainer):
            self._plot(trainer, pl_module, "val")
        else:
            getattr(pl_module, "confusions", {}).pop("val", None)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._plot(trainer, pl_module, "test")
