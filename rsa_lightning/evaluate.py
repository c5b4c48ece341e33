"""``evaluate(cfg, overrides)``: rebuild a trained run from its checkpoint, predict a split, score and save."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from rsa_lightning.utils.config import merge_run_config

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by ``train.py`` (it must hold ``state_dict`` and the run's ``config``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path} does not exist: pass a .ckpt file from <run dir>/checkpoints/")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    missing = [k for k in ("state_dict", "config") if k not in checkpoint]
    if missing:
        raise ValueError(
            f"{path} has no {' or '.join(missing)}: it was not written by rsa_lightning's train.py, so the model "
            "cannot be rebuilt from it"
        )
    return checkpoint


def topk_predictions(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) scores -> the top-``min(k, K)`` scores and class ids per row, best first."""
    return probs.topk(min(k, probs.shape[1]), dim=1)


def accuracy_at(probs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores (micro average over videos)."""
    _, ids = topk_predictions(probs, k)
    return (ids == labels[:, None]).any(dim=1).float().mean().item()


def write_predictions(
    path: Path,
    video_ids: Sequence[str],
    labels: torch.Tensor,
    probs: torch.Tensor,
    class_names: Sequence[str],
    k: int,
) -> None:
    """One row per video: id, label, label name, then the top-k classes (id, name, score), best first."""
    scores, ids = topk_predictions(probs, k)
    name = (lambda i: class_names[i]) if class_names else (lambda i: "")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        header = ["video_id", "label", "label_name"]
        for r in range(1, ids.shape[1] + 1):
            header += [f"pred_{r}", f"pred_{r}_name", f"score_{r}"]
        writer.writerow(header)
        for i, vid in enumerate(video_ids):
            row = [vid, int(labels[i]), name(int(labels[i]))]
            for c, s in zip(ids[i].tolist(), scores[i].tolist()):
                row += [c, name(c), f"{s:.6f}"]
            writer.writerow(row)


def fuse_views(
    video_ids: Sequence[str], labels: torch.Tensor, probs: torch.Tensor, replaced: Sequence[str] = ()
) -> tuple[list[str], torch.Tensor, torch.Tensor, dict[str, int]]:
    """Average the class probabilities of every view of a video; one row per video, in order of first appearance.

    Views that stand in for a video that failed to decode (``replaced`` non-empty) are dropped, so a replacement
    never adds views to another video. Returns ids, labels, fused probabilities and the number of views per video.
    """
    rows: dict[str, list[int]] = {}
    for i, vid in enumerate(video_ids):
        if replaced and replaced[i]:
            continue
        rows.setdefault(vid, []).append(i)
    ids = list(rows)
    if not ids:
        raise ValueError("no view was decoded: every sample of the split was replaced (see the warnings above)")
    fused = torch.stack([probs[idx].mean(dim=0) for idx in rows.values()])
    fused_labels = torch.stack([labels[idx[0]] for idx in rows.values()])
    return ids, fused_labels, fused, {vid: len(idx) for vid, idx in rows.items()}


def evaluate(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split``; writes predictions and metrics into ``cfg.paths.output_dir``."""
    checkpoint = load_checkpoint(cfg.ckpt_path)
    run_cfg = merge_run_config(checkpoint["config"], cfg, overrides)
    run_cfg.data.predict_split = cfg.split
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    datamodule: pl.LightningDataModule = hydra.utils.instantiate(run_cfg.data)
    model: pl.LightningModule = hydra.utils.instantiate(run_cfg.model)
    model.load_state_dict(checkpoint["state_dict"])
    model.on_load_checkpoint(checkpoint)
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], enable_model_summary=False)
    batches = trainer.predict(model=model, datamodule=datamodule)

    replaced = [r for b in batches for r in b.get("replaced", [""] * len(b["video_id"]))]
    video_ids, labels, probs, views = fuse_views(
        [v for b in batches for v in b["video_id"]],
        torch.cat([b["label"] for b in batches]).cpu(),
        torch.cat([b["probs"] for b in batches]).float().cpu(),
        replaced,
    )
    skipped = sorted({r for r in replaced if r})
    if skipped:
        log.warning("%d videos could not be decoded and are not scored: %s", len(skipped), skipped)
    class_names = list(checkpoint.get("class_names") or getattr(datamodule, "class_names", []))
    k = int(cfg.get("top_k", 5))
    labelled = labels >= 0
    metrics = {
        "split": cfg.split,
        "num_videos": len(video_ids),
        "views_per_video": max(views.values()),
        "skipped_videos": skipped,
        "ckpt_path": str(cfg.ckpt_path),
    }
    if labelled.all():
        metrics["acc1"] = accuracy_at(probs, labels, 1)
        metrics[f"acc{min(5, probs.shape[1])}"] = accuracy_at(probs, labels, 5)
    elif labelled.any():
        raise ValueError(f"the {cfg.split} split mixes labelled and unlabelled videos; cannot score it")
    else:
        log.info("the %s split has no labels: predictions only", cfg.split)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    predictions = output_dir / f"predictions_{cfg.split}.csv"
    write_predictions(predictions, video_ids, labels, probs, class_names, k)
    (output_dir / f"metrics_{cfg.split}.json").write_text(json.dumps(metrics, indent=2) + "\n")
    metrics["predictions_file"] = str(predictions)
    return metrics
