"""Trained runs from their checkpoints: read a ``.ckpt`` written by ``train.py`` and rebuild its model.

A checkpoint written by ``train.py`` holds, next to Lightning's ``state_dict``, the run's resolved config
(``"config"``, stored by :class:`rsa_lightning.callbacks.ConfigInCheckpoint`) and the class names
(``"class_names"``), so the model and its input pipeline can be rebuilt from the file alone (no Hydra run, no
dataset). ImageNet initialisation (``model.net.pretrained``) is switched off when rebuilding: the weights come from
the checkpoint, and the ImageNet file need not exist where the model is evaluated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

OFFICIAL_KEY_HINTS = ("module.base_model.", "base_model.")


def load_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    """Load a checkpoint written by ``train.py`` (it must hold ``state_dict`` and the run's ``config``) on the CPU.

    Raises ``FileNotFoundError`` (no such file) or ``ValueError`` naming the file: unreadable (truncated, not a
    checkpoint), or without a config (e.g. a released official RSANet checkpoint, which must be converted first).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path} does not exist: pass a .ckpt file from <run dir>/checkpoints/")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for a damaged file
        raise ValueError(f"{path} could not be read as a checkpoint (truncated or not a .ckpt?): {err}") from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    missing = [k for k in ("state_dict", "config") if k not in checkpoint]
    if missing:
        keys = list(checkpoint.get("state_dict", {}))
        official = any(k.startswith(OFFICIAL_KEY_HINTS) for k in keys[:5])
        hint = (
            "; it looks like a released official RSANet checkpoint: convert it first with "
            f"`python -m rsa_lightning.tools.convert_official {path} <out>.ckpt --data ssv2 --num-frames 16`"
            if official
            else ""
        )
        raise ValueError(
            f"{path} has no {' or '.join(missing)}: it was not written by rsa_lightning's train.py, so the model "
            f"cannot be rebuilt from it{hint}"
        )
    return checkpoint


def upgrade_run_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run config saved by an earlier rsa_lightning, in today's keys (same meaning; a copy, ``config`` unchanged).

    - ``model``: ``warmup_epochs`` / ``warmup_start_factor`` / ``min_lr_factor`` / ``schedule_interval`` become the
      ``scheduler`` partial (:func:`rsa_lightning.modules.lr_schedule.warmup_cosine`) and ``scheduler_interval``;
      ``optimizer.weight_decay`` becomes ``weight_decay``; ``headline_metric`` is dropped (now ``data.monitor``);
      ``net._target_: rsa_lightning.models.ResNet`` with a ``pretrained`` key becomes ``create_resnet``.
    - ``data``: ``headline_metric: x`` becomes ``monitor: val/x``; the sampler's ``num_segments`` / ``num_frames``
      (now passed by the DataModule from ``data.num_frames``) are dropped.
    """
    config = OmegaConf.to_container(OmegaConf.create(config))
    model, data = config.get("model") or {}, config.get("data") or {}
    if "warmup_epochs" in model or "schedule_interval" in model:
        model["scheduler"] = {
            "_target_": "rsa_lightning.modules.lr_schedule.warmup_cosine",
            "_partial_": True,
            "warmup_epochs": model.pop("warmup_epochs", 5.0),
            "start_factor": model.pop("warmup_start_factor", 0.001),
            "end_factor": model.pop("min_lr_factor", 0.001),
        }
        model["scheduler_interval"] = model.pop("schedule_interval", "epoch")
    optimizer = model.get("optimizer")
    if isinstance(optimizer, dict) and "weight_decay" in optimizer:
        model["weight_decay"] = optimizer.pop("weight_decay")
    model.pop("headline_metric", None)
    net = model.get("net")
    if isinstance(net, dict) and net.get("_target_") == "rsa_lightning.models.ResNet" and "pretrained" in net:
        net["_target_"] = "rsa_lightning.models.create_resnet"
    if "headline_metric" in data:
        data["monitor"] = f"val/{data.pop('headline_metric')}"
    sampler = data.get("sampler")
    if isinstance(sampler, dict):
        for key in ("num_segments", "num_frames"):
            sampler.pop(key, None)
    return config


def run_config(checkpoint: dict[str, Any]) -> DictConfig:
    """The training run's resolved config stored in ``checkpoint`` (upgraded: :func:`upgrade_run_config`)."""
    return OmegaConf.create(upgrade_run_config(checkpoint["config"]))


def model_from_config(model_cfg: DictConfig, checkpoint: dict[str, Any], *, strict: bool = True) -> Any:
    """Instantiate ``model_cfg`` (a run's ``model`` section, e.g. a ``VideoClassifier``), load the checkpoint's
    weights and class names into it and return it in eval mode. ImageNet initialisation is skipped.

    Raises ``ValueError`` naming the config and the tensors when the weights do not fit the model (e.g. another
    ``model=`` than the run's).
    """
    model_cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))  # against its root: ${data.*}
    if OmegaConf.select(model_cfg, "net.pretrained") is not None:
        model_cfg.net.pretrained = None  # the checkpoint holds the weights
    model = hydra.utils.instantiate(model_cfg)
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=strict)
    except RuntimeError as err:
        raise ValueError(
            f"the checkpoint's weights do not fit the model built from {model_cfg.get('_target_')} with "
            f"net {OmegaConf.select(model_cfg, 'net._target_')}: was another model= given than the run's? {err}"
        ) from err
    if hasattr(model, "on_load_checkpoint"):
        model.on_load_checkpoint(checkpoint)
    return model.eval()


def model_from_checkpoint(
    path: Union[str, Path], *, strict: bool = True, model_cfg: Optional[DictConfig] = None
) -> Any:
    """The LightningModule of a ``train.py`` checkpoint, in eval mode (``model_cfg``: another model config)."""
    checkpoint = load_checkpoint(path)
    return model_from_config(model_cfg or run_config(checkpoint).model, checkpoint, strict=strict)
