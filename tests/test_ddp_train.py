"""Distributed training through the real ``train.py``: 2 CPU processes (gloo) share one run folder.

Lightning's DDP launcher starts rank 1 as a second ``python train.py <same arguments>``; SLURM starts every task
itself (emulated here with the variables ``srun`` sets). Either way exactly one run folder must exist, with one
``.hydra/``, one ``train.log`` (rank 0's), one ``checkpoints/`` and one ``csv/metrics.csv``.

The three launches of the default suite start together (fixture ``launched``): each spends most of its time in one
process importing while the other waits, so side by side they take little longer than one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import hydra
import pytest
import torch
from conftest import NO_PICTURES, ROOT, Background, compose_config, tiny_synthetic_overrides

from rsa_lightning.callbacks import SameRunDirOnAllRanks
from rsa_lightning.utils.config import (
    RANK_ENV,
    RUN_NAME_ENV,
    distributed_launch_overrides,
    is_launched_as_rank_zero,
    slurm_run_name,
)

TWO_CPU_PROCESSES = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
TINY_RUN = [
    "model=rsa_tiny",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "callbacks.model_summary.max_depth=0",
    *NO_PICTURES,
]
LAUNCHER_ENV = ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PL_GLOBAL_SEED", RUN_NAME_ENV, *RANK_ENV)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """The generated videos, made here once: the runs of this module start side by side and only read them."""
    root = tmp_path_factory.mktemp("ddp_data") / "synthetic"
    data = compose_config("train", tiny_synthetic_overrides(root), root.parent / "compose").data
    hydra.utils.instantiate(data).prepare_data()
    return root


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any launcher's variables (pytest may itself run inside a SLURM job)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in LAUNCHER_ENV}
    return {**env, **extra}


def run_train(*overrides: str, env: dict[str, str] | None = None) -> Background:
    return Background([sys.executable, str(ROOT / "train.py"), *overrides], env=env or clean_env())


def finish(proc: Background) -> str:
    done = proc.finish(timeout=600)
    assert done.returncode == 0, f"train.py failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_single_run_dir(run_dir: Path, *, ranks: int = 2) -> None:
    """One run's outputs, written once: rank 0's files only, every rank's training in the checkpoint."""
    assert len(list(run_dir.rglob(".hydra"))) == 1 and (run_dir / ".hydra" / "config.yaml").is_file()
    assert [p.name for p in run_dir.rglob("*.log")] == ["train.log"]  # no train_ddp_process_1.log either
    assert list(run_dir.rglob("checkpoints")) == [run_dir / "checkpoints"]
    assert list(run_dir.rglob("metrics.csv")) == [run_dir / "csv" / "metrics.csv"]
    assert list(run_dir.rglob("config_resolved.yaml")) == [run_dir / "config_resolved.yaml"]
    log = (run_dir / "train.log").read_text()
    assert f"global batch {4 * ranks} = 4 clips per device x {ranks} device(s) x 1 node(s)" in log
    assert "[rank: 1]" not in log, "rank 1 wrote into rank 0's log"

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    model = hydra.utils.instantiate(ckpt["config"]["model"])
    model.load_state_dict(ckpt["state_dict"])  # loadable: the saved config rebuilds the model
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == 2


def multirun_with_ddp(tmp_path: Path, data_root: Path) -> Background:
    """``-m seed=1,2 trainer=ddp_cpu`` into ``tmp_path/sweep`` (test_multirun_with_ddp_trains_every_job)."""
    return run_train(
        "-m",
        "seed=1,2",
        "trainer=ddp_cpu",
        *tiny_synthetic_overrides(data_root),
        *TINY_RUN,
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"paths.log_dir={tmp_path / 'logs'}",
    )


@pytest.fixture(scope="module")
def launched(tmp_path_factory, data_root) -> Iterator[dict[str, tuple[Path, Background]]]:
    """The launches of the tests below, started at once: test name -> (the test's folder, its train.py process);
    a launch whose test did not run is stopped at the end of the module."""
    tmp = {name: tmp_path_factory.mktemp(name) for name in ("given", "timestamped", "multirun")}
    given = [*tiny_synthetic_overrides(data_root), *TWO_CPU_PROCESSES, *TINY_RUN, "logger=[csv,tensorboard]"]
    given += [f"paths.log_dir={tmp['given'] / 'logs'}", f"hydra.run.dir={tmp['given'] / 'runs' / 'X'}"]
    timestamped = [*tiny_synthetic_overrides(data_root), "trainer=ddp_cpu", *TINY_RUN]  # CI's 2-process config
    timestamped.append(f"paths.log_dir={tmp['timestamped'] / 'logs'}")
    launches = {
        "given": (tmp["given"], run_train(*given)),
        "timestamped": (tmp["timestamped"], run_train(*timestamped)),
        "multirun": (tmp["multirun"], multirun_with_ddp(tmp["multirun"], data_root)),
    }
    yield launches
    for _, proc in launches.values():
        proc.stop()


