"""The training recipe: linear lr scaling to the global batch (auto_scale_lr), weight-decay groups on an RSA network,
and the recipe keys of the model configs."""

from __future__ import annotations

import functools
import logging
from types import SimpleNamespace

import hydra
import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_config
from torch import nn
from torch.utils.data import DataLoader

from rsa_lightning.layers import RelationalSelfAttention
from rsa_lightning.models import ResNet
from rsa_lightning.modules import VideoClassifier
from rsa_lightning.modules.lr_schedule import warmup_cosine
from rsa_lightning.modules.optim import global_batch_size, linear_scaled_lr, param_groups

LOGGER = "rsa_lightning.modules.video_classifier"


def test_global_batch_and_linear_scaling_rule():
    assert global_batch_size(per_device_batch_size=8, world_size=8) == 64  # the official 8 GPUs x 8 clips
    assert global_batch_size(per_device_batch_size=8, world_size=16, accumulate_grad_batches=2) == 256
    assert linear_scaled_lr(0.02, global_batch_size=64, base_batch_size=64) == 0.02
    assert linear_scaled_lr(0.02, global_batch_size=256, base_batch_size=64) == pytest.approx(0.08)
    assert linear_scaled_lr(0.02, global_batch_size=16, base_batch_size=64) == pytest.approx(0.005)
    with pytest.raises(ValueError, match="world_size"):
        global_batch_size(per_device_batch_size=8, world_size=0)
    with pytest.raises(ValueError, match="base_batch_size=0"):
        linear_scaled_lr(0.02, global_batch_size=64, base_batch_size=0)


def tiny_rsa_resnet(num_classes: int = 4) -> ResNet:
    mixer = functools.partial(RelationalSelfAttention, num_heads=2, kernel_size=(3, 3, 3))
    return ResNet(
        num_classes=num_classes,
        block_counts=[1, 1],
        widths=[8, 16],
        expansion=2,
        stem_width=8,
        stmixer=mixer,
        stmixer_positions=[[0], [0]],
        zero_init_residual=False,
    )


def test_weight_decay_groups_on_an_rsa_network():
    net = tiny_rsa_resnet()
    decay, no_decay = param_groups(net, weight_decay=5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    undecayed = {id(p) for p in no_decay["params"]}
    names = dict(net.named_parameters())
    assert len(decayed) + len(undecayed) == len(names) and not decayed & undecayed  # each parameter exactly once

    rsa_tensors = [n for n in names if n.endswith((".P1", ".I"))]
    assert len(rsa_tensors) == 4  # P1 and I of both RSA layers
    modules = dict(net.named_modules())
    norm_weights = [f"{n}.weight" for n, m in modules.items() if isinstance(m, nn.BatchNorm3d)]
    biases = [n for n in names if n.endswith(".bias")]  # BatchNorm and classifier biases
    assert norm_weights and "fc.bias" in biases
    weights = [f"{n}.weight" for n, m in modules.items() if isinstance(m, (nn.Conv3d, nn.Linear))]
    assert any(".H1." in n for n in weights) and "fc.weight" in weights
    for n in rsa_tensors + weights:
        assert id(names[n]) in decayed, f"{n} should be decayed"
    for n in norm_weights + biases:
        assert id(names[n]) in undecayed, f"{n} should not be decayed"


def classifier(
    *, lr: float = 0.02, warmup_epochs: float = 5.0, schedule_interval: str = "epoch", **kwargs
) -> VideoClassifier:
    optimizer = functools.partial(torch.optim.SGD, lr=lr, momentum=0.9, nesterov=True)
    return VideoClassifier(
        net=tiny_rsa_resnet(),
        num_classes=4,
        optimizer=optimizer,
        weight_decay=5e-4,
        scheduler=functools.partial(warmup_cosine, warmup_epochs=warmup_epochs),
        scheduler_interval=schedule_interval,
        **kwargs,
    )


def attach_stub_trainer(model: VideoClassifier, *, devices: int, nodes: int, batch: int, accumulate: int, rank=0):
    model.trainer = SimpleNamespace(
        world_size=devices * nodes,
        num_nodes=nodes,
        accumulate_grad_batches=accumulate,
        datamodule=SimpleNamespace(batch_size=batch),
        is_global_zero=rank == 0,
        max_epochs=80,
    )
    return model


def test_auto_scale_lr_scales_to_the_global_batch(caplog):
    model = classifier(auto_scale_lr={"enabled": True, "base_batch_size": 64}, warmup_epochs=0)
    attach_stub_trainer(model, devices=8, nodes=2, batch=8, accumulate=2)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert [g["initial_lr"] for g in optimizer.param_groups] == pytest.approx([0.08, 0.08])  # 0.02 x 256 / 64
    assert scheduler.base_lrs == pytest.approx([0.08, 0.08])  # the schedule starts from the scaled lr
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4, 0.0]
    (message,) = [r.getMessage() for r in caplog.records if "global batch" in r.getMessage()]
    assert "global batch 256 = 8 clips per device x 8 device(s) x 2 node(s) x 2 accumulated batch(es)" in message
    assert "lr 0.08 (scaled linearly from a global batch of 64)" in message


