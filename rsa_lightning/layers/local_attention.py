"""Local multi-head self-attention over a space-time window: the "self-attention" (SA) baseline that

    M. Kim, H. Kwon, C. Wang, S. Kwak, M. Cho, "Relational Self-Attention: What's Missing in Attention for Video
    Understanding", NeurIPS 2021, arXiv 2111.01673

compares RSA with, i.e. stand-alone local self-attention (P. Ramachandran, N. Parmar, A. Vaswani, I. Bello,
A. Levskaya, J. Shlens, "Stand-Alone Self-Attention in Vision Models", NeurIPS 2019, arXiv 1906.05909) extended from
a k x k image window to the same kt x kh x kw space-time window as RSA.

Equations, for every position n of the clip and every head h (window offsets m, M = kt * kh * kw of them; q, k, v
come from one bias-free 1x1x1 convolution and are NOT normalised):

    logits     l_m = q_n . k_{n+m} / sqrt(dk)  (+ b[h, m] with relative_position)
    attention  a_m = exp(l_m) / sum_{m' inside} exp(l_m'),   for n+m inside the clip; a_m = 0 outside
    output     y_n = sum_m a_m v_{n+m}                          -> output channel h * dv + e (head-major)

Masking. Neighbours n+m that fall outside the clip (the zero-padding region of a convolution) are excluded from the
softmax: they get no attention weight and do not enter the normaliser. They are not treated as zero keys with zero
values, which would give every border position exp(0)-weighted phantom neighbours that dilute its attention.

Memory. The unfolded (b, C, M, t, h, w) keys and values, and also the (b, nh, M, t, h, w) attention map, would be far
too big for ResNet-50 feature maps (B=2, C=64, 8 x 56 x 56 with M = 245: 3.1 GB per unfolded tensor). The window
attention is therefore one autograd Function (:class:`WindowAttention`) that loops over the M offsets on zero-padded
keys and values with slicing: the forward pass makes two passes (the running maximum of the logits, then the
exp-sums), and saves only q, k, v, the output and the log-normaliser; the backward pass recomputes the attention
weights offset by offset (as FlashAttention does). Memory is O(b C t h w) whatever the window; time is linear in M.
Letting autograd differentiate such a loop instead would store per-offset tensors, O(M) of them.

Deviations and choices (the RSA paper gives no details of its SA baseline; the official RSA code has none):
- Out-of-clip neighbours are masked (above). Common SASA implementations zero-pad the keys instead.
- Positional information is optional and off by default: ``relative_position=True`` adds a learned logit bias per
  head and window offset (nh x M, initialised to zero), a per-offset simplification of SASA's factorised relative
  embeddings (SASA adds q . r_m, with r_m a learned embedding of the offset). Without it the layer is blind to
  where in the window a neighbour is: it attends to a set of neighbours, permuting them within the window does not
  change the output.
- Heads have separate keys and values (standard multi-head attention); RSA shares one key and one value map across
  its heads.
- Stride 2 (spatial only) computes attention at every position and average-pools the output (1, 3, 3) / (1, 2, 2),
  as the RSA layer does; SASA would attend from strided queries.
- The window attention runs in at least float32 (half-precision inputs are upcast and the output cast back): the
  sums run over M = 245 offsets one addition at a time, which float16 or bfloat16 would round at every step.
- The custom backward is not itself differentiable (no double backward).
- Initialisation: Kaiming-normal (fan-out, ReLU) projection, as the RSA layer and the official ResNet use for every
  Conv3d; the ResNet leaves a mixer's own initialisation alone, so :meth:`LocalSelfAttention.reset_parameters`
  applies it.

Axis names used in every einops call:
    b batch; t h w time, height, width; nh heads; dk query/key channels per head; dv value channels per head (e);
    m window offsets, ordered like the flattened kernel (kt, kh, kw): m = (it * kh + ih) * kw + iw.
"""

from __future__ import annotations

import itertools
import math
from typing import Optional

import torch
from einops import rearrange, reduce
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F


