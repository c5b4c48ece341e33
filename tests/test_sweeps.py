"""Sweeps that report themselves (rsa_lightning/sweeps.py) and one W&B run per job (rsa_lightning/utils/loggers.py).

Unit tests of the summary on fake job folders, and one real two-job multirun of train.py as a subprocess.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NO_PICTURES, ROOT, tiny_synthetic_overrides
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from rsa_lightning.sweeps import (
    COMPLETED,
    FAILED,
    NOT_FINISHED,
    RESULT_FILE,
    RUNNING,
    SweepSummary,
    collect_jobs,
    write_atomically,
    write_summary,
)
from rsa_lightning.utils.loggers import HydraJob, wandb_logger


def result(status: str, overrides: list[str], value: float | None = None, error: str | None = None, **extra) -> dict:
    """A ``result.json`` as train.py writes it."""
    return {
        "status": status,
        "task_name": "train",
        "overrides": overrides,
        "optimized_metric": "val/acc1",
        "value": value,
        "best_epoch": 3 if value is not None else None,
        "best_checkpoint": None,
        "metrics": {},
        "error": error,
        "time_min": 1.5,
        "run_dir": "",
        **extra,
    }


def fake_job(sweep: Path, num: int, overrides: list[str], res: dict | None) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    (job / "train.log").write_text("...\n")
    if res is not None:
        (job / RESULT_FILE).write_text(json.dumps({**res, "run_dir": str(job)}))
    return job


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Jobs 0 completed (54.03 %), 1 failed, 2 without result.json, 10 completed with a NaN value (sorted after 2)."""
    sweep = tmp_path / "sweep"
    fake_job(
        sweep,
        0,
        ["seed=1", "model.optimizer.lr=0.01"],
        result(COMPLETED, ["seed=1", "model.optimizer.lr=0.01"], 0.5403),
    )
    error = "ValueError: Nesterov momentum requires a momentum and zero dampening"
    fake_job(
        sweep, 1, ["seed=1", "model.optimizer.lr=-1"], result(FAILED, ["seed=1", "model.optimizer.lr=-1"], None, error)
    )
    fake_job(sweep, 2, ["seed=2", "model.optimizer.lr=0.01"], None)
    fake_job(
        sweep, 10, ["seed=2", "model.optimizer.lr=-1"], result(COMPLETED, ["seed=2", "model.optimizer.lr=-1"], math.nan)
    )
    (sweep / "multirun.yaml").write_text("not a job\n")
    (sweep / "notes").mkdir()
    return sweep


def sweep_config(sweep: Path, mode: RunMode = RunMode.MULTIRUN, job_dir: Path | None = None):
    """The part of a Hydra job / multirun config SweepSummary reads."""
    return OmegaConf.create(
        {
            "optimized_metric": "val/acc1",
            "hydra": {
                "mode": mode,
                "sweep": {"dir": str(sweep)},
                "job": {"name": "train"},
                "runtime": {"output_dir": str(job_dir or sweep)},
            },
        }
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_summary_of_completed_failed_and_unfinished_jobs(sweep):
    rows = collect_jobs(sweep)
    assert [r.num for r in rows] == [0, 1, 2, 10]
    assert [r.status for r in rows] == [COMPLETED, FAILED, NOT_FINISHED, COMPLETED]
    assert rows[0].value_pct == pytest.approx(54.03) and rows[0].best_epoch == 3
    assert rows[1].value is None and rows[1].error.startswith("ValueError: Nesterov")
    assert rows[2].overrides == ("seed=2", "model.optimizer.lr=0.01")  # from .hydra/overrides.yaml
    assert rows[3].value is None  # NaN is no value
    assert collect_jobs(sweep, missing_status=RUNNING)[2].status == RUNNING

    csv_path, md_path = write_summary(sweep, rows)
    table = read_csv(csv_path)
    assert [r["job"] for r in table] == ["0", "1", "2", "10"]
    assert [r["status"] for r in table] == ["completed", "failed", "not finished", "completed"]
    assert table[0]["value_pct"] == "54.03" and float(table[0]["value"]) == 0.5403
    assert table[0]["overrides"] == "seed=1 model.optimizer.lr=0.01"
    assert table[1]["log_file"] == str(sweep / "1" / "train.log")
    md = md_path.read_text()
    assert "| job | overrides | val/acc1 (%) | best epoch | status | error | run dir |" in md
    # best epoch 3 in result.json (from 0, as the csv keeps it) is epoch 4 on the console and in the markdown
    assert table[0]["best_epoch"] == "3"
    assert f"| 0 | seed=1 model.optimizer.lr=0.01 | 54.03 | 4 | completed |  | {sweep / '0'} |" in md
    assert "| 1 | seed=1 model.optimizer.lr=-1 |  |  | failed | ValueError: Nesterov momentum" in md
    assert "4 jobs, 2 completed, 1 failed, 1 not finished" in md


def test_summary_shows_the_overrides_jobs_differ_in(tmp_path):
    sweep = tmp_path / "sweep"
    for num, seed in enumerate((1, 2)):
        overrides = [f"seed={seed}", "data.root=/d", "trainer.max_epochs=1"]
        fake_job(sweep, num, overrides, result(COMPLETED, overrides, 0.5))
    md = write_summary(sweep, collect_jobs(sweep))[1].read_text()
    assert "Overrides of every job: `data.root=/d trainer.max_epochs=1`" in md
    assert "| 1 | seed=2 | 50.00 |" in md


def test_summary_files_are_replaced_atomically(tmp_path, monkeypatch):
    target = tmp_path / "summary.csv"
    write_atomically(target, "old\n")
    assert target.read_text() == "old\n"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by whoever reads the sweep folder

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, "new\n")
    assert target.read_text() == "old\n"  # a reader never sees a half-written file
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]  # and no temporary file is left behind


