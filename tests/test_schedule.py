import functools
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rsa_lightning.modules import VideoClassifier
from rsa_lightning.modules.lr_schedule import warmup_cosine, warmup_cosine_factor


def test_official_epoch_schedule():
    """80 epochs, 5 warm-up epochs, base lr 0.02: the per-epoch lr of the official recipe."""
    lrs = [0.02 * warmup_cosine_factor(e, total_steps=80, warmup_steps=5) for e in range(80)]
    for e, lr in enumerate(lrs):
        s = e + 1
        if s < 5:
            expected = 0.02 * (0.001 + 0.999 * s / 5)
        else:
            expected = 0.02 * (0.001 + 0.999 * (1 + math.cos(math.pi * (s - 5) / 75)) / 2)
        assert lr == pytest.approx(expected, rel=1e-12)
    assert lrs[40] == pytest.approx(0.01064, abs=5e-6)
    assert lrs[79] == pytest.approx(0.00002, abs=1e-9)
    assert lrs[4] == pytest.approx(0.02)  # warm-up ends at the base lr
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_no_warmup_and_errors():
    assert warmup_cosine_factor(0, total_steps=10, warmup_steps=0) < 1.0
    with pytest.raises(ValueError):
        warmup_cosine_factor(0, total_steps=0, warmup_steps=0)
    with pytest.raises(ValueError):
        warmup_cosine_factor(0, total_steps=5, warmup_steps=6)


@pytest.mark.parametrize(("devices", "scale"), [(8, 1.0), (16, 2.0)])
def test_video_classifier_steps_the_official_schedule_per_epoch(devices, scale):
    """The R50 recipe through VideoClassifier.configure_optimizers: the lr of every epoch e, for a global batch of 64
    (8 devices x 8 clips) and, linearly scaled, of 128."""
    model = VideoClassifier(
        net=nn.Linear(4, 10),
        num_classes=10,
        optimizer=functools.partial(torch.optim.SGD, lr=0.02, momentum=0.9, nesterov=True),
        weight_decay=5e-4,
        scheduler=functools.partial(warmup_cosine, warmup_epochs=5),
        scheduler_interval="epoch",
        auto_scale_lr={"enabled": True, "base_batch_size": 64},
    )
    model.trainer = SimpleNamespace(
        world_size=devices,
        num_nodes=1,
        accumulate_grad_batches=1,
        datamodule=SimpleNamespace(batch_size=8),
        is_global_zero=True,
        max_epochs=80,
    )
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "epoch"
    lrs = []
    for _ in range(80):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [scale * 0.02 * warmup_cosine_factor(e, total_steps=80, warmup_steps=5) for e in range(80)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[40] == pytest.approx(scale * 0.01064, abs=scale * 5e-6)
    assert lrs[79] == pytest.approx(scale * 0.00002, abs=scale * 1e-9)
    assert optimizer.param_groups[1]["lr"] == optimizer.param_groups[0]["lr"]  # the undecayed group follows too


def test_step_schedule_warms_up_over_fractional_epochs():
    """scheduler_interval=step: warm-up of 1.5 epochs of 4 steps = 6 steps, then the cosine over the 40 steps."""
    model = VideoClassifier(
        net=nn.Linear(4, 10),
        num_classes=10,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        scheduler=functools.partial(warmup_cosine, warmup_epochs=1.5, start_factor=0.01, end_factor=0.0),
        scheduler_interval="step",
    )
    model.trainer = SimpleNamespace(
        world_size=1,
        num_nodes=1,
        accumulate_grad_batches=1,
        datamodule=None,
        is_global_zero=True,
        max_epochs=10,
        estimated_stepping_batches=40,
    )
    config = model.configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "step"
    scheduler = config["lr_scheduler"]["scheduler"]
    factors = [scheduler.lr_lambdas[0](s) for s in range(40)]
    expected = [
        warmup_cosine_factor(s, total_steps=40, warmup_steps=6, start_factor=0.01, end_factor=0.0) for s in range(40)
    ]
    assert factors == pytest.approx(expected, rel=1e-12)
    assert max(factors) == pytest.approx(1.0) and factors.index(max(factors)) == 5


def test_no_scheduler_is_a_constant_lr():
    model = VideoClassifier(net=nn.Linear(4, 10), num_classes=10, optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    model.trainer = SimpleNamespace(datamodule=None, is_global_zero=True)
    assert isinstance(model.configure_optimizers(), torch.optim.SGD)
