"""The composed config is checked before any heavy work (rsa_lightning.config_checks): a value that cannot work is
refused with one message naming the key, its value and the fix (ConfigError), before the model, the trainer or the
data exist; train.py then exits with code 2 and no traceback on the console."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from conftest import ROOT, compose_config, run_side_by_side

from rsa_lightning.config_checks import (
    check_eval_config,
    check_train_config,
    layout_from_comment,
    unwritable_reason,
)
from rsa_lightning.errors import ConfigError

REAL_DATASETS = ["ssv1", "ssv2", "diving48", "gym99", "gym288", "kinetics400", "list"]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


def _cfg(tmp_path: Path, *overrides: str):
    return compose_config("train", list(overrides), tmp_path / "run")


def _refusal(tmp_path: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        check_train_config(_cfg(tmp_path, *overrides))
    return str(info.value)


@pytest.fixture
def dataset_root(tmp_path: Path) -> Path:
    """A non-empty folder standing in for a dataset (the checks only look at its existence)."""
    root = tmp_path / "dataset"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "train.txt").write_text("v.mp4 0\n")
    return root


# ------------------------------------------------------------------------------------------------ what passes
def test_default_config_passes(tmp_path):
    check_train_config(_cfg(tmp_path))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_passes_with_its_root_and_weights(name, tmp_path, dataset_root):
    weights = tmp_path / "resnet50.pth"
    weights.write_bytes(b"stand-in")
    check_train_config(
        _cfg(tmp_path, f"experiment={name}", f"data.root={dataset_root}", f"model.net.pretrained={weights}")
    )


# ------------------------------------------------------------------------------------------------------ data.root
@pytest.mark.parametrize("name", REAL_DATASETS)
def test_real_dataset_has_no_default_root_and_documents_its_layout(name):
    text = (ROOT / "conf" / "data" / f"{name}.yaml").read_text()
    assert any(line.startswith("root: ???") for line in text.splitlines()), f"{name}: data.root must be mandatory"
    assert layout_from_comment(text), f"{name}.yaml: no '# Layout under data.root:' comment block"


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_missing_root_names_data_root_and_the_layout(name, tmp_path):
    message = _refusal(tmp_path, f"data={name}")
    folder = "dataset" if name == "list" else name
    assert message.startswith(f"data.root is not set: data={name} needs data.root=/path/to/{folder} (layout: ")
    layout = layout_from_comment((ROOT / "conf" / "data" / f"{name}.yaml").read_text())
    assert layout in message


def test_missing_root_of_an_experiment_names_its_dataset(tmp_path):
    assert _refusal(tmp_path, "experiment=rsa_r50_ssv2_16f").startswith("data.root is not set: data=ssv2 needs")


def test_layout_is_read_from_the_comment_without_its_asides():
    text = (ROOT / "conf" / "data" / "ssv2.yaml").read_text()
    assert layout_from_comment(text) == (
        "videos/<id>.webm; annotations/something-something-v2-{labels,train,validation,test}.json"
    )
    kinetics = layout_from_comment((ROOT / "conf" / "data" / "kinetics400.yaml").read_text())
    assert "label_folders" not in kinetics and kinetics.endswith("annotations/train.csv, annotations/validate.csv")
    assert layout_from_comment("# no layout here\nroot: x\n") is None


@pytest.mark.parametrize("kind", ["absent", "file", "empty"])
def test_root_that_is_not_a_dataset_folder(kind, tmp_path):
    root = tmp_path / "ssv2"
    if kind == "file":
        root.write_text("")
    elif kind == "empty":
        root.mkdir()
    message = _refusal(tmp_path, "data=ssv2", f"data.root={root}")
    expected = {"absent": "does not exist", "file": "is a file, not a folder", "empty": "is an empty folder"}[kind]
    assert message.startswith(f"data.root={root} {expected}")
    assert "expected layout: videos/<id>.webm" in message


def test_generated_dataset_root_may_not_exist_yet(tmp_path):
    check_train_config(_cfg(tmp_path, f"data.root={tmp_path / 'to_be_generated'}"))


def test_list_without_num_classes_names_it(tmp_path, dataset_root):
    message = _refusal(tmp_path, "data=list", f"data.root={dataset_root}")
    assert message.startswith("data.num_classes is not set") and "data.num_classes=<value>" in message


# ---------------------------------------------------------------------------------------------------- values
BAD_VALUES = {
    "num_frames_zero": (["data.num_frames=0"], "data.num_frames must be a positive integer, got 0"),
    "num_frames_negative": (["data.num_frames=-4"], "data.num_frames must be a positive integer, got -4"),
    "batch_zero": (["data.batch_size=0"], "data.batch_size must be a positive integer, got 0"),
    "batch_negative": (["data.batch_size=-8"], "data.batch_size must be a positive integer, got -8"),
    "lr_zero": (["model.optimizer.lr=0"], "model.optimizer.lr must be a positive number, got 0"),
    "lr_negative": (["model.optimizer.lr=-0.1"], "model.optimizer.lr must be a positive number, got -0.1"),
    "one_class": (["data.num_classes=1"], "data.num_classes must be an integer >= 2, got 1"),
    "classes_differ": (["model.num_classes=5"], "model.num_classes=5 differs from data.num_classes=10"),
    "net_classes_differ": (["model.net.num_classes=4"], "model.net.num_classes=4 differs from data.num_classes=10"),
    "even_window": (["model.net.stmixer.kernel_size=[4,7,7]"], "model.net.stmixer.kernel_size must be three odd"),
    "zero_window": (["model.net.stmixer.kernel_size=[0,7,7]"], "got [0, 7, 7]"),
    "negative_window": (["model.net.stmixer.kernel_size=[5,-7,7]"], "got [5, -7, 7]"),
    "two_sizes": (["model.net.stmixer.kernel_size=[7,7]"], "model.net.stmixer.kernel_size must be three odd"),
    "int_window": (["model.net.stmixer.kernel_size=5"], "got 5"),
    "rsa_implementation": (
        ["model.net.stmixer.implementation=fastest"],
        "model.net.stmixer.implementation must be fast or reference",
    ),
    "checkpoint_mixers_not_bool": (
        ["model.net.checkpoint_mixers=maybe"],
        "model.net.checkpoint_mixers must be true or",
    ),
    "channels_last_not_bool": (["model.net.channels_last=yes"], "model.net.channels_last must be true or false"),
    "mixer_option_without_mixer": (
        ["model=tsn_tiny", "+model.net.stmixer.recompute_windows=false"],
        "model.net.stmixer has no _target_",
    ),
    "recompute_windows_on_another_mixer": (
        ["model=local_sa_r50", "+model.net.stmixer.recompute_windows=false"],
        "model.net.stmixer.recompute_windows applies to the RSA layer only",
    ),
    "recompute_windows_not_bool": (
        ["model.net.stmixer.recompute_windows=1"],
        "model.net.stmixer.recompute_windows must be true or false",
    ),
    "heads_stage0": (["model.net.stmixer.num_heads=3"], "num_heads=3 does not divide the 16 channels of the mixer at"),
    "heads_later_stage": (
        ["model.net.widths=[16,24,64,128]", "model.net.stmixer.num_heads=16"],
        "num_heads=16 does not divide the 24 channels of the mixer at stage 1 (model.net.widths[1])",
    ),
    "heads_zero": (["model.net.stmixer.num_heads=0"], "model.net.stmixer.num_heads must be a positive integer"),
    "position_beyond_depth": (
        ["model.net.stmixer_positions=[[0],[1],[],[]]"],
        "model.net.stmixer_positions[1] has [1], but stage 1 has 1 block(s)",
    ),
    "positions_per_stage": (["model.net.stmixer_positions=[[0],[0]]"], "needs one list per stage (4 stages"),
    "stages_differ": (["model.net.widths=[16,32,64]"], "model.net.block_counts [1, 1, 1, 1] and model.net.widths"),
    "fp16_on_cpu": (["trainer.accelerator=cpu", "trainer.precision=16-mixed"], "trainer.precision=16-mixed: fp16"),
    "fp16_legacy_on_cpu": (["trainer.accelerator=cpu", "trainer.precision=16"], "trainer.precision=16: fp16 mixed"),
    "unknown_precision": (["trainer.precision=half"], "trainer.precision=half is not a precision Lightning knows"),
    "cpu_devices_zero": (["trainer.accelerator=cpu", "trainer.devices=0"], "trainer.devices=0 on the CPU"),
    "accumulate_zero": (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches must be a positive"),
    "missing_value": (["model.optimizer.lr=???"], "model.optimizer.lr is not set (??? in the config)"),
    "unresolvable": (["data.batch_size=${oc.env:RSA_H6_UNSET_VARIABLE}"], "data.batch_size cannot be resolved"),
    "start_checkpoint_absent": (["ckpt_path=/nonexistent/last.ckpt"], "ckpt_path=/nonexistent/last.ckpt does not"),
    "label_smoothing_above_1": (["model.label_smoothing=2"], "model.label_smoothing must be a number in [0, 1), got 2"),
    "label_smoothing_text": (["model.label_smoothing=abc"], "model.label_smoothing must be a number in [0, 1), got"),
    "max_epochs_text": (["trainer.max_epochs=abc"], "trainer.max_epochs must be a positive integer (the schedule"),
    "max_epochs_zero": (["trainer.max_epochs=0"], "got 0: e.g. trainer.max_epochs=18"),
    "max_epochs_unlimited": (["trainer.max_epochs=-1"], "got -1: e.g. trainer.max_epochs=18"),
    "max_epochs_null": (["trainer.max_epochs=null"], "got None: e.g. trainer.max_epochs=18"),
    "lr_infinite": (["model.optimizer.lr=inf"], "model.optimizer.lr must be a positive number, got inf"),
    "decode_timeout_infinite": (["+data.decode_timeout=inf"], "data.decode_timeout must be a positive number of"),
    "num_clips_zero": (["data.num_clips=0"], "data.num_clips must be a positive integer, got 0: e.g. data.num_clips="),
    "decode_timeout_negative": (["+data.decode_timeout=-1"], "data.decode_timeout must be a positive number of"),
    "interpolation_unresolved": (["seed=${oc.env:RSA_TEST_UNSET_VARIABLE}"], "seed cannot be resolved: KeyError"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_value_that_cannot_work_is_refused_with_its_key(case, tmp_path):
    overrides, expected = BAD_VALUES[case]
    assert expected in _refusal(tmp_path, *overrides)


def test_experiment_without_its_imagenet_weights(tmp_path, dataset_root):
    weights = tmp_path / "data_dir" / "pretrained" / "resnet50-0676ba61.pth"
    message = _refusal(
        tmp_path, "experiment=rsa_r50_ssv2_8f", f"data.root={dataset_root}", f"paths.data_dir={tmp_path / 'data_dir'}"
    )
    assert message.startswith(f"model.net.pretrained={weights} does not exist")
    assert "model.net.pretrained=null" in message


def test_checkpoint_mixers_without_a_mixer_is_said_once(tmp_path, caplog):
    check_train_config(_cfg(tmp_path, "model=tsn_tiny", "model.net.checkpoint_mixers=true"))
    assert "model.net.checkpoint_mixers=true does nothing: this model has no space-time mixer" in caplog.text
    caplog.clear()
    check_train_config(_cfg(tmp_path, "model.net.checkpoint_mixers=true"))  # rsa_tiny: something to checkpoint
    assert "checkpoint_mixers" not in caplog.text


def test_lightning_checkpoint_names_are_not_files(tmp_path):
    check_train_config(_cfg(tmp_path, "ckpt_path=last"))


@pytest.mark.parametrize("heads", [1, 2, 3, 4, 5, 6, 8, 12, 16, 32])
@pytest.mark.parametrize("window", ["[5,7,7]", "[3,3,3]", "[4,7,7]", "[5,6,7]", "[1,1,1]"])
def test_checks_refuse_exactly_what_the_network_refuses(heads, window, tmp_path):
    """rsa_tiny with a range of heads and windows: the config check refuses a config iff building the network does."""
    cfg = _cfg(tmp_path, f"model.net.stmixer.num_heads={heads}", f"model.net.stmixer.kernel_size={window}")
    try:
        check_train_config(cfg)
        refused = False
    except ConfigError:
        refused = True
    try:
        with torch.device("meta"):
            hydra.utils.instantiate(cfg.model.net)
        fails = False
    except hydra.errors.InstantiationException as err:  # the constructor's ValueError, wrapped by Hydra
        assert isinstance(err.__cause__, ValueError), err
        fails = True
    assert refused == fails


# ---------------------------------------------------------------------------------------------------- devices
class FakeCuda:
    """torch.cuda as seen on a machine with ``count`` GPUs, with or without bfloat16."""

    def __init__(self, monkeypatch, count: int, bf16: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")


def test_gpu_requested_but_none_visible(tmp_path, monkeypatch):
    FakeCuda(monkeypatch, 0)
    assert _refusal(tmp_path, "trainer.accelerator=gpu").startswith("trainer.accelerator=gpu but no GPU is visible")
    assert "no GPU is visible" in _refusal(tmp_path, "trainer=ddp")


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        ("4", "trainer.devices=4 but this machine has 2 visible GPU(s)"),
        ("[0,2]", "trainer.devices=[0, 2] names GPU(s) [2], but the visible GPUs are 0..1"),
        ("'1,3'", "trainer.devices=1,3 names GPU(s) [3]"),
        ("0", "trainer.devices=0: give a number of GPUs (1..2)"),
    ],
)
def test_more_gpus_than_visible(devices, expected, tmp_path, monkeypatch):
    FakeCuda(monkeypatch, 2)
    assert expected in _refusal(tmp_path, "trainer.accelerator=gpu", f"trainer.devices={devices}")


@pytest.mark.parametrize("devices", ["2", "-1", "auto", "[0,1]", "[1]"])
def test_gpus_that_exist_pass(devices, tmp_path, monkeypatch):
    FakeCuda(monkeypatch, 2)
    check_train_config(_cfg(tmp_path, "trainer.accelerator=gpu", f"trainer.devices={devices}"))


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true", "bf16"])
def test_bf16_on_a_gpu_without_bf16(precision, tmp_path, monkeypatch):
    FakeCuda(monkeypatch, 1, bf16=False)
    message = _refusal(tmp_path, "trainer.accelerator=gpu", f"trainer.precision={precision}")
    assert message.startswith(f"trainer.precision={precision}: this GPU (Tesla V100) has no bfloat16")
    FakeCuda(monkeypatch, 1, bf16=True)
    check_train_config(_cfg(tmp_path, "trainer.accelerator=gpu", f"trainer.precision={precision}"))


def test_fp16_on_a_gpu_and_bf16_on_the_cpu_pass(tmp_path, monkeypatch):
    check_train_config(_cfg(tmp_path, "trainer.accelerator=cpu", "trainer.precision=bf16-mixed"))
    FakeCuda(monkeypatch, 1)
    check_train_config(_cfg(tmp_path, "trainer.accelerator=gpu", "trainer.precision=16-mixed"))


def test_eval_config_checks(tmp_path):
    with pytest.raises(ConfigError, match=r"^ckpt_path is not set: python eval.py ckpt_path="):
        check_eval_config(compose_config("eval", [], tmp_path / "eval"))
    cfg = compose_config(
        "eval", ["ckpt_path=x.ckpt", "trainer.accelerator=cpu", "trainer.precision=16-mixed"], tmp_path
    )
    with pytest.raises(ConfigError, match=r"^trainer.precision=16-mixed: fp16"):
        check_eval_config(cfg)
    check_eval_config(compose_config("eval", ["ckpt_path=x.ckpt"], tmp_path / "eval2"))
    with pytest.raises(
        ConfigError, match=r"^plots must be true or false \(write the evaluation plots .*e.g. plots=false"
    ):
        check_eval_config(compose_config("eval", ["ckpt_path=x.ckpt", "plots=maybe"], tmp_path / "eval3"))


# ------------------------------------------------------------------------------------------------- run folder
def test_unwritable_reason(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert unwritable_reason(blocker / "logs" / "run") == f"{blocker} is a file, not a folder"
    assert unwritable_reason(tmp_path / "new" / "run") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # the probe left nothing behind


# ----------------------------------------------------------------------------------------- through train.py
# Each command below is refused within seconds, mostly train.py's imports on one core: the fixture `refused` runs
# them all, a few side by side, when the first of these tests needs them; each test checks its own.
def _train(*overrides: str, log_dir: Path) -> tuple[list[str], dict]:
    """The ``train.py`` command (and its Popen keyword arguments) of one case of :func:`refused`."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return [sys.executable, str(ROOT / "train.py"), f"paths.log_dir={log_dir}", *overrides], {"env": env}


