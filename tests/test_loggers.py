"""The logger configs: tensorboard and wandb (offline without an API key) record a real short run."""

from __future__ import annotations

import pytest
from conftest import compose_config, tiny_synthetic_overrides

from rsa_lightning.train import train
from rsa_lightning.utils.loggers import wandb_api_key_configured

FAST = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.accelerator=cpu",
]


def test_tensorboard_logger_writes_events(tmp_path):
    run = tmp_path / "run"
    train(compose_config("train", tiny_synthetic_overrides(tmp_path / "syn") + FAST + ["logger=tensorboard"], run))
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_wandb_logger_runs_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    assert not wandb_api_key_configured()
    run = tmp_path / "run"
    train(compose_config("train", tiny_synthetic_overrides(tmp_path / "syn") + FAST + ["logger=wandb"], run))
    assert list((run / "wandb").glob("offline-run-*"))


def test_wandb_offline_unless_key(monkeypatch, tmp_path):
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert not wandb_api_key_configured()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_api_key_configured()
