"""Mixed precision: the RSA layer under autocast (bf16, and fp16 where the CPU runs it) stays finite and close to fp32,
its L2 normalisations survive activations whose squares overflow fp16, and rsa_tiny trains with precision bf16-mixed.

Error bound. Under autocast the layer rounds to the low-precision format at about five chained stages (projection,
normalised q/k/v, window sums, kernel, output; accumulation inside each kernel is fp32), each adding a relative error
of at most the unit roundoff u (2^-8 for bf16, 2^-11 for fp16). Independent roundings partly cancel, so the relative
(Frobenius) error of the output stays below 5 u: 2.0e-2 for bf16, 2.4e-3 for fp16 (measured: <= 8e-3 and <= 1e-3).
"""

from __future__ import annotations

import itertools

import hydra
import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_config, tiny_synthetic_overrides

from rsa_lightning.layers import RelationalSelfAttention
from rsa_lightning.layers.rsa import l2_normalise

TYPES = ("V", "R", "V+R")
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def cpu_autocast_supports(dtype: torch.dtype) -> bool:
    try:
        with torch.autocast("cpu", dtype=dtype):
            out = torch.nn.functional.conv3d(torch.randn(1, 1, 3, 3, 3), torch.randn(1, 1, 3, 3, 3), padding=1)
        return out.dtype == dtype
    except (RuntimeError, NotImplementedError):
        return False


DTYPES = [
    pytest.param(torch.bfloat16, id="bf16"),
    pytest.param(
        torch.float16,
        id="fp16",
        marks=pytest.mark.skipif(not cpu_autocast_supports(torch.float16), reason="no fp16 autocast on this CPU"),
    ),
]


def relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    return float((y.float() - reference).norm() / reference.norm())


def layer_and_input(kernel_type: str, context_type: str) -> tuple[RelationalSelfAttention, torch.Tensor]:
    torch.manual_seed(0)
    layer = RelationalSelfAttention(
        in_channels=32,
        out_channels=32,
        num_heads=4,
        kernel_size=(3, 5, 5),
        kernel_type=kernel_type,
        context_type=context_type,
    )
    if context_type == "V+R":
        with torch.no_grad():
            layer.I.add_(0.1 * torch.randn_like(layer.I))  # a trained I, not the identity
    return layer, torch.randn(2, 32, 4, 10, 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 300.0])
@pytest.mark.parametrize(("kernel_type", "context_type"), list(itertools.product(TYPES, TYPES)))
def test_autocast_forward_is_finite_and_close_to_fp32(kernel_type, context_type, scale, dtype):
    """The layer is invariant to its input's scale; at 300x the fp16 sums of squares of the projections overflow, so
    without the fp32 normalisation the fp16 output would be all zeros (relative error 1)."""
    layer, x = layer_and_input(kernel_type, context_type)
    with torch.no_grad():
        reference = layer(x)
        with torch.autocast("cpu", dtype=dtype):
            y = layer(scale * x)
    assert y.dtype == dtype, "autocast should run the layer's products in low precision"
    assert torch.isfinite(y).all()
    assert relative_error(y, reference) < 5 * UNIT_ROUNDOFF[dtype]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_l2_normalise_computes_half_inputs_in_fp32(dtype):
    x = (300 * torch.randn(2, 64, 3, generator=torch.Generator().manual_seed(0))).to(dtype)  # sum(x^2) ~ 6e6
    out = l2_normalise(x, dim=1)
    expected = x.float() / torch.sqrt(x.float().pow(2).sum(dim=1, keepdim=True) + 1e-6)
    assert out.dtype == dtype and torch.equal(out, expected.to(dtype))
    assert torch.allclose(out.float().norm(dim=1), torch.ones(2, 3), atol=5 * UNIT_ROUNDOFF[dtype])
    x32 = x.float()
    assert torch.equal(l2_normalise(x32, dim=1), expected)  # fp32 inputs: the plain formula, unchanged


@pytest.mark.parametrize(("kernel_type", "context_type"), [("V+R", "V+R"), ("R", "R"), ("V", "V")])
def test_autocast_backward_reaches_every_parameter(kernel_type, context_type):
    layer, x = layer_and_input(kernel_type, context_type)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    y.float().square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


class RecordRsaDtype(pl.Callback):
    """Records the dtype of the first RSA layer's output during training steps."""

    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        layer = next(m for m in pl_module.modules() if isinstance(m, RelationalSelfAttention))
        layer.register_forward_hook(lambda module, args, out: self.dtypes.add(out.dtype) if module.training else None)


def test_rsa_tiny_trains_with_bf16_mixed(tmp_path):
    """The real rsa_tiny and synthetic configs with trainer.precision=bf16-mixed (16-mixed is bf16 on a CPU)."""
    overrides = tiny_synthetic_overrides(tmp_path / "synthetic") + ["trainer.precision=bf16-mixed"]
    cfg = compose_config("train", overrides, tmp_path / "run")
    assert cfg.trainer.precision == "bf16-mixed"
    pl.seed_everything(0)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    initial = {k: v.clone() for k, v in model.net.state_dict().items()}
    record = RecordRsaDtype()
    trainer = pl.Trainer(
        accelerator="cpu",
        precision=cfg.trainer.precision,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path / "run",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    trainer.fit(model, datamodule=datamodule)
    assert record.dtypes == {torch.bfloat16}, "the RSA layers should run under bf16 autocast"
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss_epoch"]) and torch.isfinite(metrics["val/loss"])
    state = model.net.state_dict()
    assert all(v.dtype == initial[k].dtype for k, v in state.items())  # fp32 master weights
    moved = [k for k in state if (".conv2.H2." in k or ".conv2.P1" in k) and not torch.equal(state[k], initial[k])]
    assert moved, "the optimiser should have updated the RSA parameters"
