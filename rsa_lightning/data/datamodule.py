"""LightningDataModule over ``<path> <label>`` annotation lists.

Normalisation happens here, once, on the device: the loaders yield uint8 clips (B, C, T, H, W) and
:meth:`VideoDataModule.on_after_batch_transfer` turns them into float ``(x / 255 - mean) / std``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from rsa_lightning.data.annotations import VideoRecord, read_class_names, read_video_list
from rsa_lightning.data.dataset import VideoDataset
from rsa_lightning.data.transforms import ClipTransform, normalize

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class VideoDataModule(pl.LightningDataModule):
    """Video classification data from annotation lists under ``root``.

    Args:
        root: dataset folder; relative list/class paths are resolved against it.
        num_classes: number of classes; checked against the class-name file.
        num_frames: frames per clip ``T`` (TSN segments).
        batch_size: clips per batch per device.
        num_workers: decoding processes per device.
        train_list / val_list / test_list: annotation lists (``<path> <label>`` per line); ``test_list`` None means
            the test split is the validation split.
        class_names_file: one class name per line.
        scale_size / crop_size: short side after resizing, then the square crop fed to the network.
        mean / std: RGB normalisation in [0, 1] units.
        predict_split: the split ``predict_dataloader`` serves (eval.py sets it).
        prepare: called once (rank 0) before setup, e.g. to generate a synthetic dataset into ``root``.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        num_classes: int,
        num_frames: int,
        batch_size: int,
        num_workers: int = 0,
        train_list: str = "annotations/train.txt",
        val_list: str = "annotations/val.txt",
        test_list: Optional[str] = None,
        class_names_file: str = "annotations/classes.txt",
        scale_size: int = 64,
        crop_size: int = 64,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        pin_memory: bool = False,
        predict_split: str = "test",
        prepare: Optional[Callable[[], Any]] = None,
    ) -> None:
        super().__init__()
        for name, value in (("num_frames", num_frames), ("batch_size", batch_size), ("num_classes", num_classes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{name} must be a positive integer, got {value!r}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if crop_size > scale_size:
            raise ValueError(f"data.crop_size ({crop_size}) must not exceed data.scale_size ({scale_size})")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"data.mean and data.std need 3 values with std > 0, got {mean} and {std}")
        self.root = Path(root)
        self.num_classes = num_classes
        self.num_frames = num_frames
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.lists = {"train": train_list, "val": val_list, "test": test_list or val_list}
        self.class_names_file = class_names_file
        self.scale_size = scale_size
        self.crop_size = crop_size
        self.pin_memory = pin_memory
        if predict_split not in SPLITS:
            raise ValueError(f"data.predict_split must be one of {SPLITS}, got {predict_split!r}")
        self.predict_split = predict_split
        self.prepare = prepare
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self.class_names: list[str] = []
        self.datasets: dict[str, VideoDataset] = {}

    def _path(self, rel: str) -> Path:
        return Path(rel) if Path(rel).is_absolute() else self.root / rel

    def prepare_data(self) -> None:
        if self.prepare is not None:
            self.prepare()

    def records(self, split: str) -> list[VideoRecord]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        records = read_video_list(self._path(self.lists[split]), self.root)
        bad = [r for r in records if not 0 <= r.label < self.num_classes]
        if bad:
            raise ValueError(
                f"{self._path(self.lists[split])}: label {bad[0].label} of {bad[0].video_id} is outside "
                f"[0, {self.num_classes}); check data.num_classes"
            )
        return records

    def setup(self, stage: Optional[str] = None) -> None:
        self.class_names = read_class_names(self._path(self.class_names_file))
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"data.num_classes is {self.num_classes} but {self._path(self.class_names_file)} lists "
                f"{len(self.class_names)} classes"
            )
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": (self.predict_split,)}
        for split in splits.get(stage, SPLITS) if stage else SPLITS:
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)
                log.info("%s split: %d videos from %s", split, len(self.datasets[split]), self.lists[split])

    def build_dataset(self, split: str) -> VideoDataset:
        training = split == "train"
        transform = ClipTransform(scale_size=self.scale_size, crop_size=self.crop_size, training=training)
        return VideoDataset(
            records=self.records(split), num_frames=self.num_frames, training=training, transform=transform
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.datasets[split] = self.build_dataset(split)
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, shuffle=False)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        video = batch["video"]
        if video.dtype == torch.uint8:
            batch["video"] = normalize(video, self.mean.to(video.device), self.std.to(video.device))
        return batch
