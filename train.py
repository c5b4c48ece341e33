"""Train a video network: ``python train.py model=rsa_tiny data=synthetic trainer.max_epochs=5``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from rsa_lightning.train import train

    metrics = train(cfg)
    summary = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, float))
    log.info("finished in %.1f min: %s", metrics["time_min"], summary)
    if "val/acc1" in metrics:
        best = metrics.get("best/val/acc1", metrics["val/acc1"])
        log.info("final validation top-1: %.2f%% (best epoch: %.2f%%)", 100 * metrics["val/acc1"], 100 * best)
    if "best_checkpoint" in metrics:
        log.info("best checkpoint: %s", metrics["best_checkpoint"])
    monitor = cfg.get("optimized_metric")
    return metrics.get(monitor) if monitor else None


if __name__ == "__main__":
    main()
