"""Faults during training: a signal, a kill during a checkpoint write, a diverging loss, out of memory, a full disk.

Real training runs of ``rsa_tiny`` on generated 32 px clips: in this process (``train(cfg)``) where an exception
is enough, as ``train.py`` subprocesses where the exit code, a signal or a kill is the point. Test-only callbacks that
bring the faults in: ``tests/fault_switch.py``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import NO_PICTURES, ROOT, TINY_TRAINING, compose_config, tiny_synthetic_overrides

from rsa_lightning import errors
from rsa_lightning.callbacks import (
    DiskSpaceCheck,
    FiniteModelCheckpoint,
    Interrupted,
    NotEnoughDiskSpace,
    StopOnSignal,
    TrainingDiverged,
)
from rsa_lightning.callbacks.disk_space import checkpoint_files_kept, expected_checkpoint_bytes
from rsa_lightning.callbacks.preemption import INTERRUPTED_EXIT
from rsa_lightning.evaluation.metrics import classification_metrics, topk_accuracy
from rsa_lightning.train import train
from rsa_lightning.utils import checkpoint_io
from rsa_lightning.utils.checkpoint_io import AtomicCheckpointIO, atomic_write
from rsa_lightning.utils.faults import DiskFull, OutOfMemory, is_out_of_memory, smaller_batch

STEPS_PER_EPOCH = 5  # 20 generated training videos, batch 4


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """The generated videos, made once (runs started side by side must not both generate them)."""
    from hydra.utils import instantiate

    root = tmp_path_factory.mktemp("faults_data") / "data"
    cfg = compose_config("train", tiny_synthetic_overrides(root), root.parent / "run")
    instantiate(cfg.data).prepare_data()
    return root


def env() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WANDB_")) and k != "RSA_RUN_NAME"}
    return {
        **keep,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), keep.get("PYTHONPATH", "")]),
    }


def run_overrides(data_root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        *tiny_synthetic_overrides(data_root),
        f"hydra.run.dir={run_dir}",
        "seed=7",
        "trainer.accelerator=cpu",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "callbacks.model_summary.max_depth=0",
        *NO_PICTURES,
        *extra,
    ]


def start(data_root: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    """A ``train.py`` process in its own session (its process group: the test can signal the whole job)."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *run_overrides(data_root, run_dir, *extra)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {path.name} appeared:\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path.name} did not appear")
        time.sleep(0.05)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def in_process(data_root: Path, run_dir: Path, *extra: str):
    """``train(cfg)`` of a tiny run in this process; the config composed as train.py composes it."""
    overrides = [*tiny_synthetic_overrides(data_root), *TINY_TRAINING, "seed=7", *extra]
    return train(compose_config("train", overrides, run_dir), overrides)


def raised(fn) -> BaseException:
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - the test inspects it
        return err
    raise AssertionError("nothing raised")


# -------------------------------------------------------------------------------------------------------------------
# SIGTERM / SIGUSR1


def test_sigterm_saves_a_resumable_checkpoint_and_the_resumed_run_equals_an_uninterrupted_one(data_root, tmp_path):
    common = ["trainer.max_epochs=2", "+callbacks.mark._target_=fault_switch.MarkAtStep", "+callbacks.mark.step=2"]
    whole = start(data_root, tmp_path / "whole", *common, f"+callbacks.mark.marker={tmp_path / 'never'}",
                  "+callbacks.mark.wait=0")  # fmt: skip
    (tmp_path / "never").write_text("the reference run is not signalled\n")
    run_dir, marker = tmp_path / "signalled", tmp_path / "at_step_2"
    proc = start(data_root, run_dir, *common, f"+callbacks.mark.marker={marker}")
    wait_for(marker, proc)
    proc.send_signal(signal.SIGTERM)  # arrives during step 2 (the callback waits inside it)
    code, out, err = finish(proc)

    assert code == INTERRUPTED_EXIT, err[-3000:]
    (message,) = [line for line in err.splitlines() if "training stopped by" in line]
    assert "training stopped by SIGTERM at epoch 1/2, step 3" in message and "error:" not in err
    assert f"python train.py resume={run_dir}" in message and "Traceback" not in err
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted"
    last = load(run_dir / "checkpoints" / "last.ckpt")  # complete, loadable with weights_only=True
    assert last["global_step"] == 3 and last["epoch"] == 0  # the step in progress finished, then saved
    assert list((run_dir / "checkpoints").glob("best_*.ckpt")) == []  # mid-epoch: no validation yet

    resumed = subprocess.run([sys.executable, str(ROOT / "train.py"), f"resume={run_dir}"], capture_output=True,
                             text=True, env=env(), timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "result.json").read_text())["status"] == "completed"
    code, _, err = finish(whole)
    assert code == 0, err[-3000:]
    ref, out = load(tmp_path / "whole" / "checkpoints" / "last.ckpt"), load(run_dir / "checkpoints" / "last.ckpt")
    assert out["global_step"] == ref["global_step"] == 2 * STEPS_PER_EPOCH
    for name, value in ref["state_dict"].items():
        assert torch.equal(value, out["state_dict"][name]), f"{name} differs from the uninterrupted run"


