"""What a user sees when a run fails: one message and exit code 2 for bad input, the traceback in the run's log only
(rsa_lightning.errors, wired into train.py and eval.py)."""

from __future__ import annotations

import errno
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_side_by_side

from rsa_lightning import errors
from rsa_lightning.data.annotations import read_video_list

ROOT = Path(__file__).resolve().parents[2]


def _raised(fn) -> BaseException:
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - the test inspects it
        return err
    raise AssertionError("nothing raised")


def _bad_list(tmp_path: Path) -> Path:
    path = tmp_path / "train.txt"
    path.write_text("a.mp4 0\nb.mp4\n")
    return path


def test_value_error_raised_in_the_package_is_bad_input(tmp_path):
    err = _raised(lambda: read_video_list(_bad_list(tmp_path), tmp_path))
    assert errors.classify(err) == errors.USER_ERROR_EXIT
    assert "train.txt" in errors.message(err)


def test_value_error_raised_elsewhere_is_a_bug():
    err = _raised(lambda: int("x"))  # raised by Python itself, not by rsa_lightning
    assert errors.classify(err) is None
    err = _raised(lambda: torch.zeros(2).view(3))
    assert errors.classify(err) is None


def test_user_error_classes_and_faults():
    assert errors.classify(errors.ConfigError("data.root is not set")) == 2
    assert errors.classify(errors.MissingFileError("x")) == 2
    assert isinstance(errors.DataError("x"), ValueError)
    assert errors.classify(errors.RunFault("diverged")) == 1
    assert errors.classify(RuntimeError("boom")) is None


def test_unwritable_output_is_bad_input():
    err = PermissionError(errno.EACCES, "Permission denied", "/ro/logs/train.log")
    assert errors.classify(err) == 2
    assert errors.message(err).startswith("cannot write /ro/logs/train.log: Permission denied")
    full = OSError(errno.ENOSPC, "No space left on device", "/data/last.ckpt")
    assert errors.classify(full) == 2 and "free space" in errors.message(full)


def test_error_reraised_from_a_dataloader_worker_keeps_its_message(tmp_path):
    from torch.utils.data._utils import ExceptionWrapper

    try:
        read_video_list(_bad_list(tmp_path), tmp_path)
    except ValueError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    reraised = _raised(wrapped.reraise)
    assert errors.classify(reraised) == 2
    text = errors.message(reraised)
    assert "\n" not in text and "train.txt:2" in text and not text.startswith("ValueError")


def test_report_writes_the_traceback_to_the_log_file_only(tmp_path, capsys):
    log_file = tmp_path / "train.log"
    handler = logging.FileHandler(log_file)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        code = errors.report(_raised(lambda: read_video_list(_bad_list(tmp_path), tmp_path)))
    finally:
        root.removeHandler(handler)
        handler.close()
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and str(log_file) in err
    logged = log_file.read_text()
    assert "Traceback" in logged and "read_video_list" in logged and "error: " in logged


# Each command below fails within seconds, mostly the imports of train.py / eval.py on one core: the fixture
# `refused` runs them all, a few side by side, when the first of these tests needs them; each test checks its own.
def _train(tmp_path: Path, *overrides: str, env: dict | None = None) -> tuple[list[str], dict]:
    """The ``train.py`` command (and its Popen keyword arguments) of one case of :func:`refused`."""
    import os

    args = [sys.executable, str(ROOT / "train.py"), f"paths.log_dir={tmp_path / 'logs'}", *overrides]
    return args, {"env": {**os.environ, **(env or {})}}


def _list_dataset(root: Path, train_lines: str) -> list[str]:
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "train.txt").write_text(train_lines)
    (root / "annotations" / "val.txt").write_text("v.mp4 0\n")
    return [
        "data=list",
        f"data.root={root}",
        "data.num_classes=3",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    ]


CANNOT_COMPOSE = [
    # the same command as test_config_checks.py::test_train_unknown_option_or_key_short_hydra_message_exit_2,
    # which checks more of its output: only in `make test-all`
    pytest.param("model=nope", marks=pytest.mark.slow),
    "trainer.max_epoch=3",
    "data.num_frames==",
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory, request) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """The commands of the tests below (those of the selected tests): case -> (its folder, its result)."""
    selected = {item.name for item in request.session.items}
    folders, commands = {}, {}
    tmp = folders["bad_list"] = tmp_path_factory.mktemp("bad_list")
    commands["bad_list"] = _train(tmp, *_list_dataset(tmp / "ds", "a.mp4 0\nb.mp4 1\nc.mp4 1\nd.mp4 7\n"))
    tmp = folders["full_error"] = tmp_path_factory.mktemp("full_error")
    overrides = _list_dataset(tmp / "ds", "a.mp4 0\nd.mp4 7\n")
    commands["full_error"] = _train(tmp, *overrides, env={"HYDRA_FULL_ERROR": "1"})
    for param in CANNOT_COMPOSE:
        override = param.values[0] if hasattr(param, "values") else param
        if f"test_config_hydra_cannot_compose_exits_2[{override}]" in selected:
            tmp = folders[override] = tmp_path_factory.mktemp("cannot_compose")
            commands[override] = _train(tmp, override)
    tmp = folders["eval"] = tmp_path_factory.mktemp("eval_missing_checkpoint")
    eval_args = [sys.executable, str(ROOT / "eval.py"), f"ckpt_path={tmp / 'missing.ckpt'}", f"paths.log_dir={tmp}"]
    commands["eval"] = eval_args, {}
    results = run_side_by_side(commands)
    return {case: (tmp, results[case]) for case, tmp in folders.items()}


