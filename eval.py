"""Evaluate a trained run: ``python eval.py ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt [split=val]``."""

import logging
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
log = logging.getLogger("eval")


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from rsa_lightning.evaluate import evaluate

    metrics = evaluate(cfg, overrides=HydraConfig.get().overrides.task)
    scores = ", ".join(f"top-{k[3:]} {100 * v:.2f}%" for k, v in metrics.items() if k.startswith("acc"))
    log.info(
        "%s: %d videos x %d views, %s",
        metrics["split"],
        metrics["num_videos"],
        metrics["views_per_video"],
        scores or "no labels (predictions only)",
    )
    log.info("predictions: %s", metrics["predictions_file"])


if __name__ == "__main__":
    main()