def test_sigusr1_to_the_whole_job_at_the_last_step_of_an_epoch_stops_after_its_validation(data_root, tmp_path):
    run_dir = tmp_path / "run"
    marker = tmp_path / "at_step_4"
    proc = start(
        data_root,
        run_dir,
        "trainer.max_epochs=3",
        "data.num_workers=2",
        "+callbacks.mark._target_=fault_switch.MarkAtStep",
        f"+callbacks.mark.step={STEPS_PER_EPOCH - 1}",  # the epoch's last step
        f"+callbacks.mark.marker={marker}",
    )
    wait_for(marker, proc)
    os.killpg(proc.pid, signal.SIGUSR1)  # the main process and its DataLoader workers, as SLURM's --signal does
    code, out, err = finish(proc)
    assert code == INTERRUPTED_EXIT, err[-3000:]
    assert "training stopped by SIGUSR1 at the end of epoch 1/3, step 5" in err
    last = load(run_dir / "checkpoints" / "last.ckpt")
    assert last["global_step"] == STEPS_PER_EPOCH
    assert last["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == 1  # the whole epoch, validated
    assert len(list((run_dir / "checkpoints").glob("best_epoch_000.ckpt"))) == 1


def test_slurm_auto_requeue_keeps_sigusr1_for_lightning():
    from lightning_fabric.plugins.environments import SLURMEnvironment

    class Connector:
        cluster_environment = SLURMEnvironment(auto_requeue=True)

    class Trainer:
        _accelerator_connector = Connector()

    callback = StopOnSignal("/run")
    # Lightning saves hpc_ckpt and requeues on SIGUSR1
    assert callback.handled_signals(Trainer()) == [signal.SIGTERM, signal.SIGINT]
    Connector.cluster_environment = SLURMEnvironment(auto_requeue=False)
    assert callback.handled_signals(Trainer()) == [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT]
    with pytest.raises(ValueError, match="SIGKILL"):
        StopOnSignal("/run", signals=["SIGKILL"])
    assert errors.classify(Interrupted("x")) == INTERRUPTED_EXIT != errors.FAULT_EXIT


def test_ctrl_c_saves_and_stops_and_a_second_ctrl_c_stops_at_once(data_root, tmp_path):
    common = ["trainer.max_epochs=2", "+callbacks.mark._target_=fault_switch.MarkAtStep", "+callbacks.mark.step=2"]
    run_dir, marker = tmp_path / "once", tmp_path / "at_step_2"
    twice_dir, twice_marker = tmp_path / "twice", tmp_path / "twice_at_step_2"
    # both runs side by side; the second waits inside step 2 until it is interrupted (at most 60 s), so it is still
    # in that step however long the first takes
    proc = start(data_root, run_dir, *common, f"+callbacks.mark.marker={marker}")
    twice = start(data_root, twice_dir, *common, f"+callbacks.mark.marker={twice_marker}", "+callbacks.mark.wait=60")
    wait_for(marker, proc)
    proc.send_signal(signal.SIGINT)  # a terminal's Ctrl-C, during step 2
    code, out, err = finish(proc)
    assert code == INTERRUPTED_EXIT, err[-3000:]
    assert "Ctrl-C: finishing this step" in err and "training stopped by SIGINT" in err and "Traceback" not in err
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 3

    wait_for(twice_marker, twice)
    twice.send_signal(signal.SIGINT)
    time.sleep(0.5)
    twice.send_signal(signal.SIGINT)  # the second one: at once, no checkpoint of this step
    code, out, err = finish(twice, timeout=50)  # not after the 60 s wait
    assert code != 0 and code != INTERRUPTED_EXIT, err[-3000:]
    assert not (twice_dir / "checkpoints" / "last.ckpt").exists()


# -------------------------------------------------------------------------------------------------------------------
# kill -9 during a checkpoint write; ENOSPC during a write


@pytest.fixture(scope="module")
def killed_during_a_save(data_root, tmp_path_factory) -> dict[int, tuple[Path, Path, subprocess.Popen]]:
    """The runs of the test below, started side by side: save number -> (run dir, marker, process)."""
    runs = {}
    for at_save in (3, 4):
        tmp = tmp_path_factory.mktemp(f"killed_during_save_{at_save}")
        run_dir, marker = tmp / "run", tmp / "killed"
        proc = start(
            data_root,
            run_dir,
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
            "callbacks.model_checkpoint.save_top_k=-1",
            "+callbacks.kill._target_=fault_switch.KillDuringSave",
            f"+callbacks.kill.at_save={at_save}",
            f"+callbacks.kill.dirpath={run_dir / 'checkpoints'}",
            f"+callbacks.kill.marker={marker}",
        )
        runs[at_save] = (run_dir, marker, proc)
    return runs


@pytest.mark.parametrize(("at_save", "absent"), [(3, "best_epoch_001.ckpt"), (4, None)])
def test_kill_during_a_checkpoint_write_leaves_every_checkpoint_complete(killed_during_a_save, at_save, absent):
    """Saves: 1 best_epoch_000, 2 last.ckpt (epoch 0), 3 best_epoch_001, 4 last.ckpt (epoch 1); one made large is
    killed while it is written."""
    run_dir, marker, proc = killed_during_a_save[at_save]
    code, _, err = finish(proc)
    assert code == -signal.SIGKILL and marker.exists(), err[-3000:]
    folder = run_dir / "checkpoints"
    partial = [p for p in folder.iterdir() if p.name.startswith(".ckpt-partial-")]
    assert len(partial) == 1 and not partial[0].name.endswith(".ckpt")  # the write in progress: not a checkpoint name
    assert absent is None or not (folder / absent).exists()
    for path in folder.glob("*.ckpt"):  # every file under a checkpoint name is complete
        checkpoint = load(path)
        assert "ballast" not in checkpoint and checkpoint["global_step"] == (2 if "001" in path.name else 1)
    assert load(folder / "last.ckpt")["global_step"] == 1  # the epoch-0 save, intact

    checkpoint_io.remove_stale_partial_files(folder)  # the next save into the folder clears the dead process's file
    assert not partial[0].exists()


def test_a_failed_write_keeps_the_old_file_and_names_the_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"step": 1}, path)

    def full_disk(file) -> None:
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    err = raised(lambda: atomic_write(path, full_disk))
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC and err.filename == str(path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left
    AtomicCheckpointIO().save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 2} and oct(path.stat().st_mode & 0o777) != "0o600"


