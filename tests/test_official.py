"""Official RSANet checkpoints: inference of the architecture, exact logits, clear errors, and the convert tool.

The official-layout files are written here from our own small ResNets with random weights (every BN statistic too),
in the layout of ``../shared/reference/official_rsanet_r50_ssv2_state_dict.txt``: ``module.base_model.`` + our keys,
and the classifier as the Conv1d ``module.new_fc`` (K, C, 1).
"""

from __future__ import annotations

import argparse
import csv
import functools
import re
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from conftest import ROOT, compose_config, tiny_synthetic_overrides
from omegaconf import OmegaConf
from torch import nn

from rsa_lightning.data.synthetic import MOTIONS
from rsa_lightning.evaluate import evaluate
from rsa_lightning.layers import RelationalSelfAttention
from rsa_lightning.models import ResNet, load_official_checkpoint
from rsa_lightning.models.official import (
    official_arch,
    official_to_resnet_state_dict,
    read_official_checkpoint,
    resnet_to_official_state_dict,
)
from rsa_lightning.tools.convert_official import convert_official

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "official_rsanet_r50_ssv2_state_dict.txt"
TYPES = ("V", "R", "V+R")
POSITIONS = [[0], [1], [0, 1], []]  # layer3.0 is strided: its RSA layer pools


def tiny_net(
    kernel_type: str = "V+R",
    context_type: str = "V+R",
    *,
    num_classes: int = 5,
    num_heads: int = 2,
    positions: list[list[int]] = POSITIONS,
    seed: int = 0,
    **rsa_kwargs,
) -> ResNet:
    """An R50-like network in miniature (blocks 1, 2, 2, 1) with every weight and BN statistic random, eval mode."""
    torch.manual_seed(seed)
    net = ResNet(
        num_classes=num_classes,
        block_counts=(1, 2, 2, 1),
        widths=(8, 8, 16, 16),
        expansion=2,
        stem_width=8,
        stem_kernel=5,
        stmixer=functools.partial(
            RelationalSelfAttention,
            num_heads=num_heads,
            kernel_size=(3, 3, 3),
            kernel_type=kernel_type,
            context_type=context_type,
            **rsa_kwargs,
        ),
        stmixer_positions=positions,
    )
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.weight.uniform_(0.5, 1.5)  # bn3 gamma non-zero: every block matters
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(int(torch.randint(1, 1000, ())))
            elif isinstance(module, RelationalSelfAttention):
                for name in ("P1", "I"):
                    if hasattr(module, name):
                        getattr(module, name).normal_(0.0, 0.5)
        net.fc.weight.normal_(0.0, 0.5)
        net.fc.bias.normal_(0.0, 0.5)
    return net.eval()


def official_layout(net: ResNet) -> dict[str, torch.Tensor]:
    """``net``'s tensors exactly as the official main.py saves them (DataParallel(TSN).state_dict())."""
    state = {}
    for key, value in net.state_dict().items():
        if key.startswith("fc."):
            state["module.new_fc." + key.removeprefix("fc.")] = value.unsqueeze(-1) if key == "fc.weight" else value
        else:
            state["module.base_model." + key] = value
    return state


def save_official(path: Path, state: dict[str, torch.Tensor], best_prec1=63.25) -> Path:
    """A released checkpoint: best_prec1 is a Python float (main.py: the mean of prec1.item() values)."""
    torch.save({"epoch": 30, "arch": "ResNet", "state_dict": state, "best_prec1": best_prec1}, path)
    return path


def clips(num_frames: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, num_frames, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("context_type", TYPES)
@pytest.mark.parametrize("kernel_type", TYPES)
def test_loaded_checkpoint_gives_the_source_logits(tmp_path, kernel_type, context_type):
    source = tiny_net(kernel_type, context_type)
    path = save_official(tmp_path / "rsa.pth.tar", official_layout(source))
    net = load_official_checkpoint(path)
    assert not net.training
    rsa = net.layer1[0].conv2
    assert isinstance(rsa, RelationalSelfAttention)
    assert (rsa.kernel_type, rsa.context_type, rsa.num_heads, rsa.kernel_size) == (
        kernel_type,
        context_type,
        2,
        (3, 3, 3),
    )
    assert net.stmixer_blocks == source.stmixer_blocks == ["layer1.0", "layer2.1", "layer3.0", "layer3.1"]
    with torch.no_grad():
        for num_frames in (2, 3):
            expected = source(clips(num_frames))
            torch.testing.assert_close(
                net(clips(num_frames)), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max())
            )


