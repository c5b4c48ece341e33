"""The debugging presets (conf/debug/): each composes, writes under logs/debug/ and really does what it says."""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch
from conftest import NO_PICTURES, ROOT, Background, compose_config, tiny_synthetic_overrides

from rsa_lightning.train import train

PRESETS = ("default", "fast_dev_run", "overfit", "limit", "profiler", "anomaly")
CPU = ["trainer.accelerator=cpu", "callbacks.model_summary.max_depth=0", *NO_PICTURES]
RECORDER = "+callbacks.recorder._target_=test_debug_presets.Recorder"


class Recorder(pl.Callback):
    """Records what a run did: its steps, validation batches per epoch, training clips per epoch, its loggers."""

    last: Recorder | None = None

    def __init__(self, inject_nan: bool = False) -> None:
        self.inject_nan = inject_nan
        self.train_ids: list[list[str]] = []  # per epoch: the video ids of the training clips, in order
        self.val_batches: list[int] = []  # per validation run (sanity check excluded)
        self.anomaly_enabled: list[bool] = []
        Recorder.last = self

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.loggers = [type(lg).__name__ for lg in trainer.loggers]
        self.label_smoothing = pl_module.criterion.label_smoothing
        if self.inject_nan:  # finite logits whose gradient is NaN: 0 * sqrt(0) added, d sqrt(x)/dx = inf at 0
            pl_module.net.register_forward_hook(lambda module, args, out: out + 0 * torch.sqrt(out - out.detach()))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.train_ids.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train_ids[-1].extend(batch["video_id"])
        self.anomaly_enabled.append(torch.is_anomaly_enabled())

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.val_batches.append(0)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.val_batches[-1] += 1

    def on_train_end(self, trainer, pl_module) -> None:
        self.global_step = trainer.global_step


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """The generated videos, made once here (the command-line run below reads them while this process trains)."""
    root = tmp_path_factory.mktemp("synthetic")
    data = compose_config("train", tiny_synthetic_overrides(root), root.parent / "compose").data
    hydra.utils.instantiate(data).prepare_data()
    return root


@pytest.fixture(scope="module", autouse=True)
def command_line_run(tmp_path_factory, data_root) -> Iterator[tuple[Path, Background]]:
    """``train.py debug=fast_dev_run`` as a user runs it, started when this module starts: it runs while the tests
    in this process do, and test_fast_dev_run_from_the_command_line_writes_under_logs_debug checks it. Returns its
    ``paths.log_dir`` and the process (stopped at the end of the module when that test did not run)."""
    log_dir = tmp_path_factory.mktemp("command_line") / "logs"
    args = [*tiny_synthetic_overrides(data_root), *CPU, "debug=fast_dev_run", f"paths.log_dir={log_dir}"]
    env = {**os.environ, "PROJECT_ROOT": str(ROOT)}
    proc = Background([sys.executable, str(ROOT / "train.py"), *args], env=env)
    yield log_dir, proc
    proc.stop()


def run_preset(preset: str, run_dir: Path, data_root: Path, extra: Sequence[str] = ()) -> Recorder:
    cfg = compose_config(
        "train", tiny_synthetic_overrides(data_root) + CPU + [f"debug={preset}", RECORDER, *extra], run_dir
    )
    train(cfg)
    return Recorder.last


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_under_logs_debug(preset):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"debug={preset}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    log_dir = Path(cfg.paths.log_dir)
    assert Path(cfg.hydra.run.dir).parent == log_dir / "debug" / "runs"
    assert Path(cfg.hydra.sweep.dir).parent == log_dir / "debug" / "multiruns"
    assert cfg.trainer.get("fast_dev_run") is False  # never Lightning's flag: it silences every logger
    assert cfg.data.num_workers == 0
    assert cfg.hydra.job_logging.loggers.rsa_lightning.level == "DEBUG"


def test_overfit_keys_exist_in_a_paper_recipe(tmp_path):
    """The regularisation and augmentation keys overfit.yaml sets are real arguments of the R50 model and transforms."""
    import hydra

    overrides = ["experiment=rsa_r50_ssv2_8f", "debug=overfit", "model.net.pretrained=null"]
    cfg = compose_config("train", overrides, tmp_path / "run")
    with torch.device("meta"):
        model = hydra.utils.instantiate(cfg.model)
    assert model.criterion.label_smoothing == 0.0 and model.net.dropout.p == 0.0
    transform = hydra.utils.instantiate(cfg.data.train_transform)(mirror={})
    assert transform.scales == (1.0,) and transform.flip == "off" and transform.random_erasing is None


def test_fast_dev_run_one_batch_each_with_logs_and_checkpoint(tmp_path, data_root):
    run = tmp_path / "run"
    rec = run_preset("fast_dev_run", run, data_root)
    assert rec.global_step == 1
    assert rec.val_batches == [1]
    assert len(rec.loggers) == 1 and "CSV" in rec.loggers[0]  # not Lightning's DummyLogger
    with open(run / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("train/loss_step") for r in rows) and any(r.get("val/acc1") for r in rows)
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_limit_few_batches_few_epochs(tmp_path, data_root):
    # batch 2: 10 training and 5 validation batches per epoch, of which the preset keeps 5 and 2 (2 of its 3 epochs)
    rec = run_preset("limit", tmp_path / "run", data_root, ["data.batch_size=2", "trainer.max_epochs=2"])
    assert rec.global_step == 2 * 5
    assert rec.val_batches == [2, 2]


def test_overfit_trains_on_the_same_batches_without_regularisation(tmp_path, data_root):
    rec = run_preset("overfit", tmp_path / "run", data_root, ["trainer.max_epochs=3", "data.batch_size=2"])
    assert len(rec.train_ids) == 3 and len(rec.train_ids[0]) == 2 * 2  # overfit_batches=2 of 2 clips
    assert rec.train_ids[0] == rec.train_ids[1] == rec.train_ids[2]
    assert rec.label_smoothing == 0.0


def test_profiler_writes_its_report_into_the_run_folder(tmp_path, data_root):
    run = tmp_path / "run"
    run_preset("profiler", run, data_root, ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1"])
    report = (run / "fit-profile.txt").read_text()
    assert "run_training_batch" in report and "train_dataloader_next" in report


def test_anomaly_detection_names_the_op_that_made_a_nan(tmp_path, data_root):
    with pytest.raises(RuntimeError, match="SqrtBackward0.*returned nan"):
        run_preset("anomaly", tmp_path / "run", data_root, ["+callbacks.recorder.inject_nan=true"])
    assert Recorder.last.anomaly_enabled == [True]


def test_fast_dev_run_from_the_command_line_writes_under_logs_debug(command_line_run):
    """train.py itself: the run folder Hydra creates is <log_dir>/debug/runs/<time>/ with its CSV log."""
    log_dir, proc = command_line_run
    done = proc.finish(timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (log_dir / "debug" / "runs").iterdir()
    assert (run / "csv" / "metrics.csv").is_file() and (run / "train.log").is_file()