def test_multirun_end_logs_the_summary_and_exits_1_naming_failed_jobs(sweep, caplog):
    with caplog.at_level(logging.INFO, logger="rsa_lightning.sweeps"), pytest.raises(SystemExit) as exit_info:
        SweepSummary().on_multirun_end(sweep_config(sweep))
    assert exit_info.value.code == 1
    assert (sweep / "summary.csv").exists() and (sweep / "summary.md").exists()
    assert "| 0 | seed=1 model.optimizer.lr=0.01 | 54.03 |" in caplog.text
    assert "2 of 4 jobs did not complete" in caplog.text
    assert f"job 1 failed (log: {sweep / '1' / 'train.log'})" in caplog.text
    assert f"job 2 not finished (log: {sweep / '2' / 'train.log'})" in caplog.text


def test_multirun_end_without_failures_returns(tmp_path):
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, ["seed=1"], result(COMPLETED, ["seed=1"], 0.25))
    SweepSummary().on_multirun_end(sweep_config(sweep))  # no SystemExit
    assert read_csv(sweep / "summary.csv")[0]["value_pct"] == "25.00"


def test_job_end_rewrites_the_summary_in_multirun_only(sweep, tmp_path):
    job = sweep / "10"
    done = JobReturn(overrides=["seed=2"], status=JobStatus.COMPLETED, _return_value=0.5)
    SweepSummary().on_job_end(sweep_config(sweep, RunMode.RUN, job), job_return=done)
    assert not (sweep / "summary.csv").exists()  # a single run: no files

    SweepSummary().on_job_end(sweep_config(sweep, RunMode.MULTIRUN, job), job_return=done)
    table = read_csv(sweep / "summary.csv")
    assert [r["status"] for r in table] == ["completed", "failed", "running", "completed"]


def test_job_end_records_a_job_that_raised_before_writing_its_result(tmp_path):
    sweep = tmp_path / "sweep"
    job = fake_job(sweep, 0, ["seed=1"], None)
    failed = JobReturn(overrides=["seed=1"], status=JobStatus.FAILED, _return_value=RuntimeError("boom\nmore"))
    SweepSummary().on_job_end(sweep_config(sweep, RunMode.MULTIRUN, job), job_return=failed)
    recorded = json.loads((job / RESULT_FILE).read_text())
    assert recorded["status"] == "failed" and recorded["error"] == "RuntimeError: boom"
    assert recorded["overrides"] == ["seed=1"] and recorded["optimized_metric"] == "val/acc1"
    assert read_csv(sweep / "summary.csv")[0]["status"] == "failed"


