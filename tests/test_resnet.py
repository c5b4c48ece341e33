import functools

import pytest
import torch

from rsa_lightning.layers.conv import SpaceTimeConv, SpatialConv
from rsa_lightning.models import DropPath, ResNet

TINY = dict(num_classes=5, block_counts=(1, 2), widths=(8, 16), expansion=2, stem_width=8)


def test_shapes_and_positions():
    net = ResNet(**TINY, stmixer=SpaceTimeConv, stmixer_positions=[[0], [1]])
    assert isinstance(net.layer1[0].conv2, SpaceTimeConv)
    assert isinstance(net.layer2[0].conv2, SpatialConv) and isinstance(net.layer2[1].conv2, SpaceTimeConv)
    x = torch.randn(2, 3, 4, 32, 32)
    assert net(x).shape == (2, 5)
    assert net.forward_features(x).shape == (2, 32, 4, 4, 4)  # time kept, space /8
    # zero-initialised last BN of every block
    assert all(int(torch.count_nonzero(b.bn3.weight.detach())) == 0 for b in [*net.layer1, *net.layer2])
    ones = ResNet(**TINY, zero_init_residual=False)
    assert all(bool((b.bn3.weight == 1).all()) for b in [*ones.layer1, *ones.layer2])


def test_framewise_network_ignores_frame_order_and_spacetime_does_not():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 32, 32)
    perm = torch.tensor([4, 2, 0, 3, 1])
    for stmixer, positions, invariant in [(None, [], True), (SpaceTimeConv, [[0], [0, 1]], False)]:
        net = ResNet(**TINY, stmixer=stmixer, stmixer_positions=positions).eval()
        for m in net.modules():  # undo the zero-init so that every block contributes
            if hasattr(m, "bn3"):
                torch.nn.init.ones_(m.bn3.weight)
        with torch.no_grad():
            same = torch.allclose(net(x), net(x[:, :, perm]), atol=1e-5)
        assert same == invariant


def test_gradients_reach_every_parameter():
    net = ResNet(**TINY, stmixer=functools.partial(SpaceTimeConv, kernel_size=(3, 1, 1)), stmixer_positions=[[0], []])
    for m in net.modules():
        if hasattr(m, "bn3"):
            torch.nn.init.ones_(m.bn3.weight)
    net(torch.randn(2, 3, 3, 32, 32)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_stochastic_depth_schedule_and_scaling():
    net = ResNet(**{**TINY, "block_counts": (2, 3)}, drop_path_rate=0.2)
    survival = [b.drop_path.survival for b in [*net.layer1, *net.layer2]]
    assert survival == pytest.approx([1.0, 0.95, 0.9, 0.85, 0.8])
    dp = DropPath(0.5).train()
    torch.manual_seed(0)
    y = dp(torch.ones(4000, 3))
    assert set(y[:, 0].unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1/p
    assert (y == y[:, :1]).all()  # per sample
    assert y.mean().item() == pytest.approx(1.0, abs=0.06)
    assert torch.equal(dp.eval()(torch.ones(3, 3)), torch.ones(3, 3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stmixer": SpaceTimeConv, "stmixer_positions": [[0]]}, "one list per stage"),
        ({"stmixer": SpaceTimeConv, "stmixer_positions": [[0], [2]]}, r"stmixer_positions\[1\]"),
        ({"widths": (8,)}, "same length"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNet(**{**TINY, **kwargs})


def test_input_layout_is_checked():
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        ResNet(**TINY)(torch.randn(2, 4, 3, 32, 32))
