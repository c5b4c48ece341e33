"""Config helpers: the resolved run config, one run folder per distributed run, and a run's config for evaluation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

RUN_KEYS = ("model", "data")

# Read by conf/hydra/default.yaml: the run folder's name (instead of the launch time) when set.
RUN_NAME_ENV = "RSA_RUN_NAME"
# Variables a launcher sets to a process's rank: torchrun (RANK, GROUP_RANK), Lightning's DDP launcher for the
# processes it starts (LOCAL_RANK, NODE_RANK), srun (SLURM_PROCID).
RANK_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
# Hydra overrides for every process but the first of a distributed run: it shares the first one's run folder and
# writes no .hydra/ and no <job>.log there; its log lines go to stdout only.
SECONDARY_RANK_OVERRIDES = (
    "hydra.output_subdir=null",
    "hydra/job_logging=stdout",
    'hydra.job_logging.formatters.simple.format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"',
)


def resolved_container(cfg: DictConfig) -> dict[str, Any]:
    """The config with every interpolation resolved, as plain containers (what a checkpoint stores)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def slurm_run_name(environ: Mapping[str, str]) -> str | None:
    """``slurm-<job id>`` inside a SLURM batch job, else None.

    Every task of the job (all ranks on all nodes, started together by ``srun``) computes the same name, and so does
    the job after an automatic requeue: Lightning then finds its ``hpc_ckpt_*.ckpt`` in the same folder and resumes.
    A job counts as SLURM the way Lightning's ``SLURMEnvironment.detect`` decides: ``SLURM_NTASKS`` is set and the job
    is not named ``bash`` or ``interactive`` (an interactive allocation, where each command is its own run).
    """
    if "SLURM_NTASKS" not in environ or environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    array_job = environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{environ.get('SLURM_ARRAY_TASK_ID')}" if array_job else environ.get("SLURM_JOB_ID")
    return f"slurm-{job}" if job else None


def is_launched_as_rank_zero(environ: Mapping[str, str]) -> bool:
    """Whether this process is the first (global rank 0) of its run, judged before any DDP setup from launcher vars.

    False for the processes Lightning's DDP launcher starts (``LOCAL_RANK`` >= 1), for the other nodes of a multi-node
    run (``NODE_RANK`` >= 1) and for every ``srun`` / ``torchrun`` task but the first. True for a plain process.
    """
    return all(int(environ.get(key) or 0) == 0 for key in RANK_ENV)


def distributed_launch_overrides(environ: MutableMapping[str, str]) -> list[str]:
    """Prepares a training process for Hydra, before it composes the config; returns overrides to append.

    All processes of one run must use one run folder. Lightning's DDP launcher passes rank 0's resolved
    ``hydra.run.dir`` to the processes it starts; tasks started by SLURM all start on their own, so in a SLURM job
    the folder is named after the job (:func:`slurm_run_name`, through ``RSA_RUN_NAME`` unless that is already set).
    Only rank 0 writes ``.hydra/`` and the log file: the others get :data:`SECONDARY_RANK_OVERRIDES`.
    """
    name = slurm_run_name(environ)
    if name is not None:
        environ.setdefault(RUN_NAME_ENV, name)
    return [] if is_launched_as_rank_zero(environ) else list(SECONDARY_RANK_OVERRIDES)


def overridden_keys(overrides: Sequence[str]) -> list[str]:
    """Config keys named by command-line overrides: ``data.root=/x`` -> ``data.root``, ``data=ssv2`` -> ``data``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [o.key_or_group for o in parsed if not o.is_delete()]


def merge_run_config(
    saved: dict[str, Any] | DictConfig,
    composed: DictConfig,
    overrides: Sequence[str],
    keys: Iterable[str] = RUN_KEYS,
) -> DictConfig:
    """The config to evaluate a trained run with.

    ``composed`` is the evaluation config (``conf/eval.yaml`` plus command line); ``saved`` is the training run's
    resolved config. For ``keys`` (model and data) the run's values are used, except where the command line named
    a key or group: ``data.root=/elsewhere`` changes one value, ``data=ssv2`` replaces the whole group.
    """
    saved = OmegaConf.create(saved) if not isinstance(saved, DictConfig) else saved
    keys = tuple(keys)
    merged = OmegaConf.create(OmegaConf.to_container(composed, resolve=True))
    for key in keys:
        if key not in saved:
            raise KeyError(f"the checkpoint's config has no '{key}' section; was it written by rsa_lightning?")
        merged[key] = OmegaConf.create(OmegaConf.to_container(saved[key]))
    for key in overridden_keys(overrides):
        if key.split(".")[0] in keys:
            OmegaConf.update(merged, key, OmegaConf.select(composed, key), merge=False, force_add=True)
    return merged
