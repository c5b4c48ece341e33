"""``train(cfg)``: build data, model, callbacks, loggers and trainer from a Hydra config and fit."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from rsa_lightning.utils.config import resolved_container
from rsa_lightning.utils.instantiate import instantiate_collection

log = logging.getLogger(__name__)


def _metric(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def check_test_split_is_labelled(datamodule: pl.LightningDataModule) -> None:
    """Fail before training, not after it, when ``test_after_training`` meets a test split without labels."""
    if not hasattr(datamodule, "records"):
        return
    datamodule.prepare_data()
    if any(r.label < 0 for r in datamodule.records("test")):
        raise ValueError(
            "test_after_training=true, but the test split of this dataset has no labels (e.g. SSv2's test.json); "
            "leave it false and write test predictions with `python eval.py ckpt_path=... split=test`"
        )


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit ``cfg.model`` on ``cfg.data``; returns the final logged metrics, ``best/<monitor>`` and, with
    ``test_after_training``, the ``test/...`` metrics of the best checkpoint.

    Under DDP every process runs this; only global rank 0 writes files (config, logs, checkpoints). The test metrics
    and files (``predictions_test.csv``, ``metrics_test.json``, ``scores_test.pt`` in the run folder) are those
    ``python eval.py ckpt_path=<best> split=test`` computes with the same views (:mod:`rsa_lightning.evaluation`).
    """
    start = time.time()
    config = resolved_container(cfg)  # fails here, before any work, on a missing mandatory value
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    log.info("data: <%s> from %s", cfg.data._target_, cfg.data.get("root"))
    datamodule: pl.LightningDataModule = hydra.utils.instantiate(cfg.data)
    if cfg.get("test_after_training"):
        check_test_split_is_labelled(datamodule)
    log.info("model: <%s>", cfg.model.net._target_)
    model: pl.LightningModule = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_collection(cfg.get("callbacks"), "callback")
    loggers = instantiate_collection(cfg.get("logger"), "logger")  # Lightning's loggers write on rank 0 only
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if trainer.is_global_zero:  # known from the launcher's variables once the Trainer exists
        # read by the ConfigInCheckpoint callback (conf/callbacks/config_in_checkpoint.yaml) at setup
        OmegaConf.save(OmegaConf.create(config), output_dir / "config_resolved.yaml")
        num_params = sum(p.numel() for p in model.parameters())
        log.info("%s parameters; output dir %s", f"{num_params:,}", output_dir)
        for lg in loggers:
            lg.log_hyperparams(config)

    trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    metrics = {k: _metric(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
    if checkpoint is not None and checkpoint.monitor and checkpoint.best_model_score is not None:
        metrics[f"best/{checkpoint.monitor}"] = _metric(checkpoint.best_model_score)
        metrics["best_checkpoint"] = checkpoint.best_model_path  # type: ignore[assignment]
    if cfg.get("test_after_training"):
        best = "best" if checkpoint is not None and checkpoint.best_model_path else None
        trainer.test(model=model, datamodule=datamodule, ckpt_path=best)
        metrics.update({k: _metric(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    metrics["time_min"] = (time.time() - start) / 60.0
    return metrics
