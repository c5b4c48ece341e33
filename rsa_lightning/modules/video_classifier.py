"""The training system: a video network plus loss, metrics, optimiser and schedule."""

from __future__ import annotations

import csv
import functools
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from rsa_lightning.modules.lr_schedule import warmup_cosine_factor
from rsa_lightning.modules.optim import global_batch_size, linear_scaled_lr, param_groups

log = logging.getLogger(__name__)

HEADLINE_METRICS = ("acc1", "acc5", "mean_class_acc")
AUTO_SCALE_LR_KEYS = ("enabled", "base_batch_size")


def accuracy_metrics(num_classes: int) -> MetricCollection:
    """Top-1 / top-5 accuracy, micro-averaged over videos (torchmetrics' default ``average`` is macro), and the mean
    class accuracy ``mean_class_acc`` (per-class top-1 recall averaged over classes, FineGym's headline metric).

    torchmetrics averages ``mean_class_acc`` over the classes that occur among the labels or the predictions: a class
    without videos in the split is left out unless something was predicted as it, in which case it counts as 0. On a
    split that has every class (FineGym's val) it is exactly the mean of the per-class accuracies.
    """
    metrics = {
        "acc1": MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro"),
        "mean_class_acc": MulticlassAccuracy(num_classes=num_classes, top_k=1, average="macro"),
    }
    if num_classes > 5:
        metrics["acc5"] = MulticlassAccuracy(num_classes=num_classes, top_k=5, average="micro")
    # no compute groups: every metric keeps its own state, so one of them can be logged again as the headline
    return MetricCollection(metrics, compute_groups=False)


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy (recall) of every class from a (true, predicted) confusion matrix; NaN for a class without
    videos."""
    support = confusion.sum(dim=1).double()
    return torch.where(support > 0, confusion.diagonal().double() / support.clamp(min=1), math.nan)


def write_confusion_csv(path: Path, confusion: torch.Tensor, class_names: Sequence[str]) -> None:
    """One row per true class, one column per predicted class (video counts), both labelled with the class names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *class_names])
        for name, row in zip(class_names, confusion.tolist()):
            writer.writerow([name, *row])


