"""RelationalSelfAttention: numerics against a slow loop written from the equations, shapes, gradients, arguments,
official parameter layout and output channel order."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import reference_stride2_pool

from rsa_lightning.layers import RelationalSelfAttention

TYPES = ("V", "R", "V+R")
COMBINATIONS = list(itertools.product(TYPES, TYPES))
IMPLEMENTATIONS = ("fast", "reference")


def l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x**2).sum() + 1e-6)


def reference_rsa(layer: RelationalSelfAttention, x: torch.Tensor) -> np.ndarray:
    """The layer's equations as explicit loops over positions n and window offsets m (float64 numpy, zero padding).

    Uses only the layer's weights, never its forward or its convolutions. Returns y[b, e, h, t, i, j] (before any
    stride pooling), so the caller decides the output channel order.
    """
    nh, dk, dv, dd = layer.num_heads, layer.key_channels, layer.value_channels, layer.latent_channels
    kt, kh, kw = layer.kernel_size
    has_key = layer.kernel_type != "V"
    x = x.detach().double().numpy()
    batch, _, frames, height, width = x.shape
    w_proj = layer.projection.weight.detach().double().numpy()[:, :, 0, 0, 0]  # (outputs, C)
    h1 = layer.H1.weight.detach().double().numpy() if has_key else None  # (dk * dd, 1, kt, kh, kw)
    h2 = layer.H2.weight.detach().double().numpy()  # (dd, 1, kt, kh, kw)
    g = layer.G.weight.detach().double().numpy() if layer.context_type != "V" else None  # (dv, 1, kt, kh, kw)
    p1 = layer.P1.detach().double().numpy()[0] if layer.kernel_type == "V+R" else None  # (dk, dd)
    eye = layer.I.detach().double().numpy()[0] if layer.context_type == "V+R" else None  # (dv, dv)

    # Projection (a 1x1x1 convolution) and normalisation, position by position.
    q = np.zeros((batch, nh, dk, frames, height, width))
    k = np.zeros((batch, dk, frames, height, width))
    v = np.zeros((batch, dv, frames, height, width))
    for b, t, i, j in itertools.product(range(batch), range(frames), range(height), range(width)):
        z = w_proj @ x[b, :, t, i, j]
        for head in range(nh):
            q[b, head, :, t, i, j] = l2_normalise(z[head * dk : (head + 1) * dk])
        offset = nh * dk
        if has_key:
            k[b, :, t, i, j] = l2_normalise(z[offset : offset + dk])
            offset += dk
        v[b, :, t, i, j] = l2_normalise(z[offset : offset + dv])

    y = np.zeros((batch, dv, nh, frames, height, width))
    for b, t, i, j in itertools.product(range(batch), range(frames), range(height), range(width)):
        rel = np.zeros((dk, dd))  # R[c, d]
        basic = np.zeros((dv, dd))  # F[c, d]
        mixing = np.zeros((dv, dv))  # A[c, e]
        for mt, mi, mj in itertools.product(range(kt), range(kh), range(kw)):
            tt, ii, jj = t + mt - kt // 2, i + mi - kh // 2, j + mj - kw // 2
            if not (0 <= tt < frames and 0 <= ii < height and 0 <= jj < width):
                continue  # zero padding: the neighbour contributes nothing
            v_nb = v[b, :, tt, ii, jj]
            for c in range(dv):
                for d in range(dd):
                    basic[c, d] += h2[d, 0, mt, mi, mj] * v_nb[c]
                if g is not None:
                    for e in range(dv):
                        mixing[c, e] += g[e, 0, mt, mi, mj] * v_nb[c]
            if has_key:
                k_nb = k[b, :, tt, ii, jj]
                for c in range(dk):
                    for d in range(dd):
                        rel[c, d] += h1[c * dd + d, 0, mt, mi, mj] * k_nb[c]
        query = q[b, :, :, t, i, j]  # (nh, dk)
        if layer.kernel_type == "V":
            kappa = query
        elif layer.kernel_type == "R":
            kappa = query @ rel
        else:
            kappa = query @ (rel + p1)
        if layer.context_type == "V":
            context = basic
        elif layer.context_type == "R":
            context = mixing.T @ basic
        else:
            context = (mixing + eye).T @ basic
        for e in range(dv):
            for head in range(nh):
                y[b, e, head, t, i, j] = sum(kappa[head, d] * context[e, d] for d in range(dd))
    return y


def reference_output(layer: RelationalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Reference output: channel e * nh + h holds y[e, h]; stride 2 average-pools 3x3 (zero padded, divide by 9)."""
    y = reference_rsa(layer, x)
    batch, dv, nh, frames, height, width = y.shape
    out = np.zeros((batch, dv * nh, frames, height, width))
    for e in range(dv):
        for head in range(nh):
            out[:, e * nh + head] = y[:, e, head]
    if layer.stride == 2:
        out = reference_stride2_pool(out)
    return torch.from_numpy(out)