def test_train_bad_list_file_one_message_exit_2_traceback_in_log(refused):
    tmp_path, result = refused["bad_list"]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and "train.txt:4" in error_lines[0] and "7" in error_lines[0], result.stderr
    logs = list((tmp_path / "logs").rglob("train.log"))
    assert len(logs) == 1 and "Traceback" in logs[0].read_text()


def test_hydra_full_error_prints_the_traceback(refused):
    result = refused["full_error"][1]
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "error: " in result.stderr


@pytest.mark.parametrize("override", CANNOT_COMPOSE)
def test_config_hydra_cannot_compose_exits_2(refused, override):
    result = refused[override][1]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 25, result.stderr  # Hydra lists the options of a group


def test_eval_missing_checkpoint_exits_2(refused):
    result = refused["eval"][1]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "missing.ckpt does not exist" in result.stderr


def test_train_with_the_frames_backend_on_video_files_is_refused_before_fit(tmp_path):
    from conftest import TINY_TRAINING, compose_config, tiny_synthetic_overrides

    from rsa_lightning.errors import ConfigError
    from rsa_lightning.train import train

    overrides = [*tiny_synthetic_overrides(tmp_path / "data"), *TINY_TRAINING, "data/backend=frames"]
    cfg = compose_config("train", overrides, tmp_path / "run")
    with pytest.raises(ConfigError, match="data/backend=frames.*lists video files.*extract_frames"):
        train(cfg, overrides)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_value_a_constructor_refuses_is_bad_input_naming_the_target():
    import hydra

    err = _raised(
        lambda: hydra.utils.instantiate(
            {"_target_": "rsa_lightning.data.transforms.EvalTransform", "resize": 32, "crop_size": 64}
        )
    )
    assert errors.classify(err) == 2
    text = errors.message(err)
    assert text.startswith("rsa_lightning.data.transforms.EvalTransform: ") and "crop" in text, text
    err = _raised(lambda: hydra.utils.instantiate({"_target_": "torch.nn.Dropout", "p": 1.5}))  # a library's check
    assert errors.classify(err) == 2 and "Dropout: dropout probability" in errors.message(err)
    assert errors.message(err).endswith("(check the config values it is built from)")


def test_a_constructors_own_user_error_keeps_its_fix_without_the_config_hint(monkeypatch):
    import hydra

    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # torchcodec not importable: a ConfigError
    target = "rsa_lightning.data.decoding.TorchCodecBackend"
    err = _raised(lambda: hydra.utils.instantiate({"_target_": target}))
    assert errors.classify(err) == 2
    text = errors.message(err)
    assert text.startswith(f"{target}: data/backend=torchcodec: torchcodec cannot be loaded (")
    assert text.endswith("or use data/backend=decord"), text  # its own fix last, no "check the config values"


