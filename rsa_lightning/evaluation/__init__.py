"""Evaluation: one path for validation, test, ``eval.py`` and the ``predict`` tool.

- :mod:`~rsa_lightning.evaluation.views`: per-view outputs, exact de-duplication under DDP, fusion, ensembles;
- :mod:`~rsa_lightning.evaluation.metrics`: the one definition of top-k accuracy, confusion matrix, mean class
  accuracy;
- :mod:`~rsa_lightning.evaluation.writers`: predictions / scores / metrics / confusion files;
- :mod:`~rsa_lightning.evaluation.checkpoints`: read a ``train.py`` checkpoint and rebuild its model.
"""

from rsa_lightning.evaluation.checkpoints import load_checkpoint, model_from_checkpoint, model_from_config
from rsa_lightning.evaluation.metrics import (
    classification_metrics,
    confusion_matrix,
    mean_class_accuracy,
    per_class_accuracy,
    topk_accuracy,
)
from rsa_lightning.evaluation.views import (
    FUSIONS,
    FusedScores,
    ViewCollector,
    ViewOutputs,
    batch_views,
    drop_duplicate_views,
    ensemble,
    fuse_views,
    gather_views,
)

__all__ = [
    "FUSIONS",
    "FusedScores",
    "ViewCollector",
    "ViewOutputs",
    "batch_views",
    "classification_metrics",
    "confusion_matrix",
    "drop_duplicate_views",
    "ensemble",
    "fuse_views",
    "gather_views",
    "load_checkpoint",
    "mean_class_accuracy",
    "model_from_checkpoint",
    "model_from_config",
    "per_class_accuracy",
    "topk_accuracy",
]