def randomise(layer: RelationalSelfAttention, seed: int = 0) -> None:
    """Random weights of order one in the output: no identity I, no near-zero P1, every term matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            scale = 1.0 if name in ("P1", "I", "projection.weight") else 1.0 / np.sqrt(layer.window_size)
            p.copy_(torch.randn(p.shape, generator=generator) * scale)


def explicit_sizes(kernel_type: str, context_type: str) -> dict:
    """Layer kwargs with dk = 3, dv = 4 and dd = 5 (3 for kernel "V", which needs dd = dk), input (2, 5, 3, 4, 5)."""
    return dict(
        in_channels=5,
        out_channels=8,
        num_heads=2,
        kernel_size=(3, 3, 5),
        kernel_type=kernel_type,
        context_type=context_type,
        key_channels=3,
        latent_channels=5 if kernel_type != "V" else 3,
    )


# (layer kwargs, input shape) for the reference comparison; every config is run for all 9 combinations.
REFERENCE_CONFIGS = {
    # nh < dd: mixing applied after the kernel; cubic window as large as the clip, so every position is a border.
    "cubic_nh2": (dict(in_channels=6, out_channels=8, num_heads=2, kernel_size=(3, 3, 3)), (2, 6, 3, 5, 5)),
    # nh > dd: context F' built first; non-cubic window whose height spans the whole frame.
    "noncubic_nh4": (dict(in_channels=8, out_channels=8, num_heads=4, kernel_size=(3, 5, 3)), (2, 8, 3, 5, 4)),
    # stride 2 with odd frame size, through the same reference plus a loop pooling.
    "stride2": (dict(in_channels=4, out_channels=6, num_heads=2, kernel_size=(3, 3, 3), stride=2), (1, 4, 2, 5, 5)),
}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("config", list(REFERENCE_CONFIGS))
@pytest.mark.parametrize(("kernel_type", "context_type"), COMBINATIONS)
def test_matches_loop_reference(config: str, kernel_type: str, context_type: str, implementation: str) -> None:
    kwargs, shape = REFERENCE_CONFIGS[config]
    torch.manual_seed(1)
    layer = RelationalSelfAttention(
        **kwargs, kernel_type=kernel_type, context_type=context_type, implementation=implementation
    )
    randomise(layer)
    x = torch.randn(shape)
    out = layer(x)
    expected = reference_output(layer, x)
    assert expected.abs().max() > 0.1, "reference output too small for the comparison to mean anything"
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kernel_type", "context_type"), [(k, c) for k, c in COMBINATIONS if k != "V" and c != "V+R"] + [("V", "R")]
)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_matches_loop_reference_with_explicit_sizes(kernel_type: str, context_type: str, implementation: str) -> None:
    """dk != dv != dd (allowed unless context "V+R" or kernel "V") exercises every size in the equations."""
    latent = 5 if kernel_type != "V" else 3
    layer = RelationalSelfAttention(implementation=implementation, **explicit_sizes(kernel_type, context_type))
    assert (layer.key_channels, layer.value_channels, layer.latent_channels) == (3, 4, latent)
    randomise(layer, seed=3)
    x = torch.randn(2, 5, 3, 4, 5)
    expected = reference_output(layer, x)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_output_channels_are_value_major() -> None:
    """Output channel e * nh + h is y[e, h] (official layout); the head-major order h * dv + e would not match."""
    layer = RelationalSelfAttention(in_channels=6, out_channels=6, num_heads=3, kernel_size=(3, 3, 3))
    randomise(layer, seed=5)
    x = torch.randn(1, 6, 3, 4, 4)
    y = torch.from_numpy(reference_rsa(layer, x))  # (b, dv, nh, t, h, w)
    out = layer(x).double()
    for e in range(layer.value_channels):
        for head in range(layer.num_heads):
            torch.testing.assert_close(out[:, e * layer.num_heads + head], y[:, e, head], rtol=1e-5, atol=1e-5)
    head_major = y.permute(0, 2, 1, 3, 4, 5).reshape(out.shape)
    assert not torch.allclose(out, head_major, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("num_heads", [1, 4])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize(("kernel_type", "context_type"), COMBINATIONS)
def test_shape_and_gradients(
    kernel_type: str, context_type: str, stride: int, num_heads: int, implementation: str
) -> None:
    layer = RelationalSelfAttention(
        implementation=implementation,
        in_channels=6,
        out_channels=8,
        num_heads=num_heads,
        kernel_size=(3, 3, 3),
        stride=stride,
        kernel_type=kernel_type,
        context_type=context_type,
    )
    x = torch.randn(2, 6, 3, 6, 5, requires_grad=True)
    out = layer(x)
    assert out.shape == (2, 8, 3, 6 // stride, (5 + 1) // stride if stride == 2 else 5)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in layer.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


@pytest.mark.parametrize(
    ("kernel_type", "context_type", "expected"),
    [
        ("V", "V", {"projection.weight", "H2.weight"}),
        ("R", "V", {"projection.weight", "H1.weight", "H2.weight"}),
        ("V+R", "V", {"projection.weight", "H1.weight", "H2.weight", "P1"}),
        ("V", "R", {"projection.weight", "H2.weight", "G.weight"}),
        ("V", "V+R", {"projection.weight", "H2.weight", "G.weight", "I"}),
        ("V+R", "V+R", {"projection.weight", "H1.weight", "H2.weight", "G.weight", "P1", "I"}),
    ],
)
def test_only_used_parameters_exist(kernel_type: str, context_type: str, expected: set[str]) -> None:
    layer = RelationalSelfAttention(
        in_channels=8, out_channels=8, num_heads=2, kernel_type=kernel_type, context_type=context_type
    )
    assert {name for name, _ in layer.named_parameters()} == expected
    assert set(layer.state_dict()) == expected
    key = 0 if kernel_type == "V" else 4
    assert layer.projection.weight.shape[0] == 2 * 4 + key + 4


@pytest.mark.parametrize(
    ("channels", "shapes"),
    [
        (
            64,
            {
                "projection.weight": (80, 64, 1, 1, 1),
                "H1.weight": (64, 1, 5, 7, 7),
                "H2.weight": (8, 1, 5, 7, 7),
                "G.weight": (8, 1, 5, 7, 7),
                "P1": (1, 8, 8),
                "I": (1, 8, 8),
            },
        ),
        (
            128,
            {
                "projection.weight": (160, 128, 1, 1, 1),
                "H1.weight": (256, 1, 5, 7, 7),
                "H2.weight": (16, 1, 5, 7, 7),
                "G.weight": (16, 1, 5, 7, 7),
                "P1": (1, 16, 16),
                "I": (1, 16, 16),
            },
        ),
    ],
)
def test_official_parameter_layout(channels: int, shapes: dict[str, tuple[int, ...]]) -> None:
    layer = RelationalSelfAttention(in_channels=channels, out_channels=channels, num_heads=8, kernel_size=(5, 7, 7))
    assert {name: tuple(t.shape) for name, t in layer.state_dict().items()} == shapes
    # Official initialisation of P1 and I.
    torch.testing.assert_close(layer.I[0], torch.eye(channels // 8))
    expected_std = (1.0 / (5 * 7 * 7 * (channels // 8))) ** 0.5
    assert 0.7 * expected_std < layer.P1.std().item() < 1.3 * expected_std
    # Loading a state dict of that layout (as a converted official checkpoint would be) round-trips exactly.
    other = RelationalSelfAttention(in_channels=channels, out_channels=channels)
    other.load_state_dict(layer.state_dict())
    x = torch.randn(1, channels, 2, 3, 3)
    torch.testing.assert_close(other(x), layer(x))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(kernel_size=(4, 3, 3)), "kernel_size"),
        (dict(kernel_size=(3, 3)), "kernel_size"),
        (dict(kernel_size=3), "kernel_size"),
        (dict(out_channels=10, num_heads=4), "out_channels"),
        (dict(num_heads=0), "num_heads"),
        (dict(value_channels=3), "value_channels"),
        (dict(key_channels=2), "key_channels"),
        (dict(latent_channels=3, kernel_type="V", context_type="V"), "latent_channels"),
        (dict(kernel_type="VplusR"), "kernel_type"),
        (dict(context_type="X"), "context_type"),
        (dict(stride=3), "stride"),
        (dict(stride=0), "stride"),
        (dict(latent_channels=0), "latent_channels"),
        (dict(implementation="official"), "implementation"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict, name: str) -> None:
    arguments = dict(in_channels=8, out_channels=8, num_heads=2, kernel_size=(3, 3, 3))
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=name):
        RelationalSelfAttention(**arguments)


def test_valid_non_default_sizes_construct() -> None:
    """The size checks do not reject what the equations allow (dk != dv without context V+R, dd != dk)."""
    layer = RelationalSelfAttention(
        in_channels=8, out_channels=8, num_heads=2, context_type="R", key_channels=3, latent_channels=5
    )
    assert (layer.key_channels, layer.value_channels, layer.latent_channels) == (3, 4, 5)


@pytest.mark.parametrize(("shape", "message"), [((2, 8, 5, 5), "5-D"), ((2, 6, 3, 5, 5), "in_channels=8")])
def test_wrong_input_raises(shape: tuple[int, ...], message: str) -> None:
    layer = RelationalSelfAttention(in_channels=8, out_channels=8, num_heads=2, kernel_size=(3, 3, 3))
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(shape))
