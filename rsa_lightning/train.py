"""``train(cfg)``: build data, model, callbacks, loggers and trainer from a Hydra config and fit."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from rsa_lightning.callbacks.nonfinite import TrainingDiverged
from rsa_lightning.callbacks.progress import with_progress_bar
from rsa_lightning.config_checks import check_new_run_dir, check_train_config, run_lock
from rsa_lightning.data.datamodule import check_backend_reads
from rsa_lightning.errors import CheckpointError
from rsa_lightning.evaluation.checkpoints import read_checkpoint
from rsa_lightning.resume import (
    CONFIG_FILE,
    LATEST,
    NothingToResume,
    checkpoint_resume_info,
    find_run_dir,
    finished_message,
    logger_kind,
    requeued_run_dir,
    resume_config,
)
from rsa_lightning.utils.config import is_launched_as_rank_zero, resolved_container, task_overrides
from rsa_lightning.utils.csv_logger import METRICS_FILE, cut_csv_log
from rsa_lightning.utils.faults import fit_faults
from rsa_lightning.utils.instantiate import instantiate_collection
from rsa_lightning.utils.run_info import run_info, write_run_info
from rsa_lightning.utils.wandb_offline import replay_lost_history

log = logging.getLogger(__name__)

# ckpt_path values Lightning resolves itself
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")
# set by Lightning's DDP launcher in the launching process; removed after each job of a multirun
DDP_ENV_KEYS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK")


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


def _resume(cfg: DictConfig, output_dir: Path, overrides: Sequence[str]) -> Optional[DictConfig]:
    """The config to continue the run in ``output_dir`` with (``resume=`` set, or a requeued SLURM job), else None."""
    resume = cfg.get("resume")
    if resume in (None, ""):
        if requeued_run_dir(output_dir) is None:
            return None
        log.info("SLURM job requeued: resuming the run in %s", output_dir)
    elif resume != LATEST and find_run_dir(str(resume), output_dir.parent) != output_dir.resolve():
        raise ValueError(
            f"resume={resume} continues a run in its own folder, but this process's output folder is {output_dir}; "
            "don't combine resume= with hydra.run.dir= or a multirun (-m)"
        )
    if not (output_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{output_dir / CONFIG_FILE} does not exist: {output_dir} is not a run to resume")
    resumed = resume_config(cfg, output_dir.resolve(), overrides)
    info = checkpoint_resume_info(Path(resumed.ckpt_path))
    finished = finished_message(output_dir, info, resumed)
    if finished:
        raise NothingToResume(finished)
    log.info("resuming %s from %s", output_dir, resumed.ckpt_path)
    for name, logger_cfg in (resumed.get("logger") or {}).items():
        kind = logger_kind(logger_cfg)
        if kind == "wandb" and info["wandb_run_id"]:
            logger_cfg.id = info["wandb_run_id"]
            log.info("W&B: continuing run %s (logger.%s)", info["wandb_run_id"], name)
        if info["log_step"] is None:
            continue
        if kind == "tensorboard":
            # TensorBoard drops the points of earlier event files from this step on (the killed process logged them
            # after its checkpoint; this run logs them again)
            logger_cfg.purge_step = info["log_step"] + 1
        if kind == "csv" and is_launched_as_rank_zero(os.environ):
            csv_dir = Path(logger_cfg.save_dir) / (logger_cfg.get("name") or "") / str(logger_cfg.get("version") or "")
            dropped = cut_csv_log(csv_dir / METRICS_FILE, info["log_step"])
            if dropped:
                log.info("%s: %d rows logged after the checkpoint dropped (logged again now)", csv_dir, dropped)
    return resumed


def _absolute_data_root(cfg: DictConfig) -> None:
    """A relative ``data.root`` (``data.root=data/mine``) becomes absolute, from the folder training was started in,
    before the config is saved with the run and its checkpoints: ``eval.py``, ``resume=`` and the tools read the
    data from wherever they are started."""
    root = OmegaConf.select(cfg, "data.root", default=None)
    if root is None or Path(str(root)).expanduser().is_absolute():
        return
    with open_dict(cfg):
        cfg.data.root = str(Path(str(root)).expanduser().absolute())


def _best_epoch(path: str) -> Optional[int]:
    try:
        return int(read_checkpoint(Path(path), mmap=True)["epoch"])
    except (CheckpointError, KeyError):
        return None


def train(cfg: DictConfig, overrides: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Fit ``cfg.model`` on ``cfg.data``; returns the final logged metrics, ``best/<monitor>``, ``best_checkpoint``,
    ``best_epoch`` and, with ``test_after_training``, the ``test/...`` metrics of the best checkpoint.

    ``cfg.resume`` (a run folder, or ``latest``) continues that run with its own config (:mod:`rsa_lightning.resume`);
    ``overrides`` are the command line's (default: Hydra's task overrides), checked against it.

    Under DDP every process runs this; only global rank 0 writes files (config, logs, checkpoints). The test metrics
    and files (``predictions_test.csv``, ``metrics_test.json``, ``scores_test.pt`` in the run folder) are those
    ``python eval.py ckpt_path=<best> split=test`` computes with the same views (:mod:`rsa_lightning.evaluation`).
    W&B runs are finished and a process group this run created is taken down at the end, also on failure, so the next
    job of a multirun starts clean.
    """
    start = time.time()
    output_dir = Path(cfg.paths.output_dir)
    resumed = _resume(cfg, output_dir, task_overrides() if overrides is None else overrides)
    if resumed is not None:
        cfg = resumed
    check_train_config(cfg)  # before any heavy work: one message naming the key and the fix
    _absolute_data_root(cfg)
    if resumed is None and is_launched_as_rank_zero(os.environ):
        check_new_run_dir(output_dir)
    start_from = cfg.get("ckpt_path")
    if resumed is None and start_from and str(start_from) not in LIGHTNING_CKPT_NAMES:
        read_checkpoint(Path(str(start_from)), mmap=True)  # truncated, pickled code, ...: one message naming it
    config = resolved_container(cfg)  # fails here, before any work, on a missing mandatory value
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    environ_before = dict(os.environ)
    failed = True
    try:
        with run_lock(output_dir):  # no second process trains this folder meanwhile (a resume= of a running run)
            metrics = _fit(cfg, config, output_dir, start)
        failed = False
        return metrics
    finally:
        _finish_wandb(exit_code=1 if failed else 0)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key in DDP_ENV_KEYS:  # Lightning's launcher sets them for its own processes; the next job sets them anew
            if key not in environ_before:
                os.environ.pop(key, None)


