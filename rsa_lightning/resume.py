"""Resuming a training run: ``python train.py resume=<run dir>`` or ``resume=latest``.

The run's saved config (``<run dir>/config_resolved.yaml``, written when it started and inside every checkpoint) is
the config: nothing is typed again. Command-line overrides that would change what is trained (the model, the data,
the seed) are refused with a message naming them, unless they equal the run's value; the others (``trainer.*``,
``logger``, ``callbacks``, where the data lives, how many workers read it, ...) apply. Training continues from the
newest checkpoint of the run folder (``checkpoints/last.ckpt``, or a SLURM ``hpc_ckpt_<n>.ckpt``) in the same folder:

- Lightning restores weights, optimiser, schedule, loop progress and the training data's position inside the epoch
  (:mod:`rsa_lightning.data.resumable`); :class:`rsa_lightning.callbacks.ResumeState` the RNG states.
- ``csv/metrics.csv`` is continued (:mod:`rsa_lightning.utils.csv_logger`): the rows logged after the checkpoint by
  the killed process are dropped, since the resumed run logs those steps again.
- TensorBoard writes a new event file in the same folder; W&B continues the run whose id the checkpoint stores.
- Hydra writes this invocation's ``.hydra/`` files under ``.hydra/resumed/<time>/`` (the run's own stay) and appends
  to ``train.log``.

A SLURM job requeued after its time limit (or pre-empted) runs the same command again in the same folder
(``slurm-<job id>`` for a batch job, ``<sweep dir>/<n>`` for a submitit sweep job); when that folder holds a config
and a checkpoint it is resumed the same way (:func:`requeued_run_dir`), from the newest of ``last.ckpt`` and
Lightning's ``hpc_ckpt_<n>.ckpt``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from rsa_lightning.utils.config import overridden_keys, slurm_run_name

log = logging.getLogger(__name__)

LATEST = "latest"
CONFIG_FILE = "config_resolved.yaml"
# what is trained: overriding these when resuming is refused (unless the value equals the run's) ...
FIXED_KEYS = ("model", "data", "seed", "task_name")
# ... except these, which change how or where, not what
CHANGEABLE_KEYS = (
    "data.root",
    "data.num_workers",
    "data.pin_memory",
    "data.decode_timeout",
    "data.exclusions_file",
    "model.compile",
)
# groups whose options set keys all over the config (`# @package _global_`): refused when resuming
PRESET_GROUPS = ("experiment", "hparams_search", "debug")
# never taken from the command line when resuming: resume= decides them
IGNORED_KEYS = ("resume",)


def run_dir_resolver(resume: Optional[str], task_dir: str, new_run: str) -> str:
    """``hydra.run.dir``: ``<task_dir>/runs/<new_run>`` for a new run, the resumed run's folder with ``resume=``."""
    if resume in (None, ""):
        return f"{task_dir}/runs/{new_run}"
    return str(find_run_dir(str(resume), Path(task_dir)))