def test_ddp_shares_the_given_run_dir(launched):
    tmp_path, proc = launched["given"]
    run_dir = tmp_path / "runs" / "X"
    out = finish(proc)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in out  # rank 1 really ran
    assert list((tmp_path / "runs").iterdir()) == [run_dir]
    assert not (tmp_path / "logs").exists(), "a rank created a timestamped folder of its own"
    assert_single_run_dir(run_dir)
    assert len(list(run_dir.rglob("events.out.tfevents.*"))) == 1  # one TensorBoard writer, rank 0's


def test_ddp_shares_the_timestamped_run_dir(launched):
    tmp_path, proc = launched["timestamped"]
    out = finish(proc)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in out
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1, runs
    assert list(tmp_path.iterdir()) == [tmp_path / "logs"]
    assert_single_run_dir(runs[0])


def slurm_task_env(rank: int, *, port: int, job_id: str = "4242") -> dict[str, str]:
    """What ``srun`` sets for task ``rank`` of a 1-node, 2-task batch job (Lightning reads ranks from these)."""
    return clean_env(
        SLURM_JOB_ID=job_id,
        SLURM_JOB_NAME="rsa_test",
        SLURM_NTASKS="2",
        SLURM_NTASKS_PER_NODE="2",
        SLURM_NNODES="1",
        SLURM_NODEID="0",
        SLURM_PROCID=str(rank),
        SLURM_LOCALID=str(rank),
        SLURM_NODELIST="127.0.0.1",
        MASTER_PORT=str(port),
    )


def run_slurm_job(tmp_path: Path, data_root: Path, *overrides: str) -> str:
    """Starts both tasks at once, as srun does; each composes its own config (no launcher passes a run dir)."""
    args = [*tiny_synthetic_overrides(data_root), "trainer=slurm", "trainer.accelerator=cpu", *TINY_RUN]
    args += [f"paths.log_dir={tmp_path / 'logs'}", *overrides]
    port = free_port()
    procs = [run_train(*args, env=slurm_task_env(rank, port=port)) for rank in (0, 1)]
    return "".join(finish(p) for p in procs)


@pytest.mark.slow
def test_slurm_tasks_share_a_run_dir_named_after_the_job_and_resume_after_requeue(tmp_path, data_root):
    out = run_slurm_job(tmp_path, data_root)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in out
    run_dir = tmp_path / "logs" / "train" / "runs" / "slurm-4242"
    assert list(run_dir.parent.iterdir()) == [run_dir]
    assert_single_run_dir(run_dir)

    # a requeued job runs the same command: Lightning resumes from the hpc checkpoint it saved on SIGUSR1
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", run_dir / "hpc_ckpt_1.ckpt")
    run_slurm_job(tmp_path, data_root, "trainer.max_epochs=2")
    assert list(run_dir.parent.iterdir()) == [run_dir]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 4  # continued from step 2, not from scratch


def test_slurm_trainer_config_requeues_on_sigusr1(tmp_path, monkeypatch):
    import signal

    from pytorch_lightning.plugins.environments import SLURMEnvironment

    for key in LAUNCHER_ENV:
        monkeypatch.delenv(key, raising=False)
    for key, value in slurm_task_env(0, port=free_port()).items():
        if key.startswith("SLURM_") or key == "MASTER_PORT":
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "1")
    cfg = compose_config("train", ["trainer=slurm", "trainer.accelerator=cpu"], tmp_path / "run")
    assert cfg.trainer.devices == 1 and cfg.trainer.num_nodes == 1  # from SLURM_NTASKS_PER_NODE / SLURM_NNODES
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False)
    environment = trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment)
    assert environment.auto_requeue and environment.requeue_signal == signal.SIGUSR1


