"""Files of an evaluation: predictions CSV, scores ``.pt``, metrics JSON and confusion matrices (CSV + ``.pt``).

Written by ``eval.py`` (``<run>/predictions_<split>.csv``, ``scores_<split>.pt``, ``metrics_<split>.json`` and
``confusion_<split>.csv`` / ``.pt``), by ``test_after_training`` (the first three in the training run's folder) and at
the end of every validation and test epoch (``<run>/confusion/<split>_epoch<NNN>.csv`` and ``.pt``). Only global
rank 0 calls them.

Next to every confusion CSV ``<stem>.csv`` the evaluation plots go to ``<stem>_matrix.png``, ``_direction.png``,
``_per_class.png``, ``_top_confusions.png`` and ``_top_confusions.csv``
(:func:`rsa_lightning.visualization.evaluation_plots.write_evaluation_plots`; during training the
:class:`rsa_lightning.callbacks.EvalPlots` callback draws them).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rsa_lightning.evaluation.metrics import per_class_accuracy

log = logging.getLogger(__name__)


def class_name_list(class_names: Sequence[str], num_classes: int) -> list[str]:
    """``class_names`` when it names every class, else ``"0" .. "K-1"``."""
    return list(class_names) if len(class_names) == num_classes else [str(i) for i in range(num_classes)]


def write_predictions(
    path: Path,
    video_ids: Sequence[str],
    labels: torch.Tensor,
    scores: torch.Tensor,
    class_names: Sequence[str],
    top_k: int = 5,
) -> None:
    """One row per video: ``video_id, label, label_name``, then the ``top_k`` classes best first (``pred_r``,
    ``pred_r_name``, ``score_r``; ranked by ``torch.topk``). ``labels`` (V,) (-1: unlabelled), ``scores`` (V, K)."""
    values, ids = scores.topk(min(top_k, scores.shape[1]), dim=1)
    name = (lambda i: class_names[i] if i >= 0 else "") if class_names else (lambda i: "")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        header = ["video_id", "label", "label_name"]
        for r in range(1, ids.shape[1] + 1):
            header += [f"pred_{r}", f"pred_{r}_name", f"score_{r}"]
        writer.writerow(header)
        for i, vid in enumerate(video_ids):
            row = [vid, int(labels[i]), name(int(labels[i]))]
            for c, s in zip(ids[i].tolist(), values[i].tolist()):
                row += [c, name(c), f"{s:.6f}"]
            writer.writerow(row)


def write_metrics(path: Path, metrics: Mapping[str, Any]) -> None:
    """``metrics`` as indented JSON (NaN written as null)."""
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean, indent=2) + "\n")


def write_scores(path: Path, **fields: Any) -> None:
    """A ``torch.load``-able dict of the evaluation's arrays and settings (video ids, labels, scores, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fields, path)


def split_files(output_dir: Path, split: str) -> dict[str, Path]:
    """The paths of a split's result files in ``output_dir``: ``predictions_file``, ``scores_file``,
    ``metrics_file`` and ``confusion_file`` (``eval.py``'s confusion matrix CSV, the stem of its plots)."""
    output_dir = Path(output_dir)
    return {
        "predictions_file": output_dir / f"predictions_{split}.csv",
        "scores_file": output_dir / f"scores_{split}.pt",
        "metrics_file": output_dir / f"metrics_{split}.json",
        "confusion_file": output_dir / f"confusion_{split}.csv",
    }


def write_split_results(
    output_dir: Path,
    split: str,
    fused: Any,
    class_names: Sequence[str],
    metrics: Mapping[str, Any],
    *,
    top_k: int = 5,
    **scores_fields: Any,
) -> dict[str, Path]:
    """The three files of an evaluated split, as ``eval.py`` and ``test_after_training`` write them:
    ``predictions_<split>.csv`` (:func:`write_predictions`), ``scores_<split>.pt`` (video ids, labels, fused scores
    (V, K), class names, ``split``, ``metrics``' settings and ``scores_fields``) and ``metrics_<split>.json``.
    ``fused``: a :class:`rsa_lightning.evaluation.FusedScores`. Returns the paths (:func:`split_files`)."""
    files = split_files(output_dir, split)
    write_predictions(files["predictions_file"], fused.video_ids, fused.labels, fused.scores, class_names, top_k)
    settings = ("protocol", "num_clips", "num_crops", "fusion", "checkpoints", "num_frames")
    write_scores(
        files["scores_file"],
        video_ids=fused.video_ids,
        labels=fused.labels,
        scores=fused.scores,
        class_names=list(class_names),
        split=split,
        **{key: metrics[key] for key in settings if key in metrics},
        **scores_fields,
    )
    write_metrics(files["metrics_file"], {"split": split, **metrics})
    return files


def write_confusion(path: Path, confusion: torch.Tensor, class_names: Sequence[str]) -> None:
    """``path`` (.csv): one row per true class, one column per predicted class (video counts), both labelled with the
    class names; next to it ``path.with_suffix(".pt")``: ``{"confusion": (K, K) int64, "class_names": [...]}``."""
    names = class_name_list(class_names, confusion.shape[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *names])
        for name, row in zip(names, confusion.tolist()):
            writer.writerow([name, *row])
    torch.save({"confusion": confusion, "class_names": names}, path.with_suffix(".pt"))


def log_per_class_summary(title: str, confusion: torch.Tensor, class_names: Sequence[str], where: Path) -> None:
    """One log line: mean per-class top-1 accuracy over the classes with videos, the 5 lowest and the highest."""
    names = class_name_list(class_names, confusion.shape[0])
    accuracy = per_class_accuracy(confusion)
    ranked = sorted((float(a), n) for a, n in zip(accuracy, names) if not math.isnan(a))  # classes with videos
    if not ranked:
        return
    log.info(
        "%s: per-class top-1 accuracy over %d/%d classes with videos: mean %.2f%%, lowest %s, highest %s %.1f%%; "
        "confusion matrix %s",
        title,
        len(ranked),
        len(names),
        100 * sum(a for a, _ in ranked) / len(ranked),
        ", ".join(f"{n} {100 * a:.1f}%" for a, n in ranked[:5]),
        ranked[-1][1],
        100 * ranked[-1][0],
        where,
    )
