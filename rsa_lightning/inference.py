"""A trained model outside Lightning: ``load_model(ckpt_path)`` and ``predict_videos(model, paths)``.

::

    import rsa_lightning
    model = rsa_lightning.load_model("logs/train/runs/<time>/checkpoints/last.ckpt")
    top = rsa_lightning.predict_videos(model, ["clip.mp4"])  # per video: [(class name, probability), ...] best first
    logits = model.net(clip)  # or feed your own clips: (B, 3, model.num_frames, crop, crop), normalised by mean/std

A clip is read exactly as ``eval.py`` reads it: the run's decoding backend, evaluation sampler (``num_frames``
frames) and evaluation transform, uint8 -> float ``(x / 255 - mean) / std``; views are fused by
:func:`rsa_lightning.evaluation.views.fuse_views`. So a video gets the scores ``eval.py`` gives it in a dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import hydra
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import default_collate

from rsa_lightning.data.annotations import UNLABELLED, VideoRecord
from rsa_lightning.data.dataset import VideoDataset
from rsa_lightning.data.decoding import FrameFolderBackend
from rsa_lightning.data.transforms import normalize
from rsa_lightning.data.video_io import VideoDecodeError
from rsa_lightning.errors import ConfigError
from rsa_lightning.evaluation.checkpoints import load_checkpoint, model_from_config, model_overrides, run_config
from rsa_lightning.evaluation.views import FusedScores, ViewOutputs, batch_views, fuse_views
from rsa_lightning.utils.config import merge_run_config

VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ogv")


@dataclass
class LoadedModel:
    """A trained network in eval mode and what is needed to feed it.

    Attributes:
        net: ``nn.Module``, (B, 3, T, H, W) float clips normalised by ``mean``/``std`` -> (B, K) logits.
        class_names: the K class names, in class-id order.
        num_frames: frames per clip ``T`` the run was trained with.
        crop_size: side of the square frames the network sees (pixels).
        mean / std: RGB normalisation in [0, 1] units (``x / 255 - mean) / std``).
        backend / sampler / eval_transform: the run's decoder, evaluation frame sampler and evaluation transform.
        config: the run's resolved config (``omegaconf.DictConfig``).
        module: the whole LightningModule (``VideoClassifier``) the network belongs to.
    """

    net: nn.Module
    class_names: list[str]
    num_frames: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    backend: Any
    sampler: Any
    eval_transform: Any
    config: DictConfig
    module: Any

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device


def load_model(
    ckpt_path: Union[str, Path],
    *,
    num_frames: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
    composed: Optional[DictConfig] = None,
    overrides: Sequence[str] = (),
) -> LoadedModel:
    """Load a ``train.py`` checkpoint: the network (eval mode, on ``device``) and its input pipeline.

    ``num_frames``: read clips of another length than the run's (the networks are TSN-style, any T works).
    ``composed`` and ``overrides``: a tool's Hydra config and its command line; the ``model`` / ``data`` keys and
    groups they name replace the run's, as in ``eval.py`` (e.g. ``data/backend=pyav``:
    :func:`rsa_lightning.utils.config.merge_run_config`).
    Raises ``MissingFileError`` / ``CheckpointError`` naming the file when it is missing, unreadable, not written by
    ``train.py``, an official checkpoint to convert first, or pickled code
    (:func:`rsa_lightning.evaluation.checkpoints.load_checkpoint`).
    """
    checkpoint = load_checkpoint(ckpt_path)
    cfg = run_config(checkpoint)
    changed_by: tuple[str, ...] = ()
    if composed is not None and overrides:
        merged = merge_run_config(cfg, composed, overrides)
        cfg.model, cfg.data = merged.model, merged.data
        changed_by = model_overrides(overrides)
    module = model_from_config(cfg.model, checkpoint, path=ckpt_path, changed_by=changed_by).to(device)
    data = cfg.data
    frames = int(num_frames if num_frames is not None else data.num_frames)
    class_names = list(checkpoint.get("class_names") or [])
    if not class_names:
        class_names = [str(i) for i in range(int(data.num_classes))]
    backend_cfg = data.backend.copy()
    if "open_gop_files" in backend_cfg:  # the dataset's scan list; single videos are probed by the backend itself
        backend_cfg.open_gop_files = None
    return LoadedModel(
        net=module.net,
        class_names=class_names,
        num_frames=frames,
        crop_size=int(data.crop_size),
        mean=tuple(float(v) for v in data.mean),
        std=tuple(float(v) for v in data.std),
        backend=hydra.utils.instantiate(backend_cfg),
        sampler=hydra.utils.instantiate(data.sampler)(num_frames=frames, training=False),
        eval_transform=hydra.utils.instantiate(data.eval_transform),
        config=cfg,
        module=module,
    )


def video_files(paths: Union[str, Path, Sequence[Union[str, Path]]]) -> list[Path]:
    """The video files named by ``paths``: files as given, folders searched recursively for video suffixes
    (:data:`VIDEO_SUFFIXES`), sorted. Raises ``FileNotFoundError`` for a path that does not exist and
    ``ValueError`` when no video is found."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"video={item} does not exist")
    if not files:
        where = ", ".join(map(str, items)) or "an empty list"
        raise ValueError(f"no video file ({', '.join(VIDEO_SUFFIXES)}) in {where}")
    return files