def test_disk_full_during_training_stops_with_the_resume_command(data_root, tmp_path, monkeypatch):
    real_atomic_write, calls = checkpoint_io.atomic_write, []

    def full_disk(file) -> None:
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    def atomic_write_on_a_filling_disk(path, write):
        calls.append(path)
        # the second checkpoint save (last.ckpt, after best_epoch_000) meets a full disk
        return real_atomic_write(path, full_disk if len(calls) == 2 else write)

    monkeypatch.setattr(checkpoint_io, "atomic_write", atomic_write_on_a_filling_disk)
    run_dir = tmp_path / "run"
    err = raised(lambda: in_process(data_root, run_dir))
    assert isinstance(err, DiskFull) and errors.classify(err) == errors.FAULT_EXIT
    text = errors.message(err)
    assert "last.ckpt" in text and "nothing was half-written" in text and f"resume={run_dir}" in text
    folder = run_dir / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best_epoch_000.ckpt"]
    load(folder / "best_epoch_000.ckpt")


def test_not_enough_free_space_stops_before_the_first_step(data_root, tmp_path):
    run_dir = tmp_path / "run"
    err = raised(lambda: in_process(data_root, run_dir, "callbacks.disk_space.reserve_gb=1000000"))
    assert isinstance(err, NotEnoughDiskSpace) and errors.classify(err) == errors.USER_ERROR_EXIT
    assert "not enough free space" in str(err) and "callbacks.disk_space.reserve_gb" in str(err)
    assert not list((run_dir / "checkpoints").iterdir())  # no step was trained, nothing saved


