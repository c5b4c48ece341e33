"""rsa_lightning: train, evaluate and compare Relational Self-Attention video networks.

Python API: :func:`load_model` (a trained network and its input pipeline from a ``train.py`` checkpoint),
:func:`predict_videos` (top-k class names of video files), :class:`VideoClassifier` (the LightningModule).
They are imported on first use, so ``import rsa_lightning.layers`` stays free of Lightning (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "LoadedModel": "rsa_lightning.inference",
    "load_model": "rsa_lightning.inference",
    "predict_scores": "rsa_lightning.inference",
    "predict_videos": "rsa_lightning.inference",
    "VideoClassifier": "rsa_lightning.modules",
}
__all__ = sorted(_API)

# the resolvers conf/hydra/default.yaml uses, for every entry point that composes it (omegaconf only, no torch)
importlib.import_module("rsa_lightning.utils.config").register_resolvers()


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'rsa_lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
