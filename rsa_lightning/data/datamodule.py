"""LightningDataModule: a dataset's annotations + a decoding backend + a frame sampler + clip transforms.

Every dataset (``conf/data/<name>.yaml``) is this one class with different parts: the annotation reader of its
published format (:mod:`rsa_lightning.data.annotations`), a decoder (:mod:`rsa_lightning.data.decoding`), a sampler
(:mod:`rsa_lightning.data.sampling`) and the train/eval transforms (:mod:`rsa_lightning.data.transforms`).

Normalisation happens here, once, on the device: the loaders yield uint8 clips (B, C, T, H, W) and
:meth:`VideoDataModule.on_after_batch_transfer` turns them into float ``(x / 255 - mean) / std``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader

from rsa_lightning.data.annotations import UNLABELLED, VideoRecord
from rsa_lightning.data.annotations.common import MIN_CLASSES
from rsa_lightning.data.dataset import VideoDataset
from rsa_lightning.data.decoding import FrameFolderBackend
from rsa_lightning.data.exclusions import read_exclusions
from rsa_lightning.data.resumable import resumable_loader
from rsa_lightning.data.sampling import FrameSampler
from rsa_lightning.data.transforms import mirror_pairs, normalize
from rsa_lightning.errors import ConfigError, DataError, UserError
from rsa_lightning.utils.signals import ignore_stop_signals

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MONITORS = ("val/acc1", "val/acc5", "val/mean_class_acc")
PREDICT = "predict"  # key of the predict split's dataset (``predict_split`` with every evaluation view)


def init_worker(worker_id: int) -> None:
    """A DataLoader worker's set-up: ignore stop signals meant for the job (:mod:`rsa_lightning.utils.signals`), then
    Lightning's worker seeding when ``seed_everything(workers=True)`` asked for it (Lightning adds its own
    ``worker_init_fn`` only to loaders that have none). Samples are seeded per index anyway (:mod:`.resumable`)."""
    ignore_stop_signals(worker_id)
    if os.environ.get("PL_SEED_WORKERS") == "1":
        pl_worker_init_function(worker_id)


def check_backend_reads(datamodule: Any, split: str) -> None:
    """Refuse (``ConfigError``) a decoding backend that cannot read the split's entries: the frames backend on video
    files, a video backend on folders of frames (checked on the first few entries that exist). Used by ``train.py``
    (training split) and ``eval.py`` before any decoding."""
    backend = getattr(datamodule, "backend", None)
    if backend is None or not hasattr(datamodule, "records"):
        return
    frames = isinstance(backend, FrameFolderBackend)
    name = type(backend).__name__
    for record in datamodule.records(split)[:3]:  # the first few entries
        path = Path(record.path)
        if frames and path.is_file():
            raise ConfigError(
                f"data.backend is {name} (data/backend=frames): it reads folders of extracted frames, but the {split} "
                f"split lists video files (e.g. {path}); keep a video backend (data/backend=decord or pyav), or "
                f"extract the frames first (python -m rsa_lightning.tools.extract_frames {datamodule.root} "
                "<frames dir>) and evaluate a list of those folders"
            )
        if not frames and path.is_dir():
            raise ConfigError(
                f"data.backend is {name}: it decodes video files, but the {split} split lists folders (e.g. {path}, "
                "extracted frames); use data/backend=frames"
            )


class VideoDataModule(pl.LightningDataModule):
    """Video classification data of one dataset under ``root``.

    Args:
        root: the dataset folder (``data.root``); every relative path of the annotations is resolved against it.
        annotations: factory ``(root=) -> annotations`` with ``class_names()`` and ``records(split)``, e.g.
            ``functools.partial(SSv2Annotations)``; called with ``root`` so that ``data.root=...`` moves everything.
        num_classes: number of classes; checked against the annotations.
        num_frames: frames per clip ``T``; the DataModule passes it to the sampler factory.
        crop_size: side of the square frames the network sees (the configs build the transforms with it; the
            evaluation transform's ``crop_size`` is checked against it).
        batch_size: clips per batch per device.
        num_workers: decoding processes per device.
        sampler: factory ``(num_frames=, training=) -> sampler`` (a :class:`~rsa_lightning.data.sampling.FrameSampler`),
            e.g. ``partial(SegmentSampler)`` or ``partial(DenseSampler, stride=2)``.
        backend: the decoder (``read(record, choose)``), e.g. ``DecordBackend()``.
        train_transform: factory ``(mirror=) -> transform`` (a partial :class:`TrainTransform`); the DataModule
            passes the mirror classes derived from the class names (``mirror_pairs``) when the flip policy needs them.
        eval_transform: the evaluation transform (:class:`EvalTransform`).
        num_clips / num_crops: views per video for the test split and for prediction (eval.py, any split);
            validation during training uses one view (the official "efficient" protocol).
        mean / std: RGB normalisation in [0, 1] units.
        exclusions_file: videos to leave out (written by ``rsa_lightning.tools.scan_videos``); relative to ``root``;
            used when the file exists.
        decode_timeout: seconds a single decode may take before the video is skipped (None: no limit).
        pin_memory: the loaders copy batches into page-locked memory (faster, asynchronous host-to-GPU copies);
            None: when the trainer runs on a CUDA device (:meth:`uses_pinned_memory`), never on the CPU.
        predict_split: the split ``predict_dataloader`` serves (eval.py sets it).
        monitor: the dataset's checkpoint monitor, the validation metric the best checkpoint and sweeps maximise:
            ``val/acc1`` (top-1), ``val/acc5`` or ``val/mean_class_acc`` (FineGym's published metric); read by
            ``conf/callbacks/model_checkpoint.yaml`` and ``optimized_metric`` (definitions:
            :mod:`rsa_lightning.evaluation.metrics`).
        multi_view_val: validate during training with the test views (``num_clips`` x ``num_crops`` per video,
            fused) instead of one centre view per video (the official "efficient" protocol, the default).
        prepare: called once (rank 0) before setup with ``root=``, e.g. to generate the synthetic dataset.
        seed: the run's seed (``train.py`` passes ``seed``): the training data's shuffle and per-sample augmentation
            seeds derive from it and the epoch (:mod:`rsa_lightning.data.resumable`); None draws one.

    The training loader resumes inside an epoch: its position is stored in every checkpoint and restored by
    Lightning (:class:`~rsa_lightning.data.resumable.ResumableDataLoader`).
    """

    def __init__(
        self,
        *,
        root: str | Path,
        annotations: Callable[..., Any],
        num_classes: int,
        num_frames: int,
        batch_size: int,
        crop_size: int,
        sampler: Callable[..., FrameSampler],
        backend: Any,
        train_transform: Callable[..., Callable],
        eval_transform: Callable,
        num_workers: int = 0,
        num_clips: int = 1,
        num_crops: int = 1,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        exclusions_file: Optional[str] = "exclusions.txt",
        decode_timeout: Optional[float] = None,
        pin_memory: Optional[bool] = None,
        predict_split: str = "test",
        monitor: str = "val/acc1",
        multi_view_val: bool = False,
        prepare: Optional[Callable[..., Any]] = None,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_frames", num_frames),
            ("batch_size", batch_size),
            ("num_classes", num_classes),
            ("num_clips", num_clips),
            ("num_crops", num_crops),
            ("crop_size", crop_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"data.{name} must be a positive integer, got {value!r}")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"data.mean and data.std need 3 values with std > 0, got {mean} and {std}")
        if monitor not in MONITORS:
            raise ConfigError(f"data.monitor must be one of {MONITORS}, got {monitor!r}")
        if predict_split not in SPLITS:
            raise ConfigError(f"data.predict_split must be one of {SPLITS}, got {predict_split!r}")
        if getattr(eval_transform, "crop_size", crop_size) != crop_size:
            raise ConfigError(
                f"data.eval_transform.crop_size ({eval_transform.crop_size}) differs from data.crop_size ({crop_size})"
            )
        self.root = Path(root)
        self.crop_size = crop_size
        self.annotations = annotations(root=self.root)
        if num_classes < MIN_CLASSES:
            # the annotations say why when their class list is the cause (naming its file); else the key is wrong
            names = self.annotations.class_names()
            raise ConfigError(
                f"data.num_classes must be >= {MIN_CLASSES} (a classifier needs two classes), got {num_classes}; the "
                f"annotations have {len(names)} classes: set data.num_classes={len(names)}"
            )
        self.num_classes = num_classes
        self.num_frames = num_frames
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.sampler_factory = sampler
        self.backend = backend
        self.train_transform_factory = train_transform
        self.eval_transform = eval_transform
        self.num_clips = num_clips
        self.num_crops = num_crops
        self.exclusions_file = exclusions_file
        self.decode_timeout = decode_timeout
        self.pin_memory = pin_memory
        self.predict_split = predict_split
        self.monitor = monitor
        self.multi_view_val = multi_view_val
        self.prepare = prepare
        self.seed = seed
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self.class_names: list[str] = []
        self.datasets: dict[str, VideoDataset] = {}

    def prepare_data(self) -> None:
        if self.prepare is not None:
            self.prepare(root=self.root)

    @property
    def exclusions_path(self) -> Optional[Path]:
        if not self.exclusions_file:
            return None
        path = Path(self.exclusions_file)
        return path if path.is_absolute() else self.root / path

    def records(self, split: str) -> list[VideoRecord]:
        """The split's videos, minus those in the exclusion list; labels checked against ``num_classes``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        records = self.annotations.records(split)
        bad = [r for r in records if not (0 <= r.label < self.num_classes or r.label == UNLABELLED)]
        if bad:
            raise DataError(
                f"{split} split: label {bad[0].label} of video {bad[0].video_id} is outside [0, {self.num_classes}); "
                "check data.num_classes"
            )
        path = self.exclusions_path
        if path is not None and path.is_file():
            excluded = read_exclusions(path, split)
            kept = [r for r in records if r.video_id not in excluded]
            if len(kept) < len(records):
                log.info("%s split: %d videos left out (listed in %s)", split, len(records) - len(kept), path)
            if not kept:
                raise DataError(
                    f"{split} split: every video is listed in {path}; nothing left to load: fix the videos, or remove "
                    "their lines from that file"
                )
            records = kept
        return records

    def load_class_names(self) -> list[str]:
        names = list(self.annotations.class_names())
        if len(names) != self.num_classes:
            raise ConfigError(
                f"data.num_classes is {self.num_classes} but the annotations ({self.annotations!r}) have "
                f"{len(names)} classes: set data.num_classes={len(names)}"
            )
        return names

    def setup(self, stage: Optional[str] = None) -> None:
        self.class_names = self.load_class_names()
        if stage == "predict":  # eval.py: the predict split, evaluated with every view, whatever split it is
            if PREDICT not in self.datasets:
                self.datasets[PREDICT] = self.build_dataset(self.predict_split, evaluation_views=True)
            return
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        available = tuple(getattr(self.annotations, "splits", SPLITS))
        for split in splits.get(stage, SPLITS) if stage else [s for s in SPLITS if s in available]:
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)

    def train_transform(self) -> Callable:
        mirror = {}
        policy = getattr(self.train_transform_factory, "keywords", {}).get("flip")
        if policy in ("skip", "swap"):
            mirror = mirror_pairs(self.class_names or self.load_class_names())
            log.info("flip policy %r; mirror classes: %s", policy, sorted((a, b) for a, b in mirror.items() if a < b))
        try:
            return self.train_transform_factory(mirror=mirror)
        except ValueError as err:  # the transform's own argument checks, which know a value but not its config key
            if isinstance(err, UserError):  # already names its file or key
                raise
            raise ConfigError(f"data.train_transform: {err}") from err

    def build_dataset(self, split: str, *, evaluation_views: Optional[bool] = None) -> VideoDataset:
        """The dataset of ``split``: augmented single clips for "train"; otherwise deterministic views, one per video
        for "val" (validation during training; ``num_clips x num_crops`` with ``multi_view_val``) and
        ``num_clips x num_crops`` for "test" or ``evaluation_views``."""
        training = split == "train" and not evaluation_views
        if evaluation_views is None:
            evaluation_views = split == "test" or (split == "val" and self.multi_view_val)
        views = (self.num_clips, self.num_crops) if evaluation_views else (1, 1)
        dataset = VideoDataset(
            records=self.records(split),
            backend=self.backend,
            sampler=self.sampler_factory(num_frames=self.num_frames, training=training),
            transform=self.train_transform() if training else self.eval_transform,
            training=training,
            num_clips=views[0],
            num_crops=views[1],
            decode_timeout=self.decode_timeout,
            split=split,
        )
        log.info(
            "%s split: %d videos x %d clips x %d crops%s",
            split,
            len(dataset.records),
            *views,
            "" if not training else " (training)",
        )
        return dataset

    def _dataset(self, split: str) -> VideoDataset:
        if split not in self.datasets:
            self.datasets[split] = (
                self.build_dataset(self.predict_split, evaluation_views=True)
                if split == PREDICT
                else self.build_dataset(split)
            )
        return self.datasets[split]

    def uses_pinned_memory(self) -> bool:
        """``pin_memory`` if set, else whether the attached trainer's device is a CUDA GPU (False without a trainer:
        pinning helps only the copy to a GPU, and costs a copy of every batch)."""
        if self.pin_memory is not None:
            return bool(self.pin_memory)
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _loader_options(self) -> dict[str, Any]:
        # worker_init_fn: workers outlive a stop signal sent to the whole job, so StopOnSignal can save and stop
        # generator: creating a loader's iterator draws its workers' base seed from this generator, not from
        # torch's global RNG (dropout, mixup), so validation does not shift the training run's random stream
        return {
            "num_workers": self.num_workers,
            "pin_memory": self.uses_pinned_memory(),
            "persistent_workers": self.num_workers > 0,
            "worker_init_fn": init_worker if self.num_workers > 0 else None,
            "generator": torch.Generator().manual_seed(0 if self.seed is None else self.seed),
        }

    def _batches_done(self) -> tuple[int, bool]:
        """Batches of the current epoch the training loop has finished, and whether the epoch is done."""
        trainer = self.trainer
        if trainer is None:
            return 0, False
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return done, done >= trainer.num_training_batches

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        return resumable_loader(
            self._dataset("train"),
            seed=self.seed,
            batch_size=self.batch_size,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
            batches_done=self._batches_done,
            **self._loader_options(),
        )

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self._dataset(split), batch_size=self.batch_size, shuffle=False, **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(PREDICT)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        video = batch["video"]
        if video.dtype == torch.uint8:
            batch["video"] = normalize(video, self.mean.to(video.device), self.std.to(video.device))
        return batch
