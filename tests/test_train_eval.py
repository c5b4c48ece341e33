"""End to end: the real Hydra configs, generated videos, a few real training steps, checkpoint, eval."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import hydra
import pytest
import pytorch_lightning as pl
import torch
from conftest import NO_PICTURES, ROOT, compose_config, tiny_synthetic_overrides

from rsa_lightning.evaluate import evaluate
from rsa_lightning.train import train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    run_dir = tmp / "run"
    overrides = tiny_synthetic_overrides(tmp / "synthetic") + [
        "model=rsa_tiny",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.accelerator=cpu",
        *NO_PICTURES,
        "trainer.log_every_n_steps=1",
        "callbacks.model_summary.max_depth=0",
    ]
    cfg = compose_config("train", overrides, run_dir)
    pl.seed_everything(cfg.seed)  # as train() does before building the model: the same initial weights
    initial = {k: v.clone() for k, v in hydra.utils.instantiate(cfg.model).state_dict().items()}
    metrics = train(cfg)
    return {"cfg": cfg, "metrics": metrics, "run_dir": run_dir, "initial": initial, "tmp": tmp}


def test_training_runs_and_checkpoints(trained_run):
    run_dir, metrics = trained_run["run_dir"], trained_run["metrics"]
    assert torch.isfinite(torch.tensor(metrics["train/loss_epoch"]))
    assert 0.0 <= metrics["val/acc1"] <= 1.0 and 0.0 <= metrics["val/acc5"] <= 1.0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "config_resolved.yaml").is_file()
    assert (run_dir / "csv" / "metrics.csv").is_file()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 6
    assert ckpt["config"]["model"]["net"]["stmixer"]["_target_"].endswith("RelationalSelfAttention")
    assert ckpt["class_names"][0] == "Moving something from left to right" and len(ckpt["class_names"]) == 10
    # the optimiser really stepped: RSA and conv weights moved away from their initial values
    state = ckpt["state_dict"]
    rsa_keys = [k for k in state if ".conv2.projection." in k or ".conv2.H2." in k]
    assert rsa_keys, "rsa_tiny should contain RSA layers"
    for k in rsa_keys + ["net.conv1.weight", "net.fc.weight"]:
        assert not torch.equal(state[k], trained_run["initial"][k]), k


def test_eval_writes_predictions(trained_run):
    ckpt = trained_run["run_dir"] / "checkpoints" / "last.ckpt"
    out = trained_run["tmp"] / "eval"
    overrides = [f"ckpt_path={ckpt}", "data.batch_size=3", "trainer.accelerator=cpu"]
    cfg = compose_config("eval", overrides, out)
    metrics = evaluate(cfg, overrides=overrides)
    rows = list(csv.DictReader((out / "predictions_val.csv").read_text().splitlines()))
    assert metrics["num_videos"] == len(rows) == 10  # 10 classes x 1 val clip
    assert len({r["video_id"] for r in rows}) == 10
    assert {"pred_5", "pred_5_name", "score_5", "label_name"} <= set(rows[0])
    for r in rows:
        scores = [float(r[f"score_{i}"]) for i in range(1, 6)]
        assert scores == sorted(scores, reverse=True)
    acc1 = sum(r["label"] == r["pred_1"] for r in rows) / len(rows)
    acc5 = sum(r["label"] in [r[f"pred_{i}"] for i in range(1, 6)] for r in rows) / len(rows)
    assert metrics["acc1"] == pytest.approx(acc1) and metrics["acc5"] == pytest.approx(acc5)
    assert json.loads((out / "metrics_val.json").read_text())["acc1"] == pytest.approx(acc1)


def test_eval_matches_validation_of_the_same_checkpoint(trained_run):
    """eval.py rebuilds the run's model from the checkpoint alone: its top-1 equals the last validation top-1."""
    ckpt = trained_run["run_dir"] / "checkpoints" / "last.ckpt"
    overrides = [f"ckpt_path={ckpt}", "trainer.accelerator=cpu"]
    metrics = evaluate(compose_config("eval", overrides, trained_run["tmp"] / "eval2"), overrides=overrides)
    assert metrics["acc1"] == pytest.approx(trained_run["metrics"]["val/acc1"])


def test_resume_from_last_checkpoint(trained_run):
    tmp = trained_run["tmp"]
    overrides = tiny_synthetic_overrides(tmp / "synthetic") + [
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=3",
        "trainer.accelerator=cpu",
        f"ckpt_path={trained_run['run_dir'] / 'checkpoints' / 'last.ckpt'}",
    ]
    run_dir = tmp / "resumed"
    train(compose_config("train", overrides, run_dir))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 9  # continued from epoch 1 / step 6, not from scratch


def _run(script: str, *overrides: str, tmp) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), f"paths.log_dir={tmp}", *overrides],
        capture_output=True,
        text=True,
        timeout=120,
    )


# train.py model=nope: also run, with these assertions, by reliability/test_config_checks.py
# (test_train_unknown_option_or_key_short_hydra_message_exit_2[model=nope])
@pytest.mark.slow
def test_unknown_config_option_fails_clearly(tmp_path):
    result = _run("train.py", "model=nope", tmp=tmp_path)
    assert result.returncode != 0
    assert "model/nope" in result.stderr and "rsa_tiny" in result.stderr  # names the choices


# covered in the default suite by reliability/test_config_checks.py: the message (num_frames_zero, in this process)
# and the command line refusing a value before generating any data (test_train_fp16_on_cpu_exits_2_before_...)
@pytest.mark.slow
def test_invalid_value_fails_before_training(tmp_path):
    result = _run("train.py", "data.num_frames=0", f"data.root={tmp_path / 'never'}", tmp=tmp_path)
    assert result.returncode != 0
    assert "data.num_frames must be a positive integer, got 0" in result.stderr
    assert not (tmp_path / "never").exists(), "nothing should be generated or trained"


def test_eval_requires_a_checkpoint(tmp_path):
    result = _run("eval.py", tmp=tmp_path)
    assert result.returncode != 0 and "ckpt_path" in result.stderr


# eval.py ckpt_path=<missing file>: also run, with these assertions, by
# reliability/test_errors.py::test_eval_missing_checkpoint_exits_2
@pytest.mark.slow
def test_eval_names_a_missing_checkpoint(tmp_path):
    result = _run("eval.py", f"ckpt_path={tmp_path / 'missing.ckpt'}", tmp=tmp_path)
    assert result.returncode != 0 and "missing.ckpt does not exist" in result.stderr