def test_expected_checkpoint_size_is_close_to_a_real_checkpoint(tmp_path):
    from hydra.utils import instantiate

    cfg = compose_config("train", ["data.num_classes=10"], tmp_path / "run")
    model = instantiate(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(1, 3, 4, 32, 32)).sum().backward()
    optimizer.step()
    torch.save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "c.ckpt")
    expected = expected_checkpoint_bytes(model, optimizer_states=2)
    assert 0.9 < expected / (tmp_path / "c.ckpt").stat().st_size < 1.1
    with pytest.raises(ValueError, match="reserve_gb"):
        DiskSpaceCheck(str(tmp_path), reserve_gb=-1)

    class Trainer:  # best top-2 + last.ckpt
        checkpoint_callbacks = [FiniteModelCheckpoint(dirpath=tmp_path, monitor="val/acc1", save_top_k=2)]
        max_epochs = 5

    assert checkpoint_files_kept(Trainer()) == 2


# -------------------------------------------------------------------------------------------------------------------
# non-finite loss or gradients


def test_nonfinite_steps_are_skipped_counted_and_leave_the_weights(data_root, tmp_path):
    record = tmp_path / "unchanged.json"
    metrics = in_process(
        data_root,
        tmp_path / "run",
        "trainer.limit_train_batches=5",
        "+callbacks.nan._target_=fault_switch.NonFiniteInput",
        f"+callbacks.nan.record={record}",
        "+callbacks.nan.steps=[1,3]",
    )
    assert json.loads(record.read_text()) == {"1": True, "3": True}  # weights and BatchNorm statistics kept
    assert metrics["train/nonfinite_steps"] == 2.0
    assert math.isfinite(metrics["val/acc1"]) and math.isfinite(metrics["val/loss"])


def test_a_diverging_run_stops_with_a_message_and_keeps_no_diverged_best(data_root, tmp_path):
    run_dir = tmp_path / "run"
    err = raised(lambda: in_process(data_root, run_dir, "trainer.max_epochs=4", "trainer.limit_train_batches=5",
                                    "model.optimizer.lr=1e6"))  # fmt: skip
    assert isinstance(err, TrainingDiverged) and errors.classify(err) == errors.FAULT_EXIT
    text = str(err)
    assert text.startswith("training diverged: 10 optimiser steps in a row had a non-finite loss or gradients")
    assert "learning rate is too high" in text and "bf16-mixed" in text and "last.ckpt" in text
    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        state = load(path)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), path.name


def test_nan_monitor_is_never_the_best_checkpoint(tmp_path):
    callback = FiniteModelCheckpoint(dirpath=tmp_path, monitor="val/acc1", mode="max")

    class Trainer:
        current_epoch = 3

    assert not callback.check_monitor_top_k(Trainer(), torch.tensor(math.nan))  # Lightning's would keep it first
    assert not callback.check_monitor_top_k(Trainer(), torch.tensor(math.inf))
    assert callback.check_monitor_top_k(Trainer(), torch.tensor(0.5))


def test_nonfinite_scores_are_never_hits_and_a_split_with_them_is_not_scored():
    scores = torch.tensor([[0.1, 0.9, 0.0, 0.0, 0.0, 0.0], [math.nan] * 6, [0.0, 0.0, math.inf, 0.0, 0.0, 0.0]])
    labels = torch.tensor([1, 0, 2])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, labels, 5) == pytest.approx(1 / 3)  # never below top-1 because of NaN rows
    metrics = classification_metrics(scores, labels)
    assert math.isnan(metrics["acc1"]) and math.isnan(metrics["acc5"]) and math.isnan(metrics["mean_class_acc"])
    assert metrics["nonfinite_videos"] == 2 and metrics["num_videos"] == 3
    assert not math.isnan(classification_metrics(scores[:1], labels[:1])["acc1"])


