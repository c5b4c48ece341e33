"""Config helpers: the resolved run config, and rebuilding a run's config for evaluation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

RUN_KEYS = ("model", "data")


def resolved_container(cfg: DictConfig) -> dict[str, Any]:
    """The config with every interpolation resolved, as plain containers (what a checkpoint stores)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def overridden_keys(overrides: Sequence[str]) -> list[str]:
    """Config keys named by command-line overrides: ``data.root=/x`` -> ``data.root``, ``data=ssv2`` -> ``data``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [o.key_or_group for o in parsed if not o.is_delete()]


def merge_run_config(
    saved: dict[str, Any] | DictConfig,
    composed: DictConfig,
    overrides: Sequence[str],
    keys: Iterable[str] = RUN_KEYS,
) -> DictConfig:
    """The config to evaluate a trained run with.

    ``composed`` is the evaluation config (``conf/eval.yaml`` plus command line); ``saved`` is the training run's
    resolved config. For ``keys`` (model and data) the run's values are used, except where the command line named
    a key or group: ``data.root=/elsewhere`` changes one value, ``data=ssv2`` replaces the whole group.
    """
    saved = OmegaConf.create(saved) if not isinstance(saved, DictConfig) else saved
    keys = tuple(keys)
    merged = OmegaConf.create(OmegaConf.to_container(composed, resolve=True))
    for key in keys:
        if key not in saved:
            raise KeyError(f"the checkpoint's config has no '{key}' section; was it written by rsa_lightning?")
        merged[key] = OmegaConf.create(OmegaConf.to_container(saved[key]))
    for key in overridden_keys(overrides):
        if key.split(".")[0] in keys:
            OmegaConf.update(merged, key, OmegaConf.select(composed, key), merge=False, force_add=True)
    return merged