def checkpoints_of(run_dir: Path) -> list[Path]:
    """The checkpoints a run can resume from: ``checkpoints/last.ckpt`` and SLURM's ``hpc_ckpt_<n>.ckpt``."""
    found = [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
    return [p for p in found if p.is_file()]


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest (by modification time) of :func:`checkpoints_of`, or None."""
    found = checkpoints_of(run_dir)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def find_run_dir(resume: str, task_dir: Path) -> Path:
    """The run folder ``resume=`` names: a path (absolute, or relative to the working directory), or ``latest``: the
    run of this task (``<task_dir>/runs/*`` and ``<task_dir>/multiruns/*/*``) with the newest checkpoint.

    Raises:
        FileNotFoundError: no such folder, not a training run folder, or no run to resume for ``latest``.
    """
    if resume == LATEST:
        runs = [p for pattern in ("runs/*", "multiruns/*/*") for p in task_dir.glob(pattern) if _resumable(p)]
        if not runs:
            raise FileNotFoundError(
                f"resume=latest: no run under {task_dir} has a config and a checkpoint to resume from; "
                "pass the run folder: resume=<logs/train/runs/...>"
            )
        return max(runs, key=lambda p: latest_checkpoint(p).stat().st_mtime).resolve()  # type: ignore[union-attr]
    path = Path(resume).expanduser()
    if path.is_file() and path.suffix == ".ckpt":
        raise FileNotFoundError(
            f"resume={resume} is a checkpoint file; pass its run folder (resume=<run dir>): the run's config and "
            "logs live there, and its newest checkpoint is chosen"
        )
    if path.is_file():
        raise FileNotFoundError(
            f"resume={resume} is a file; pass the run folder (the one holding {CONFIG_FILE}, e.g. {path.parent})"
        )
    if not path.is_dir():
        raise FileNotFoundError(f"resume={resume}: no such folder; pass a training run folder or resume=latest")
    if not (path / CONFIG_FILE).is_file():
        parent = (
            f" (did you mean its parent, {path.resolve().parent}?)" if (path / ".." / CONFIG_FILE).is_file() else ""
        )
        raise FileNotFoundError(
            f"resume={resume}: {path / CONFIG_FILE} does not exist; this is not an rsa_lightning training run folder"
            f"{parent} (or the run stopped before training started: start it again)"
        )
    return path.resolve()


class NothingToResume(Exception):
    """The run has already trained what its config asks for (``trainer.max_epochs`` / ``max_steps``)."""


def finished_message(run_dir: Path, info: dict[str, Any], cfg: DictConfig) -> Optional[str]:
    """Why resuming ``run_dir`` from a checkpoint (its :func:`checkpoint_resume_info`) with ``cfg`` would train
    nothing, or None. Lightning stops when the finished epochs reach ``trainer.max_epochs`` or the optimiser steps
    ``trainer.max_steps``."""
    epochs, steps = info["epochs_done"], info["global_step"]
    max_epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    max_steps = OmegaConf.select(cfg, "trainer.max_steps") or -1
    if epochs is not None and max_epochs not in (None, -1) and epochs >= max_epochs:
        done, further = f"{epochs} of trainer.max_epochs={max_epochs} epochs", f"trainer.max_epochs={epochs + 1}"
    elif max_steps > 0 and steps >= max_steps:
        done, further = f"{steps} of trainer.max_steps={max_steps} steps", f"trainer.max_steps={2 * max_steps}"
    else:
        return None
    return f"{run_dir} has already trained {done}; to train it further, raise that limit: resume={run_dir} {further}"


def check_resume_argument(argv: Sequence[str], config_dir: Path) -> None:
    """Checks ``resume=`` of a ``train.py`` command line before Hydra starts, so that a bad value or a refused
    override gets a short message and nothing is written into the run folder (Hydra would first create this
    invocation's ``.hydra/`` files there and log the error as a traceback into the run's ``train.log``).

    Composes ``conf/train.yaml`` with the command line's overrides as :func:`resume_config` will see them. An override
    Hydra itself cannot compose is left for Hydra to report.

    Raises:
        ValueError: an empty ``resume=``, ``resume=`` in a multirun, or a refused override (see :func:`resume_config`).
        FileNotFoundError: as :func:`find_run_dir`; a run without a checkpoint.
        NothingToResume: the run has already finished what its config asks for.
    """
    values = [arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith("resume=")]
    if not values or values[-1] == "null":
        return
    resume = values[-1]
    if resume == "":
        raise ValueError("resume= needs a value: a training run folder, or latest (resume=null starts a new run)")
    if any(arg in ("-m", "--multirun") for arg in argv[1:]):
        raise ValueError("resume= continues one run in its own folder; it cannot be part of a multirun (-m)")
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    overrides = [arg for arg in argv[1:] if "=" in arg and not arg.startswith(("-", "hydra."))]
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        task_dir = Path(cfg.paths.log_dir) / str(cfg.task_name)
    except Exception:  # a bad override: Hydra reports it when it composes the config itself
        return
    run_dir = find_run_dir(resume, task_dir)
    HydraConfig.instance().set_config(cfg)
    try:
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
            del cfg.hydra
        try:
            resumed = resume_config(cfg, run_dir, overrides)
        except (ValueError, FileNotFoundError):
            raise
        except Exception:  # something only Hydra's own run can resolve: train() checks again there
            return
        message = finished_message(run_dir, checkpoint_resume_info(Path(resumed.ckpt_path)), resumed)
        if message:
            raise NothingToResume(message)
    finally:
        HydraConfig.instance().cfg = None


def _resumable(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and latest_checkpoint(path) is not None


def requeued_run_dir(output_dir: Path, environ: Optional[dict[str, str]] = None) -> Optional[Path]:
    """``output_dir`` when this is a SLURM job that SLURM has requeued (``SLURM_RESTART_COUNT`` >= 1, e.g. after
    Lightning's auto-requeue at the time limit, or a pre-emption) and the folder holds a config and a checkpoint: the
    job must continue that run, not start it over. None otherwise."""
    environ = os.environ if environ is None else environ
    if slurm_run_name(environ) is None or int(environ.get("SLURM_RESTART_COUNT") or 0) < 1:
        return None
    return output_dir if _resumable(output_dir) else None


def _differs(saved: DictConfig, composed: DictConfig, key: str) -> bool:
    missing = object()
    return OmegaConf.select(saved, key, default=missing) != OmegaConf.select(composed, key, default=missing)


def refused_overrides(saved: DictConfig, composed: DictConfig, keys: Sequence[str]) -> list[str]:
    """The overridden ``keys`` that would change what the run trains (see :data:`FIXED_KEYS`), with both values."""
    refused = []
    for key in keys:
        if key in PRESET_GROUPS:
            refused.append(f"{key}= (a preset of keys across the config; name the keys to change instead)")
            continue
        fixed = key.split(".")[0] in FIXED_KEYS and not any(
            key == k or key.startswith(k + ".") for k in CHANGEABLE_KEYS
        )
        if fixed and _differs(saved, composed, key):
            value = OmegaConf.select(saved, key)
            if isinstance(value, DictConfig):
                refused.append(f"{key} (a config group: the run's own is kept)")
            else:
                refused.append(f"{key}={OmegaConf.select(composed, key)!r} (the run has {value!r})")
    return refused


def resume_config(composed: DictConfig, run_dir: Path, overrides: Sequence[str]) -> DictConfig:
    """The config to resume ``run_dir`` with: its saved config, the harmless ``overrides`` applied, ``ckpt_path`` set to
    its newest checkpoint and ``resume`` to the folder.

    ``composed`` is the config Hydra composed for this invocation (its ``paths`` are used: the run folder is this
    process's output folder). Paths inside the saved config that point into the run folder's old location (a folder
    copied from a cluster) are moved to the new one.

    Raises:
        ValueError: an override would change the model or the data; ``ckpt_path=`` given too.
        FileNotFoundError: the run has no checkpoint to resume from.
    """
    saved = OmegaConf.load(run_dir / CONFIG_FILE)
    now = OmegaConf.create(OmegaConf.to_container(composed, resolve=True))
    keys = [k for k in overridden_keys(overrides) if k not in IGNORED_KEYS and not k.startswith("hydra")]
    if "ckpt_path" in keys and now.get("ckpt_path") is not None:
        raise ValueError(f"resume={run_dir} picks the checkpoint to continue from; leave out ckpt_path=")
    refused = refused_overrides(saved, now, keys)
    deleted = overridden_keys(overrides, deleted=True)
    refused += [f"~{key} (deleting a key)" for key in deleted if key.split(".")[0] in FIXED_KEYS]
    if refused:
        raise ValueError(
            f"resume={run_dir} continues that run as it was configured; these overrides would change what it trains: "
            + "; ".join(refused)
            + ". Leave them out, or start a new run (without resume=) to train something else"
        )
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(
            f"nothing to resume in {run_dir}: no checkpoints/last.ckpt (the run stopped before its first checkpoint); "
            "start it again without resume="
        )
    old_dir = str(OmegaConf.select(saved, "paths.output_dir") or run_dir)
    merged = _move_paths(OmegaConf.to_container(saved), old_dir, str(run_dir)) if old_dir != str(run_dir) else saved
    merged = OmegaConf.create(merged)
    for key in keys:
        OmegaConf.update(merged, key, OmegaConf.select(now, key), merge=False, force_add=True)
    merged.paths = now.paths
    merged.resume = str(run_dir)
    merged.ckpt_path = str(checkpoint)
    return merged


def _move_paths(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {k: _move_paths(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_move_paths(v, old, new) for v in value]
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old) :]
    return value


def checkpoint_resume_info(path: Path) -> dict[str, Any]:
    """What resuming needs from a checkpoint, read memory-mapped (the weights are not read): the logging step and W&B
    run id :class:`~rsa_lightning.callbacks.ResumeState` stored, the finished epochs and the optimiser steps."""
    # imported here: the callbacks import Lightning, which a refused command line should not wait for
    from rsa_lightning.callbacks.resume import LOG_STEP_KEY, WANDB_ID_KEY
    from rsa_lightning.evaluation.checkpoints import read_checkpoint

    checkpoint = read_checkpoint(path, mmap=True)  # a damaged file: one message naming it and the run's others
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    return {
        "log_step": checkpoint.get(LOG_STEP_KEY),
        "wandb_run_id": checkpoint.get(WANDB_ID_KEY),
        "epochs_done": progress.get("processed"),
        "global_step": checkpoint.get("global_step", 0),
    }


def logger_kind(logger_cfg: Any) -> Optional[str]:
    """``"csv"``, ``"tensorboard"`` or ``"wandb"`` for a logger config of those classes (by ``_target_``), else None."""
    target = str(logger_cfg.get("_target_", "")) if hasattr(logger_cfg, "get") else ""
    for kind, ends in (
        ("csv", ("CSVLogger",)),
        ("tensorboard", ("TensorBoardLogger",)),
        ("wandb", ("WandbLogger", "wandb_logger")),
    ):
        if target.endswith(ends):
            return kind
    return None
