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
    acc5_key = next(k for k in metrics if k.startswith("acc") and k != "acc1")
    log.info(
        "%s: %d videos, top-1 %.2f%%, top-%s %.2f%%",
        metrics["split"],
        metrics["num_videos"],
        100 * metrics["acc1"],
        acc5_key[3:],
        100 * metrics[acc5_key],
    )
    log.info("predictions: %s", metrics["predictions_file"])


if __name__ == "__main__":
    main()
