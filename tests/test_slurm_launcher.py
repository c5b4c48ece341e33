"""The SLURM launcher (``hydra/launcher=slurm``) without SLURM: what it would submit, and what a job would run.

submitit's real SLURM executor is used up to the point where it would call ``sbatch``: it validates the parameters
the launcher hands it and writes the batch script's ``#SBATCH`` lines. Instead of submitting, each job's call is
pickled as submitit pickles it and run in this process under the variables ``srun`` sets, twice, as a requeued job
runs it again.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cloudpickle
import pytest
import submitit
from conftest import ROOT
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, read_write
from submitit.slurm.slurm import SlurmExecutor

SLURM_OVERRIDES = [
    "hydra/launcher=slurm",
    "hydra.launcher.nodes=2",
    "hydra.launcher.gpus_per_node=4",
    "hydra.launcher.cpus_per_task=6",
    "hydra.launcher.mem_gb=200",
    "hydra.launcher.timeout_min=90",
    "hydra.launcher.partition=gpu_long",
    "hydra.launcher.account=rsa_proj",
    "hydra.launcher.qos=high",
    "hydra.launcher.constraint=a100",
    "hydra.launcher.signal_delay_s=300",
]
# the command-line overrides of the training itself, part of every job's overrides (as Hydra's sweepers pass them)
TASK_OVERRIDES = ["trainer=slurm", "model=rsa_tiny"]


def initialize_hydra():
    """Hydra initialised on ``conf/`` as ``train.py`` initialises it (job name ``train``); a context manager."""
    from hydra import initialize_config_dir

    return initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3", job_name="train")


def compose_multirun(overrides: list[str]) -> DictConfig:
    """``conf/train.yaml`` with its Hydra node, as ``python train.py -m <overrides>`` composes it."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with read_write(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN  # what -m sets
    HydraConfig.instance().set_config(cfg)
    return cfg


def record_run(cfg: DictConfig) -> float:
    """Task function of the simulated jobs: stores what a training run would use instead of training."""
    from hydra.core.hydra_config import HydraConfig

    run = {
        "output_dir": cfg.paths.output_dir,
        "runtime_dir": HydraConfig.get().runtime.output_dir,
        "default_root_dir": cfg.trainer.default_root_dir,
        "devices": cfg.trainer.devices,
        "num_nodes": cfg.trainer.num_nodes,
        "plugin": cfg.trainer.plugins[0]._target_,
        "model": cfg.model.net.stmixer._target_,
        "seed": cfg.seed,
    }
    log_file = Path(cfg.paths.output_dir) / "runs.yaml"
    runs = OmegaConf.load(log_file) if log_file.exists() else OmegaConf.create([])
    OmegaConf.save(OmegaConf.create([*runs, run]), log_file)
    return cfg.seed / 100


class FinishedJob:
    """What ``launch`` waits on: a job whose tasks have returned (only task 0's value is used)."""

    def __init__(self, task_returns: list[JobReturn]) -> None:
        self._returns = task_returns

    def results(self) -> list[JobReturn]:
        return self._returns


class LocalSlurmExecutor(submitit.AutoExecutor):
    """submitit's SLURM executor without ``sbatch``: every job's pickled call runs here, then once more (a requeue)."""

    created: list[LocalSlurmExecutor] = []
    # what srun sets in task 0 of a job of 2 nodes x 4 tasks (submitit's and Lightning's SLURM environments read these)
    job_env = {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "4242",
        "SLURM_ARRAY_JOB_ID": "4242",
        "SLURM_JOB_NAME": "train",
        "SLURM_NTASKS": "8",
        "SLURM_NTASKS_PER_NODE": "4",
        "SLURM_NNODES": "2",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
    }

    def __init__(self, folder: str, cluster: str | None = None, **kwargs) -> None:
        self.init_kwargs = {"folder": folder, "cluster": cluster, **kwargs}
        self.updates: list[dict] = []
        super().__init__(folder, cluster=cluster, **kwargs)
        LocalSlurmExecutor.created.append(self)

    def update_parameters(self, **kwargs) -> None:
        self.updates.append(kwargs)
        super().update_parameters(**kwargs)  # submitit's own checks of names, types and sbatch flags

    def sbatch_script(self) -> str:
        return self._executor._make_submission_file_text("python -u -m submitit.core._submit <folder>", "uid")

    def map_array(self, fn, *iterables) -> list[FinishedJob]:
        jobs = []
        for array_task_id, args in enumerate(zip(*iterables)):
            payload = cloudpickle.dumps((fn, args))  # as submitit stores the call in <folder>/<job>_submitted.pkl
            returns = []
            for _attempt in range(2):  # the job, then the same pickle run again after `scontrol requeue`
                env = {**self.job_env, "SLURM_ARRAY_TASK_ID": str(array_task_id)}
                with pytest.MonkeyPatch.context() as mp:
                    for key, value in env.items():
                        mp.setenv(key, value)
                    call, call_args = cloudpickle.loads(payload)
                    returns.append(call(*call_args))
            jobs.append(FinishedJob(returns[-1:]))
        return jobs