class VideoClassifier(pl.LightningModule):
    """Classifies clips (B, C, T, H, W) with ``net``; optimised with label-smoothed cross-entropy.

    Args:
        net: the network, (B, 3, T, H, W) normalised clips -> (B, num_classes) logits.
        num_classes: number of classes (for the metrics).
        optimizer: partial optimiser, called with the parameter groups of :func:`param_groups` (its
            ``weight_decay`` applies to weights, never to normalisation parameters or biases).
        label_smoothing: cross-entropy label smoothing.
        warmup_epochs: linear warm-up length (epochs; fractional is fine with ``schedule_interval="step"``).
        warmup_start_factor / min_lr_factor: lr multiplier at the start of warm-up and at the end of the cosine.
        schedule_interval: ``"epoch"`` (the official runs) or ``"step"``.
        compile: ``torch.compile`` the network (when the platform supports it).
        mixup: optional batch augmentation for training steps only, ``(video (B, C, T, H, W), labels (B,)) ->
            (video, soft targets (B, num_classes))`` (e.g. :class:`rsa_lightning.data.augment.MixupCutmix`); the
            loss is then cross-entropy against the soft targets (still label-smoothed) and the training metrics
            use the hard labels.
        auto_scale_lr: linear lr scaling, ``{"enabled": bool, "base_batch_size": int}`` (None: off). When enabled, the
            optimiser's lr is the lr for a global batch of ``base_batch_size`` clips and is multiplied by
            global batch / base_batch_size, the global batch being devices x nodes x per-device batch
            (``datamodule.batch_size``) x ``accumulate_grad_batches``. The global batch and the lr are logged at the
            start of fitting either way. A resumed run keeps the lr of its checkpoint.
        headline_metric: the metric checkpointing and sweeps optimise (``acc1``, ``acc5`` or ``mean_class_acc``), also
            logged as ``val/headline`` and ``test/headline``; the configs take it from ``data.headline_metric``.

    Metrics, per split (``train/``, ``val/``, ``test/``): ``loss``, ``acc1``, ``acc5`` (more than 5 classes) and
    ``mean_class_acc`` (see :func:`accuracy_metrics`). At the end of every validation and test epoch the confusion
    matrix is written (rank zero) to ``<trainer.default_root_dir>/confusion/<split>_epoch<NNN>.csv`` and ``.pt``,
    and a one-line per-class accuracy summary is logged.
    """

    def __init__(
        self,
        *,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        label_smoothing: float = 0.1,
        warmup_epochs: float = 5.0,
        warmup_start_factor: float = 0.001,
        min_lr_factor: float = 0.001,
        schedule_interval: str = "epoch",
        compile: bool = False,
        mixup: Optional[Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = None,
        auto_scale_lr: Optional[dict[str, Any]] = None,
        headline_metric: str = "acc1",
    ) -> None:
        super().__init__()
        if schedule_interval not in ("epoch", "step"):
            raise ValueError(f"schedule_interval must be 'epoch' or 'step', got {schedule_interval!r}")
        if auto_scale_lr is not None:
            unknown = set(auto_scale_lr) - set(AUTO_SCALE_LR_KEYS)
            if unknown or "base_batch_size" not in auto_scale_lr:
                raise ValueError(
                    f"auto_scale_lr takes the keys {AUTO_SCALE_LR_KEYS} (base_batch_size required), got "
                    f"{sorted(auto_scale_lr)}"
                )
            if int(auto_scale_lr["base_batch_size"]) < 1:
                raise ValueError(
                    f"auto_scale_lr.base_batch_size must be positive, got {auto_scale_lr['base_batch_size']}"
                )
        available = HEADLINE_METRICS if num_classes > 5 else tuple(m for m in HEADLINE_METRICS if m != "acc5")
        if headline_metric not in available:
            raise ValueError(
                f"headline_metric must be one of {available} for {num_classes} classes, got {headline_metric!r}"
            )
        self.save_hyperparameters(ignore=["net", "optimizer", "mixup"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.mixup = mixup
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.train_metrics = accuracy_metrics(num_classes).clone(prefix="train/")
        self.val_metrics = accuracy_metrics(num_classes).clone(prefix="val/")
        self.test_metrics = accuracy_metrics(num_classes).clone(prefix="test/")
        self.val_confusion = MulticlassConfusionMatrix(num_classes=num_classes)
        self.test_confusion = MulticlassConfusionMatrix(num_classes=num_classes)
        self.class_names: list[str] = []

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.net(video)

    def setup(self, stage: str) -> None:
        if self.hparams.compile and stage == "fit":
            self.net = torch.compile(self.net)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and getattr(datamodule, "class_names", None):
            self.class_names = list(datamodule.class_names)

    def _step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self(batch["video"])
        labels = batch["label"]
        return self.criterion(logits, labels), logits, labels

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.mixup is None:
            loss, logits, labels = self._step(batch)
        else:
            labels = batch["label"]
            video, targets = self.mixup(batch["video"], labels)  # targets (B, num_classes), rows sum to 1
            logits = self(video)
            loss = self.criterion(logits, targets)
        self.train_loss(loss)
        self.train_metrics.update(logits.detach(), labels)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.val_loss(loss)
        self.val_metrics.update(logits, labels)
        self.val_confusion.update(logits, labels)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/headline", self.val_metrics[self.hparams.headline_metric], on_step=False, on_epoch=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.test_loss(loss)
        self.test_metrics.update(logits, labels)
        self.test_confusion.update(logits, labels)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)
        self.log("test/headline", self.test_metrics[self.hparams.headline_metric], on_step=False, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        self._report_confusion("val", self.val_confusion)

    def on_test_epoch_end(self) -> None:
        self._report_confusion("test", self.test_confusion)

    def _report_confusion(self, split: str, metric: MulticlassConfusionMatrix) -> None:
        """Compute (all ranks: it syncs under DDP), reset, and on rank zero save the matrix and log a summary."""
        if not metric.update_called:
            return
        confusion = metric.compute().cpu()  # (num_classes true, num_classes predicted) video counts
        metric.reset()
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        num_classes = confusion.shape[0]
        names = self.class_names if len(self.class_names) == num_classes else [str(i) for i in range(num_classes)]
        path = Path(self.trainer.default_root_dir) / "confusion" / f"{split}_epoch{self.current_epoch:03d}.csv"
        write_confusion_csv(path, confusion, names)
        torch.save({"confusion": confusion, "class_names": list(names)}, path.with_suffix(".pt"))
        accuracy = per_class_accuracy(confusion)
        ranked = sorted(
            (float(a), name) for a, name in zip(accuracy, names) if not math.isnan(a)
        )  # classes with videos
        if not ranked:
            return
        log.info(
            "%s epoch %d: per-class top-1 accuracy over %d/%d classes with videos: mean %.2f%%, lowest %s, "
            "highest %s %.1f%%; confusion matrix %s",
            split,
            self.current_epoch,
            len(ranked),
            num_classes,
            100 * sum(a for a, _ in ranked) / len(ranked),
            ", ".join(f"{name} {100 * a:.1f}%" for a, name in ranked[:5]),
            ranked[-1][1],
            100 * ranked[-1][0],
            path,
        )

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        logits = self(batch["video"])
        out = {"video_id": batch["video_id"], "label": batch["label"], "probs": logits.softmax(dim=-1)}
        for key in ("view", "replaced"):
            if key in batch:
                out[key] = batch[key]
        return out

    def _scale_lr(self, optimizer: torch.optim.Optimizer) -> None:
        """Apply ``auto_scale_lr`` to every parameter group; log the global batch and the lr (rank zero)."""
        config = self.hparams.auto_scale_lr
        enabled = config is not None and bool(config.get("enabled", True))
        trainer = self.trainer
        per_device = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
        if per_device is None:
            if enabled:
                raise ValueError(
                    "auto_scale_lr needs the per-device batch size: fit with a datamodule that has a batch_size"
                )
            return
        batch = global_batch_size(
            per_device_batch_size=int(per_device),
            world_size=trainer.world_size,
            accumulate_grad_batches=trainer.accumulate_grad_batches,
        )
        if enabled:
            for group in optimizer.param_groups:
                group["lr"] = linear_scaled_lr(
                    group["lr"], global_batch_size=batch, base_batch_size=int(config["base_batch_size"])
                )
        if trainer.is_global_zero:
            log.info(
                "global batch %d = %d clips per device x %d device(s) x %d node(s) x %d accumulated batch(es); "
                "lr %.6g (%s)",
                batch,
                per_device,
                trainer.world_size // max(trainer.num_nodes, 1),
                trainer.num_nodes,
                trainer.accumulate_grad_batches,
                optimizer.param_groups[0]["lr"],
                f"scaled linearly from a global batch of {config['base_batch_size']}" if enabled else "not scaled",
            )

    def configure_optimizers(self) -> dict[str, Any]:
        weight_decay = getattr(self.optimizer_factory, "keywords", {}).get("weight_decay", 0.0)
        optimizer = self.optimizer_factory(params=param_groups(self.net, weight_decay))
        self._scale_lr(optimizer)  # before the scheduler records the base lr
        interval = self.hparams.schedule_interval
        if interval == "step":
            total = int(self.trainer.estimated_stepping_batches)
            warmup = round(self.hparams.warmup_epochs * total / max(self.trainer.max_epochs or 1, 1))
        else:
            total = int(self.trainer.max_epochs or 1)
            warmup = round(self.hparams.warmup_epochs)
        factor = functools.partial(
            warmup_cosine_factor,
            total_steps=total,
            warmup_steps=min(warmup, total),
            start_factor=self.hparams.warmup_start_factor,
            end_factor=self.hparams.min_lr_factor,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": LambdaLR(optimizer, factor), "interval": interval},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["class_names"] = list(self.class_names)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.class_names = list(checkpoint.get("class_names", []))
