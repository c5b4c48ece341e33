"""LocalSelfAttention: numerics against a slow loop written from the equation, gradients (numerical check and every
parameter reached), masking of out-of-clip neighbours, position blindness without relative_position, memory that
does not grow with the window, shapes and arguments."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import reference_stride2_pool
from torch.func import functional_call

from rsa_lightning.layers import LocalSelfAttention


def reference_attention(layer: LocalSelfAttention, x: torch.Tensor) -> np.ndarray:
    """The equation as explicit loops over positions n and window offsets m (float64 numpy).

    Uses only the layer's weights, never its forward. Neighbours outside the clip are skipped: they take no part in
    the softmax. Returns y[b, h, e, t, i, j] (before any stride pooling), so the caller decides the channel order.
    """
    nh, dk, dv = layer.num_heads, layer.key_channels, layer.value_channels
    kt, kh, kw = layer.kernel_size
    x = x.detach().double().numpy()
    batch, _, frames, height, width = x.shape
    w_proj = layer.projection.weight.detach().double().numpy()[:, :, 0, 0, 0]  # (outputs, C)
    bias = layer.relative_position_bias.detach().double().numpy() if layer.relative_position else None  # (nh, M)

    # Projection (a 1x1x1 convolution): queries, keys, values in head-major blocks.
    z = np.einsum("oc,bcthw->bothw", w_proj, x)
    q = z[:, : nh * dk].reshape(batch, nh, dk, frames, height, width)
    k = z[:, nh * dk : 2 * nh * dk].reshape(batch, nh, dk, frames, height, width)
    v = z[:, 2 * nh * dk :].reshape(batch, nh, dv, frames, height, width)

    y = np.zeros((batch, nh, dv, frames, height, width))
    for b, head, t, i, j in itertools.product(range(batch), range(nh), range(frames), range(height), range(width)):
        logits, values = [], []
        for m, (mt, mi, mj) in enumerate(itertools.product(range(kt), range(kh), range(kw))):
            tt, ii, jj = t + mt - kt // 2, i + mi - kh // 2, j + mj - kw // 2
            if not (0 <= tt < frames and 0 <= ii < height and 0 <= jj < width):
                continue  # outside the clip: excluded from the softmax
            logit = q[b, head, :, t, i, j] @ k[b, head, :, tt, ii, jj] / np.sqrt(dk)
            if bias is not None:
                logit += bias[head, m]
            logits.append(logit)
            values.append(v[b, head, :, tt, ii, jj])
        weights = np.exp(np.array(logits) - max(logits))
        weights /= weights.sum()
        y[b, head, :, t, i, j] = weights @ np.array(values)
    return y


def reference_output(layer: LocalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Reference output: channel h * dv + e holds y[h, e]; stride 2 average-pools 3x3 (zero padded, divide by 9)."""
    y = reference_attention(layer, x)
    batch, nh, dv, frames, height, width = y.shape
    out = np.zeros((batch, nh * dv, frames, height, width))
    for head in range(nh):
        for e in range(dv):
            out[:, head * dv + e] = y[:, head, e]
    if layer.stride == 2:
        out = reference_stride2_pool(out)
    return torch.from_numpy(out)


