"""Every model config in conf/model/ composes, builds and runs a real training + validation step (fast_dev_run)."""

from __future__ import annotations

import hydra
import pytest
import torch
from conftest import ROOT, compose_config, tiny_synthetic_overrides

from rsa_lightning.models import ResNet
from rsa_lightning.train import train

MODEL_CONFIGS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
R50_POSITIONS = ["layer1.2", "layer2.1", "layer2.3", "layer3.1", "layer3.3", "layer3.5", "layer4.1"]


def test_the_paper_configs_are_there():
    assert {"rsa_r50", "tsn_r50", "tsm_r50", "conv3d_r50", "local_sa_r50", "tsn_r18", "tsn_r101"} <= set(MODEL_CONFIGS)


@pytest.mark.parametrize(
    "name, mixer, blocks, params",
    [
        ("rsa_r50", "RelationalSelfAttention", R50_POSITIONS, 22_034_302),
        ("tsn_r50", None, [], 23_508_032 + 2049 * 174),
        ("tsm_r50", None, [], 23_508_032 + 2049 * 174),
        ("conv3d_r50", "SpaceTimeConv", R50_POSITIONS, None),
        ("local_sa_r50", "LocalSelfAttention", R50_POSITIONS, None),
        ("tsn_r18", None, [], 11_176_512 + 513 * 174),
        ("tsn_r101", None, [], 42_500_160 + 2049 * 174),
    ],
)
def test_paper_networks(tmp_path, name, mixer, blocks, params):
    cfg = compose_config("train", [f"model={name}", "data.num_classes=174"], tmp_path)
    net = hydra.utils.instantiate(cfg.model.net)
    assert net.stmixer_blocks == blocks
    if mixer is not None:
        assert all(type(net.get_submodule(b).conv2).__name__ == mixer for b in blocks)
    if params is not None:
        assert sum(p.numel() for p in net.parameters()) == params
    if name == "tsm_r50":
        assert all(type(b.shift).__name__ == "TemporalShift" and b.shift.fold_div == 8 for b in net.blocks())
    else:
        assert all(isinstance(b.shift, torch.nn.Identity) for b in net.blocks())


def test_every_config_builds_through_create_resnet(tmp_path):
    for name in MODEL_CONFIGS:
        net = compose_config("train", [f"model={name}", "data.num_classes=5"], tmp_path).model.net
        assert net._target_ == "rsa_lightning.models.create_resnet", name
        assert "pretrained" in net and net.pretrained is None, name


def test_pretrained_key_loads_imagenet_weights_after_construction(tmp_path):
    """``model.net.pretrained=<path>`` builds the network, then copies the torchvision-layout file into it."""
    tsn_tiny = compose_config("train", ["model=tsn_tiny", "data.num_classes=5"], tmp_path).model.net
    source = hydra.utils.instantiate(tsn_tiny)
    with torch.no_grad():
        for value in source.state_dict().values():
            value.copy_(torch.rand_like(value) if value.is_floating_point() else value)
    path = tmp_path / "imagenet.pth"
    torch.save({k: (v.squeeze(2) if v.dim() == 5 else v) for k, v in source.state_dict().items()}, path)
    overrides = ["model=rsa_tiny", "data.num_classes=5", f"model.net.pretrained={path}"]
    net = hydra.utils.instantiate(compose_config("train", overrides, tmp_path).model.net)
    assert type(net) is ResNet and net.stmixer_blocks == ["layer1.0", "layer2.0"]
    own = net.state_dict()
    assert torch.equal(own["conv1.weight"], source.state_dict()["conv1.weight"])
    assert torch.equal(own["layer3.0.conv2.weight"], source.state_dict()["layer3.0.conv2.weight"])
    assert not own["layer1.0.bn3.weight"].any()  # a block with an RSA layer stays random, starting as the identity


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_fast_dev_run(tmp_path, name):
    overrides = tiny_synthetic_overrides(tmp_path / "synthetic") + [
        f"model={name}",
        "trainer.fast_dev_run=true",
        "trainer.accelerator=cpu",
        "data.batch_size=2",
        "callbacks.model_summary.max_depth=0",
    ]
    cfg = compose_config("train", overrides, tmp_path / "run")
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss_step"]))
    assert 0.0 <= metrics["val/acc1"] <= 1.0