def test_arch_of_a_tiny_checkpoint():
    arch = official_arch(official_layout(tiny_net("R", "V+R", num_classes=7)))
    assert arch == {
        "num_classes": 7,
        "block_counts": [1, 2, 2, 1],
        "widths": [8, 8, 16, 16],
        "expansion": 2,
        "stem_width": 8,
        "stem_kernel": 5,
        "stem_pool": True,
        "stmixer": {
            "num_heads": 2,
            "kernel_size": [3, 3, 3],
            "kernel_type": "R",
            "context_type": "V+R",
            "key_channels": None,
            "value_channels": None,
            "latent_channels": None,
        },
        "stmixer_positions": POSITIONS,
    }


def test_explicit_key_and_latent_channels_are_inferred(tmp_path):
    source = tiny_net("V+R", "R", key_channels=2, latent_channels=3)
    arch = official_arch(official_layout(source))
    assert (arch["stmixer"]["key_channels"], arch["stmixer"]["latent_channels"]) == (2, 3)
    net = load_official_checkpoint(save_official(tmp_path / "c.pth.tar", official_layout(source)))
    with torch.no_grad():
        torch.testing.assert_close(net(clips(2)), source(clips(2)))


def test_heads_that_the_shapes_leave_open():
    """Context "V" stores no value size: with RSA layers of one width, 2 heads with dk = dv = 8 and 1 head with
    dk = 8, dv = 16 have the same tensors. Layers of several widths settle it (tests above); here the official
    default dk == dv decides, or ``num_heads``."""
    state = official_layout(tiny_net("V", "V", num_heads=2, positions=[[], [], [0, 1], []]))
    assert official_arch(state)["stmixer"]["num_heads"] == 2
    one_head = official_arch(state, num_heads=1)["stmixer"]
    assert (one_head["num_heads"], one_head["key_channels"]) == (1, 8)
    with pytest.raises(ValueError, match=r"num_heads=4 does not fit the RSA layers' shapes; \[1, 2\] do"):
        official_arch(state, num_heads=4)


def test_bare_state_dict_without_data_parallel_prefix(tmp_path):
    source = tiny_net()
    state = {key.removeprefix("module."): value for key, value in official_layout(source).items()}
    torch.save(state, tmp_path / "bare.pth")
    net = load_official_checkpoint(tmp_path / "bare.pth")
    with torch.no_grad():
        torch.testing.assert_close(net(clips(2)), source(clips(2)))


def test_export_is_the_official_layout():
    net = tiny_net()
    exported = resnet_to_official_state_dict(net.state_dict())
    expected = official_layout(net)
    assert list(exported) == list(expected)
    assert all(torch.equal(exported[key], expected[key]) for key in expected)
    ours, _ = official_to_resnet_state_dict(exported)
    assert ours.keys() == net.state_dict().keys()


def _reference_layout() -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in REFERENCE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            layout[key] = tuple(int(size) for size in re.findall(r"\d+", shape))
    return layout


@pytest.mark.skipif(not REFERENCE.exists(), reason=f"reference file not found: {REFERENCE}")
def test_reference_layout_round_trips():
    reference = _reference_layout()
    state = {key: torch.empty(shape, device="meta") for key, shape in reference.items()}
    ours, arch = official_to_resnet_state_dict(state, source="reference")
    assert arch["num_classes"] == 174
    assert arch["block_counts"] == [3, 4, 6, 3] and arch["widths"] == [64, 128, 256, 512]
    assert (arch["expansion"], arch["stem_width"], arch["stem_kernel"]) == (4, 64, 7)
    assert arch["stmixer_positions"] == [[2], [1, 3], [1, 3, 5], [1]]
    assert arch["stmixer"] == {
        "num_heads": 8,
        "kernel_size": [5, 7, 7],
        "kernel_type": "V+R",
        "context_type": "V+R",
        "key_channels": None,
        "value_channels": None,
        "latent_channels": None,
    }
    assert ours["fc.weight"].shape == (174, 2048)
    back = resnet_to_official_state_dict(ours)
    assert {key: tuple(value.shape) for key, value in back.items()} == reference


