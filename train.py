"""Train a video network: ``python train.py model=rsa_tiny data=synthetic trainer.max_epochs=5``."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rsa_lightning.utils.config import distributed_launch_overrides

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from pytorch_lightning.utilities import rank_zero_only

    from rsa_lightning.train import train

    metrics = train(cfg)
    if rank_zero_only.rank != 0:  # the other DDP processes: rank 0 reports
        return None
    summary = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, float))
    log.info("finished in %.1f min: %s", metrics["time_min"], summary)
    if "val/acc1" in metrics:
        log.info("final validation top-1: %.2f%%", 100 * metrics["val/acc1"])
    monitor = cfg.data.get("monitor")
    if f"best/{monitor}" in metrics:  # a checkpoint callback monitored it
        final, best = 100 * metrics[monitor], 100 * metrics[f"best/{monitor}"]
        log.info("checkpoint monitor %s: final %.2f%%, best epoch %.2f%%", monitor, final, best)
    if "best_checkpoint" in metrics:
        log.info("best checkpoint: %s", metrics["best_checkpoint"])
    optimized = cfg.get("optimized_metric")
    return metrics.get(optimized) if optimized else None


if __name__ == "__main__":
    # DDP: every process of the run shares rank 0's run folder; only rank 0 writes .hydra/ and train.log there
    sys.argv += distributed_launch_overrides(os.environ)
    main()
