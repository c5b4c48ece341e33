"""The training system: a video network plus loss, metrics, optimiser and schedule."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from rsa_lightning.modules.lr_schedule import warmup_cosine_factor
from rsa_lightning.modules.optim import param_groups


def accuracy_metrics(num_classes: int) -> MetricCollection:
    """Top-1 / top-5 accuracy, micro-averaged over videos (torchmetrics' default ``average`` is macro)."""
    metrics = {"acc1": MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro")}
    if num_classes > 5:
        metrics["acc5"] = MulticlassAccuracy(num_classes=num_classes, top_k=5, average="micro")
    return MetricCollection(metrics)


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
    ) -> None:
        super().__init__()
        if schedule_interval not in ("epoch", "step"):
            raise ValueError(f"schedule_interval must be 'epoch' or 'step', got {schedule_interval!r}")
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
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True, prog_bar=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.test_loss(loss)
        self.test_metrics.update(logits, labels)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        logits = self(batch["video"])
        out = {"video_id": batch["video_id"], "label": batch["label"], "probs": logits.softmax(dim=-1)}
        for key in ("view", "replaced"):
            if key in batch:
                out[key] = batch[key]
        return out

    def configure_optimizers(self) -> dict[str, Any]:
        weight_decay = getattr(self.optimizer_factory, "keywords", {}).get("weight_decay", 0.0)
        optimizer = self.optimizer_factory(params=param_groups(self.net, weight_decay))
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