@pytest.mark.skipif(not REFERENCE.exists(), reason=f"reference file not found: {REFERENCE}")
def test_rsa_r50_config_exports_to_the_reference_layout(tmp_path):
    cfg = compose_config("train", ["model=rsa_r50", "data.num_classes=174"], tmp_path)
    with torch.device("meta"):
        net = hydra.utils.instantiate(cfg.model.net)
    exported = resnet_to_official_state_dict(net.state_dict())
    assert {key: tuple(value.shape) for key, value in exported.items()} == _reference_layout()


# --- errors -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def official_state() -> dict[str, torch.Tensor]:
    return official_layout(tiny_net())


def _saved(tmp_path: Path, state: dict[str, torch.Tensor]) -> Path:
    return save_official(tmp_path / "broken.pth.tar", state)


def test_missing_key_fails_clearly(tmp_path, official_state):
    state = dict(official_state)
    del state["module.base_model.layer2.1.bn2.running_var"]
    path = _saved(tmp_path, state)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: .*missing keys module\.base_model\.layer2\.1\.bn2"):
        load_official_checkpoint(path)
    del state["module.new_fc.bias"]
    with pytest.raises(ValueError, match=r"missing keys .*module\.new_fc\.bias"):
        load_official_checkpoint(_saved(tmp_path, state))


