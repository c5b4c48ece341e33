"""Checks of a composed config before any heavy work (building the model, the trainer, reading the data set).

:func:`check_train_config` runs in :func:`rsa_lightning.train.train` right after the config is composed (and, for a
resume, merged with the run's); every problem raises :class:`rsa_lightning.errors.ConfigError` naming the key, its
value and the fix, so ``train.py`` exits with code 2 and one message (:mod:`rsa_lightning.errors`).
"""

from __future__ import annotations

from omegaconf import DictConfig

from rsa_lightning.errors import ConfigError


def check_train_config(cfg: DictConfig) -> None:
    """Raises :class:`ConfigError` for the first value of ``cfg`` (a ``train.py`` config) that cannot work."""
    num_frames = cfg.data.get("num_frames")
    if isinstance(num_frames, int) and num_frames < 1:
        raise ConfigError(f"data.num_frames={num_frames}: a clip needs at least 1 frame (e.g. data.num_frames=8)")