def test_auto_scale_lr_off_and_on_other_ranks(caplog):
    model = classifier(auto_scale_lr={"enabled": False, "base_batch_size": 64}, warmup_epochs=0)
    attach_stub_trainer(model, devices=2, nodes=1, batch=8, accumulate=1)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        optimizer = model.configure_optimizers()["optimizer"]
    assert [g["initial_lr"] for g in optimizer.param_groups] == [0.02, 0.02]  # the base lr the schedule multiplies
    assert any("global batch 16 = " in r.getMessage() and "not scaled" in r.getMessage() for r in caplog.records)

    caplog.clear()
    model = classifier(auto_scale_lr={"base_batch_size": 64}, warmup_epochs=0)  # enabled by default
    attach_stub_trainer(model, devices=2, nodes=1, batch=8, accumulate=1, rank=1)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        optimizer = model.configure_optimizers()["optimizer"]
    assert [g["initial_lr"] for g in optimizer.param_groups] == pytest.approx([0.005, 0.005])  # every rank scales
    assert not [r for r in caplog.records if "global batch" in r.getMessage()]  # only rank zero logs


def test_auto_scale_lr_arguments_are_checked():
    with pytest.raises(ValueError, match="base_batch_size required"):
        classifier(auto_scale_lr={"enabled": True})
    with pytest.raises(ValueError, match="auto_scale_lr takes the keys"):
        classifier(auto_scale_lr={"enabled": True, "base_batch": 64})
    with pytest.raises(ValueError, match="must be positive"):
        classifier(auto_scale_lr={"base_batch_size": 0})
    model = attach_stub_trainer(
        classifier(auto_scale_lr={"base_batch_size": 64}), devices=1, nodes=1, batch=1, accumulate=1
    )
    model.trainer.datamodule = None
    with pytest.raises(ValueError, match="per-device batch size"):
        model.configure_optimizers()


class RandomClips(pl.LightningDataModule):
    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        video = torch.randn(8, 3, 2, 16, 16, generator=torch.Generator().manual_seed(0))
        self.samples = [{"video": v, "label": torch.tensor(i % 4)} for i, v in enumerate(video)]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.samples, batch_size=self.batch_size)


class RecordLr(pl.Callback):
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.base_lrs = trainer.lr_scheduler_configs[0].scheduler.base_lrs


def test_auto_scale_lr_reads_a_real_trainer(tmp_path):
    """Per-device batch 4 x 1 device x 2 accumulated batches = 8 clips per step: lr x 2 against a base batch of 4."""
    model = classifier(
        lr=0.01, auto_scale_lr={"enabled": True, "base_batch_size": 4}, schedule_interval="step", warmup_epochs=0
    )
    record = RecordLr()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        accumulate_grad_batches=2,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    trainer.fit(model, datamodule=RandomClips(batch_size=4))
    assert record.base_lrs == pytest.approx([0.02, 0.02])


def model_config(tmp_path, *overrides: str):
    return compose_config("train", list(overrides), tmp_path).model


@pytest.mark.parametrize("name", ["tsn_r50", "rsa_r50", "tsm_r50", "tsn_r101", "tsn_r18", "conv3d_r50", "local_sa_r50"])
def test_r50_configs_scale_lr_from_a_global_batch_of_64(tmp_path, name):
    cfg = model_config(tmp_path, f"model={name}", "data=ssv2")
    assert cfg.optimizer.lr == 0.02 and cfg.weight_decay == 5e-4 and cfg.optimizer.nesterov
    assert "weight_decay" not in cfg.optimizer  # applied per parameter group by VideoClassifier
    assert dict(cfg.auto_scale_lr) == {"enabled": True, "base_batch_size": 64}
    assert cfg.scheduler.warmup_epochs == 5 and cfg.scheduler_interval == "epoch"


def test_recipe_config_builds_the_scaled_optimizer(tmp_path):
    """The real rsa_r50 model config (with a tiny net): 4 devices x 8 clips train with half the base lr."""
    cfg = model_config(tmp_path, "model=rsa_r50", "data=ssv2")
    model = hydra.utils.instantiate(cfg, net=tiny_rsa_resnet(), num_classes=4)
    attach_stub_trainer(model, devices=4, nodes=1, batch=8, accumulate=1)
    config = model.configure_optimizers()
    assert [g["initial_lr"] for g in config["optimizer"].param_groups] == pytest.approx([0.01, 0.01])
    assert isinstance(config["optimizer"], torch.optim.SGD) and config["lr_scheduler"]["interval"] == "epoch"


@pytest.mark.parametrize(
    ("data", "monitor"),
    [
        ("gym99", "val/mean_class_acc"),
        ("gym288", "val/mean_class_acc"),
        ("ssv1", "val/acc1"),
        ("synthetic", "val/acc1"),
    ],
)
def test_the_dataset_chooses_the_checkpoint_monitor(tmp_path, data, monitor):
    cfg = compose_config("train", [f"data={data}", "model=rsa_r50"], tmp_path)
    assert cfg.data.monitor == monitor and cfg.optimized_metric == monitor
    assert cfg.callbacks.model_checkpoint.monitor == monitor and cfg.callbacks.model_checkpoint.mode == "max"


def test_tiny_config_does_not_scale(tmp_path):
    cfg = model_config(tmp_path, "model=rsa_tiny")
    assert cfg.auto_scale_lr.enabled is False and cfg.scheduler_interval == "step"