# -------------------------------------------------------------------------------------------------------------------
# out of memory


@pytest.mark.parametrize("kind", ["cuda_oom", "cpu_oom"])
def test_out_of_memory_names_the_batch_and_how_to_keep_the_recipe(data_root, tmp_path, kind):
    err = raised(lambda: in_process(data_root, tmp_path / "run", "+callbacks.oom._target_=fault_switch.RaiseAtStep",
                                    "+callbacks.oom.step=1", f"+callbacks.oom.error={kind}"))  # fmt: skip
    assert isinstance(err, OutOfMemory) and errors.classify(err) == errors.FAULT_EXIT
    text = str(err)
    assert "data.batch_size=4 clips per device of 4 frames at 32x32 px" in text
    assert "data.batch_size=2 trainer.accumulate_grad_batches=2" in text and "global batch of 4" in text
    assert ("host (CPU memory)" in text) == (kind == "cpu_oom")
    assert is_out_of_memory(err.__cause__)
    assert smaller_batch(6, 1) == (3, 2) and smaller_batch(7, 2) == (1, 14) and smaller_batch(1, 1) is None


# -------------------------------------------------------------------------------------------------------------------
# a stop signal sent to every process of the job (DataLoader workers included)

WORKERS_SCRIPT = """
import os, signal, subprocess, sys, time
import torch
from torch.utils.data import DataLoader, Dataset
from rsa_lightning.utils.signals import ignore_stop_signals

class Slow(Dataset):
    def __len__(self):
        return 400
    def __getitem__(self, i):
        time.sleep(0.01)
        return i

signal.signal(signal.SIGTERM, lambda *_: None)  # the main process handles it (StopOnSignal)
init = ignore_stop_signals if sys.argv[1] == "ignore" else None
batches = iter(DataLoader(Slow(), batch_size=2, num_workers=2, persistent_workers=True, worker_init_fn=init))
next(batches), next(batches)  # a batch from each worker (in turn): both have run worker_init_fn before the signal
# as a cluster does: another process (slurmstepd, kill -TERM -<pgid>) signals every process of the job
subprocess.run(["kill", "-TERM", "--", f"-{os.getpgid(0)}"])
time.sleep(0.5)
print(sum(1 for _ in batches))
"""


def test_dataloader_workers_outlive_a_stop_signal_to_the_whole_job(tmp_path):
    script = tmp_path / "workers.py"
    script.write_text(WORKERS_SCRIPT)

    def start_script(mode: str) -> subprocess.Popen:  # in a session of its own: its signal reaches only its processes
        return subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env(), start_new_session=True)  # fmt: skip

    kept, lost = start_script("ignore"), start_script("default")  # side by side
    code, out, err = finish(kept, timeout=120)
    assert code == 0 and out.split() == ["198"], err[-2000:]
    code, out, err = finish(lost, timeout=120)  # PyTorch's own worker handler: the worker dies, the main process fails
    assert code != 0 and "killed by signal" in err


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (ended, not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_sigterm_during_data_generation_exits_143_and_leaves_no_workers(tmp_path):
    """SIGTERM before training (here: while the generator's pool renders the synthetic data) ends the run with a
    message and the shell's SIGTERM code 143, and its worker processes end with it (they rendered on, orphaned,
    for as long as their queue lasted)."""
    root = tmp_path / "data"
    overrides = [*tiny_synthetic_overrides(root), "data.prepare.workers=2", "data.prepare.train_per_class=60"]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *overrides, f"paths.log_dir={tmp_path / 'logs'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        workers: list[int] = []
        while not workers and proc.poll() is None:  # until the pool's workers render (forked by its forkserver)
            time.sleep(0.2)
            if any((root / "videos").glob("*/*")) or any((root / "videos").glob("*.*")):
                workers = [w for server in _children(proc.pid) for w in _children(server)]
        assert workers, "the generator's workers were never seen"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "stopped by SIGTERM outside training" in stderr and "Traceback" not in stderr
    assert not [w for w in workers if _running(w)]  # terminated before the main process exited
