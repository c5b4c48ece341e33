"""Every conf/experiment file composes and runs a real training step (fast_dev_run) on a miniature copy of its
dataset, with its own model, recipe and frame count; only the batch, the frame size and the ImageNet file are small
stand-ins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import NO_PICTURES, ROOT, compose_config
from test_datasets import HEIGHT, WIDTH, miniature  # noqa: F401  (miniature is a fixture)

from rsa_lightning.models import ResNet
from rsa_lightning.train import train

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
IMAGENET_FILE = "resnet50-0676ba61.pth"


def test_one_experiment_per_paper_result():
    expected = {"rsa_r50_ssv2_16f", "rsa_r50_ssv2_8f", "rsa_r50_ssv1_16f", "rsa_r50_ssv1_8f", "rsa_r50_diving48_16f"}
    expected |= {"rsa_r50_gym99_8f", "rsa_r50_gym288_8f", "tsm_r50_ssv2_8f"}
    assert expected <= set(EXPERIMENTS)
    for name in EXPERIMENTS:
        text = (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()
        assert re.search(r"^# Target: ", text, re.M), f"{name}: no '# Target:' comment naming the published number"
        assert re.search(r"^# Test protocol: ", text, re.M), f"{name}: no '# Test protocol:' comment"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A paths.data_dir holding a stand-in for torchvision's ImageNet ResNet-50 file (random weights, real layout)."""
    root = tmp_path_factory.mktemp("data_dir")
    net = ResNet(num_classes=1000)
    state = {k: (v.squeeze(2) if v.dim() == 5 else v) for k, v in net.state_dict().items()}
    (root / "pretrained").mkdir()
    torch.save(state, root / "pretrained" / IMAGENET_FILE)
    return root


# one training step of every experiment takes 25-60 s each on 2 cores: the default suite runs one RSANet and the TSM
# baseline, `make test-all` all of them (each composes and reads its own dataset layout)
DEFAULT_SUITE_EXPERIMENTS = {"rsa_r50_ssv2_8f", "tsm_r50_ssv2_8f"}


@pytest.mark.parametrize(
    "name",
    [n if n in DEFAULT_SUITE_EXPERIMENTS else pytest.param(n, marks=pytest.mark.slow) for n in EXPERIMENTS],
)
def test_experiment_runs_a_step(name, miniature, data_dir, tmp_path):  # noqa: F811
    cfg = compose_config("train", [f"experiment={name}"], tmp_path / "compose")
    dataset = cfg.data.annotations._target_.rsplit(".", 1)[-1]
    mini_name = {
        "SSv2Annotations": "ssv2",
        "SSv1Annotations": "ssv1",
        "Diving48Annotations": "diving48",
        "KineticsAnnotations": "kinetics400",
    }.get(dataset) or ("gym99" if cfg.data.num_classes == 99 else "gym288")
    mini = miniature(mini_name)
    frames = cfg.data.num_frames
    assert cfg.model.net.pretrained.endswith(IMAGENET_FILE)
    overrides = [
        f"experiment={name}",
        f"data.root={mini.root}",
        f"paths.data_dir={data_dir}",
        "data.batch_size=1",
        "data.num_workers=0",
        "data.crop_size=32",
        f"data.train_transform.resize=[{HEIGHT},{WIDTH}]",
        f"data.eval_transform.resize=[{HEIGHT},{WIDTH}]",
        "trainer.fast_dev_run=true",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "callbacks.model_summary.max_depth=0",
        *NO_PICTURES,
    ]
    cfg = compose_config("train", overrides, tmp_path / "run")
    assert cfg.data.num_frames == frames and cfg.trainer.max_epochs == 80
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss_step"]))


@pytest.mark.slow
def test_rsanet_ssv2_16f_full_size_step(miniature, data_dir, tmp_path):  # noqa: F811
    """One training step at the real input size (16 x 224 x 224 after the 240 x 320 resize), one clip per batch."""
    mini = miniature("ssv2")
    overrides = [
        "experiment=rsa_r50_ssv2_16f",
        f"data.root={mini.root}",
        f"paths.data_dir={data_dir}",
        "data.batch_size=1",
        "data.num_workers=0",
        "trainer.fast_dev_run=true",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        *NO_PICTURES,
    ]
    metrics = train(compose_config("train", overrides, tmp_path / "run"))
    assert torch.isfinite(torch.tensor(metrics["train/loss_step"]))
