"""Resuming a killed run loses nothing: ``train.py resume=<run dir>`` after SIGKILL inside an epoch.

The run is killed (SIGKILL, as a pre-empted node) a few steps after a mid-epoch ``last.ckpt`` and resumed with
``resume=<run dir>`` alone. Its final weights must equal those of the same run without the kill, bit for bit (the
training data's position, the per-sample augmentation seeds and the RNG states of dropout are restored), its CSV log
must hold every step once, with the same values, and W&B (offline) must hold one run with every step.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from conftest import NO_PICTURES, ROOT, Background, compose_config, tiny_synthetic_overrides

from rsa_lightning.callbacks.epoch_summary import CLIPS_PER_S, EPOCH_TIME_S
from rsa_lightning.resume import find_run_dir, refused_overrides, resume_config
from rsa_lightning.utils.config import overridden_keys
from rsa_lightning.utils.csv_logger import cut_csv_log
from rsa_lightning.utils.wandb_offline import STEP_KEY, history_rows

STEPS_PER_EPOCH = 5  # 20 generated training videos, batch 4
KILL_AT_STEP = 8  # epoch 1, batch 3: two steps after the step checkpoint at 6


def env(tmp_path: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WANDB_")) and k != "RSA_RUN_NAME"}
    return {
        **keep,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), keep.get("PYTHONPATH", "")]),
        "NETRC": str(tmp_path / "no-netrc"),  # no W&B key: offline
        "WANDB_SILENT": "true",
    }


def start(tmp_path: Path, *overrides: str) -> Background:
    """``train.py <overrides>`` in the background (runs that do not depend on each other go side by side, one CPU
    thread each)."""
    return Background([sys.executable, str(ROOT / "train.py"), *overrides], env=env(tmp_path))


def finish(proc: Background, check: bool = True) -> subprocess.CompletedProcess:
    """Waits for a :func:`start` ed run; ``check``: it must have succeeded."""
    done = proc.finish(timeout=600)
    if check:
        assert done.returncode == 0, f"{' '.join(proc.args[1:])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-4000:]}"
    return done


def run(tmp_path: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    return finish(start(tmp_path, *overrides), check=check)


def run_overrides(tmp_path: Path, run_dir: Path, marker: Path, kill_at: int = KILL_AT_STEP) -> list[str]:
    return [
        *tiny_synthetic_overrides(tmp_path / "data"),
        f"hydra.run.dir={run_dir}",
        "model=rsa_tiny",
        "seed=7",
        "logger=many",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        *NO_PICTURES,
        "trainer.log_every_n_steps=1",
        "callbacks.model_summary.max_depth=0",
        "callbacks.last_checkpoint.every_n_train_steps=3",
        "+callbacks.kill._target_=kill_switch.KillAtStep",
        f"+callbacks.kill.step={kill_at}",
        f"+callbacks.kill.marker={marker}",
    ]


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def logged_values(run_dir: Path) -> list[dict[str, str]]:
    """The CSV rows with the wall-clock measurements (clips/s, epoch time) reduced to whether they were logged: they
    differ between any two runs, resumed or not; every other value must be equal."""
    timing = (CLIPS_PER_S, EPOCH_TIME_S)
    return [{k: ("logged" if v and k in timing else v) for k, v in row.items()} for row in csv_rows(run_dir)]


def wandb_runs(run_dir: Path) -> dict[str, list[set[int]]]:
    """Offline W&B runs of a run folder: run id -> the ``trainer/global_step`` values of each offline folder."""
    runs: dict[str, list[set[int]]] = {}
    for folder in sorted((run_dir / "wandb").glob("offline-run-*")):
        run_id = folder.name.rsplit("-", 1)[-1]
        rows = history_rows(folder / f"run-{run_id}.wandb")
        runs.setdefault(run_id, []).append({int(r[STEP_KEY]) for r in rows if STEP_KEY in r})
    return runs


def tensorboard_points(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's TensorBoard folder as TensorBoard shows it: tag -> [(step, value)] (value None for
    the wall-clock measurements)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    timing = (CLIPS_PER_S, EPOCH_TIME_S)  # wall-clock measurements: only their steps can equal another run's
    return {
        tag: [(e.step, None if tag in timing else e.value) for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("resume")
    # the generated videos, made here once: the three runs below start side by side and only read them
    data = compose_config("train", tiny_synthetic_overrides(tmp / "data"), tmp / "compose").data
    hydra.utils.instantiate(data).prepare_data()
    whole, killed = tmp / "whole", tmp / "killed"
    done = tmp / "whole_not_killed"
    done.write_text("never kill the reference run\n")
    marker = tmp / "killed_marker"
    # killed as the second epoch starts: the newest checkpoint is the end of the first epoch
    at_epoch_end = tmp / "killed_at_epoch_end"
    procs = [
        start(tmp, *run_overrides(tmp, whole, done)),
        start(tmp, *run_overrides(tmp, killed, marker)),
        start(tmp, *run_overrides(tmp, at_epoch_end, tmp / "marker2", kill_at=STEPS_PER_EPOCH)),
    ]
    whole_run, killed_run, at_epoch_end_run = [finish(proc, check=False) for proc in procs]
    assert whole_run.returncode == 0, f"the reference run failed:\n{whole_run.stderr[-3000:]}"
    assert killed_run.returncode == -9 and marker.exists(), (
        f"expected a SIGKILL at step {KILL_AT_STEP}:\n{killed_run.stderr[-3000:]}"
    )
    assert at_epoch_end_run.returncode == -9, at_epoch_end_run.stderr[-3000:]
    return {"tmp": tmp, "whole": whole, "killed": killed, "at_epoch_end": at_epoch_end}


def test_run_killed_after_an_epoch_resumes_with_the_next_epoch(runs):
    whole, killed = runs["whole"], runs["at_epoch_end"]
    last = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == STEPS_PER_EPOCH and last["epoch"] == 0  # the end-of-epoch checkpoint
    run(runs["tmp"], f"resume={killed}")
    # resuming the now finished run trains nothing, writes nothing and says how to go on (started here, checked
    # below, after the comparison with the uninterrupted run, which only reads the folder)
    before = sorted(p.name for p in killed.rglob("*"))
    finished = start(runs["tmp"], f"resume={killed}")
    ref = torch.load(whole / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    out = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert out["global_step"] == ref["global_step"]
    for name, value in ref["state_dict"].items():
        assert torch.equal(value, out["state_dict"][name]), f"{name} differs from the uninterrupted run"
    assert logged_values(killed) == logged_values(whole)
    assert tensorboard_points(killed) == tensorboard_points(whole)  # the killed process's extra points are purged
    done = finish(finished)
    assert "has already trained 2 of trainer.max_epochs=2 epochs" in done.stdout
    assert "trainer.max_epochs=3" in done.stdout and sorted(p.name for p in killed.rglob("*")) == before


def test_killed_run_resumes_with_nothing_lost(runs):
    tmp, whole, killed = runs["tmp"], runs["whole"], runs["killed"]
    last = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 6 and last["epoch"] == 1, "the kill must follow a mid-epoch step checkpoint"
    rows_before = csv_rows(killed)
    assert max(int(r["step"]) for r in rows_before) >= 6  # steps after the checkpoint were logged, then lost

    files_before = sorted(p.name for p in killed.rglob("*"))
    log_before = (killed / "train.log").read_text()
    refused = run(tmp, f"resume={killed}", "model.optimizer.lr=0.5", "data.batch_size=2", check=False)
    assert refused.returncode != 0
    assert "model.optimizer.lr" in refused.stderr and "data.batch_size" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    # a refused resume changes nothing in the run folder
    assert csv_rows(killed) == rows_before and (killed / "train.log").read_text() == log_before
    assert sorted(p.name for p in killed.rglob("*")) == files_before

    resumed = run(tmp, f"resume={killed}", "data.num_workers=0")
    assert "resuming" in resumed.stdout + resumed.stderr

    ref = torch.load(whole / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    out = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert out["global_step"] == ref["global_step"] == 2 * STEPS_PER_EPOCH
    for name, value in ref["state_dict"].items():
        assert torch.equal(value, out["state_dict"][name]), f"{name} differs from the uninterrupted run"

    # the CSV log: every row of the uninterrupted run, once, with the same values
    assert logged_values(killed) == logged_values(whole)

    # W&B: one run (one id) across the killed and the resumed process, with every step
    (run_id, parts), *others = wandb_runs(killed).items()
    assert not others and len(parts) == 2, f"expected one W&B run in two offline folders: {wandb_runs(killed)}"
    ((_, (whole_steps,)),) = wandb_runs(whole).items()
    assert set().union(*parts) == whole_steps
    # TensorBoard continued in the same folder
    assert len(list((killed / "tensorboard").rglob("events.out.tfevents.*"))) == 2
    assert tensorboard_points(killed) == tensorboard_points(whole)
    # this invocation's Hydra files went below the run's own
    assert (killed / ".hydra" / "overrides.yaml").read_text() != ""
    assert list((killed / ".hydra" / "resumed").glob("*/overrides.yaml"))


def test_resume_latest_and_bad_folders(runs, tmp_path):
    tmp = runs["tmp"]
    task_dir = tmp_path / "logs" / "train"
    for name in ("2026-01-01_00-00-00", "2026-01-02_00-00-00"):
        run_dir = task_dir / "runs" / name
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "config_resolved.yaml").write_text("seed: 1\n")
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    os.utime(task_dir / "runs" / "2026-01-01_00-00-00" / "checkpoints" / "last.ckpt", (2e9, 2e9))
    assert find_run_dir("latest", task_dir).name == "2026-01-01_00-00-00"  # the newest checkpoint, not the name
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_run_dir(str(tmp_path / "nope"), task_dir)
    with pytest.raises(FileNotFoundError, match="not an rsa_lightning training run"):
        find_run_dir(str(tmp_path), task_dir)
    with pytest.raises(FileNotFoundError, match="checkpoint file"):
        find_run_dir(str(task_dir / "runs" / "2026-01-01_00-00-00" / "checkpoints" / "last.ckpt"), task_dir)
    with pytest.raises(FileNotFoundError, match="resume=latest"):
        find_run_dir("latest", tmp_path / "empty")

    proc = run(tmp, "resume=latest", f"paths.log_dir={tmp_path / 'nothing'}", check=False)
    assert proc.returncode != 0 and "resume=latest" in proc.stderr


def test_resume_config_keeps_the_run_and_applies_harmless_overrides(tmp_path):
    from omegaconf import OmegaConf

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    saved = {
        "seed": 3,
        "model": {"optimizer": {"lr": 0.1}, "compile": False},
        "data": {"root": "/data/a", "batch_size": 8, "num_workers": 8},
        "trainer": {"max_epochs": 10},
        "paths": {"output_dir": "/old/place/run"},
        "callbacks": {"last": {"dirpath": "/old/place/run/checkpoints"}},
        "resume": None,
        "ckpt_path": None,
    }
    OmegaConf.save(OmegaConf.create(saved), run_dir / "config_resolved.yaml")
    now = OmegaConf.create(
        {
            **saved,
            "seed": 42,
            "model": {"optimizer": {"lr": 9.0}, "compile": True},
            "data": {"root": "/data/b", "batch_size": 2, "num_workers": 1},
            "trainer": {"max_epochs": 30},
            "paths": {"output_dir": str(run_dir)},
        }
    )
    cfg = resume_config(
        now,
        run_dir,
        ["trainer.max_epochs=30", "data.num_workers=1", "model.compile=true", "data.root=/data/b", f"resume={run_dir}"],
    )
    assert cfg.trainer.max_epochs == 30 and cfg.data.num_workers == 1 and cfg.model.compile is True
    assert cfg.data.root == "/data/b" and cfg.seed == 3 and cfg.model.optimizer.lr == 0.1 and cfg.data.batch_size == 8
    assert cfg.callbacks.last.dirpath == f"{run_dir}/checkpoints"  # moved with the folder
    assert cfg.ckpt_path == str(run_dir / "checkpoints" / "last.ckpt") and cfg.resume == str(run_dir)
    assert refused_overrides(OmegaConf.create(saved), now, ["seed", "model.optimizer.lr", "model.compile"]) == [
        "seed=42 (the run has 3)",
        "model.optimizer.lr=9.0 (the run has 0.1)",
    ]
    assert refused_overrides(OmegaConf.create(saved), now, ["debug", "trainer.max_epochs"]) == [
        "debug= (a preset of keys across the config; name the keys to change instead)"
    ]
    with pytest.raises(ValueError, match="~model.optimizer"):
        resume_config(now, run_dir, ["~model.optimizer"])
    with pytest.raises(ValueError, match="seed=42"):
        resume_config(now, run_dir, ["seed=42"])
    assert not refused_overrides(OmegaConf.create(saved), OmegaConf.create(saved), ["seed"])  # the same value is fine
    # a group override of the run's data (data/backend=pyav) is refused too, not silently ignored
    with_backend = OmegaConf.merge(now, {"data": {"backend": {"_target_": "PyAVBackend"}}})
    run = OmegaConf.merge(saved, {"data": {"backend": {"_target_": "DecordBackend"}}})
    refused = refused_overrides(run, with_backend, overridden_keys(["data/backend=pyav"]))
    assert len(refused) == 1 and refused[0].startswith("data.backend"), refused


def test_cut_csv_log(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,loss,step\n0,1.0,0\n0,0.9,1\n0,,2\n1,0.7,3\n")
    assert cut_csv_log(path, 1) == 2
    assert path.read_text().splitlines() == ["epoch,loss,step", "0,1.0,0", "0,0.9,1"]
    assert cut_csv_log(tmp_path / "missing.csv", 1) == 0


def test_a_requeued_slurm_job_resumes_its_folder(tmp_path):
    from rsa_lightning.resume import requeued_run_dir

    run_dir = tmp_path / "slurm-123"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config_resolved.yaml").write_text("seed: 1\n")
    slurm = {"SLURM_NTASKS": "2", "SLURM_JOB_ID": "123", "SLURM_JOB_NAME": "rsa"}
    assert requeued_run_dir(run_dir, {**slurm, "SLURM_RESTART_COUNT": "1"}) is None  # no checkpoint yet
    (run_dir / "hpc_ckpt_1.ckpt").write_bytes(b"x")
    assert requeued_run_dir(run_dir, {**slurm, "SLURM_RESTART_COUNT": "1"}) == run_dir
    assert requeued_run_dir(run_dir, slurm) is None  # the first start of the job: a new run
    assert requeued_run_dir(run_dir, {"SLURM_RESTART_COUNT": "1"}) is None  # not a SLURM job


def test_resumable_sampler_positions_and_seeds():
    from rsa_lightning.data.resumable import ResumableDataLoader, ResumableSampler, SampleKey, sample_seed

    class Keys(torch.utils.data.Dataset):  # a dataset of 10 that returns the key it is indexed with
        def __len__(self) -> int:
            return 10

        def __getitem__(self, key):
            return key

    data = list(range(10))
    ranks = [ResumableSampler(data, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(4)
    shards = [list(s) for s in ranks]
    assert sorted(k.index for shard in shards for k in shard) == data  # the two ranks split the epoch
    assert all(k.seed == sample_seed(3, 4, k.index) for shard in shards for k in shard)
    assert sample_seed(3, 4, 1) != sample_seed(3, 5, 1) != sample_seed(4, 4, 1)

    whole = ResumableSampler(data, seed=3)
    whole.set_epoch(1)
    epoch1 = list(whole)
    assert [k.index for k in epoch1] != [k.index for k in list(ResumableSampler(data, seed=3))]  # epochs differ
    position = {"value": (2, False)}
    loader = ResumableDataLoader(
        Keys(),
        sampler=ResumableSampler(data, seed=0),
        batch_size=3,
        batches_done=lambda: position["value"],
        collate_fn=lambda keys: keys,
        drop_last=True,
    )
    loader.sampler.set_epoch(1)
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches_done": 2, "epoch_done": False, "batch_size": 3, "seed": 0, "num_replicas": 1}
    state["seed"] = 3
    loader.load_state_dict(state)
    assert [k for batch in loader for k in batch] == epoch1[6:9]  # the rest of epoch 1 (the last batch is dropped)
    assert len(list(loader)) == 3  # the next iteration starts at 0 again
    loader.load_state_dict({**state, "epoch_done": True})
    assert loader.sampler.epoch == 2 and len(list(loader)) == 3  # an ended epoch: the next one from its start
    with pytest.raises(ValueError, match="data.batch_size"):
        loader.load_state_dict({**state, "batch_size": 4})
    assert isinstance(epoch1[0], SampleKey)