def test_a_mandatory_value_not_given_names_the_key():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"data": {"num_classes": "???", "annotations": {"num_classes": "${data.num_classes}"}}})
    err = _raised(lambda: OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
    assert errors.classify(err) == 2
    assert errors.message(err).startswith("data.num_classes is not set"), errors.message(err)


def test_disk_full_raised_through_another_error_is_still_disk_full():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/run/last.ckpt")
        except OSError as full:
            raise RuntimeError("unexpected pos 123 vs 45") from full
    except RuntimeError as err:
        wrapped = err
    assert errors.classify(wrapped) == 2 and errors.message(wrapped).startswith("cannot write /run/last.ckpt")


def test_a_video_that_cannot_be_decoded_is_bad_input(tmp_path):
    from rsa_lightning.data.video_io import VideoDecodeError

    assert errors.classify(VideoDecodeError(f"{tmp_path}/x.mp4: zero-byte file")) == 2


def test_a_short_diverged_run_is_never_reported_as_a_result(tmp_path):
    from conftest import TINY_TRAINING, compose_config, tiny_synthetic_overrides

    from rsa_lightning.callbacks.nonfinite import TrainingDiverged
    from rsa_lightning.train import train

    overrides = [*tiny_synthetic_overrides(tmp_path / "data"), *TINY_TRAINING, "trainer.limit_train_batches=3"]
    overrides.append("model.optimizer.lr=1e6")  # fewer non-finite steps than the guard stops at
    with pytest.raises(TrainingDiverged, match="the last validation has non-finite val/acc1"):
        train(compose_config("train", overrides, tmp_path / "run"), overrides)
    assert not list(tmp_path.glob("run/confusion/val_*.csv"))  # no confusion matrix of NaN scores


def test_train_from_a_truncated_checkpoint_is_one_message_before_anything_is_built(tmp_path):
    from conftest import TINY_TRAINING, compose_config, tiny_synthetic_overrides

    from rsa_lightning.errors import CheckpointError
    from rsa_lightning.train import train

    bad = tmp_path / "start.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, bad)
    bad.write_bytes(bad.read_bytes()[:500])
    overrides = [*tiny_synthetic_overrides(tmp_path / "data"), *TINY_TRAINING, f"ckpt_path={bad}"]
    with pytest.raises(CheckpointError, match="start.ckpt could not be read: truncated or not a checkpoint"):
        train(compose_config("train", overrides, tmp_path / "run"), overrides)
    assert not (tmp_path / "data").exists()  # nothing generated, nothing built


def test_a_training_split_smaller_than_one_batch_names_the_batch_size():
    from rsa_lightning.data.resumable import resumable_loader
    from rsa_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match=r"1 video\(s\) \(1\), fewer than one batch of data.batch_size=2"):
        resumable_loader([0], seed=0, batch_size=2, num_replicas=1, rank=0, batches_done=lambda: (0, False))


def test_ctrl_c_outside_training_exits_130_without_a_traceback(capsys):
    def main():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_:
        errors.run_hydra_main(main)
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted (Ctrl-C)" in err and "Traceback" not in err


def test_a_checkpoint_pickling_a_blocked_module_says_it_needs_code(tmp_path):
    import os

    from rsa_lightning.errors import CheckpointError
    from rsa_lightning.evaluation.checkpoints import read_checkpoint

    path = tmp_path / "evil.ckpt"
    torch.save({"x": os.system}, path)  # torch's message differs for blocked modules (posix)
    with pytest.raises(CheckpointError, match="needs code to be unpickled .*posix.system"):
        read_checkpoint(path)


def test_lightnings_own_refusal_of_a_trainer_value_is_bad_input():
    import hydra

    err = _raised(lambda: hydra.utils.instantiate({"_target_": "pytorch_lightning.Trainer", "max_epochs": -5}))
    assert errors.classify(err) == 2 and "max_epochs" in errors.message(err)


@pytest.mark.parametrize("seed", ["abc", -5, 2**40])
def test_a_seed_numpy_cannot_take_is_refused(tmp_path, seed):
    from conftest import compose_config

    from rsa_lightning.config_checks import check_train_config
    from rsa_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 2\*\*32 - 1\] or null"):
        check_train_config(compose_config("train", [f"seed={seed}"], tmp_path / "run"))


def test_a_new_run_never_writes_into_an_earlier_runs_folder(tmp_path):
    from rsa_lightning.config_checks import check_new_run_dir
    from rsa_lightning.errors import ConfigError

    check_new_run_dir(tmp_path / "new")  # nothing there yet
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"folder of an earlier run \(checkpoints\).*resume="):
        check_new_run_dir(tmp_path / "old")