def randomise(layer: LocalSelfAttention, seed: int = 0) -> None:
    """Random weights giving logits of order one (peaked, non-uniform attention) and a non-zero position bias."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))


def make_layer(seed: int = 0, **kwargs) -> LocalSelfAttention:
    arguments = dict(in_channels=8, out_channels=8, num_heads=2, kernel_size=(3, 3, 3))
    arguments.update(kwargs)
    layer = LocalSelfAttention(**arguments)
    randomise(layer, seed)
    return layer


@pytest.mark.parametrize("relative_position", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("num_heads", [1, 2])
@pytest.mark.parametrize("kernel_size", [(3, 3, 3), (5, 7, 7), (1, 3, 5)])
def test_matches_loop_reference(kernel_size, num_heads: int, stride: int, relative_position: bool) -> None:
    """(5, 7, 7) is larger than the clip (T=3, 5 x 4), so every position is a border; (1, 3, 5) is non-cubic."""
    layer = make_layer(
        seed=1, num_heads=num_heads, kernel_size=kernel_size, stride=stride, relative_position=relative_position
    )
    x = torch.randn(2, 8, 3, 5, 4, generator=torch.Generator().manual_seed(2)) * 0.5
    expected = reference_output(layer, x)
    assert expected.abs().max() > 0.1, "reference output too small for the comparison to mean anything"
    torch.testing.assert_close(layer.double()(x.double()), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.float()(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_output_channels_are_head_major() -> None:
    """Output channel h * dv + e is y[h, e]; the value-major order e * nh + h (RSA's) would not match."""
    layer = make_layer(in_channels=6, out_channels=6, num_heads=3, seed=5)
    x = torch.randn(1, 6, 3, 4, 4) * 0.5
    y = torch.from_numpy(reference_attention(layer, x))  # (b, nh, dv, t, h, w)
    out = layer(x).double()
    torch.testing.assert_close(out, y.reshape(out.shape), rtol=1e-5, atol=1e-5)
    value_major = y.transpose(1, 2).reshape(out.shape)
    assert not torch.allclose(out, value_major, rtol=1e-3, atol=1e-3)


def test_out_of_clip_neighbours_are_masked() -> None:
    """A single-position clip has one neighbour inside, itself, so attention is exactly 1 on it: the output is the
    position's own value. Zero keys in the padding would take exp(0)-weighted shares and shrink it."""
    layer = make_layer(in_channels=4, out_channels=4, num_heads=2, kernel_size=(5, 7, 7), relative_position=True)
    x = torch.randn(3, 4, 1, 1, 1)
    value = layer.projection(x)[:, -4:]  # (b, nh * dv, 1, 1, 1), head-major like the output
    torch.testing.assert_close(layer(x), value)


@pytest.mark.parametrize("relative_position", [False, True])
def test_position_blind_without_relative_position(relative_position: bool) -> None:
    """Permuting the eight pixels around the centre of a 3 x 3 frame (the centre's whole (1, 3, 3) window) leaves the
    centre's output unchanged without relative_position, and changes it with a non-zero per-offset bias."""
    layer = make_layer(kernel_size=(1, 3, 3), relative_position=relative_position, seed=3)
    x = torch.randn(2, 8, 1, 3, 3)
    permutation = torch.tensor([8, 0, 6, 1, 4, 7, 3, 5, 2])  # pixel 4, the centre (the query), stays
    permuted = x.flatten(3)[..., permutation].reshape(x.shape)
    centre, centre_permuted = layer(x)[..., 1, 1], layer(permuted)[..., 1, 1]
    if relative_position:
        assert not torch.allclose(centre, centre_permuted, rtol=1e-3, atol=1e-3)
    else:
        torch.testing.assert_close(centre_permuted, centre, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("relative_position", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_gradients_match_numerical(stride: int, relative_position: bool) -> None:
    """The hand-written backward of the window attention against finite differences, for the input and every
    parameter (float64; a (3, 3, 3) window on a 2 x 3 x 4 clip, so the masked border matters; fast mode checks
    random projections of the Jacobian)."""
    layer = make_layer(
        in_channels=3, out_channels=4, kernel_size=(3, 3, 3), stride=stride, relative_position=relative_position
    ).double()
    names = [name for name, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(1, 3, 2, 3, 4, dtype=torch.float64, requires_grad=True)

    def forward(x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return functional_call(layer, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(forward, (x, *params), fast_mode=True)


@pytest.mark.parametrize("relative_position", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("num_heads", [1, 4])
def test_shape_and_gradients(num_heads: int, stride: int, relative_position: bool) -> None:
    layer = LocalSelfAttention(
        in_channels=6,
        out_channels=8,
        num_heads=num_heads,
        kernel_size=(3, 3, 3),
        stride=stride,
        relative_position=relative_position,
    )
    x = torch.randn(2, 6, 3, 6, 5, requires_grad=True)
    out = layer(x)
    assert out.shape == (2, 8, 3, 6 // stride, (5 + 1) // stride if stride == 2 else 5)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    expected = {"projection.weight"} | ({"relative_position_bias"} if relative_position else set())
    assert {name for name, _ in layer.named_parameters()} == expected
    for name, p in layer.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def test_sizes_and_initialisation() -> None:
    layer = LocalSelfAttention(in_channels=64, out_channels=64, key_channels=4, relative_position=True)
    assert (layer.num_heads, layer.key_channels, layer.value_channels, layer.window_size) == (8, 4, 8, 245)
    assert layer.projection.weight.shape == (8 * (4 + 4 + 8), 64, 1, 1, 1)
    assert layer.relative_position_bias.shape == (8, 245)
    assert torch.count_nonzero(layer.relative_position_bias) == 0
    expected_std = (2.0 / layer.projection.weight.shape[0]) ** 0.5  # Kaiming fan-out, ReLU gain
    assert 0.9 * expected_std < layer.projection.weight.std().item() < 1.1 * expected_std
    assert LocalSelfAttention(in_channels=8, out_channels=8, kernel_size=[3, 3, 3]).kernel_size == (3, 3, 3)


def saved_tensor_elements(layer: LocalSelfAttention, x: torch.Tensor) -> int:
    """Elements of all tensors autograd keeps for the backward pass of one forward."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        layer(x)
    return total


def test_saved_memory_does_not_grow_with_the_window() -> None:
    """Autograd keeps the same tensors for a 1 x 1 x 1 and a 5 x 7 x 7 window (input, q, k, v, output,
    log-normaliser), not per-offset attention weights or unfolded keys and values."""
    x = torch.randn(1, 8, 4, 6, 6, requires_grad=True)
    small = saved_tensor_elements(make_layer(kernel_size=(1, 1, 1), relative_position=True), x)
    large = saved_tensor_elements(make_layer(kernel_size=(5, 7, 7), relative_position=True), x)
    assert large <= small + 2 * 245  # the bias is the only saved tensor whose size depends on the window
    assert small < 6 * x.numel()


def test_half_precision_input_is_computed_in_float32() -> None:
    layer = make_layer(kernel_size=(3, 3, 3), relative_position=True)
    x = torch.randn(1, 8, 3, 5, 4) * 0.5
    out = layer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    expected = make_layer(kernel_size=(3, 3, 3), relative_position=True)(x)
    torch.testing.assert_close(out.float(), expected, rtol=0.1, atol=0.1)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(kernel_size=(4, 3, 3)), "kernel_size"),
        (dict(kernel_size=(3, 3)), "kernel_size"),
        (dict(kernel_size=3), "kernel_size"),
        (dict(out_channels=10, num_heads=4), "out_channels"),
        (dict(num_heads=0), "num_heads"),
        (dict(in_channels=0), "in_channels"),
        (dict(key_channels=0), "key_channels"),
        (dict(stride=3), "stride"),
        (dict(stride=0), "stride"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict, name: str) -> None:
    arguments = dict(in_channels=8, out_channels=8, num_heads=2, kernel_size=(3, 3, 3))
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=name):
        LocalSelfAttention(**arguments)


@pytest.mark.parametrize(("shape", "message"), [((2, 8, 5, 5), "5-D"), ((2, 6, 3, 5, 5), "in_channels=8")])
def test_wrong_input_raises(shape: tuple[int, ...], message: str) -> None:
    layer = LocalSelfAttention(in_channels=8, out_channels=8, num_heads=2, kernel_size=(3, 3, 3))
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(shape))