def test_unexpected_keys_fail_clearly(tmp_path, official_state):
    state = dict(official_state)
    state["module.base_model.layer1.0.conv2.extra"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"unexpected keys module\.base_model\.layer1\.0\.conv2\.extra"):
        load_official_checkpoint(_saved(tmp_path, state))
    state = dict(official_state, **{"module.consensus.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected keys module\.consensus\.weight; an official RSANet"):
        load_official_checkpoint(_saved(tmp_path, state))


def test_wrong_shapes_fail_clearly(tmp_path, official_state):
    state = dict(official_state, **{"module.base_model.layer3.1.conv3.weight": torch.zeros(32, 16, 1, 1, 2)})
    with pytest.raises(
        ValueError, match=r"layer3\.1\.conv3\.weight has shape \(32, 16, 1, 1, 2\), expected \(32, 16, 1, 1, 1\)"
    ):
        load_official_checkpoint(_saved(tmp_path, state))
    state = dict(official_state, **{"module.new_fc.bias": torch.zeros(6)})
    with pytest.raises(ValueError, match=r"module\.new_fc\.bias has shape \(6,\), expected \(5,\)"):
        load_official_checkpoint(_saved(tmp_path, state))
    state = dict(official_state, **{"module.new_fc.weight": torch.zeros(5, 32)})
    with pytest.raises(ValueError, match=r"new_fc\.weight has shape \(5, 32\), expected \(num_classes, channels, 1\)"):
        load_official_checkpoint(_saved(tmp_path, state))


def test_inconsistent_rsa_layers_fail_clearly(tmp_path, official_state):
    state = dict(official_state)
    del state["module.base_model.layer2.1.conv2.P1"]  # this layer now reads as kernel "R", the others "V+R"
    with pytest.raises(ValueError, match=r"inconsistent RSA layers \(layer1\.0: kernel V\+R.*layer2\.1: kernel R,"):
        load_official_checkpoint(_saved(tmp_path, state))


def test_unreadable_paths_and_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pth\.tar is not a file"):
        load_official_checkpoint(tmp_path / "missing.pth.tar")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        load_official_checkpoint(tmp_path)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth is neither an official checkpoint"):
        load_official_checkpoint(tmp_path / "list.pth")
    for i, text in enumerate(("not a checkpoint", "hi")):
        (tmp_path / f"text{i}.pth").write_text(text)
        with pytest.raises(ValueError, match=rf"text{i}\.pth( cannot be read by torch\.load|: refusing to unpickle)"):
            load_official_checkpoint(tmp_path / f"text{i}.pth")


def test_loading_is_weights_only(tmp_path, official_state):
    """An official file (Python scalars) loads; anything that needs arbitrary unpickling is refused."""
    path = save_official(tmp_path / "ok.pth.tar", official_state, best_prec1=71.234375)
    state, meta = read_official_checkpoint(path)
    assert meta == {"epoch": 30, "arch": "ResNet", "best_prec1": 71.234375}
    assert state.keys() == official_state.keys()
    torch.save({"state_dict": official_state, "args": argparse.Namespace(lr=0.01)}, tmp_path / "pickled.pth.tar")
    with pytest.raises(
        ValueError, match=r"pickled\.pth\.tar: refusing to unpickle it with weights_only=True \(.*argparse\.Namespace"
    ):
        load_official_checkpoint(tmp_path / "pickled.pth.tar")


# --- convert tool + eval.py ---------------------------------------------------------------------------------------


def test_convert_fails_clearly_without_a_data_config(tmp_path, official_state):
    path = save_official(tmp_path / "rsa.pth.tar", official_state)
    with pytest.raises(ValueError, match=r"no data config .*nope\.yaml: pass --data NAME, one of \[.*'synthetic'"):
        convert_official(path, tmp_path / "rsa.ckpt", data="nope")
    with pytest.raises(ValueError, match="the checkpoint has 5 classes but data=synthetic has 10"):
        convert_official(path, tmp_path / "rsa.ckpt", data="synthetic")
    assert not (tmp_path / "rsa.ckpt").exists()


def test_converted_checkpoint_evaluates_with_the_official_weights(tmp_path):
    """CLI conversion (10 classes, --data synthetic), then evaluate(): predictions are the loaded net's."""
    src = save_official(tmp_path / "rsa.pth.tar", official_layout(tiny_net(num_classes=10, seed=3)))
    names = tmp_path / "names.txt"  # the generated dataset's classes (eval.py refuses another class set)
    names.write_text("".join(f"{name}\n" for name in MOTIONS.values()))
    dst = tmp_path / "converted" / "rsa.ckpt"
    data_overrides = tiny_synthetic_overrides(tmp_path / "synthetic")
    result = subprocess.run(
        [sys.executable, "-m", "rsa_lightning.tools.convert_official", str(src), str(dst), "--data", "synthetic"]
        + ["--class-names", str(names), "--num-frames", "3", *data_overrides],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "10 classes" in result.stderr and "2 heads, window (3, 3, 3)" in result.stderr
    assert "parameters" in result.stderr

    checkpoint = torch.load(dst, map_location="cpu", weights_only=True)
    assert checkpoint["class_names"] == list(MOTIONS.values())
    assert all(key.startswith("net.") for key in checkpoint["state_dict"])
    config = checkpoint["config"]
    assert config["model"]["net"]["stmixer_positions"] == POSITIONS
    assert config["model"]["net"]["stmixer"]["num_heads"] == 2 and config["data"]["num_frames"] == 3
    assert OmegaConf.to_container(OmegaConf.load(dst.with_suffix(".yaml"))) == config
    assert checkpoint["official"]["best_prec1"] == 63.25

    overrides = [f"ckpt_path={dst}", "trainer.accelerator=cpu"]
    metrics = evaluate(compose_config("eval", overrides, tmp_path / "eval"), overrides=overrides)
    rows = list(csv.DictReader((tmp_path / "eval" / "predictions_val.csv").read_text().splitlines()))
    assert metrics["num_videos"] == len(rows) == 10
    assert (tmp_path / "eval" / "metrics_val.json").is_file()
    assert rows[0]["pred_1_name"] in MOTIONS.values()

    # the same clips through the directly loaded official checkpoint
    datamodule = hydra.utils.instantiate(config["data"], predict_split="val")
    datamodule.prepare_data()
    datamodule.setup("predict")
    net = load_official_checkpoint(src)
    expected = {}
    with torch.no_grad():
        for batch in datamodule.predict_dataloader():
            batch = datamodule.on_after_batch_transfer(batch, 0)
            assert batch["video"].shape[2] == 3
            probs = net(batch["video"]).softmax(dim=-1)
            for video_id, p in zip(batch["video_id"], probs):
                expected[video_id] = (int(p.argmax()), float(p.max()))
    assert {r["video_id"]: int(r["pred_1"]) for r in rows} == {v: c for v, (c, _) in expected.items()}
    for r in rows:
        assert float(r["score_1"]) == pytest.approx(expected[r["video_id"]][1], abs=2e-6)
