"""The fast path of RelationalSelfAttention computes the reference path's function with less kept for backward.

Outputs within 1e-5 and gradients (input and every parameter) within 1e-4 relative (Frobenius) in fp32, for all 9
kernel x context types, both contraction orders, stride 2, dk != dv, a batch of one and both ways of treating R in
backward (kept or recomputed); a float64 gradcheck; the saved activations measured with saved-tensor hooks; the
channels-last and autocast inputs. The loop reference written from the equations is in test_rsa_layer.py, which
runs every implementation against it.
"""

from __future__ import annotations

import pytest
import torch
from test_rsa_layer import COMBINATIONS, explicit_sizes, randomise

import rsa_lightning.layers.rsa_fast as rsa_fast
from rsa_lightning.layers import RelationalSelfAttention
from rsa_lightning.utils.memory import saved_tensor_bytes

# (layer kwargs, input shape); every config runs for all 9 kernel x context combinations.
CONFIGS = {
    # nh < dd: the value mixing comes after the kernel (8 heads would put it first)
    "nh2_mix_after": (dict(in_channels=6, out_channels=8, num_heads=2, kernel_size=(3, 3, 3)), (2, 6, 3, 5, 5)),
    # nh > dd, non-cubic window wider than the frame in height
    "nh4_mix_first": (dict(in_channels=8, out_channels=8, num_heads=4, kernel_size=(3, 5, 3)), (2, 8, 3, 4, 6)),
    # the layer's default window and heads, stride 2 on an odd frame size, one clip
    "default_stride2": (dict(in_channels=16, out_channels=16, kernel_size=(5, 7, 7), stride=2), (1, 16, 4, 9, 7)),
}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


def pair(kwargs: dict, seed: int = 0) -> tuple[RelationalSelfAttention, RelationalSelfAttention]:
    """A fast and a reference layer with the same random weights (every term of order one)."""
    reference = RelationalSelfAttention(**kwargs, implementation="reference")
    randomise(reference, seed=seed)
    fast = RelationalSelfAttention(**kwargs, implementation="fast")
    fast.load_state_dict(reference.state_dict())
    return fast, reference


def assert_same_function(fast: RelationalSelfAttention, reference: RelationalSelfAttention, x: torch.Tensor) -> None:
    x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_fast, out_ref = fast(x_fast), reference(x_ref)
    assert out_ref.abs().max() > 0.1, "reference output too small for the comparison to mean anything"
    assert relative_error(out_fast, out_ref) < 1e-5
    grad = torch.randn_like(out_ref)
    out_fast.backward(grad)
    out_ref.backward(grad)
    assert relative_error(x_fast.grad, x_ref.grad) < 1e-4
    for (name, p_fast), p_ref in zip(fast.named_parameters(), reference.parameters()):
        assert p_ref.grad.norm() > 0, name
        assert relative_error(p_fast.grad, p_ref.grad) < 1e-4, name


@pytest.mark.parametrize(
    ("keep_relations", "h1_form"), [(False, "folded"), (True, "folded"), (True, "3-D"), (False, "3-D")]
)
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize(("kernel_type", "context_type"), COMBINATIONS)
def test_fast_path_computes_the_reference_function(
    kernel_type: str, context_type: str, config: str, keep_relations: bool, h1_form: str, monkeypatch
) -> None:
    """Both ways of treating R in backward (kept / recomputed) and both forms of the H1 convolution (time-folded
    2-D / 3-D grouped, chosen by the number of key channels) on every config."""
    monkeypatch.setattr(rsa_fast, "keep_relations_for_backward", lambda dk, dd: keep_relations)
    monkeypatch.setattr(rsa_fast, "WIDE_GROUPS", 1 if h1_form == "3-D" else 10**6)
    kwargs, shape = CONFIGS[config]
    fast, reference = pair(dict(kwargs, kernel_type=kernel_type, context_type=context_type))
    torch.manual_seed(1)
    assert_same_function(fast, reference, torch.randn(shape))


@pytest.mark.parametrize(("kernel_type", "context_type"), [("V+R", "V"), ("R", "R"), ("V", "R"), ("R", "V")])
def test_fast_path_with_dk_dv_dd_all_different(kernel_type: str, context_type: str) -> None:
    """dk != dv takes the per-part normalisation; dd != dk changes every product's shape."""
    fast, reference = pair(explicit_sizes(kernel_type, context_type), seed=3)
    assert (fast.key_channels, fast.value_channels) == (3, 4)
    assert_same_function(fast, reference, torch.randn(2, 5, 3, 4, 5))


