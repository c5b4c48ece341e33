"""Counting the samples replaced because their video failed to decode, and stopping a broken run."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from rsa_lightning.errors import DataError

log = logging.getLogger(__name__)

_LISTED = 10  # skipped videos named (with their reasons) in a message


class TooManySkippedVideosError(DataError, RuntimeError):
    """More distinct videos of a split failed to decode than :class:`SkippedSamplesMonitor` tolerates (bad data:
    exit code 2; the message names the videos and why they failed)."""


def describe_skipped(reasons: dict[str, str]) -> str:
    """``id (file: reason), ...`` of skipped videos, sorted by id, at most ``_LISTED`` of them."""
    ids = sorted(reasons)
    text = ", ".join(f"{i} ({reasons[i]})" if reasons[i] else i for i in ids[:_LISTED])
    return text + (f", and {len(ids) - _LISTED} more" if len(ids) > _LISTED else "")


class SkippedSamplesMonitor(Callback):
    """Counts the samples the data loader replaced because their video failed to decode, and stops a broken run.

    Reads the ``"replaced"`` and ``"replaced_reason"`` fields of each batch
    (:class:`rsa_lightning.data.dataset.VideoDataset`: the id of the video skipped for that sample and why, empty
    otherwise), so it sees skips made in DataLoader workers and needs no change to the LightningModule. Per epoch it
    logs ``train/skipped`` / ``val/skipped`` / ``test/skipped`` (replaced samples) and a warning listing the skipped
    ids with their files and reasons. When the distinct skipped videos of a split, over the whole run,
    exceed ``max_skipped_fraction`` of the split's videos, it raises :class:`TooManySkippedVideosError` listing them:
    a few broken files are tolerated, a broken data set is not. Sanity-check validation batches are not counted.
    Under DDP each rank counts the batches it sees.

    Args:
        max_skipped_fraction: tolerated fraction of a split's videos that fail (0.01: one percent).
    """

    def __init__(self, max_skipped_fraction: float = 0.01) -> None:
        if not 0 <= max_skipped_fraction <= 1:
            raise ValueError(f"max_skipped_fraction must be in [0, 1], got {max_skipped_fraction}")
        self.max_skipped_fraction = max_skipped_fraction
        self.skipped: dict[str, set[str]] = {}  # split -> distinct skipped video ids over the run
        self.reasons: dict[str, str] = {}  # video id -> "<file>: <reason>" of its last failure
        self._epoch: dict[str, list[str]] = {}  # split -> replaced sample ids this epoch
        self._split_size: dict[str, int] = {}

    @staticmethod
    def _dataset_size(loaders: object) -> int | None:
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        sizes = []
        for loader in loaders:
            dataset = getattr(loader, "dataset", None)
            if dataset is None:
                return None
            records = getattr(dataset, "records", None)  # VideoDataset: evaluation indexes videos x views
            sizes.append(len(records) if records is not None else len(dataset))
        return sum(sizes) if sizes else None

    def _start(self, split: str, loaders: object) -> None:
        self._epoch[split] = []
        size = self._dataset_size(loaders)
        if size:
            self._split_size[split] = size

    def _count(self, split: str, batch: object) -> None:
        replaced = batch.get("replaced") if isinstance(batch, dict) else None
        if not replaced:
            return
        reasons = batch.get("replaced_reason") or [""] * len(replaced)
        ids = [r for r in replaced if r]
        if not ids:
            return
        for video_id, reason in zip(replaced, reasons):
            if video_id and (reason or video_id not in self.reasons):
                self.reasons[video_id] = str(reason)
        self._epoch.setdefault(split, []).extend(ids)
        skipped = self.skipped.setdefault(split, set())
        skipped.update(ids)
        size = self._split_size.get(split)
        if size and len(skipped) > self.max_skipped_fraction * size:
            raise TooManySkippedVideosError(
                f"{len(skipped)} distinct {split} videos failed to decode in the batches read so far (DataLoader "
                "workers decoding ahead may have warned of more), more than max_skipped_fraction="
                f"{self.max_skipped_fraction} of the {size} videos of the split: "
                f"{describe_skipped({i: self.reasons.get(i, '') for i in skipped})}. Fix or replace these files, or "
                "leave them out (python -m rsa_lightning.tools.scan_videos writes an exclusion list for them)"
            )

    def _end(self, split: str, pl_module: pl.LightningModule) -> None:
        ids = self._epoch.get(split, [])
        pl_module.log(f"{split}/skipped", float(len(ids)), reduce_fx="sum", sync_dist=True)
        if ids:
            log.warning(
                "%s: %d samples replaced because their video failed to decode: %s",
                split,
                len(ids),
                describe_skipped({i: self.reasons.get(i, "") for i in set(ids)}),
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("train", trainer.train_dataloader)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._count("train", batch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end("train", pl_module)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._start("val", trainer.val_dataloaders)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._count("val", batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._end("val", pl_module)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("test", trainer.test_dataloaders)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._count("test", batch)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end("test", pl_module)