def _one_message(result: subprocess.CompletedProcess) -> str:
    """The single ``error: ...`` line of a run refused as bad input (exit code 2, no traceback on the console)."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def _unwritable_log_dir(kind: str, tmp_path: Path) -> Path | None:
    """A ``paths.log_dir`` that cannot be created (below a file, or in a folder this user may not write), or None
    when this user may write anywhere."""
    if kind == "file":
        blocker = tmp_path / "a_file"
        blocker.write_text("")
        return blocker / "logs"
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        return locked / "logs"
    try:  # root may write anywhere but a read-only or kernel file system
        os.mkdir("/sys/rsa_write_probe")
    except OSError:
        return Path("/sys/rsa_logs")
    os.rmdir("/sys/rsa_write_probe")
    return None


UNKNOWN = ["model=nope", "data.nope=1", "data=nope"]
# an override whose interpolation does not resolve, as typed on a cluster (an unset variable, a misspelt key)
UNRESOLVED = {
    "data.root=${oops}": "data.root",
    "seed=${oc.env:RSA_TEST_UNSET_VARIABLE}": "seed",
    # the run folder's own keys are resolved by Hydra before any task: a traceback, exit 1, before
    "paths.log_dir=${oc.env:RSA_TEST_UNSET_VARIABLE}/logs": "paths.log_dir",
}
WITHOUT_ROOT = ["ssv2", "list"]
UNWRITABLE = ["file", "permission"]


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess | None]]:
    """Every train.py case of the tests below: case -> (its folder, its result; None: the case cannot be made)."""
    folders, commands = {}, {}
    for override in UNKNOWN:
        tmp = folders[override] = tmp_path_factory.mktemp("unknown")
        commands[override] = _train(override, log_dir=tmp / "logs")
    for name in WITHOUT_ROOT:
        tmp = folders[f"data={name}"] = tmp_path_factory.mktemp(f"without_root_{name}")
        commands[f"data={name}"] = _train(f"data={name}", f"hydra.run.dir={tmp / 'run'}", log_dir=tmp / "logs")
    for override in UNRESOLVED:
        tmp = folders[override] = tmp_path_factory.mktemp("unresolved")
        commands[override] = _train(override, log_dir=tmp / "logs")
    tmp = folders["fp16"] = tmp_path_factory.mktemp("fp16")
    commands["fp16"] = _train(
        "trainer.accelerator=cpu", "trainer.precision=16-mixed", f"data.root={tmp / 'synthetic'}", log_dir=tmp
    )
    for kind in UNWRITABLE:
        tmp = folders[kind] = tmp_path_factory.mktemp(f"unwritable_{kind}")
        log_dir = _unwritable_log_dir(kind, tmp)
        if log_dir is not None:
            (tmp / "log_dir.txt").write_text(str(log_dir))
            commands[kind] = _train(log_dir=log_dir)
    tmp = folders["run_dir"] = tmp_path_factory.mktemp("unwritable_run_dir")
    (tmp / "a_file").write_text("")
    commands["run_dir"] = _train(f"hydra.run.dir={tmp / 'a_file' / 'run'}", log_dir=tmp / "logs")
    results = run_side_by_side(commands)
    return {case: (tmp, results.get(case)) for case, tmp in folders.items()}


@pytest.mark.parametrize("override", UNKNOWN)
def test_train_unknown_option_or_key_short_hydra_message_exit_2(override, refused):
    tmp_path, result = refused[override]
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert "nope" in result.stderr and len(result.stderr.strip().splitlines()) <= 20
    if override == "model=nope":  # an unknown option of a group: Hydra names the group's options
        assert "model/nope" in result.stderr and "rsa_tiny" in result.stderr
    assert not (tmp_path / "logs").exists()  # refused before the run folder


@pytest.mark.parametrize("override", sorted(UNRESOLVED))
def test_train_override_that_does_not_resolve_names_its_key(override, refused):
    key = UNRESOLVED[override]
    message = _one_message(refused[override][1])
    assert message.startswith(f"error: {key} cannot be resolved: ") and f"override {key}=" in message


@pytest.mark.parametrize("name", WITHOUT_ROOT)
def test_train_without_data_root_exits_2_before_building_anything(name, refused):
    tmp_path, result = refused[f"data={name}"]
    run_dir = tmp_path / "run"
    message = _one_message(result)
    assert message.startswith(f"error: data.root is not set: data={name} needs data.root=/path/to/")
    log = (run_dir / "train.log").read_text()
    assert "Traceback" in log and "ConfigError" in log
    assert "parameters" not in log and not (run_dir / "checkpoints").exists()  # no model, no trainer


def test_train_fp16_on_cpu_exits_2_before_generating_data(refused):
    tmp_path, result = refused["fp16"]
    root = tmp_path / "synthetic"
    assert _one_message(result).startswith("error: trainer.precision=16-mixed: fp16 mixed precision needs a CUDA GPU")
    assert not root.exists()


@pytest.mark.parametrize("kind", UNWRITABLE)
def test_train_unwritable_output_folder_one_message_exit_2(kind, refused):
    tmp_path, result = refused[kind]
    if result is None:
        pytest.skip("no unwritable folder for this user")
    log_dir = Path((tmp_path / "log_dir.txt").read_text())
    message = _one_message(result)
    assert message.startswith(f"error: cannot create the output folder {log_dir}/train/runs/")
    assert f"paths.log_dir=/a/writable/folder (now {log_dir})" in message


def test_train_unwritable_run_dir_names_hydra_run_dir(refused):
    message = _one_message(refused["run_dir"][1])
    assert message.endswith("choose another: hydra.run.dir=/a/writable/folder")


def test_scan_without_data_root_names_it(tmp_path):
    from rsa_lightning.tools.scan_videos import scan_from_config

    with pytest.raises(ConfigError, match="data.root is not set: data=ssv2 needs data.root="):
        scan_from_config(compose_config("scan", ["data=ssv2"], tmp_path / "scan"))
    with pytest.raises(ConfigError, match="does not exist: point data.root at the dataset folder"):
        scan_from_config(compose_config("scan", ["data=ssv2", f"data.root={tmp_path / 'nope'}"], tmp_path / "scan"))


def test_crop_larger_than_the_resized_frames_names_both_keys(tmp_path):
    from conftest import tiny_synthetic_overrides

    overrides = [*tiny_synthetic_overrides(tmp_path / "data"), "data.crop_size=64"]
    with pytest.raises(ConfigError, match=r"data.crop_size=64 is larger than .* data.eval_transform.resize=32"):
        check_train_config(compose_config("train", overrides, tmp_path / "run"))


def test_a_relative_data_root_is_saved_absolute(tmp_path, monkeypatch):
    """``data.root=data/mine`` is made absolute from the folder training starts in, before the config is saved with
    the run: eval.py started elsewhere reads the same data (it looked for <its own folder>/data/mine)."""
    from rsa_lightning.train import _absolute_data_root

    monkeypatch.chdir(tmp_path)
    cfg = compose_config("train", ["data=list", "data.root=data/mine", "data.num_classes=3"], tmp_path / "run")
    _absolute_data_root(cfg)
    assert cfg.data.root == str(tmp_path / "data" / "mine")
    absolute = compose_config("train", [f"data.root={tmp_path}"], tmp_path / "run")
    _absolute_data_root(absolute)
    assert absolute.data.root == str(tmp_path)