@pytest.mark.parametrize("keep_relations", [False, True])
@pytest.mark.parametrize(("kernel_type", "context_type"), [("V+R", "V+R"), ("R", "R"), ("V", "V")])
def test_fast_path_gradcheck_in_float64(kernel_type: str, context_type: str, keep_relations: bool, monkeypatch) -> None:
    """The hand-written backward of the products and the recomputation against finite differences."""
    monkeypatch.setattr(rsa_fast, "keep_relations_for_backward", lambda dk, dd: keep_relations)
    layer = RelationalSelfAttention(
        in_channels=4,
        out_channels=4,
        num_heads=2,
        kernel_size=(3, 3, 3),
        kernel_type=kernel_type,
        context_type=context_type,
    ).double()
    randomise(layer, seed=2)
    x = torch.randn(1, 4, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    params = tuple(layer.parameters())

    def run(x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(layer, dict(zip([n for n, _ in layer.named_parameters()], weights)), (x,))

    assert torch.autograd.gradcheck(run, (x, *[p.detach().requires_grad_() for p in params]), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("channels", [64, 256])
def test_fast_path_keeps_at_most_half_the_reference_activations(channels: int) -> None:
    """Saved-tensor bytes of one forward pass (parameters excluded), at the widths of ResNet-50 stages 1 and 3
    (dk = dd = 8: R recomputed in backward; 32: R kept)."""
    fast, reference = pair(dict(in_channels=channels, out_channels=channels))
    x = torch.randn(2, channels, 4, 8, 8, requires_grad=True)
    saved_fast = saved_tensor_bytes(lambda: fast(x), exclude=fast.parameters())
    saved_ref = saved_tensor_bytes(lambda: reference(x), exclude=reference.parameters())
    assert saved_fast <= 0.5 * saved_ref, (saved_fast, saved_ref)
    assert saved_fast > 0


@pytest.mark.parametrize("config", ["nh2_mix_after", "nh4_mix_first"])
@pytest.mark.parametrize(("kernel_type", "context_type"), COMBINATIONS)
def test_keeping_the_windows_computes_the_same_function_and_keeps_more(
    kernel_type: str, context_type: str, config: str
) -> None:
    """recompute_windows=False (the window sums kept from forward, not recomputed in backward): the reference
    path's outputs and gradients, and more bytes saved for backward than the lean default."""
    kwargs, shape = CONFIGS[config]
    kwargs = dict(kwargs, kernel_type=kernel_type, context_type=context_type)
    lean, reference = pair(kwargs)
    keeping = RelationalSelfAttention(**kwargs, recompute_windows=False)
    keeping.load_state_dict(reference.state_dict())
    torch.manual_seed(1)
    x = torch.randn(shape)
    assert_same_function(keeping, reference, x)
    saved = {
        name: saved_tensor_bytes(lambda layer=layer: layer(x.clone().requires_grad_()), exclude=layer.parameters())
        for name, layer in (("lean", lean), ("keeping", keeping))
    }
    assert saved["keeping"] > saved["lean"], saved


def test_recompute_windows_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="recompute_windows must be True or False"):
        RelationalSelfAttention(in_channels=8, out_channels=8, recompute_windows="no")


def test_an_empty_batch_gives_an_empty_output_as_the_reference_path() -> None:
    fast, reference = pair(dict(in_channels=16, out_channels=16, kernel_size=(3, 3, 3)))
    x = torch.randn(0, 16, 4, 9, 9)
    assert fast(x).shape == reference(x).shape == (0, 16, 4, 9, 9)


def test_channels_last_input_gives_the_same_output_in_channels_last() -> None:
    fast, reference = pair(dict(in_channels=8, out_channels=8, num_heads=4, kernel_size=(3, 3, 3)))
    x = torch.randn(2, 8, 3, 5, 5)
    out = fast(x.contiguous(memory_format=torch.channels_last_3d))
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    assert fast(x).is_contiguous()
    assert relative_error(out, reference(x)) < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fast_path_under_autocast_follows_the_reference_path(dtype: torch.dtype) -> None:
    """Same function under CPU autocast: the products run in half precision in both paths, so the two differ by
    half-precision rounding only; gradients flow in the parameters' dtype."""
    fast, reference = pair(dict(in_channels=16, out_channels=16, kernel_size=(3, 5, 5)))
    x = torch.randn(2, 16, 3, 6, 6)
    with torch.autocast("cpu", dtype=dtype):
        out_fast, out_ref = fast(x), reference(x)
        out_fast.float().square().mean().backward()
    assert relative_error(out_fast.float(), out_ref.float()) < (3e-2 if dtype == torch.bfloat16 else 5e-3)
    for name, p in fast.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name


def test_a_network_of_fast_layers_computes_the_reference_network_in_float64():
    """In fp32 a deep network amplifies rounding (RSANet-R50's input gradient moves by 3 % when the input moves by
    1e-7, benchmarks/README.md), so the whole-network check is in float64, where both paths agree to rounding."""
    import functools

    from rsa_lightning.models import ResNet

    nets = {}
    for implementation in ("fast", "reference"):
        torch.manual_seed(0)
        rsa = functools.partial(
            RelationalSelfAttention, num_heads=4, kernel_size=(3, 5, 5), implementation=implementation
        )
        nets[implementation] = ResNet(
            num_classes=5,
            block_counts=(1, 1),
            widths=(16, 32),
            expansion=2,
            stem_width=8,
            stmixer=rsa,
            stmixer_positions=[[0], [0]],
            zero_init_residual=False,
            dropout=0.0,
        ).double()
    x = torch.randn(2, 3, 4, 32, 32, dtype=torch.float64)
    results = {}
    for implementation, net in nets.items():
        xi = x.clone().requires_grad_()
        logits = net(xi)
        logits.square().sum().backward()
        results[implementation] = (logits.detach(), xi.grad, [p.grad for p in net.parameters()])
    fast, reference = results["fast"], results["reference"]
    assert relative_error(fast[0], reference[0]) < 1e-10
    assert relative_error(fast[1], reference[1]) < 1e-10
    for grad_fast, grad_ref in zip(fast[2], reference[2]):
        assert relative_error(grad_fast, grad_ref) < 1e-9