def _config_choices(output_dir: Path, resumed: bool) -> dict[str, str]:
    """The config groups' options of this run (``{"model": "rsa_tiny", "data": "synthetic", ...}``): a resumed run's
    own, from its ``.hydra/hydra.yaml``; else this invocation's. Empty when unknown (e.g. a config composed by hand)."""
    try:
        if resumed:
            saved = OmegaConf.load(output_dir / ".hydra" / "hydra.yaml")
            return dict(saved.hydra.runtime.choices)
        from hydra.core.hydra_config import HydraConfig

        return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    except Exception as err:  # the names are for the console only: never fail a run for them
        log.debug("config choices unknown: %s", err)
        return {}


def network_description(net: torch.nn.Module, net_cfg: Any) -> str:
    """The network's class and the components its config injects: ``ResNet(stmixer=RelationalSelfAttention)``,
    ``ResNet(block=Bottleneck, temporal_shift=TemporalShift)``; the class alone when it injects none."""
    parts = []
    for key, value in (net_cfg or {}).items():
        target = value.get("_target_") if isinstance(value, (dict, DictConfig)) else None
        if target:
            parts.append(f"{key}={str(target).rsplit('.', 1)[-1]}")
    name = type(net).__name__
    return f"{name}({', '.join(parts)})" if parts else name


