"""Config helpers: the resolved run config, one run folder per distributed run, and a run's config for evaluation."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

RUN_KEYS = ("model", "data")
# what the network was trained to take: kept from the run when eval.py's data=... swaps the whole data config
RUN_INPUT_KEYS = ("num_frames", "crop_size", "eval_transform", "mean", "std")

# Read by conf/hydra/default.yaml: the run folder's name (instead of the launch time) when set.
RUN_NAME_ENV = "RSA_RUN_NAME"
# A training job's own command line (JSON list of overrides), for the DDP processes Lightning starts for it.
JOB_ARGS_ENV = "RSA_JOB_ARGS"
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


def register_resolvers() -> None:
    """Registers the OmegaConf resolvers of ``conf/hydra/default.yaml``: ``rsa_run_dir`` and ``rsa_output_subdir``
    (the run folder and Hydra's output subfolder, which depend on ``resume=``; :mod:`rsa_lightning.resume`).
    Idempotent; called when ``rsa_lightning`` is imported, so every entry point composing that file has them."""

    def run_dir(resume: Any, task_dir: str, new_run: str) -> str:
        from rsa_lightning.resume import run_dir_resolver

        return run_dir_resolver(resume, task_dir, new_run)

    def output_subdir(resume: Any, time: str) -> str:
        return ".hydra" if resume in (None, "") else f".hydra/resumed/{time}"

    for name, resolver in (("rsa_run_dir", run_dir), ("rsa_output_subdir", output_subdir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def task_overrides() -> list[str]:
    """The command line's overrides of the running Hydra job (``hydra.overrides.task``) as written, never resolved:
    an override holding an interpolation (``data.root=${oc.env:DATA}``) is resolved where the config uses it, so an
    unresolvable one is reported under its key (:mod:`rsa_lightning.errors`). Empty outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [str(o) for o in OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)]


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


def job_launch_args(overrides: Sequence[str], output_dir: str | Path) -> dict[str, str]:
    """Environment for the processes Lightning's DDP launcher will start for this job: :data:`JOB_ARGS_ENV` holds the
    job's own command line (its task overrides and its folder), which :func:`job_argv` gives them.

    Lightning re-runs ``sys.argv`` for every extra process; in a multirun that is the whole sweep (``-m seed=1,2``),
    and the folder it passes (``hydra.run.dir``) is not the job's. Set in the launching process before each job.
    """
    folder = str(Path(output_dir).resolve()).replace('"', '\\"')
    return {JOB_ARGS_ENV: json.dumps([*overrides, f'hydra.run.dir="{folder}"'])}


def job_argv(environ: Mapping[str, str], argv: Sequence[str]) -> list[str]:
    """``argv`` for this process: a process Lightning's DDP launcher started (rank > 0, :data:`JOB_ARGS_ENV` set by
    the launching job) runs that job's command line instead of the one it was given; any other process its own."""
    if JOB_ARGS_ENV not in environ or is_launched_as_rank_zero(environ):
        return list(argv)
    return [argv[0], *json.loads(environ[JOB_ARGS_ENV])]


def overridden_keys(overrides: Sequence[str], *, deleted: bool = False) -> list[str]:
    """Config keys named by command-line overrides: ``data.root=/x`` -> ``data.root``, ``data=ssv2`` -> ``data``, a
    nested group ``data/backend=pyav`` -> ``data.backend`` (where Hydra puts it; ``group@pkg=...`` -> ``pkg``); with
    ``deleted=True`` the keys the overrides delete instead (``~model.optimizer`` -> ``model.optimizer``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [o.package or o.key_or_group.replace("/", ".") for o in parsed if o.is_delete() == deleted]


def merge_run_config(
    saved: dict[str, Any] | DictConfig,
    composed: DictConfig,
    overrides: Sequence[str],
    keys: Iterable[str] = RUN_KEYS,
) -> DictConfig:
    """The config to evaluate a trained run with.

    ``composed`` is the evaluation config (``conf/eval.yaml`` plus command line); ``saved`` is the training run's
    resolved config. For ``keys`` (model and data) the run's values are used, except where the command line named
    a key or group: ``data.root=/elsewhere`` changes one value, ``data=ssv2`` replaces the whole group and
    ``data/backend=pyav`` (or ``data/sampler=dense``) the run's ``data.backend`` (``data.sampler``) section. A group's
    interpolations (``${data.root}`` in the decord backend) resolve against the result, i.e. the run's values.
    Deleting a key of the run (``~data.x``) is refused (``ConfigError``): the run's own config would be incomplete.
    """
    from rsa_lightning.errors import CheckpointError, ConfigError

    saved = OmegaConf.create(saved) if not isinstance(saved, DictConfig) else saved
    keys = tuple(keys)
    merged = OmegaConf.create()
    for key in composed:  # eval's own keys, resolved against eval's config (a run key may not resolve there)
        if key not in keys:
            value = composed[key]
            merged[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    for key in keys:
        if key not in saved:
            raise CheckpointError(
                f"the checkpoint's config has no '{key}' section: it was not written by rsa_lightning's train.py"
            )
        merged[key] = OmegaConf.create(OmegaConf.to_container(saved[key]))
    deleted = [key for key in overridden_keys(overrides, deleted=True) if key.split(".")[0] in keys]
    if deleted:
        raise ConfigError(
            f"~{deleted[0]}: deleting a key of the run's {deleted[0].split('.')[0]} config is not supported here "
            "(the model and data are rebuilt from the checkpoint's own config); give the key another value instead"
        )
    named = overridden_keys(overrides)
    for key in named:
        if key.split(".")[0] in keys:
            # a group comes unresolved: its interpolations then resolve against the merged config
            OmegaConf.update(merged, key, OmegaConf.select(composed, key), merge=False, force_add=True)
    if "data" in named and "data" in keys:  # another data set: the network's input stays the run's
        changed = {k for k in RUN_INPUT_KEYS if any(n.startswith(f"data.{k}") for n in named)}
        if "crop_size" in changed:  # the run's eval_transform holds its crop size
            changed.add("eval_transform")
        kept = [k for k in RUN_INPUT_KEYS if k in saved.data and k not in changed]
        for k in kept:
            OmegaConf.update(merged, f"data.{k}", OmegaConf.to_container(saved.data, resolve=False)[k], merge=False)
        if kept:
            log.info(
                "data=... replaces the run's data config; the network's input is kept from the run (%s); name "
                "data.<key>=... to change it",
                ", ".join(f"data.{k}" for k in kept),
            )
    return merged