def test_train_py_refuses_an_earlier_runs_folder_and_leaves_every_file_of_it_unchanged(tmp_path):
    """A finished run's folder (as ``hydra.run.dir=`` or ``RSA_RUN_NAME`` name it), and a folder another process
    has just claimed for its new run: refused with exit 2 before Hydra writes its config, log or anything else."""
    finished = tmp_path / "finished"
    files = {
        "config_resolved.yaml": "seed: 1\n",
        "result.json": '{"status": "completed", "time_min": 3.5}\n',
        "train.log": "the run's log\n",
        ".hydra/config.yaml": "seed: 1\n",
        ".hydra/overrides.yaml": "- seed=1\n",
        "checkpoints/last.ckpt": "weights",
    }
    for name, text in files.items():
        (finished / name).parent.mkdir(parents=True, exist_ok=True)
        (finished / name).write_text(text)
    claimed = tmp_path / "claimed"
    claimed.mkdir()
    (claimed / ".rsa_run").touch()
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    results = run_side_by_side(
        {
            "finished": ([sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={finished}", logs, "seed=2"], {}),
            "claimed": ([sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={claimed}", logs], {}),
        }
    )
    for name, folder in (("finished", finished), ("claimed", claimed)):
        result = results[name]
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert f"error: {folder} is the folder of an earlier run" in result.stderr
        assert f"resume={folder}" in result.stderr
    written = {str(p.relative_to(finished)): p.read_text() for p in finished.rglob("*") if p.is_file()}
    assert written == files
    assert [p.name for p in claimed.iterdir()] == [".rsa_run"]
    assert not (tmp_path / "logs").exists()


def test_the_error_message_ends_the_progress_bar_line_first(capsys):
    """A run failing inside an epoch: its bar is closed (its line ended) before ``error: ...``, which is last."""
    from tqdm import tqdm

    bar = tqdm(total=5, file=sys.stdout, desc="Epoch 1/1")
    bar.update(1)
    assert errors.report(errors.ConfigError("data.x is wrong: fix it")) == 2
    out, err = capsys.readouterr()
    assert "Epoch 1/1" in out and out.endswith("\n")
    assert err.startswith("error: data.x is wrong: fix it")


def test_decords_ffmpeg_messages_do_not_reach_the_console(tmp_path, capfd):
    from rsa_lightning.data.video_io import open_decord

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(Exception):  # noqa: B017 - decord raises its own error types
        open_decord(garbage, num_threads=1)
    assert "moov atom not found" not in capfd.readouterr().err


def test_a_sweep_into_an_earlier_sweeps_folder_is_refused_before_any_job_writes(tmp_path):
    """``-m ... hydra.sweep.dir=<an earlier sweep>``: its job folders would be the earlier jobs' (0, 1, ...); refused
    before the first job, whose result.json, .hydra/ and train.log were rewritten before."""
    sweep = tmp_path / "sweep"
    files = {"0/config_resolved.yaml": "seed: 1\n", "0/result.json": '{"status": "completed"}\n', "0/train.log": "x\n"}
    for name, text in files.items():
        (sweep / name).parent.mkdir(parents=True, exist_ok=True)
        (sweep / name).write_text(text)
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "seed=1,2", f"hydra.sweep.dir={sweep}"]
        + [f"paths.log_dir={tmp_path / 'logs'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: hydra.sweep.dir={sweep} holds an earlier sweep's runs (job folders 0)" in result.stderr
    assert f"resume={sweep / '0'}" in result.stderr and "Traceback" not in result.stderr
    assert {str(p.relative_to(sweep)): p.read_text() for p in sweep.rglob("*") if p.is_file()} == files


def test_the_claimed_folder_is_this_runs_own_however_it_was_spelt(tmp_path):
    """``hydra.run.dir=<x>/a/../run``: the folder claimed before Hydra starts is the run's own output folder (Hydra
    resolves the ``..``), not an earlier run; a folder claimed by another process is one."""
    from rsa_lightning.config_checks import RUN_CLAIM_FILE, check_new_run_dir, claim_new_run_dir
    from rsa_lightning.errors import ConfigError

    claim_new_run_dir(tmp_path / "a" / ".." / "run", environ={})
    assert (tmp_path / "run" / RUN_CLAIM_FILE).is_file()
    check_new_run_dir(tmp_path / "run")  # this process's own claim
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / RUN_CLAIM_FILE).touch()
    with pytest.raises(ConfigError, match=r"folder of an earlier run \(\.rsa_run\)"):
        claim_new_run_dir(tmp_path / "other", environ={})
    claim_new_run_dir(tmp_path / "other", environ={"LOCAL_RANK": "1"})  # DDP rank 1 shares rank 0's folder
    claim_new_run_dir(tmp_path / "other", environ={"SLURM_RESTART_COUNT": "1"})  # a requeued job continues it


def test_a_run_folder_is_trained_by_one_process_at_a_time(tmp_path):
    """``resume=`` of a run that is still training (a resubmitted job): refused while the first process holds the
    folder; the lock goes with the process (however it ends), and the refusal writes nothing of the folder's."""
    from rsa_lightning.config_checks import RunInUse, run_lock

    script = (
        "import sys, time; from pathlib import Path; from rsa_lightning.config_checks import run_lock\n"
        "with run_lock(Path(sys.argv[1]), environ={}):\n    print('held', flush=True); time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = r"is being trained right now by another process .*resume="
        with pytest.raises(RunInUse, match=refused), run_lock(tmp_path / "run", environ={}):
            pass
        with run_lock(tmp_path / "run", environ={"LOCAL_RANK": "1"}):  # the other DDP processes share it
            pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path / "run", environ={}):  # killed: the kernel released it
        pass
    with run_lock(tmp_path / "run", environ={}):  # and this process released it on leaving the block
        pass
