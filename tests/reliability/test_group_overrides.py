"""The command line means what it says: a group override of the data config (``data/backend=pyav``,
``data/sampler=dense``) replaces the run's in eval.py and in the tools that rebuild a run's config, as it would in
train.py; a backend that cannot read the split is refused before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_config, train_tiny_run
from omegaconf import OmegaConf

from rsa_lightning.data.decoding import DecordBackend, PyAVBackend
from rsa_lightning.errors import ConfigError
from rsa_lightning.evaluate import evaluate
from rsa_lightning.utils.config import merge_run_config, overridden_keys


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("groups"))


@pytest.fixture
def reads(monkeypatch):
    """Counts the clips each video backend decodes (num_workers=0: in this process)."""
    counts = {"decord": 0, "pyav": 0}
    for name, cls in (("decord", DecordBackend), ("pyav", PyAVBackend)):
        original = cls.read

        def counting(self, *args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "read", counting)
    return counts


def run_eval(ckpt: Path, out: Path, *overrides: str) -> dict:
    overrides = (f"ckpt_path={ckpt}", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", *overrides)
    return evaluate(compose_config("eval", list(overrides), out), overrides=overrides)


def test_overridden_keys_name_where_a_group_goes():
    overrides = ["data/backend=pyav", "+data/sampler=dense", "data=list", "data.root=/x", "data/backend@data.y=pyav"]
    assert overridden_keys(overrides) == ["data.backend", "data.sampler", "data", "data.root", "data.y"]
    assert overridden_keys(["~data/backend", "~model.optimizer"], deleted=True) == ["data.backend", "model.optimizer"]


def test_merge_applies_a_nested_group_and_resolves_it_against_the_run(tmp_path):
    saved = {
        "model": {"num_classes": 3},
        "data": {
            "root": "/runs/data",
            "backend": {"_target_": "rsa_lightning.data.decoding.PyAVBackend"},
            "sampler": {"_target_": "rsa_lightning.data.sampling.SegmentSampler", "_partial_": True},
        },
    }
    overrides = ["ckpt_path=x.ckpt", "data/backend=decord", "data/sampler=dense"]
    merged = merge_run_config(saved, compose_config("eval", overrides, tmp_path), overrides)
    assert merged.data.backend._target_.endswith("DecordBackend")
    assert merged.data.backend.open_gop_files == "/runs/data/open_gop.txt"  # the run's root, not eval's default
    assert merged.data.sampler._target_.endswith("DenseSampler") and merged.data.root == "/runs/data"
    assert merged.ckpt_path == "x.ckpt" and merged.model.num_classes == 3
    moved = [*overrides, "data.root=/elsewhere"]
    merged = merge_run_config(saved, compose_config("eval", moved, tmp_path), moved)
    assert merged.data.backend.open_gop_files == "/elsewhere/open_gop.txt"
    with pytest.raises(ConfigError, match="~data.sampler: deleting a key of the run's data config"):
        merge_run_config(saved, compose_config("eval", ["ckpt_path=x"], tmp_path), ["~data.sampler"])


def test_eval_decodes_with_the_backend_named_on_the_command_line(trained, tmp_path, reads):
    run_eval(trained["ckpt"], tmp_path / "run")
    assert reads == {"decord": 10, "pyav": 0}  # the run's backend: 10 val videos x 1 view
    reads.update(decord=0, pyav=0)
    metrics = run_eval(trained["ckpt"], tmp_path / "pyav", "data/backend=pyav")
    assert reads == {"decord": 0, "pyav": 10} and metrics["num_videos"] == 10
    recorded = json.loads((tmp_path / "pyav" / "metrics_val.json").read_text())  # the run folder says which
    assert recorded["backend"] == ["PyAVBackend"] and recorded["sampler"] == ["SegmentSampler"]


def test_eval_samples_with_the_sampler_named_on_the_command_line(trained, tmp_path):
    run_eval(trained["ckpt"], tmp_path / "segment")
    run_eval(trained["ckpt"], tmp_path / "dense", "data/sampler=dense")
    assert json.loads((tmp_path / "dense" / "metrics_val.json").read_text())["sampler"] == ["DenseSampler"]
    segment = torch.load(tmp_path / "segment" / "scores_val.pt", weights_only=True)["scores"]
    dense = torch.load(tmp_path / "dense" / "scores_val.pt", weights_only=True)["scores"]
    assert segment.shape == dense.shape and not torch.allclose(segment, dense), "other frames, other scores"


def test_a_backend_that_cannot_read_the_split_is_refused_before_predicting(trained, tmp_path, reads):
    with pytest.raises(ConfigError) as info:
        run_eval(trained["ckpt"], tmp_path / "frames", "data/backend=frames")
    message = str(info.value)
    assert "data/backend=frames" in message and "lists video files" in message and "val_00000.mp4" in message
    assert "data/backend=decord or pyav" in message and "extract_frames" in message
    assert reads == {"decord": 0, "pyav": 0} and not (tmp_path / "frames" / "metrics_val.json").exists()


def test_eval_py_with_the_frames_backend_on_videos_exits_2_with_one_message(trained, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "eval.py"),
            f"ckpt_path={trained['ckpt']}",
            "data/backend=frames",
            "trainer.accelerator=cpu",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: data.backend is FrameFolderBackend (data/backend=frames)" in result.stderr
    assert "Traceback" not in result.stderr


def compose_predict(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("predict", overrides=overrides)


def test_predict_decodes_with_the_backend_named_on_the_command_line(trained, reads):
    from rsa_lightning.tools.predict import predict

    video = trained["data"] / "videos" / "val_00000.mp4"
    overrides = [f"ckpt_path={trained['ckpt']}", f"video={video}", "top_k=3"]
    default = predict(compose_predict(overrides), overrides)
    assert reads == {"decord": 1, "pyav": 0}
    reads.update(decord=0, pyav=0)
    overrides.append("data/backend=pyav")
    cfg = compose_predict(overrides)
    assert OmegaConf.select(cfg, "data.backend._target_").endswith("PyAVBackend")
    assert predict(cfg, overrides)[str(video)][0][0] == default[str(video)][0][0]
    assert reads == {"decord": 0, "pyav": 1}


def test_flops_counts_the_model_group_named_on_the_command_line(tmp_path):
    from rsa_lightning.tools.flops import cost_report

    rsa = cost_report(compose_config("flops", ["model=rsa_tiny", "input_size=32"], tmp_path))
    tsn = cost_report(compose_config("flops", ["model=tsn_tiny", "input_size=32"], tmp_path))
    assert rsa.mixers and not tsn.mixers and rsa.params != tsn.params


def test_predict_with_the_frames_backend_on_a_video_file_says_which_backend_to_use(trained, reads):
    from rsa_lightning.tools.predict import predict

    video = trained["data"] / "videos" / "val_00000.mp4"
    overrides = [f"ckpt_path={trained['ckpt']}", f"video={video}", "data/backend=frames"]
    with pytest.raises(ConfigError, match=r"val_00000.mp4 is a video file: give data/backend=pyav \(or decord\)"):
        predict(compose_predict(overrides), overrides)
    assert reads == {"decord": 0, "pyav": 0}


def test_another_data_config_keeps_the_networks_input_from_the_run(tmp_path):
    transform = {"_target_": "rsa_lightning.data.transforms.EvalTransform", "resize": 32, "crop_size": 32}
    saved = {
        "model": {"num_classes": 10},
        "data": {"root": "/runs/data", "num_frames": 4, "crop_size": 32, "eval_transform": transform},
    }
    overrides = ["ckpt_path=x.ckpt", "data=list", "data.root=/mine", "data.num_classes=10"]
    merged = merge_run_config(saved, compose_config("eval", overrides, tmp_path), overrides)
    assert merged.data._target_.endswith("VideoDataModule") and merged.data.root == "/mine"
    assert merged.data.num_frames == 4 and merged.data.crop_size == 32 and merged.data.eval_transform.resize == 32
    named = [*overrides, "data.crop_size=48"]  # a key named on the command line still wins
    merged = merge_run_config(saved, compose_config("eval", named, tmp_path), named)
    assert merged.data.crop_size == 48 and merged.data.num_frames == 4 and merged.data.eval_transform.crop_size == 48