@pytest.fixture(scope="module")
def slurm_sweep(tmp_path_factory):
    """Runs ``launch`` of the composed SLURM launcher on two sweep points; returns the executor and the results."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext

    # a sweep dir that changes every microsecond: a job run again must still land in the folder of its first run
    sweep_dir = f"hydra.sweep.dir={tmp_path_factory.mktemp('slurm').as_posix()}/multiruns/${{now:%H-%M-%S-%f}}"
    LocalSlurmExecutor.created = []
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # each job configures logging into its run folder
    with pytest.MonkeyPatch.context() as mp, initialize_hydra():
        mp.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # "srun is installed"
        mp.setattr(submitit, "AutoExecutor", LocalSlurmExecutor)
        cfg = compose_multirun([*SLURM_OVERRIDES, sweep_dir, *TASK_OVERRIDES])
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks(cfg))
        launcher = Plugins.instance().instantiate_launcher(hydra_context=context, task_function=record_run, config=cfg)
        try:
            results = launcher.launch([[*TASK_OVERRIDES, "seed=1"], [*TASK_OVERRIDES, "seed=2"]], initial_job_idx=0)
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
    (executor,) = LocalSlurmExecutor.created
    return {"executor": executor, "results": results, "sweep_dir": Path(str(cfg.hydra.sweep.dir))}


def test_slurm_launcher_composes_with_train_config():
    with initialize_hydra():
        cfg = compose_multirun(["hydra/launcher=slurm", "trainer=slurm"])
        eight_gpus = compose_multirun(["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=8"]).hydra.launcher
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.nodes == 1 and launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1
    assert launcher.additional_parameters == {"signal": "USR1@120", "requeue": True}
    assert cfg.trainer.plugins[0]._target_.endswith("SLURMEnvironment") and cfg.trainer.plugins[0].auto_requeue
    # one task per GPU follows gpus_per_node unless set
    assert eight_gpus.tasks_per_node == 8


def test_slurm_launcher_hands_the_configured_resources_to_submitit(slurm_sweep):
    executor = slurm_sweep["executor"]
    sweep_dir = slurm_sweep["sweep_dir"]
    assert executor.init_kwargs == {
        "folder": f"{sweep_dir}/.submitit/%j",
        "cluster": "slurm",
        "slurm_max_num_timeout": 0,
    }
    (params,) = executor.updates
    expected = {
        "nodes": 2,
        "gpus_per_node": 4,
        "tasks_per_node": 4,
        "cpus_per_task": 6,
        "mem_gb": 200,
        "timeout_min": 90,
        "name": "train",
        "slurm_partition": "gpu_long",
        "slurm_account": "rsa_proj",
        "slurm_qos": "high",
        "slurm_constraint": "a100",
        "slurm_signal_delay_s": 300,
        "slurm_additional_parameters": {"signal": "USR1@300", "requeue": True},
    }
    assert {key: params[key] for key in expected} == expected


def test_slurm_batch_script_requests_one_task_per_gpu_and_lightnings_requeue_signal(slurm_sweep):
    script = slurm_sweep["executor"].sbatch_script()
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, flags=re.MULTILINE))
    assert {key: flags.get(key) for key in ("nodes", "gpus-per-node", "ntasks-per-node", "cpus-per-task")} == {
        "nodes": "2",
        "gpus-per-node": "4",
        "ntasks-per-node": "4",
        "cpus-per-task": "6",
    }
    assert flags["time"] == "90" and flags["mem"] == "200GB"
    assert flags["partition"] == "gpu_long" and flags["account"] == "rsa_proj"
    assert flags["qos"] == "high" and flags["constraint"] == "a100"
    # Lightning's SIGUSR1 replaces submitit's USR2 (one --signal line), and the job may be requeued
    assert script.count("--signal") == 1 and flags["signal"] == "USR1@300"
    assert "requeue" in flags and flags["open-mode"] == "append"
    assert re.search(r"^srun .*python -u -m submitit.core._submit", script, flags=re.MULTILINE)


def test_slurm_jobs_run_in_their_sweep_folder_again_after_a_requeue(slurm_sweep):
    sweep_dir = slurm_sweep["sweep_dir"]
    returns = slurm_sweep["results"]
    assert [r.status for r in returns] == [JobStatus.COMPLETED] * 2
    assert [r.return_value for r in returns] == [0.01, 0.02]  # task 0's value reaches the sweeper
    for num, seed in enumerate((1, 2)):
        run_dir = sweep_dir / str(num)
        first, requeued = OmegaConf.to_container(OmegaConf.load(run_dir / "runs.yaml"))
        assert first == requeued  # the same folder, so Lightning finds the job's hpc_ckpt_<n>.ckpt there
        assert first["output_dir"] == first["runtime_dir"] == first["default_root_dir"] == str(run_dir)
        assert first["seed"] == seed and first["model"].endswith("RelationalSelfAttention")
        # trainer=slurm: one device per task of the node, SLURM's node count, Lightning's auto-requeue
        assert (first["devices"], first["num_nodes"]) == (4, 2)
        assert first["plugin"].endswith("SLURMEnvironment")
        assert (run_dir / ".hydra" / "overrides.yaml").is_file()