def startup_lines(
    cfg: DictConfig, info: dict[str, Any], net: torch.nn.Module, output_dir: Path, choices: dict[str, str]
) -> list[str]:
    """What a user needs to know about a run before it trains, one line each: its folder, the model (config name,
    network, parameters, GMACs per view) and the data (config name, root, videos per split, classes, clip size).
    The global batch, lr, precision and device follow once training starts (:class:`~rsa_lightning.callbacks.
    EpochSummary`). ``info`` is :func:`~rsa_lightning.utils.run_info.run_info`'s."""
    data = info.get("data") or {}
    macs = (info.get("cost") or {}).get("gmacs_per_view")
    frames, crop = data.get("num_frames"), data.get("crop_size")
    model_name = f"{choices['model']} = " if choices.get("model") else ""
    model = (
        f"model: {model_name}{network_description(net, cfg.model.get('net'))}, "
        f"{info['params']['total']:,} parameters, "
        + ("GMACs not counted" if macs is None else f"{macs:.3f} GMACs per view of {frames} x {crop} x {crop}")
    )
    videos = data.get("num_videos") or {}
    counts = " / ".join(f"{videos[s]} {s}" for s in ("train", "val") if videos.get(s) is not None)
    data_name = f"{choices['data']} " if choices.get("data") else ""
    dataset = (
        f"data: {data_name}from {cfg.data.get('root')}: {counts + ' videos, ' if counts else ''}"
        f"{data.get('num_classes')} classes, clips of {frames} frames x {crop} x {crop}"
        + (f", decoded by {choices['data/backend']}" if choices.get("data/backend") else "")
    )
    return [f"run dir: {output_dir}", model, dataset]


