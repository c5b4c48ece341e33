"""The cost report (rsa_lightning/tools/flops.py): hand-computed MACs of single layers, the RSA layer's official-order
count, RSANet-R50's published cost (fvcore, official code: 71.774 G "FLOPs", 22.034 M parameters) and the CLI."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from conftest import compose_config
from einops import rearrange
from torch import nn

from rsa_lightning.layers.conv import SpaceTimeConv
from rsa_lightning.layers.rsa import RelationalSelfAttention, l2_normalise
from rsa_lightning.tools.flops import UncountedWarning, build_net, cost_report, count_macs, format_report, main

PAPER_GMACS_16 = 71.77  # RSANet-R50, 16 x 224 x 224, as logged by the official code (logs/RSA_R50_SSV1_16frames.log)
PAPER_PARAMS = 22_034_302


def count_quietly(net: nn.Module, shape, **kwargs):
    """count_macs that fails on any UncountedWarning: these modules all have MAC rules."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncountedWarning)
        return count_macs(net, shape, **kwargs)


# --- single layers against hand formulas ------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("bias", [False, True])
def test_conv3d_macs(device, bias):
    conv = nn.Conv3d(4, 6, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2), groups=2, bias=bias, device=device)
    report = count_quietly(conv, (2, 4, 5, 9, 9))
    # output (2, 6, 5, 5, 5); every output element: in_channels / groups = 2 inputs x 3 * 5 * 5 taps; biases free
    assert report.total() == 2 * 6 * 5 * 5 * 5 * 2 * 75 == 225_000
    assert report.subtree("")["conv"] == 225_000
    assert report.params == 6 * 2 * 75 + (6 if bias else 0)


def test_space_time_conv_is_counted_like_any_conv():
    conv = SpaceTimeConv(in_channels=3, out_channels=5, stride=2, kernel_size=(3, 3, 3))
    report = count_quietly(conv, (1, 3, 4, 8, 8))  # output (1, 5, 4, 4, 4)
    assert report.total() == 5 * 4 * 4 * 4 * 3 * 27 == 25_920


def test_linear_macs():
    report = count_quietly(nn.Linear(7, 5), (3, 4, 7))
    assert report.total() == report.subtree("")["matmul"] == 3 * 4 * 7 * 5 == 420


def test_batch_norm_is_not_counted_unless_asked():
    net = nn.Sequential(nn.Conv3d(2, 3, 1, bias=False), nn.BatchNorm3d(3), nn.ReLU(), nn.AvgPool3d((1, 2, 2)))
    shape = (1, 2, 2, 4, 4)
    conv = 3 * 2 * 4 * 4 * 2  # 96 outputs x 2 inputs
    assert count_quietly(net, shape).total() == conv
    assert count_quietly(net, shape).subtree("")["norm"] == 96
    assert count_quietly(net, shape, count_norm=True).total() == conv + 96


def test_counting_restores_the_module():
    net = nn.Sequential(nn.Conv3d(2, 3, 1), nn.Dropout(0.5))
    net.train()
    count_quietly(net, (1, 2, 1, 2, 2))
    assert net.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


# --- the RSA layer --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kernel_type, context_type, expected",
    [
        # in 6, 2 heads of dv = dk = dd = 4, window 3x3x3 (M = 27), input (2, 6, 3, 5, 5): N = 150 positions.
        # projection N*6*(2*4 + 4 + 4) = 14400; H1 = H2 = G = N*4*4*27 = 64800;
        # einsums: kernel N*4*2*4 = 4800, context N*4*4*4 = 9600, output N*2*4*4 = 4800
        ("V+R", "V+R", 14400 + 3 * 64800 + 4800 + 9600 + 4800),
        ("R", "R", 14400 + 3 * 64800 + 4800 + 9600 + 4800),  # P1 and I are additions: free
        ("V", "V+R", 150 * 6 * 12 + 2 * 64800 + 9600 + 4800),  # no key: projection N*6*(8 + 4), no H1
        ("V+R", "V", 14400 + 2 * 64800 + 4800 + 4800),  # no G, no context einsum
        ("V", "V", 150 * 6 * 12 + 64800 + 4800),
    ],
)
@pytest.mark.parametrize("stride", [1, 2])
def test_rsa_layer_macs(kernel_type, context_type, expected, stride):
    layer = RelationalSelfAttention(
        in_channels=6,
        out_channels=8,
        num_heads=2,
        kernel_size=(3, 3, 3),
        stride=stride,
        kernel_type=kernel_type,
        context_type=context_type,
    )
    report = count_quietly(layer, (2, 6, 3, 5, 5))
    assert report.total() == report.subtree("")["rsa"] == expected  # a stride only pools the output: free
    assert sum(report.analytic_parts[""].values()) == expected
    assert report.as_run[""] > 0  # this layer's own ops, reported but not counted