def test_ddp_configs(tmp_path):
    ddp = compose_config("train", ["trainer=ddp"], tmp_path / "run").trainer
    assert (ddp.accelerator, ddp.devices, ddp.num_nodes, ddp.strategy, ddp.sync_batchnorm) == (
        "gpu",
        -1,
        1,
        "ddp",
        False,
    )
    multinode = compose_config("train", ["trainer=ddp_multinode", "trainer.num_nodes=4"], tmp_path / "run").trainer
    assert (multinode.devices, multinode.num_nodes, multinode.strategy) == (-1, 4, "ddp")


def test_hydra_run_dir_follows_rsa_run_name(monkeypatch):
    from hydra import compose, initialize_config_dir

    monkeypatch.setenv(RUN_NAME_ENV, "slurm-77")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["paths.log_dir=/logs"], return_hydra_config=True)
    assert cfg.hydra.run.dir == "/logs/train/runs/slurm-77"
    monkeypatch.delenv(RUN_NAME_ENV)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["paths.log_dir=/logs"], return_hydra_config=True)
    assert cfg.hydra.run.dir.startswith("/logs/train/runs/20")  # the launch time


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({}, None),
        ({"SLURM_JOB_ID": "12", "SLURM_NTASKS": "8", "SLURM_JOB_NAME": "ssv2"}, "slurm-12"),
        ({"SLURM_JOB_ID": "12", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "bash"}, None),  # interactive
        ({"SLURM_JOB_ID": "12", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "interactive"}, None),
        (
            {"SLURM_JOB_ID": "13", "SLURM_NTASKS": "2", "SLURM_ARRAY_JOB_ID": "12", "SLURM_ARRAY_TASK_ID": "1"},
            "slurm-12_1",
        ),
    ],
)
def test_slurm_run_name(environ, name):
    assert slurm_run_name(environ) == name


@pytest.mark.parametrize(
    ("environ", "first"),
    [
        ({}, True),
        ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, True),
        ({"LOCAL_RANK": "1"}, False),  # started by Lightning's DDP launcher
        ({"NODE_RANK": "1"}, False),  # node 1 of a run started by hand
        ({"SLURM_PROCID": "3"}, False),
        ({"RANK": "2", "LOCAL_RANK": "0"}, False),  # torchrun
    ],
)
def test_is_launched_as_rank_zero(environ, first):
    assert is_launched_as_rank_zero(environ) is first


def test_distributed_launch_overrides():
    environ = {"SLURM_JOB_ID": "5", "SLURM_NTASKS": "2", "SLURM_JOB_NAME": "x", "SLURM_PROCID": "1"}
    overrides = distributed_launch_overrides(environ)
    assert environ[RUN_NAME_ENV] == "slurm-5"
    assert "hydra.output_subdir=null" in overrides and "hydra/job_logging=stdout" in overrides
    environ = {"SLURM_JOB_ID": "5", "SLURM_NTASKS": "2", "SLURM_PROCID": "0", RUN_NAME_ENV: "mine"}
    assert distributed_launch_overrides(environ) == [] and environ[RUN_NAME_ENV] == "mine"  # a user's name wins


class _Strategy:
    """The two collectives :class:`SameRunDirOnAllRanks` uses, as seen by a rank whose rank 0 has ``dir0``."""

    def __init__(self, dir0: str) -> None:
        self.dir0 = dir0

    def broadcast(self, obj: str) -> str:
        return self.dir0

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision


class _Trainer:
    global_rank = 1

    def __init__(self, dir0: str) -> None:
        self.strategy = _Strategy(dir0)


def test_different_run_dirs_across_ranks_stop_the_run():
    SameRunDirOnAllRanks("/logs/a").setup(_Trainer("/logs/a"), None, "fit")
    with pytest.raises(RuntimeError, match="same hydra.run.dir"):
        SameRunDirOnAllRanks("/logs/b").setup(_Trainer("/logs/a"), None, "fit")


def test_multirun_with_ddp_trains_every_job(launched):
    """``-m seed=1,2 trainer=ddp_cpu``: each job is trained by two processes in its own folder, and the processes
    Lightning starts for a job run that job (not the command line's whole sweep into a sweep folder of their own)."""
    tmp_path, proc = launched["multirun"]
    sweep, logs = tmp_path / "sweep", tmp_path / "logs"
    output = finish(proc)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    for job in jobs:
        result = json.loads((job / "result.json").read_text())
        assert result["status"] == "completed" and result["value"] is not None
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert len(list((job / "csv").glob("metrics.csv"))) == 1
    assert output.count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2  # one second process per job
    assert not logs.exists() or not list(logs.rglob("multirun.yaml"))  # no stray sweep of a second process
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and all("completed" in line for line in summary[1:])