def window_offsets(kernel_size: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The M window offsets (it, ih, iw) in flattened-kernel order; offset m of position n reads padded[n + m]."""
    return list(itertools.product(*(range(k) for k in kernel_size)))


def shifted(padded: torch.Tensor, offset: tuple[int, int, int], size: tuple[int, int, int]) -> torch.Tensor:
    """The view of a zero-padded (..., t + kt - 1, h + kh - 1, w + kw - 1) tensor at window offset ``offset``: entry
    n of the view is the neighbour n + m of position n (a slice; no copy)."""
    (it, ih, iw), (t, h, w) = offset, size
    return padded[..., it : it + t, ih : ih + h, iw : iw + w]


def window_logits(
    query: torch.Tensor,
    key_m: torch.Tensor,
    outside_m: torch.Tensor,
    bias: Optional[torch.Tensor],
    index: int,
) -> torch.Tensor:
    """l_m = q_n . k_{n+m} (+ b[h, m]), -inf where n+m is outside the clip; query is already scaled by 1/sqrt(dk)."""
    logits = reduce(query * key_m, "b nh dk t h w -> b nh t h w", "sum") + outside_m
    if bias is not None:
        logits = logits + rearrange(bias[:, index], "nh -> nh 1 1 1")
    return logits  # (b, nh, t, h, w)


class WindowAttention(torch.autograd.Function):
    """Softmax attention of every position over its ``kernel_size`` window, with out-of-clip neighbours masked.

    Inputs: query (b, nh, dk, t, h, w), already multiplied by 1/sqrt(dk); key (b, nh, dk, t, h, w); value
    (b, nh, dv, t, h, w); bias (nh, M) logit bias per head and offset, or None. Output (b, nh, dv, t, h, w).
    Saves only its inputs, its output and the log-normaliser; see "Memory" in the module docstring.
    """

    @staticmethod
    def forward(
        ctx,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        bias: Optional[torch.Tensor],
        kernel_size: tuple[int, int, int],
    ) -> torch.Tensor:
        size = tuple(query.shape[-3:])
        offsets = window_offsets(kernel_size)
        key_padded, value_padded, outside = WindowAttention.pad(query, key, value, kernel_size)

        # Pass 1: the maximum logit of each window (finite: the centre offset is always inside the clip).
        maximum = torch.full_like(query[:, :, 0], -math.inf)  # (b, nh, t, h, w)
        for index, offset in enumerate(offsets):
            key_m, outside_m = shifted(key_padded, offset, size), shifted(outside, offset, size)
            maximum = torch.maximum(maximum, window_logits(query, key_m, outside_m, bias, index))

        # Pass 2: normaliser Z = sum_m exp(l_m - max) and the unnormalised output sum_m exp(l_m - max) v_{n+m}.
        normaliser = torch.zeros_like(maximum)  # (b, nh, t, h, w)
        out = torch.zeros_like(value)  # (b, nh, dv, t, h, w)
        for index, offset in enumerate(offsets):
            key_m, outside_m = shifted(key_padded, offset, size), shifted(outside, offset, size)
            weight = (window_logits(query, key_m, outside_m, bias, index) - maximum).exp()  # exactly 0 outside the clip
            normaliser += weight
            out.addcmul_(weight.unsqueeze(2), shifted(value_padded, offset, size))
        out /= normaliser.unsqueeze(2)
        log_normaliser = maximum + normaliser.log()  # log sum_m exp(l_m), (b, nh, t, h, w)

        ctx.kernel_size = kernel_size
        ctx.save_for_backward(query, key, value, bias, out, log_normaliser)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        """Per offset m, with a_m = exp(l_m - log Z) recomputed and D_n = dy_n . y_n:
        dv_{n+m} += a_m dy_n;  dl_m = a_m (dy_n . v_{n+m} - D_n);  dq_n += dl_m k_{n+m};  dk_{n+m} += dl_m q_n;
        db[h, m] = sum over batch and positions of dl_m."""
        query, key, value, bias, out, log_normaliser = ctx.saved_tensors
        size = tuple(query.shape[-3:])
        grad_out = grad_out.contiguous()
        key_padded, value_padded, outside = WindowAttention.pad(query, key, value, ctx.kernel_size)
        grad_query = torch.zeros_like(query)
        grad_key_padded = torch.zeros_like(key_padded)
        grad_value_padded = torch.zeros_like(value_padded)
        grad_bias = torch.zeros_like(bias) if bias is not None and ctx.needs_input_grad[3] else None

        delta = reduce(grad_out * out, "b nh dv t h w -> b nh t h w", "sum")  # D_n = sum_m a_m (dy_n . v_{n+m})
        for index, offset in enumerate(window_offsets(ctx.kernel_size)):
            key_m, value_m = shifted(key_padded, offset, size), shifted(value_padded, offset, size)
            logits = window_logits(query, key_m, shifted(outside, offset, size), bias, index)
            attention = (logits - log_normaliser).exp()  # a_m (b, nh, t, h, w), 0 outside the clip
            shifted(grad_value_padded, offset, size).addcmul_(attention.unsqueeze(2), grad_out)
            grad_attention = reduce(grad_out * value_m, "b nh dv t h w -> b nh t h w", "sum")
            grad_logits = attention * (grad_attention - delta)  # (b, nh, t, h, w)
            grad_query.addcmul_(grad_logits.unsqueeze(2), key_m)
            shifted(grad_key_padded, offset, size).addcmul_(grad_logits.unsqueeze(2), query)
            if grad_bias is not None:
                grad_bias[:, index] = reduce(grad_logits, "b nh t h w -> nh", "sum")

        grad_key = WindowAttention.crop(grad_key_padded, size)
        grad_value = WindowAttention.crop(grad_value_padded, size)
        return grad_query, grad_key, grad_value, grad_bias, None

    @staticmethod
    def pad(
        query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kernel_size: tuple[int, int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Zero-padded key and value, and the additive mask (t + kt - 1, h + kh - 1, w + kw - 1): 0 inside the clip,
        -inf in the padding."""
        padding = [k // 2 for k in reversed(kernel_size) for _ in range(2)]  # (w, w, h, h, t, t) as F.pad wants
        outside = F.pad(query.new_zeros(query.shape[-3:]), padding, value=-math.inf)
        return F.pad(key, padding), F.pad(value, padding), outside

    @staticmethod
    def crop(padded: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        """The clip region of a padded tensor (inverse of the zero padding)."""
        t, h, w = size
        pt, ph, pw = ((s - n) // 2 for s, n in zip(padded.shape[-3:], size))
        return padded[..., pt : pt + t, ph : ph + h, pw : pw + w]


class LocalSelfAttention(nn.Module):
    """Multi-head softmax self-attention over a local ``kt x kh x kw`` space-time window; input and output
    (B, C, T, H, W).

    Derived sizes (an argument left at None is derived):
        value channels dv = out_channels / num_heads per head (out_channels must be divisible by num_heads).
        key_channels   dk = dv, per head, for queries and keys alike.
    The projection has nh * dk query, nh * dk key and nh * dv value channels, each block head-major. The output has
    nh * dv = out_channels channels, head-major: channel h * dv + e is value channel e of head h.

    Without ``relative_position`` the layer is blind to where in the window a neighbour is (a permutation of the
    window leaves the output unchanged); with it, a learned logit bias per head and offset
    (``relative_position_bias``, nh x M, initialised to zero) makes attention position-dependent.

    Args:
        in_channels: channels C of the input.
        out_channels: channels of the output (= nh * dv).
        stride: spatial stride, 1 or 2; 2 average-pools the output with a (1, 3, 3) window (as the RSA layer).
        num_heads: number of heads nh, each with its own queries, keys and values.
        kernel_size: window (kt, kh, kw), each odd; the window is centred on the query position.
        key_channels: dk per head; None derives it (= dv).
        relative_position: add a learned per-head, per-offset logit bias.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        num_heads: int = 8,
        kernel_size: tuple[int, int, int] = (5, 7, 7),
        key_channels: Optional[int] = None,
        relative_position: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(kernel_size, int):
            raise ValueError(f"kernel_size must be a tuple (kt, kh, kw) of odd sizes, got the int {kernel_size}")
        kernel_size = tuple(kernel_size)
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("num_heads", num_heads)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if key_channels is not None and key_channels < 1:
            raise ValueError(f"key_channels must be positive or None (derive), got {key_channels}")
        if len(kernel_size) != 3 or any(k < 1 or k % 2 == 0 for k in kernel_size):
            raise ValueError(f"kernel_size must be three odd positive sizes (kt, kh, kw), got {kernel_size}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2 (spatial), got {stride}")
        if out_channels % num_heads != 0:
            raise ValueError(f"out_channels ({out_channels}) must be divisible by num_heads ({num_heads})")

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.value_channels = out_channels // num_heads
        self.key_channels = self.value_channels if key_channels is None else key_channels
        self.relative_position = relative_position
        self.window_size = math.prod(kernel_size)

        nh, dk, dv = num_heads, self.key_channels, self.value_channels
        self.projection = nn.Conv3d(in_channels, nh * (2 * dk + dv), 1, bias=False)
        if relative_position:
            self.relative_position_bias = nn.Parameter(torch.empty(nh, self.window_size))
        self.pool = (
            nn.AvgPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)) if stride == 2 else nn.Identity()
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan-out, ReLU) projection; zero relative-position bias (attention starts position-blind)."""
        nn.init.kaiming_normal_(self.projection.weight, mode="fan_out", nonlinearity="relu")
        if self.relative_position:
            nn.init.zeros_(self.relative_position_bias)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, stride={self.stride}, "
            f"num_heads={self.num_heads}, kernel_size={self.kernel_size}, key_channels={self.key_channels}, "
            f"value_channels={self.value_channels}, relative_position={self.relative_position}"
        )

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (scaled by 1/sqrt(dk)), keys and values, each (b, nh, d, t, h, w)."""
        nh, dk, dv = self.num_heads, self.key_channels, self.value_channels
        query, key, value = torch.split(self.projection(x), [nh * dk, nh * dk, nh * dv], dim=1)
        query = rearrange(query, "b (nh dk) t h w -> b nh dk t h w", nh=nh) / math.sqrt(dk)
        key = rearrange(key, "b (nh dk) t h w -> b nh dk t h w", nh=nh)
        value = rearrange(value, "b (nh dv) t h w -> b nh dv t h w", nh=nh)
        return query, key, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, T, H, W) -> (B, out_channels, T, H / stride, W / stride)."""
        if x.dim() != 5:
            raise ValueError(f"LocalSelfAttention expects a 5-D (B, C, T, H, W) input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"LocalSelfAttention built with in_channels={self.in_channels} got an input with "
                f"{x.shape[1]} channels (shape {tuple(x.shape)})"
            )
        query, key, value = self.project(x)
        dtype = torch.promote_types(query.dtype, torch.float32)  # see "Deviations": sums over M offsets
        bias = self.relative_position_bias.to(dtype) if self.relative_position else None
        y = WindowAttention.apply(query.to(dtype), key.to(dtype), value.to(dtype), bias, self.kernel_size)
        out = rearrange(y.to(query.dtype), "b nh dv t h w -> b (nh dv) t h w")  # head-major channels h * dv + e
        return self.pool(out)
