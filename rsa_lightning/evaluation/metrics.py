"""Classification metrics over videos: the one definition of every number rsa_lightning reports.

Validation during training, ``test_after_training``, ``eval.py`` and the training-epoch metrics all call these
functions, so ``val/acc1`` in a dashboard, ``acc1`` in ``metrics_val.json`` and the checkpoint's ``monitor`` value are
the same quantity. Inputs are one row per *video* (views already fused by :mod:`rsa_lightning.evaluation.views`):

- ``scores``: (V, K) float class scores (probabilities or logits; only their ranking matters);
- ``labels``: (V,) int64 class ids in ``[0, K)``.

Definitions and sources
    ``top-k accuracy`` (``acc1``, ``acc5``): the fraction of videos whose label is among the ``k`` highest scores
    (micro average over videos). Ranking by ``torch.topk``, as the official RSA/TSM code (``accuracy()`` in their
    ``main.py``), so ties are broken the way ``torch.topk`` breaks them.

    ``confusion matrix``: (K, K) video counts, row = true class, column = top-1 predicted class (``torch.topk``).

    ``mean class accuracy`` (``mean_class_acc``): per-class recall (top-1 hits / videos of the class) averaged over
    the classes that occur among the labels *or* the top-1 predictions; a class that was predicted but has no videos
    counts as 0. This is the official RSA code's and mmaction2's ``mean_class_accuracy`` (mmaction2
    ``mmaction/evaluation/functional/accuracy.py``: the confusion matrix is built over the union of the predicted and
    true labels, and ``hit / cnt if cnt else 0`` is averaged over its rows; its unit test: labels [2, 2, 2, 3] and
    predictions [2, 2, 2, 4] give 1/3). torchmetrics' ``MulticlassAccuracy(average="macro")`` computes the same number
    (it drops classes with tp + fp + fn == 0). FineGym's published metric (Shao et al., CVPR 2020).

Non-finite scores (NaN or infinite, from a diverged model or an fp16 overflow)
    have no ranking: ``torch.topk`` would still pick classes among them, so that a NaN model could score above chance
    and a top-5 below its top-1. A video whose scores are not all finite is never a hit (:func:`topk_correct`, at
    any ``k``, also for the training-epoch metrics), and a split with such videos is not scored:
    :func:`classification_metrics` reports NaN for every accuracy (with the count ``nonfinite_videos`` and a
    warning), so such a validation epoch is never chosen as the best checkpoint and no number is printed for it.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import torch
from torchmetrics import Metric

log = logging.getLogger(__name__)

TOP_K = (1, 5)


def _check(scores: torch.Tensor, labels: torch.Tensor) -> None:
    if scores.ndim != 2 or labels.ndim != 1 or len(scores) != len(labels):
        raise ValueError(f"expected scores (V, K) and labels (V,), got {tuple(scores.shape)} and {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must be class ids in [0, {scores.shape[1]}), got {labels.min()}..{labels.max()}")


def top1_predictions(scores: torch.Tensor) -> torch.Tensor:
    """(V, K) scores -> (V,) int64 top-1 class ids, ranked by ``torch.topk`` (the ranking of every metric here)."""
    return scores.topk(1, dim=1).indices[:, 0]


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(V,) bool: whether each video's label is among its ``k`` highest scores (``torch.topk`` ranking); False for
    a video whose scores are not all finite.

    Stays on the scores' device and never synchronises with it (used in every training step).
    """
    hit = (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return hit & torch.isfinite(scores).all(dim=1)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of the V videos whose label is among their ``k`` highest scores (micro average); NaN for V = 0.

    Raises ``ValueError`` for ``k`` outside ``[1, K]`` or mismatched shapes.
    """
    _check(scores, labels)
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"top-{k} accuracy needs 1 <= k <= {scores.shape[1]} classes")
    if not len(labels):
        return math.nan
    return topk_correct(scores, labels, k).double().mean().item()


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(V,) predicted and (V,) true class ids -> (K, K) int64 counts, ``[true, predicted]``."""
    if predictions.shape != labels.shape or predictions.ndim != 1:
        raise ValueError(f"predictions and labels must be (V,), got {predictions.shape} and {labels.shape}")
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """(K,) float64 top-1 recall of every class from a ``[true, predicted]`` confusion matrix; NaN for a class
    without videos."""
    support = confusion.sum(dim=1).double()
    return torch.where(support > 0, confusion.diagonal().double() / support.clamp(min=1), math.nan)


def scored_classes(confusion: torch.Tensor) -> torch.Tensor:
    """(K,) bool: the classes mean class accuracy averages over, those with videos or with top-1 predictions."""
    return (confusion.sum(dim=1) > 0) | (confusion.sum(dim=0) > 0)


def mean_class_accuracy(confusion: torch.Tensor) -> float:
    """Mean class accuracy from a ``[true, predicted]`` confusion matrix (definition and source: module docstring).

    Per-class recall averaged over :func:`scored_classes`; a predicted class without videos counts as 0.
    NaN for an empty matrix.
    """
    scored = scored_classes(confusion)
    if not scored.any():
        return math.nan
    recall = torch.nan_to_num(per_class_accuracy(confusion), nan=0.0)
    return recall[scored].mean().item()


def reported_top_k(num_classes: int) -> tuple[int, ...]:
    """The ``k`` of the top-k accuracies reported for ``num_classes`` classes: 1, and 5 with more than 5 classes
    (with K <= 5 top-5 is 1 by construction)."""
    return tuple(k for k in TOP_K if k == 1 or num_classes > k)


def classification_metrics(
    scores: torch.Tensor, labels: torch.Tensor, confusion: Optional[torch.Tensor] = None
) -> dict[str, float]:
    """Every video-level metric of a labelled split: ``acc1``, ``acc5`` (:func:`reported_top_k`),
    ``mean_class_acc``, and the counts ``num_videos``, ``classes_in_split`` (classes with videos) and
    ``classes_scored`` (the classes ``mean_class_acc`` averages over). ``confusion``: the split's matrix when the
    caller has it already (else built here).

    A split with videos whose scores are not all finite is not scored: every accuracy is NaN, and
    ``nonfinite_videos`` counts them (module docstring)."""
    _check(scores, labels)
    if confusion is None:
        confusion = confusion_matrix(top1_predictions(scores), labels, scores.shape[1])
    metrics = {f"acc{k}": topk_accuracy(scores, labels, k) for k in reported_top_k(scores.shape[1])}
    metrics["mean_class_acc"] = mean_class_accuracy(confusion)
    nonfinite = int((~torch.isfinite(scores).all(dim=1)).sum())
    if nonfinite:
        log.warning(
            "%d of %d videos have NaN or infinite scores (a diverged model, or fp16 overflow: evaluate with "
            "trainer.precision=32 or bf16-mixed): the accuracies are not scored (NaN)",
            nonfinite,
            len(labels),
        )
        metrics = {name: math.nan for name in metrics}
        metrics["nonfinite_videos"] = nonfinite
    metrics.update(
        num_videos=len(labels),
        classes_in_split=int((confusion.sum(dim=1) > 0).sum()),
        classes_scored=int(scored_classes(confusion).sum()),
    )
    return metrics


def score_videos(scores: torch.Tensor, labels: torch.Tensor) -> tuple[dict[str, float], Optional[torch.Tensor]]:
    """:func:`classification_metrics` and the (K, K) confusion matrix of a split's fused scores.

    An unlabelled split (every label -1, e.g. SSv2's test set) gives ``({}, None)``: predictions only. A split that
    mixes labelled and unlabelled videos raises ``ValueError``.
    """
    labelled = labels >= 0
    if not labelled.any():
        return {}, None
    if not labelled.all():
        raise ValueError(f"{int((~labelled).sum())} of {len(labels)} videos have no label: cannot score the split")
    confusion = confusion_matrix(top1_predictions(scores), labels, scores.shape[1])
    return classification_metrics(scores, labels, confusion), confusion


class MeanClassAccuracy(Metric):
    """:func:`mean_class_accuracy` as a torchmetrics ``Metric`` that accumulates a confusion matrix over steps (and
    sums it over processes), for the training epochs: ``update(predictions (B,), labels (B,))`` with top-1 class ids
    (:func:`top1_predictions`); ``compute()`` -> a scalar tensor. Logged like any torchmetrics object, it is synced
    when Lightning computes the epoch's metrics, in the same order on every process."""

    full_state_update = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state(
            "confusion", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        self.confusion += confusion_matrix(predictions, labels, self.num_classes)

    def compute(self) -> torch.Tensor:
        return torch.tensor(mean_class_accuracy(self.confusion.cpu()), dtype=torch.float32)