class OfficialOrder(nn.Module):
    """The official RSA op sequence (ops/rsa.py) on a layer's parameters, for the op counter: a 1x1x1 projection,
    the H1, H2, G convolutions, P1 and I added per position, and three batched matrix products."""

    def __init__(self, layer: RelationalSelfAttention) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rsa = self.layer
        b, _, t, h, w = x.shape
        nh, dk, dv = rsa.num_heads, rsa.key_channels, rsa.value_channels
        q, k, v = torch.split(rsa.projection(x), [nh * dk, dk, dv], dim=1)
        q = l2_normalise(rearrange(q, "b (nh dk) t h w -> b nh dk t h w", nh=nh), dim=2)
        q = rearrange(q, "b nh dk t h w -> (b t h w) dk nh")
        k, v = l2_normalise(k, dim=1), l2_normalise(v, dim=1)
        base = rearrange(rsa.H1(k), "b (dk dd) t h w -> (b t h w) dk dd", dk=dk) + rsa.P1
        kernel = torch.bmm(q.transpose(1, 2), base)  # (bthw, nh, dd)
        v = rearrange(v, "b dv t h w -> (b dv) 1 t h w")
        context = rearrange(rsa.H2(v), "(b dv) dd t h w -> (b t h w) dv dd", dv=dv)
        mixing = rearrange(rsa.G(v), "(b dv) e t h w -> (b t h w) dv e", dv=dv) + rsa.I
        context = torch.bmm(mixing.transpose(1, 2), context)  # (bthw, dv_out, dd)
        out = torch.bmm(context, kernel.transpose(1, 2))  # (bthw, dv_out, nh)
        return rsa.pool(rearrange(out, "(b t h w) dv nh -> b (dv nh) t h w", b=b, t=t, h=h, w=w))


@pytest.mark.filterwarnings("ignore::rsa_lightning.tools.flops.UncountedWarning")  # OfficialOrder has no rule
def test_rsa_count_is_the_official_op_sequence_counted_op_by_op():
    torch.manual_seed(0)
    layer = RelationalSelfAttention(in_channels=6, out_channels=12, num_heads=3, kernel_size=(3, 5, 3), stride=2)
    official = OfficialOrder(layer)
    x = torch.randn(2, 6, 3, 6, 5)
    torch.testing.assert_close(official(x), layer(x), rtol=1e-4, atol=1e-5)  # it is the same function
    by_ops = count_macs(official, x.shape)
    analytic = count_quietly(layer, x.shape)
    assert by_ops.total() == analytic.total() > 0


# --- networks -------------------------------------------------------------------------------------------------------


def r50_report(tmp_path, *overrides):
    return cost_report(compose_config("flops", ["model=rsa_r50", "data.num_classes=174", *overrides], tmp_path))


def test_rsanet_r50_matches_the_published_cost(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncountedWarning)
        r16 = r50_report(tmp_path, "data.num_frames=16")
        r8 = r50_report(tmp_path, "data.num_frames=8")
    assert r16.input_shape == (1, 3, 16, 224, 224)
    assert r16.params == r8.params == PAPER_PARAMS
    assert r16.total() / 1e9 == pytest.approx(PAPER_GMACS_16, rel=0.005)
    assert r8.total() / 1e9 == pytest.approx(PAPER_GMACS_16 / 2, rel=0.005)
    assert len(r16.analytic_parts) == 7
    # BatchNorm is outside the published figure: counting it (1 MAC per element) moves the total by 0.25 %
    assert r16.subtree("")["norm"] > 0
    assert r16.total() == sum(r16.subtree("")[c] for c in ("conv", "rsa", "matmul"))