def test_wandb_run_name_and_group():
    job = HydraJob(
        task_name="train",
        model="rsa_tiny",
        overrides=[
            "seed=2",
            "model.optimizer.lr=0.01",
            "logger=wandb",
            "paths.log_dir=/x",
            "+hydra.a=1",
            "model=rsa_tiny",
        ],
        num=3,
        sweep_dir="/logs/train/multiruns/2026-11-30_10-00-00",
    )
    assert job.run_name() == "rsa_tiny seed=2 model.optimizer.lr=0.01"
    assert job.sweep_group() == "train/2026-11-30_10-00-00"
    single = HydraJob(
        task_name="train", model="rsa_r50", experiment="rsa_r50_ssv2_16f", overrides=["experiment=rsa_r50_ssv2_16f"]
    )
    assert single.run_name() == "rsa_r50_ssv2_16f" and single.sweep_group() is None


def test_wandb_logger_finishes_a_leftover_run_and_passes_name_group_id(tmp_path, monkeypatch, caplog):
    import wandb

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    leftover = wandb.init(mode="offline", dir=str(tmp_path), project="p")
    job = HydraJob(task_name="train", model="rsa_tiny", overrides=["seed=2"], num=1, sweep_dir=str(tmp_path / "s"))
    with caplog.at_level(logging.INFO, logger="rsa_lightning.utils.loggers"):
        logger = wandb_logger(save_dir=str(tmp_path / "run"), project="p", id="abc123", job=job)
    assert wandb.run is None  # the earlier run was finished, so the logger starts its own
    assert f"finishing the W&B run {leftover.id}" in caplog.text
    init = logger._wandb_init
    assert (init["name"], init["group"], init["id"], init["resume"]) == (
        "rsa_tiny seed=2",
        "train/s",
        "abc123",
        "allow",
    )
    set_by_config = wandb_logger(save_dir=str(tmp_path / "run"), name="mine", group="g", job=job)._wandb_init
    assert (set_by_config["name"], set_by_config["group"], set_by_config["id"]) == ("mine", "g", None)


def test_grid_sweep_reports_itself_with_one_wandb_run_per_job(tmp_path):
    """A sweep whose first job fails (SGD refuses Nesterov momentum without momentum, when the job builds its
    optimiser, after its W&B run started): the second job still runs and completes, and the sweep ends with
    status 1."""
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(NETRC=str(tmp_path / "no-netrc"), WANDB_DIR=str(tmp_path), PROJECT_ROOT=str(ROOT))
    grid = ["+model.optimizer.nesterov=true,false"]  # job 0 fails, job 1 completes
    fixed = [
        *tiny_synthetic_overrides(tmp_path / "syn"),
        "model.optimizer._target_=torch.optim.SGD",
        "+model.optimizer.momentum=0.0",
        "logger=wandb",
        "debug=fast_dev_run",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        *NO_PICTURES,
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", *grid, *fixed],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output

    jobs = sorted((d for d in sweep.iterdir() if d.name.isdigit()), key=lambda d: int(d.name))
    assert [d.name for d in jobs] == ["0", "1"], output
    table = read_csv(sweep / "summary.csv")
    assert len(table) == 2
    assert [r["status"] for r in table] == ["failed", "completed"], table
    failed = next(r for r in table if r["status"] == "failed")
    assert "+model.optimizer.nesterov=True" in failed["overrides"]
    assert "+model.optimizer.momentum=0.0" in failed["overrides"]
    assert "Nesterov momentum requires a momentum" in failed["error"]
    failed_log = Path(failed["run_dir"]) / "train.log"
    assert "Traceback" in failed_log.read_text() and "Nesterov" in failed_log.read_text()
    for other in (r for r in table if r["status"] == "completed"):
        assert "Traceback" not in (Path(other["run_dir"]) / "train.log").read_text()
        assert other["value"] != ""
    assert "did not complete" in output and f"job {failed['job']} failed" in output

    # one W&B run per job: its own id, its own name (the job's overrides), the sweep as group
    run_files = [next((job / "wandb").glob("offline-run-*/run-*.wandb")) for job in jobs]
    ids = {f.stem.removeprefix("run-") for f in run_files}
    assert len(ids) == 2, run_files
    names = set()
    for job, run_file in zip(jobs, run_files):
        overrides = list(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
        name = HydraJob(task_name="debug", model="rsa_tiny", overrides=overrides).run_name()
        assert name.startswith("rsa_tiny +model.optimizer.nesterov=") and "logger" not in name
        data = run_file.read_bytes()  # the run record holds its display name and group
        assert name.encode() in data and f"debug/{sweep.name}".encode() in data, (job, name)
        names.add(name)
    assert len(names) == 2
