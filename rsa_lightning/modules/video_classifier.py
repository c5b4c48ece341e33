"""The training system: a video network plus loss, metrics, optimiser and schedule.

Evaluation (validation, test, predict) runs the one path of :mod:`rsa_lightning.evaluation`: every step records
per-view outputs (video id, view, label, logits, replaced flag); at the end of the epoch every process gathers the
views of all processes, drops padding duplicates, fuses each video's views and computes the metrics of
:mod:`rsa_lightning.evaluation.metrics`. The numbers logged during training, the checkpoint ``monitor``,
``test_after_training`` and ``eval.py`` are therefore the same numbers, exact under DDP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, Union

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from rsa_lightning.evaluation import writers
from rsa_lightning.evaluation.metrics import (
    MeanClassAccuracy,
    reported_top_k,
    score_videos,
    top1_predictions,
    topk_correct,
)
from rsa_lightning.evaluation.views import FUSIONS, FusedScores, ViewCollector, batch_views, fuse_views, gather_views
from rsa_lightning.modules.optim import global_batch_size, linear_scaled_lr, param_groups

log = logging.getLogger(__name__)

AUTO_SCALE_LR_KEYS = ("enabled", "base_batch_size")
SCHEDULER_INTERVALS = ("epoch", "step")
EVAL_SPLITS = ("val", "test")


class VideoClassifier(pl.LightningModule):
    """Classifies clips (B, C, T, H, W) with ``net``; optimised with label-smoothed cross-entropy.

    Args:
        net: the network, (B, 3, T, H, W) normalised clips -> (B, num_classes) logits.
        num_classes: number of classes (for the metrics).
        optimizer: partial optimiser, called with the parameter groups of :func:`param_groups`; it must not set
            ``weight_decay`` (``ValueError``): that is ``weight_decay`` here, applied per group.
        weight_decay: L2 weight decay of weights; never applied to normalisation parameters or biases.
        scheduler: partial lr scheduler ``(optimizer, *, total_steps, steps_per_epoch) -> LRScheduler``, e.g.
            :func:`rsa_lightning.modules.lr_schedule.warmup_cosine`; None: a constant lr.
        scheduler_interval: ``"epoch"`` (the official runs) or ``"step"``: when the scheduler steps.
        label_smoothing: cross-entropy label smoothing (training and the logged ``val/loss``).
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
        fusion: how validation and test fuse the views of a video, ``"prob"`` or ``"logit"``
            (:func:`rsa_lightning.evaluation.views.fuse_views`).

    Metrics (keys ``split/name``): ``train/loss``, ``train/acc1``, ``train/acc5`` (more than 5 classes),
    ``train/mean_class_acc`` over the training samples of the epoch; ``val/...`` and ``test/...``: ``loss`` (mean over
    the views), ``acc1``, ``acc5``, ``mean_class_acc`` over the split's *videos*, each counted once whatever the
    number of processes (definitions: :mod:`rsa_lightning.evaluation.metrics`). Every process logs the same value
    (computed from the gathered views). At the end of every validation and test epoch (rank zero) the confusion
    matrix is written to ``<trainer.default_root_dir>/confusion/<split>_epoch<NNN>.csv`` / ``.pt`` (a test of a
    checkpoint file: ``test_<checkpoint name>.csv``) and a per-class summary is logged; a test epoch also writes
    ``predictions_test.csv``, ``scores_test.pt`` and ``metrics_test.json`` there, the files ``eval.py split=test``
    writes.

    ``confusions[split]``: ``(CSV path, (K, K) confusion matrix)`` of the split's last evaluation written on rank zero
    (set after the files are written; :class:`rsa_lightning.callbacks.EvalPlots` takes it to draw the evaluation
    plots next to the CSV).

    ``predict_step`` returns the batch's per-view outputs (:class:`rsa_lightning.evaluation.ViewOutputs`, logits).
    ``results[split]`` holds the fused scores (:class:`rsa_lightning.evaluation.FusedScores`) of the last validation
    or test epoch, e.g. for a notebook after ``trainer.test``.
    """

    def __init__(
        self,
        *,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        weight_decay: float = 0.0,
        scheduler: Optional[Callable[..., Any]] = None,
        scheduler_interval: str = "epoch",
        label_smoothing: float = 0.1,
        compile: bool = False,
        mixup: Optional[Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = None,
        auto_scale_lr: Optional[dict[str, Any]] = None,
        fusion: str = "prob",
    ) -> None:
        super().__init__()
        if scheduler_interval not in SCHEDULER_INTERVALS:
            raise ValueError(f"scheduler_interval must be one of {SCHEDULER_INTERVALS}, got {scheduler_interval!r}")
        if "weight_decay" in getattr(optimizer, "keywords", {}):
            raise ValueError(
                "the optimizer partial sets weight_decay; set model.weight_decay instead (it is applied to weights "
                "only, never to normalisation parameters or biases)"
            )
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
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
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "mixup"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.mixup = mixup
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.top_k = reported_top_k(num_classes)
        self.train_loss = MeanMetric()
        self.train_acc = nn.ModuleDict({f"acc{k}": MeanMetric() for k in self.top_k})
        self.train_mean_class_acc = MeanClassAccuracy(num_classes)
        self.views = {split: ViewCollector() for split in EVAL_SPLITS}  # this process's views of the epoch
        self.results: dict[str, FusedScores] = {}  # the last fused scores of each evaluated split
        self.class_names: list[str] = []
        self.confusions: dict[str, tuple[Path, torch.Tensor]] = {}  # rank zero: the last confusion file of a split

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.net(video)

    def setup(self, stage: str) -> None:
        if self.hparams.compile and stage == "fit":
            self.net = torch.compile(self.net)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and getattr(datamodule, "class_names", None):
            self.class_names = list(datamodule.class_names)

    # ---------------------------------------------------------------------------------------------------------------
    # training

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        labels = batch["label"]
        if self.mixup is None:
            logits = self(batch["video"])
            loss = self.criterion(logits, labels)
        else:
            video, targets = self.mixup(batch["video"], labels)  # targets (B, num_classes), rows sum to 1
            logits = self(video)
            loss = self.criterion(logits, targets)
        logits = logits.detach()
        self.train_loss(loss)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        for k in self.top_k:
            metric = self.train_acc[f"acc{k}"]
            metric.update(topk_correct(logits, labels, k).float())  # mean over the epoch's samples: micro
            self.log(f"train/acc{k}", metric, on_step=False, on_epoch=True)
        self.train_mean_class_acc.update(top1_predictions(logits), labels)
        self.log("train/mean_class_acc", self.train_mean_class_acc, on_step=False, on_epoch=True)
        # no collective in on_train_epoch_end: Lightning computes (and syncs) these logged metrics on every process
        # in one order, while callbacks such as the progress bar read them on rank 0 only, earlier
        return loss

    # ---------------------------------------------------------------------------------------------------------------
    # evaluation: per-view outputs -> gather -> de-duplicate -> fuse -> metrics

    def _record_views(self, split: str, batch: dict, batch_idx: int) -> None:
        logits = self(batch["video"])  # (B, K)
        self.views[split].add(batch_views(batch, logits, fallback_id=f"rank{self.global_rank}/batch{batch_idx}"))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._record_views("val", batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._record_views("test", batch, batch_idx)

    def predict_step(self, batch: dict, batch_idx: int) -> Any:
        """The batch's per-view outputs (:class:`~rsa_lightning.evaluation.ViewOutputs` with logits, on the CPU)."""
        return batch_views(batch, self(batch["video"]), fallback_id=f"rank{self.global_rank}/batch{batch_idx}")

    def on_validation_epoch_start(self) -> None:
        self.views["val"].reset()

    def on_test_epoch_start(self) -> None:
        self.views["test"].reset()

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")

    def _split_layout(self, split: str) -> tuple[Optional[int], Optional[list[str]]]:
        """``(views per video, the split's video ids)`` when this epoch ran over the whole split, else (None, None).

        A partial pass (the sanity check, ``limit_val_batches``, ``fast_dev_run``) fuses whatever views arrived.
        """
        trainer = self.trainer
        if trainer.sanity_checking:
            return None, None
        loaders = trainer.val_dataloaders if split == "val" else trainer.test_dataloaders
        counts = trainer.num_val_batches if split == "val" else trainer.num_test_batches
        if isinstance(loaders, (list, tuple)):
            if len(loaders) != 1:
                return None, None
            loaders = loaders[0]
        try:
            complete = len(counts) == 1 and counts[0] == len(loaders)
        except TypeError:  # an iterable loader without a length
            return None, None
        dataset = getattr(loaders, "dataset", None)
        records, num_views = getattr(dataset, "records", None), getattr(dataset, "num_views", None)
        if not complete or records is None or num_views is None:
            return None, None
        return int(num_views), [r.video_id for r in records]

    def _finish_evaluation(self, split: str) -> None:
        """Gather (all ranks: a collective), fuse and score the epoch's views; log the metrics; rank zero writes."""
        outputs = gather_views(self.views[split].local())
        self.views[split].reset()
        if not len(outputs):
            return
        num_views, order = self._split_layout(split)
        fused = fuse_views(outputs, num_views=num_views, fusion=self.hparams.fusion, order=order)
        self.results[split] = fused
        metrics, confusion = score_videos(fused.scores, fused.labels)
        if confusion is None:
            log.info("%s split: no labels, nothing to score (%d videos)", split, len(fused.video_ids))
            return
        views = fused.views
        loss = self.criterion(views.logits.to(self.device), views.labels.to(self.device)).item()
        self._log_same_on_all_ranks(f"{split}/loss", loss, prog_bar=split == "val")
        for name in ("acc1", "acc5", "mean_class_acc"):
            if name in metrics:
                self._log_same_on_all_ranks(f"{split}/{name}", metrics[name], prog_bar=split == "val")
        if fused.duplicates and self.trainer.is_global_zero:
            log.debug("%s: dropped %d duplicate views (padding of a distributed sampler)", split, fused.duplicates)
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        if metrics.get("nonfinite_videos"):  # no ranking of NaN scores: no confusion matrix or per-class numbers
            log.warning("%s: no confusion matrix or per-class accuracies (non-finite scores)", split)
            return
        root = Path(self.trainer.default_root_dir)
        tested = self.trainer.ckpt_path if split == "test" else None  # the weights trainer.test loaded, if any
        name = Path(tested).stem if tested else f"epoch{self.current_epoch:03d}"
        path = root / "confusion" / f"{split}_{name}.csv"
        writers.write_confusion(path, confusion, self.class_names)
        self.confusions[split] = (path, confusion)
        writers.log_per_class_summary(f"{split} {name}", confusion, self.class_names, path)
        if split == "test":
            dataset = getattr(self.trainer.test_dataloaders, "dataset", None)
            extra = {
                "views_per_video": num_views,
                "num_clips": getattr(dataset, "num_clips", None),
                "num_crops": getattr(dataset, "num_crops", None),
                "fusion": self.hparams.fusion,
                "checkpoints": [str(tested)] if tested else [],
                "num_frames": [getattr(getattr(self.trainer, "datamodule", None), "num_frames", None)],
                "skipped_videos": fused.skipped,
            }
            writers.write_split_results(root, "test", fused, self.class_names, {**metrics, **extra})

    def _log_same_on_all_ranks(self, name: str, value: float, prog_bar: bool = False) -> None:
        # Every process holds the same value (computed from all processes' outputs); "max" syncs it unchanged (a
        # mean of equal floats may round) and keeps Lightning from warning about an unsynced epoch-level value.
        self.log(name, float(value), on_step=False, on_epoch=True, sync_dist=True, reduce_fx="max", prog_bar=prog_bar)

    # ---------------------------------------------------------------------------------------------------------------
    # optimiser and schedule

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

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=param_groups(self.net, self.hparams.weight_decay))
        self._scale_lr(optimizer)  # before the scheduler records the base lr
        if self.scheduler_factory is None:
            return optimizer
        interval = self.hparams.scheduler_interval
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        if interval == "step":
            total = int(self.trainer.estimated_stepping_batches)
            steps_per_epoch = total / epochs
        else:
            total, steps_per_epoch = epochs, 1.0
        scheduler = self.scheduler_factory(optimizer, total_steps=total, steps_per_epoch=steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    # ---------------------------------------------------------------------------------------------------------------
    # checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["class_names"] = list(self.class_names)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.class_names = list(checkpoint.get("class_names", []))

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: Union[str, Path], map_location: Any = None, strict: bool = True, **kwargs: Any
    ) -> VideoClassifier:
        """The trained model of a ``train.py`` checkpoint, rebuilt from the run config stored in it, in eval mode.

        (Lightning's generic version cannot: the network is not a hyperparameter but a config-built module.)
        ``map_location``: a device to move the model to. Raises what
        :func:`rsa_lightning.evaluation.checkpoints.load_checkpoint` raises.
        """
        from rsa_lightning.evaluation.checkpoints import model_from_checkpoint

        if kwargs:
            raise TypeError(f"load_from_checkpoint takes no hyperparameter overrides here, got {sorted(kwargs)}")
        model = model_from_checkpoint(checkpoint_path, strict=strict)
        if not isinstance(model, cls):
            raise TypeError(f"{checkpoint_path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model.to(map_location) if isinstance(map_location, (str, torch.device)) else model