def test_tsn_r50_is_resnet50_per_frame(tmp_path):
    cfg = compose_config(
        "flops",
        ["model=rsa_r50", "model.net.stmixer=null", "model.net.stmixer_positions=[]", "data.num_classes=174"],
        tmp_path,
    )
    report = count_quietly(build_net(cfg), (1, 3, 8, 224, 224))
    # ResNet-50 without its classifier: 4.087 G MACs per 224 x 224 frame; TSN/TSM report 33 G for 8 frames
    assert report.subtree("")["conv"] / 8 / 1e9 == pytest.approx(4.087, rel=0.001)
    assert report.subtree("")["matmul"] == 8 * 2048 * 174
    assert report.subtree("")["rsa"] == 0


# --- warnings -------------------------------------------------------------------------------------------------------


class ElementwiseMixer(nn.Module):
    """A product written as multiply + sum: invisible to the op counter."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(channels, channels, 1, bias=False)
        self.weight = nn.Parameter(torch.ones(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return (x.unsqueeze(1) * self.weight[None, :, :, None, None, None]).sum(2)


class Spectral(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(x, dim=-1).abs()


def test_a_module_without_rule_warns_and_keeps_its_convolutions():
    net = nn.Sequential(nn.Conv3d(2, 4, 1, bias=False), ElementwiseMixer(4))
    with pytest.warns(UncountedWarning, match=r"no MAC rule for ElementwiseMixer \(at 1\)"):
        report = count_macs(net, (1, 2, 2, 3, 3))
    assert report.total() == 18 * 4 * 2 + 18 * 4 * 4  # both convolutions, not the multiply + sum
    assert "WARNING: no MAC rule for ElementwiseMixer" in format_report(report)


def test_an_op_without_rule_warns():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        count_macs(nn.Sequential(Spectral()), (1, 2, 8))
    messages = [str(w.message) for w in caught if w.category is UncountedWarning]
    assert any(m.startswith("no MAC rule for op aten._fft_r2c") for m in messages), messages


# --- command line ---------------------------------------------------------------------------------------------------


def test_main_prints_the_report(tmp_path, capsys):
    cfg = compose_config("flops", ["model=rsa_tiny", "data.num_frames=4", "input_size=56"], tmp_path)
    report = main(cfg)
    out = capsys.readouterr().out
    assert f"parameters  {report.params:,}" in out
    assert f"MMACs       {report.total() / 1e6:.3f}" in out
    for row in ("stem", "layer1", "layer4", "head", "layer1.0.conv2", "layer2.0.conv2", "RSA layer"):
        assert row in out


def test_cli(tmp_path):
    args = ["model=rsa_r50", "data.num_classes=174", "data.num_frames=8"]
    result = subprocess.run(
        [sys.executable, "-m", "rsa_lightning.tools.flops", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "parameters  22,034,302" in result.stdout
    assert "GMACs       35.887" in result.stdout
    assert "layer4.1.conv2" in result.stdout
    assert list(tmp_path.iterdir()) == []  # a report writes nothing


def test_local_attention_formula():
    from rsa_lightning.layers.local_attention import LocalSelfAttention
    from rsa_lightning.tools.flops import count_macs

    layer = LocalSelfAttention(in_channels=8, out_channels=8, num_heads=2, kernel_size=(3, 3, 3))
    report = count_macs(layer, (1, 8, 2, 4, 4))
    n, m, nh, dk, dv = 1 * 2 * 4 * 4, 27, 2, 4, 4
    assert report.total() == n * 8 * nh * (2 * dk + dv) + n * nh * dk * m + n * nh * dv * m
    assert not report.warnings