def predict_scores(
    model: LoadedModel,
    paths: Union[str, Path, Sequence[Union[str, Path]]],
    *,
    num_clips: int = 1,
    num_crops: int = 1,
    fusion: str = "prob",
    batch_size: int = 8,
) -> FusedScores:
    """Fused class probabilities (V, K) of the videos named by ``paths`` (files or folders), ``num_clips`` x
    ``num_crops`` views each, in the order of :func:`video_files`; video ids are the file paths. A video that fails
    to decode is listed in ``skipped`` (``FusedScores``) instead of being scored; ``VideoDecodeError`` when none
    decodes."""
    files = video_files(paths)
    if isinstance(model.backend, FrameFolderBackend):
        raise ConfigError(
            f"the model's data.backend reads folders of extracted frames (data/backend=frames), but {files[0]} is a "
            "video file: give data/backend=pyav (or decord) to decode video files"
        )
    records = [VideoRecord(path=p.resolve(), label=UNLABELLED, video_id=str(p)) for p in files]
    dataset = VideoDataset(
        records=records,
        backend=model.backend,
        sampler=model.sampler,
        transform=model.eval_transform,
        training=False,
        num_clips=num_clips,
        num_crops=num_crops,
        max_decode_retries=0,  # a file that fails is reported, never replaced by another
    )
    mean = torch.tensor(model.mean, device=model.device)
    std = torch.tensor(model.std, device=model.device)
    failed: dict[str, str] = {}
    samples, parts = [], []

    def flush() -> None:
        batch = default_collate(samples)
        video = normalize(batch["video"].to(model.device), mean, std)
        parts.append(batch_views(batch, model.net(video)))
        samples.clear()

    with torch.no_grad():
        for index in range(len(dataset)):
            video_id = records[index // dataset.num_views].video_id
            if video_id in failed:
                continue
            try:
                samples.append(dataset[index])
            except VideoDecodeError as err:
                failed[video_id] = str(err)
                samples[:] = [s for s in samples if s["video_id"] != video_id]
                continue
            if len(samples) == batch_size:
                flush()
        if samples:
            flush()
    outputs = ViewOutputs.cat([p.select([i for i, v in enumerate(p.video_ids) if v not in failed]) for p in parts])
    if not len(outputs):
        raise VideoDecodeError(f"no video could be decoded: {'; '.join(failed.values())}")
    order = [r.video_id for r in records if r.video_id not in failed]
    fused = fuse_views(outputs, num_views=num_clips * num_crops, fusion=fusion, order=order)
    fused.skipped = sorted(set(fused.skipped) | set(failed))
    return fused


def top_classes(fused: FusedScores, class_names: Sequence[str], top_k: int = 5) -> dict[str, list[tuple[str, float]]]:
    """``{video id: [(class name, probability), ...]}``: the ``top_k`` classes of every scored video, best first
    (``torch.topk`` ranking), and an empty list for every video in ``fused.skipped``."""
    values, ids = fused.scores.topk(min(top_k, fused.scores.shape[1]), dim=1)
    results = {
        vid: [(class_names[c], float(s)) for c, s in zip(row_ids.tolist(), row_values.tolist())]
        for vid, row_ids, row_values in zip(fused.video_ids, ids, values)
    }
    return {**results, **{vid: [] for vid in fused.skipped}}


def predict_videos(
    model: LoadedModel, paths: Union[str, Path, Sequence[Union[str, Path]]], *, top_k: int = 5, **kwargs: Any
) -> dict[str, list[tuple[str, float]]]:
    """:func:`top_classes` of the videos named by ``paths`` (an empty list for a video that could not be decoded;
    ``kwargs``: views and fusion of :func:`predict_scores`)."""
    return top_classes(predict_scores(model, paths, **kwargs), model.class_names, top_k)
