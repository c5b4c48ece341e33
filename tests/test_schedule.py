import math

import pytest

from rsa_lightning.modules.lr_schedule import warmup_cosine_factor


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
