"""run_info: parameter counts, MACs per view, git state, data facts; written as JSON and accepted by the loggers."""

from __future__ import annotations

import json
import shutil
import subprocess

import hydra
import pytest
import torch
import yaml
from conftest import compose_config, tiny_synthetic_overrides

from rsa_lightning.tools.flops import cost_report
from rsa_lightning.utils.instantiate import instantiate_collection
from rsa_lightning.utils.run_info import flatten_for_loggers, git_state, run_info, write_run_info

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def no_parent_repo(tmp_path, monkeypatch):
    """``tmp_path`` is never taken for part of a checkout around it."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    return tmp_path


@needs_git
def test_git_state_clean_then_dirty(no_parent_repo):
    repo = no_parent_repo / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    git(repo, "add", "a.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    state = git_state(repo)
    assert state == {
        "commit": git(repo, "rev-parse", "HEAD"),
        "dirty": False,
        "num_changed_files": 0,
        "changed_files": [],
    }
    assert len(state["commit"]) == 40

    (repo / "a.py").write_text("x = 2\n")
    (repo / "new.py").write_text("")
    state = git_state(repo)
    assert state["dirty"] and sorted(state["changed_files"]) == ["a.py", "new.py"]


@needs_git
def test_git_state_none_outside_a_checkout_or_without_commits(no_parent_repo):
    assert git_state(no_parent_repo) is None
    git(no_parent_repo, "init", "-q")
    assert git_state(no_parent_repo) is None  # no HEAD yet
    assert git_state(no_parent_repo / "missing") is None


def test_git_state_none_without_git(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable
    assert git_state(tmp_path) is None


def test_macs_equal_the_flops_tool_and_nothing_changes(tmp_path):
    cfg = compose_config("train", ["model=rsa_tiny", "data=synthetic"], tmp_path / "run")
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    model.train()

    info = run_info(cfg, model, datamodule)

    expected = cost_report(compose_config("flops", ["model=rsa_tiny", "input_size=${data.crop_size}"], tmp_path))
    assert info["cost"]["gmacs_per_view"] == pytest.approx(expected.total() / 1e9, rel=1e-12)
    assert info["cost"]["gmacs_per_view"] > 0
    assert info["cost"]["input_shape"] == [1, 3, cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size]
    assert info["params"] == {"total": expected.params, "trainable": expected.params}
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items()) and model.training
    assert next(model.parameters()).device.type == "cpu"


def test_macs_none_for_a_network_the_counter_cannot_run(tmp_path):
    cfg = compose_config("train", ["model=rsa_tiny"], tmp_path / "run")
    model = hydra.utils.instantiate(cfg.model)
    model.net.register_forward_pre_hook(lambda module, args: args[0].numpy())  # impossible on the meta device
    assert run_info(cfg, model, hydra.utils.instantiate(cfg.data))["cost"] is None


def test_data_facts_before_and_after_the_data_exists(tmp_path):
    cfg = compose_config("train", tiny_synthetic_overrides(tmp_path / "syn"), tmp_path / "run")
    model = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    before = run_info(cfg, model, datamodule)["data"]  # not generated yet: unknown, not an error
    assert before["class_names"] is None and before["num_videos"] == {"train": None, "val": None}

    datamodule.prepare_data()
    info = run_info(cfg, model, datamodule)
    classes = (tmp_path / "syn" / "annotations" / "classes.txt").read_text().splitlines()
    assert len(classes) == 10 and info["data"]["class_names"] == classes
    assert info["data"]["num_videos"] == {"train": 10 * 2, "val": 10 * 1}
    assert info["software"]["torch"] == str(torch.__version__) and info["host"]

    path = write_run_info(info, tmp_path / "run")
    assert path == tmp_path / "run" / "run_info.json" and json.loads(path.read_text()) == info


def test_flatten_for_loggers():
    flat = flatten_for_loggers({"params": {"total": 3}, "data": {"class_names": ["a", "b"]}, "git": None})
    assert flat == {"run_info/params/total": 3, "run_info/data/class_names": "a, b", "run_info/git": None}


def log_run_info(tmp_path, logger: str) -> dict:
    """What train.py does: the config, then {"run_info": info} with 174 class names, to the configured loggers."""
    from rsa_lightning.utils.config import resolved_container

    run = tmp_path / "run"
    cfg = compose_config("train", tiny_synthetic_overrides(tmp_path / "syn") + [f"logger={logger}"], run)
    info = run_info(cfg, hydra.utils.instantiate(cfg.model), hydra.utils.instantiate(cfg.data))
    info["data"]["class_names"] = [f"Pushing something from left to right ({i})" for i in range(174)]
    loggers = instantiate_collection(cfg.logger, "logger")
    for lg in loggers:
        lg.log_hyperparams(resolved_container(cfg))
        lg.log_hyperparams({"run_info": info})
        lg.log_metrics({"val/acc1": 0.5}, step=0)
        lg.save()
        lg.finalize("success")
    return {"run": run, "info": info, "loggers": loggers}


def test_csv_and_tensorboard_take_the_nested_run_info(tmp_path):
    logged = log_run_info(tmp_path, "[csv,tensorboard]")
    for folder in ("csv", "tensorboard"):
        hparams = yaml.safe_load((logged["run"] / folder / "hparams.yaml").read_text())
        assert hparams["run_info"] == logged["info"]
        assert hparams["data"]["batch_size"] == 4  # the config's own "data" is not replaced


@pytest.mark.slow
def test_wandb_offline_takes_the_nested_run_info(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logged = log_run_info(tmp_path, "many")
    (wandb_logger,) = [lg for lg in logged["loggers"] if "Wandb" in type(lg).__name__]
    config = wandb_logger.experiment.config
    assert len(config["run_info"]["data"]["class_names"]) == 174
    assert config["run_info"]["params"] == logged["info"]["params"]
    import wandb

    wandb.finish()
