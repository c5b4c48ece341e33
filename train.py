"""Train a video network: ``python train.py model=rsa_tiny data=synthetic trainer.max_epochs=5``.

``resume=<run dir>`` / ``resume=latest`` continue a run (:mod:`rsa_lightning.resume`); ``-m`` runs a sweep, one job
folder each, summarised by :mod:`rsa_lightning.sweeps`. Every job writes ``result.json`` into its folder, also when
it fails (the traceback then goes to its own ``train.log`` too, and a sweep goes on with its next job).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rsa_lightning.errors import (
    INTERRUPTED_EXIT,
    classify,
    handle_errors,
    log_traceback_to_files,
    message,
    run_hydra_main,
)
from rsa_lightning.resume import NothingToResume, check_resume_argument
from rsa_lightning.utils.config import distributed_launch_overrides, job_argv, job_launch_args, task_overrides

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@handle_errors  # bad input: one message and exit code 2, the traceback in train.log (rsa_lightning.errors)
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from pytorch_lightning.utilities import rank_zero_only

    from rsa_lightning.config_checks import RunInUse
    from rsa_lightning.train import train, write_result
    from rsa_lightning.utils import console

    # log records above the progress bar, no library advertising, start-up details in train.log only
    ignored = console.IGNORED_WARNINGS
    if cfg.trainer.get("limit_train_batches") is not None or cfg.trainer.get("fast_dev_run"):
        ignored += ((UserWarning, console.SHORT_EPOCH_WARNING),)  # a short debugging epoch is short on purpose
    console.setup_console(console_details=console.TRAIN_CONSOLE_DETAILS, ignored_warnings=ignored)

    hydra_cfg = HydraConfig.get()
    overrides = task_overrides()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    # the processes Lightning's DDP launcher starts for this job run this job, not the command line's sweep
    os.environ.update(job_launch_args(overrides, output_dir))
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    start = time.time()
    try:
        metrics = train(cfg, overrides)
    except NothingToResume as done:  # nothing trained, nothing written
        log.info("%s", done)
        return None
    except Exception as err:
        if rank_zero_only.rank != 0:
            raise
        if classify(err) is None:  # a bug: the traceback on the console and in this job's train.log
            log.exception("training failed")
        if not isinstance(err, RunInUse):  # the folder's result.json is the running process's
            write_result(
                output_dir / "result.json", status="failed", cfg=cfg, overrides=overrides, start=start, error=err
            )
        if multirun and classify(err) != INTERRUPTED_EXIT:  # the sweep goes on (Optuna marks the trial failed)
            if classify(err) is not None:  # its summary lists the failure at the end
                log_traceback_to_files(err, f"error: {message(err)}")
                log.error("job failed: %s", message(err))
            return None
        raise
    if rank_zero_only.rank != 0:  # the other DDP processes: rank 0 reports
        return None
    write_result(
        output_dir / "result.json", status="completed", cfg=cfg, overrides=overrides, start=start, metrics=metrics
    )
    summary = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, float))
    log.info("finished in %.1f min: %s", metrics["time_min"], summary)
    if "val/acc1" in metrics:
        log.info("final validation top-1: %.2f%%", 100 * metrics["val/acc1"])
    monitor = cfg.data.get("monitor")
    if f"best/{monitor}" in metrics and monitor in metrics:  # a checkpoint callback monitored it
        final, best = 100 * metrics[monitor], 100 * metrics[f"best/{monitor}"]
        # the checkpoint's epoch counts from 0; the console from 1, as the progress bar and the epoch summary
        epoch = "" if metrics.get("best_epoch") is None else f" (epoch {int(metrics['best_epoch']) + 1})"
        log.info("checkpoint monitor %s: final %.2f%%, best %.2f%%%s", monitor, final, best, epoch)
    if "best_checkpoint" in metrics:
        log.info("best checkpoint: %s", metrics["best_checkpoint"])
    optimized = cfg.get("optimized_metric")
    return metrics.get(optimized) if optimized else None


if __name__ == "__main__":
    # DDP: every process of the run shares rank 0's run folder; only rank 0 writes .hydra/ and train.log there
    sys.argv = job_argv(os.environ, sys.argv) + distributed_launch_overrides(os.environ)
    try:
        check_resume_argument(sys.argv, Path(__file__).resolve().parent / "conf")
    except NothingToResume as done:
        print(done)
        sys.exit(0)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    run_hydra_main(main)