def _fit(cfg: DictConfig, config: dict[str, Any], output_dir: Path, start: float) -> dict[str, Any]:
    log.debug("data: <%s> from %s", cfg.data._target_, cfg.data.get("root"))
    datamodule: pl.LightningDataModule = hydra.utils.instantiate(cfg.data, seed=cfg.get("seed"))
    if cfg.get("test_after_training"):
        check_test_split_is_labelled(datamodule)
    log.debug("model: <%s>", cfg.model.net._target_)
    model: pl.LightningModule = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_collection(cfg.get("callbacks"), "callback")
    # the tqdm bar counting epochs from 1, as the per-epoch summary does (rsa_lightning/callbacks/progress.py)
    callbacks = with_progress_bar(callbacks, enabled=bool(cfg.trainer.get("enable_progress_bar", True)))
    loggers = instantiate_collection(cfg.get("logger"), "logger")  # Lightning's loggers write on rank 0 only
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if trainer.is_global_zero:  # known from the launcher's variables once the Trainer exists
        # read by the ConfigInCheckpoint callback (conf/callbacks/config_in_checkpoint.yaml) at setup
        OmegaConf.save(OmegaConf.create(config), output_dir / CONFIG_FILE)
        datamodule.prepare_data()  # e.g. generates the synthetic videos, so that run_info can count them
        check_backend_reads(datamodule, "train")  # e.g. data/backend=frames on a list of video files
        info = run_info(cfg, model, datamodule)
        write_run_info(info, output_dir)
        choices = _config_choices(output_dir, resumed=bool(cfg.get("resume")))
        for line in startup_lines(cfg, info, getattr(model, "net", model), output_dir, choices):
            log.info("%s", line)
        for lg in loggers:
            lg.log_hyperparams(config)
            lg.log_hyperparams({"run_info": info})  # one top-level key: CSV/TensorBoard merge hparams shallowly
        if cfg.get("resume"):
            _replay_offline_wandb(loggers)

    with fit_faults(cfg, trainer, output_dir):  # out of memory, disk full: one message saying what to change
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    metrics: dict[str, Any] = {k: _metric(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
    if checkpoint is not None and checkpoint.monitor and checkpoint.best_model_score is not None:
        metrics[f"best/{checkpoint.monitor}"] = _metric(checkpoint.best_model_score)
        metrics["best_checkpoint"] = checkpoint.best_model_path
        metrics["best_epoch"] = _best_epoch(checkpoint.best_model_path)
    _check_final_metrics(metrics, cfg.data.get("monitor"), metrics.get("best_checkpoint"))
    if cfg.get("test_after_training"):
        best = "best" if checkpoint is not None and checkpoint.best_model_path else None
        with fit_faults(cfg, trainer, output_dir):
            trainer.test(model=model, datamodule=datamodule, ckpt_path=best)
        metrics.update({k: _metric(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    metrics["time_min"] = (time.time() - start) / 60.0
    return metrics


def _check_final_metrics(metrics: dict[str, Any], monitor: Optional[str], best: Optional[str]) -> None:
    """A run whose last validation is not a number (non-finite scores: the model diverged in fewer steps than
    :class:`~rsa_lightning.callbacks.NonFiniteGuard` stops at) is never reported as a result."""
    bad = sorted({k for k in (monitor, "val/acc1", "val/loss") if k in metrics and not math.isfinite(metrics[k])})
    if not bad:
        return
    kept = f"the best finite checkpoint is {best}" if best else "no checkpoint was kept as best"
    raise TrainingDiverged(
        f"training diverged: the last validation has non-finite {', '.join(bad)} (NaN or infinite scores), so there "
        f"is no result to report; {kept}. Likely causes: the learning rate is too high (model.optimizer.lr), or fp16 "
        "overflow (use trainer.precision=bf16-mixed)"
    )


def _replay_offline_wandb(loggers: Sequence[Any]) -> None:
    """A resumed run's offline W&B logger logs again the CSV rows the killed process's offline folder lacks."""
    csv_logger = next((lg for lg in loggers if isinstance(lg, CSVLogger)), None)
    offline = [lg for lg in loggers if type(lg).__name__ == "WandbLogger" and getattr(lg, "_offline", False)]
    if csv_logger is None or not offline:
        return
    path = Path(csv_logger.log_dir) / METRICS_FILE
    if path.is_file():
        with path.open(newline="") as file:
            rows = list(csv.DictReader(file))
        for lg in offline:
            replay_lost_history(lg, rows)


def _finish_wandb(exit_code: int) -> None:
    """Ends the W&B run of this job (Lightning leaves it open: the next job of a sweep would log into it)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def write_result(
    path: Path,
    *,
    status: str,
    cfg: DictConfig,
    overrides: Sequence[str],
    start: float,
    metrics: Optional[dict[str, Any]] = None,
    error: Optional[BaseException] = None,
) -> dict[str, Any]:
    """Writes ``<run dir>/result.json``, what a sweep's summary reads about a job (:mod:`rsa_lightning.sweeps`):
    ``status`` (completed / failed; ``interrupted`` when ``error`` says so, e.g.
    :class:`rsa_lightning.callbacks.Interrupted`: stopped by a signal, resumable), ``task_name``, ``overrides``,
    ``optimized_metric`` and its ``value`` (null when missing or NaN), ``best_epoch``, ``best_checkpoint``,
    ``metrics`` (the numbers), ``error`` (one line), ``time_min``, ``run_dir``."""
    metrics = metrics or {}
    status = getattr(error, "result_status", status)  # an interrupted run is not a failed one
    name = cfg.get("optimized_metric")
    value = metrics.get(name) if name else None
    result = {
        "status": status,
        "task_name": cfg.get("task_name"),
        "overrides": list(overrides),
        "optimized_metric": name,
        "value": value if isinstance(value, float) and math.isfinite(value) else None,
        "best_epoch": metrics.get("best_epoch"),
        "best_checkpoint": metrics.get("best_checkpoint"),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)},
        "error": None if error is None else f"{type(error).__name__}: {error}".splitlines()[0][:500],
        "time_min": (time.time() - start) / 60.0,
        "run_dir": str(path.parent),
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as err:  # e.g. the disk is full: the run's own error is the one to report
        tmp.unlink(missing_ok=True)
        log.warning("could not write %s: %s", path, err.strerror or err)
    return result
