"""Evaluate trained runs: ``python eval.py ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt [split=val]``.

``protocol=accurate`` (2 clips x 3 crops), ``fusion=logit``, ``ckpt_path=[a,b]`` (an ensemble) and ``trainer=ddp_cpu``
(several processes, same numbers) are described in :mod:`rsa_lightning.evaluate`. Under DDP Lightning starts the other
ranks by re-running this script with ``hydra.run.dir`` set to this run's folder, so there is one run folder; the
other ranks log to stdout only (:func:`rsa_lightning.utils.config.distributed_launch_overrides`).
"""

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rsa_lightning.errors import handle_errors, run_hydra_main
from rsa_lightning.utils.config import distributed_launch_overrides, task_overrides

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
log = logging.getLogger("eval")


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@handle_errors  # bad input: one message and exit code 2, the traceback in eval.log (rsa_lightning.errors)
def main(cfg: DictConfig) -> None:
    from pytorch_lightning.utilities import rank_zero_only

    from rsa_lightning.evaluate import evaluate
    from rsa_lightning.utils.console import setup_console

    setup_console()  # log records above the progress bar, no library advertising (rsa_lightning/utils/console.py)
    metrics = evaluate(cfg, overrides=task_overrides())
    if rank_zero_only.rank != 0:
        return
    scores = ", ".join(
        f"{name} {100 * metrics[key]:.2f}%"
        for key, name in (("acc1", "top-1"), ("acc5", "top-5"), ("mean_class_acc", "mean class accuracy"))
        if key in metrics
    )
    log.info(
        "%s: %d videos x %d views (%s, %s fusion, %d model%s), %s",
        metrics["split"],
        metrics["num_videos"],
        metrics["views_per_video"],
        metrics["protocol"],
        metrics["fusion"],
        len(metrics["checkpoints"]),
        "s" if len(metrics["checkpoints"]) > 1 else "",
        scores or "no labels (predictions only)",
    )
    log.info("predictions: %s", metrics["predictions_file"])


if __name__ == "__main__":
    # DDP: every process shares rank 0's run folder; only rank 0 writes .hydra/ and eval.log there (as in train.py)
    sys.argv += distributed_launch_overrides(os.environ)
    run_hydra_main(main)
