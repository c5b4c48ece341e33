"""Relational Self-Attention (RSA), the space-time mixer of

    M. Kim, H. Kwon, C. Wang, S. Kwak, M. Cho, "Relational Self-Attention: What's Missing in Attention for Video
    Understanding", NeurIPS 2021, arXiv 2111.01673 (official code: github.com/KimManjin/RSA, ``ops/rsa.py``).

RSA replaces the dot-product attention map by a dynamic kernel that is predicted from the relations (query-key
correlations) in a local space-time window, and enriches the values with their own relational structure
(self-correlations of the values in the window).

Equations, for every position n of the clip (window offsets m, M = kt * kh * kw of them, zero padding at the borders;
v_{n+m,c} is channel c of the value map at the neighbour n+m). q (per head, over its dk channels), k and v are
L2-normalised over channels, x / sqrt(sum(x^2) + 1e-6).

    relational kernel base  R[c, d]  = sum_m H1[c, d, m] k_{n+m,c}                       (dk x dd)
    latent kernel           kappa[h, d] = sum_c q[h, c] (R[c, d] + P1[c, d])           "V+R" (kernel "R": no P1;
                                                                                         kernel "V": kappa = q)
    basic context           F[c, d]  = sum_m H2[d, m] v_{n+m,c}                          (dv x dd)
    relational mixing       A[c, e]  = sum_m G[e, m] v_{n+m,c}                           (dv x dv)
    context                 F'[e, d] = sum_c (A[c, e] + I[c, e]) F[c, d]                 "V+R" (context "R": A only;
                                                                                         context "V": F' = F)
    output                  y[e, h]  = sum_d kappa[h, d] F'[e, d]   -> output channel e * nh + h

Factorisation. Writing the window quantities as M-vectors/matrices (V: M x dv values, K: M x dk keys), the layer
computes the paper's y = (kappa^V + kappa^R)^T (X^V + X^R) with
    basic kernel       kappa^V = P q,  P = H2^T P1^T                          (M x dk)
    relational kernel  kappa^R[m'] = sum_c q_c sum_m H_c[m, m'] k_{n+m,c},  H_c = H1[c]^T H2   (M x M per channel)
    basic context      X^V = V I                                              (M x dv)
    relational context X^R = (V V^T) G = V A,  A = V^T G                      (M x dv)
so no M x M (H) or M x dk (P) transform is ever built: both are factorised through a latent dimension dd (D), and
every sum over the window is a convolution (H1, H2, G). The loop reference in tests/test_rsa_layer.py follows the
equations above term by term.

Deviations. Numerically this is the official layer (same parameters, names and shapes, same output channel order, same
normalisation epsilon); checked against ``ops/rsa.py`` of the official repository. Known differences:
- Stride: the official layer takes a stride tuple and average-pools (1, 3, 3)/(1, 2, 2) whenever any stride entry
  is > 1 (a temporal stride would silently pool space). Here stride is one int, 1 or 2, and is spatial only; the
  pooling itself is the official one.
- Initialisation: the official layer leaves projection/H1/H2/G at PyTorch's default Conv3d init, but the official
  ResNet constructor then re-initialises every Conv3d in the network, these included, with
  ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``. Our ResNet leaves a mixer's initialisation to the mixer,
  so :meth:`RelationalSelfAttention.reset_parameters` applies that Kaiming init itself. P1 and I are initialised as
  in the official layer (N(0, 1) * sqrt(1 / (M * dd)) and the identity).
- I is a learned dv x dv matrix initialised to the identity (official code), so the basic context is V I, not
  exactly V as in the paper. The official code allocates it as eye(dk), which only works because dk == dv is
  required for context "V+R"; it has shape (1, dv, dv) here, identical under that constraint.
- Type names are "V", "R", "V+R" (official: 'V', 'R', 'VplusR').
- Invalid sizes (dk != dv with context "V+R", dk != dd with kernel "V", dv * nh != out_channels) fail at
  construction with a ValueError instead of a shape error in the first forward pass; no prints.
- The official code labels its final rearrange '(b t h w) nh v -> b (nh v)', but the tensor it rearranges is
  (bthw, v, nh), so its output channel is e * nh + h (value-major). This layer reproduces that order.
- Contraction order: P1 and I are applied as shared matrices (q P1 and I^T F) instead of being added to the
  per-position R and A, and when nh < dd the value mixing is applied after the kernel,
  y = (A + I)^T (F kappa^T), which is cheaper than building F' (dv*dv*nh instead of dv*dv*dd multiply-adds per
  position and a dv x nh instead of dv x dd intermediate). Equal in exact arithmetic; fp32 results differ from the
  official order by rounding only.
- H2 and G filter every value channel alike, so they run as one single-input convolution with the stacked weights
  [H2; G] (the official layer runs two); the parameters stay separate, under their official names.

Implementations. ``implementation="reference"`` runs :meth:`RelationalSelfAttention.forward_reference`, the
formulation above, one method per equation. ``implementation="fast"`` (the default) runs
:func:`rsa_lightning.layers.rsa_fast.rsa_fast`: the same function, the same parameters and state-dict keys, laid out
positions-first, with the time taps folded into 2-D convolutions, the per-position products' backward written out,
and the window sums recomputed in backward instead of kept (see that file's header for each choice and its measured
effect). Outputs agree to 1e-5 and gradients to 1e-4 relative in fp32 (tests/test_rsa_fast.py).
:meth:`RelationalSelfAttention.effective_kernels` uses the reference methods.

Precision (mixed precision, ``trainer.precision=bf16-mixed`` / ``16-mixed``; the official runs were fp32). Under
autocast the projection, the window convolutions (H1, [H2; G]) and the einsum products run in fp16/bf16; only the
three L2 normalisations are computed in fp32 (:func:`l2_normalise`), which the official layer does not do.
- Normalisations: needed. In fp16 the sum of squares of a dk-channel activation overflows once its root-mean-square
  exceeds 256 / sqrt(dk) (32 for dk = 64), which trained ResNet activations can reach; the layer then outputs 0.
  The layer is invariant to the scale of its input, and stays so in fp16 only with the fp32 normalisation.
- Window sums and products: not needed. After normalisation |q|, |k|, |v| <= 1 entrywise and in norm, so every window
  sum is bounded by the l1 norm of its filter (|R[c, d]| <= ||H1[c, d]||_1, |F[c, d]| <= ||H2[d]||_1,
  |A[c, e]| <= ||G[e]||_1, sums of M = kt * kh * kw terms), the kernel by ||R[:, d]||_2 + ||P1[:, d]||_2 and the
  output by products of such norms: an fp16 overflow (65504) needs filters whose weights average above
  65504 / M (267 for M = 245), against ~0.01 or less at the Kaiming initialisation, kept small by weight decay. Running
  them in fp32 would forfeit the speed-up on nearly all of the layer's multiply-adds for no range benefit; the cost is
  rounding only: on random inputs the output's relative (Frobenius) error against fp32 is ~1e-3 in fp16 and ~1e-2 in
  bf16 (tests/test_mixed_precision.py).

Axis names used in every einops call:
    b batch; t h w time, height, width; nh heads; dk query/key channels; dv value channels (c in the equations);
    dv_out mixed value channels (e); dd latent channels (d); m window offsets (only inside the convolutions);
    j the axis carried through the value mixing (dd for F', nh for F kappa^T).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from einops import einsum, rearrange
from torch import nn
from torch.nn import functional as F

from rsa_lightning.layers.rsa_fast import rsa_fast

KERNEL_TYPES = ("V", "R", "V+R")
CONTEXT_TYPES = ("V", "R", "V+R")
L2_EPS = 1e-6
HALF_DTYPES = (torch.float16, torch.bfloat16)
IMPLEMENTATIONS = ("fast", "reference")


def l2_normalise(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x / sqrt(sum(x^2) + 1e-6) along ``dim`` (the official RSA normalisation; eps inside the square root).

    A half-precision input (fp16 / bf16, e.g. a projection under autocast) is normalised in fp32 and the result cast
    back to its dtype: in fp16 the sum of squares overflows (> 65504) as soon as the channels' root-mean-square exceeds
    256 / sqrt(channels), and x / inf would silently zero the queries, keys or values. None of these elementwise ops is
    one that autocast runs in lower precision, so the explicit upcast suffices (no autocast region is needed).
    """
    if x.dtype in HALF_DTYPES:
        x32 = x.float()
        return (x32 / torch.sqrt(x32.pow(2).sum(dim=dim, keepdim=True) + L2_EPS)).to(x.dtype)
    return x / torch.sqrt(x.pow(2).sum(dim=dim, keepdim=True) + L2_EPS)


class RelationalSelfAttention(nn.Module):
    """Relational Self-Attention over a local ``kt x kh x kw`` space-time window; input and output (B, C, T, H, W).

    Derived sizes (an argument left at None is derived):
        value_channels dv  = out_channels / num_heads; out_channels must equal dv * num_heads.
        key_channels   dk  = dv (per head for the queries; the single key map also has dk channels).
        latent_channels dd = dk.
    The output has dv * num_heads channels, ordered value-major: channel e * num_heads + h is value channel e of
    head h (the official layout, needed to load its checkpoints).

    Args:
        in_channels: channels C of the input.
        out_channels: channels of the output (= dv * num_heads).
        num_heads: number of queries nh per position, all sharing one key and one value map.
        kernel_size: window (kt, kh, kw), each odd; zero padding keeps T, H, W.
        stride: spatial stride, 1 or 2; 2 average-pools the output with a (1, 3, 3) window (official layer).
        kernel_type: "V" basic kernel only (kappa = q, needs dk == dd), "R" relational only, "V+R" both.
        context_type: "V" basic context only, "R" relational only, "V+R" both (needs dk == dv, as officially).
        key_channels: dk; None derives it.
        value_channels: dv; None derives it.
        latent_channels: dd; None derives it.
        implementation: "fast" (:mod:`rsa_lightning.layers.rsa_fast`) or "reference" (:meth:`forward_reference`);
            the same function and parameters, different speed and memory (``benchmarks/rsa_layer.py``).
        recompute_windows: fast path only: recompute the window sums [F, A] and R in backward (True, the lean
            default: saved activations at most half the reference path's) or keep them from the forward pass (False:
            one forward pass of the window convolutions less, about 18 % of the layer's training time at
            ``rsa_tiny``'s sizes, for 1.4-1.6x its saved activations; for small layers whose memory does not
            matter). Bit-identical results either way (``benchmarks/tiny_options.py``).

    Parameters (only those the kernel/context types use exist): ``projection`` (1x1x1 conv to nh*dk queries, one
    dk-channel key unless kernel "V", one dv-channel value), ``H1`` (kernel "R"/"V+R"), ``P1`` (kernel "V+R"),
    ``H2`` (always), ``G`` (context "R"/"V+R"), ``I`` (context "V+R").
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        num_heads: int = 8,
        kernel_size: tuple[int, int, int] = (5, 7, 7),
        stride: int = 1,
        kernel_type: str = "V+R",
        context_type: str = "V+R",
        key_channels: Optional[int] = None,
        value_channels: Optional[int] = None,
        latent_channels: Optional[int] = None,
        implementation: str = "fast",
        recompute_windows: bool = True,
    ) -> None:
        super().__init__()
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        if not isinstance(recompute_windows, bool):
            raise ValueError(f"recompute_windows must be True or False, got {recompute_windows!r}")
        if isinstance(kernel_size, int):
            raise ValueError(f"kernel_size must be a tuple (kt, kh, kw) of odd sizes, got the int {kernel_size}")
        kernel_size = tuple(kernel_size)
        self._check_arguments(
            in_channels=in_channels,
            out_channels=out_channels,
            num_heads=num_heads,
            kernel_size=kernel_size,
            stride=stride,
            kernel_type=kernel_type,
            context_type=context_type,
            key_channels=key_channels,
            value_channels=value_channels,
            latent_channels=latent_channels,
        )
        dv = out_channels // num_heads if value_channels is None else value_channels
        dk = dv if key_channels is None else key_channels
        dd = dk if latent_channels is None else latent_channels
        if dv * num_heads != out_channels:
            raise ValueError(
                f"value_channels ({dv}) * num_heads ({num_heads}) must equal out_channels ({out_channels})"
            )
        if context_type == "V+R" and dk != dv:
            raise ValueError(
                f"context_type 'V+R' needs key_channels == value_channels (official layer), got key_channels={dk}, "
                f"value_channels={dv}"
            )
        if kernel_type == "V" and dd != dk:
            raise ValueError(
                f"kernel_type 'V' uses the query as the latent kernel, so latent_channels must equal key_channels; "
                f"got latent_channels={dd}, key_channels={dk}"
            )

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.stride = stride
        self.kernel_type = kernel_type
        self.context_type = context_type
        self.key_channels = dk
        self.value_channels = dv
        self.latent_channels = dd
        self.implementation = implementation
        self.recompute_windows = recompute_windows
        self.window_size = math.prod(kernel_size)
        # Which side of the value mixing gets the kernel first; see "Contraction order" in the module docstring.
        self.mix_after_aggregation = num_heads < dd

        padding = tuple(k // 2 for k in kernel_size)
        has_key = kernel_type != "V"
        self.projection = nn.Conv3d(in_channels, num_heads * dk + (dk if has_key else 0) + dv, 1, bias=False)
        if has_key:
            self.H1 = nn.Conv3d(dk, dk * dd, kernel_size, padding=padding, groups=dk, bias=False)
        if kernel_type == "V+R":
            self.P1 = nn.Parameter(torch.empty(1, dk, dd))
        self.H2 = nn.Conv3d(1, dd, kernel_size, padding=padding, bias=False)
        if context_type != "V":
            self.G = nn.Conv3d(1, dv, kernel_size, padding=padding, bias=False)
        if context_type == "V+R":
            self.I = nn.Parameter(torch.empty(1, dv, dv))
        self.pool = (
            nn.AvgPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)) if stride == 2 else nn.Identity()
        )
        self.reset_parameters()

    @staticmethod
    def _check_arguments(
        *,
        in_channels: int,
        out_channels: int,
        num_heads: int,
        kernel_size: tuple[int, ...],
        stride: int,
        kernel_type: str,
        context_type: str,
        key_channels: Optional[int],
        value_channels: Optional[int],
        latent_channels: Optional[int],
    ) -> None:
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("num_heads", num_heads)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        for name, value in (
            ("key_channels", key_channels),
            ("value_channels", value_channels),
            ("latent_channels", latent_channels),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive or None (derive), got {value}")
        if len(kernel_size) != 3 or any(k < 1 or k % 2 == 0 for k in kernel_size):
            raise ValueError(f"kernel_size must be three odd positive sizes (kt, kh, kw), got {kernel_size}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2 (spatial), got {stride}")
        if kernel_type not in KERNEL_TYPES:
            raise ValueError(f"kernel_type must be one of {KERNEL_TYPES}, got {kernel_type!r}")
        if context_type not in CONTEXT_TYPES:
            raise ValueError(f"context_type must be one of {CONTEXT_TYPES}, got {context_type!r}")
        if out_channels % num_heads != 0:
            raise ValueError(f"out_channels ({out_channels}) must be divisible by num_heads ({num_heads})")

    def reset_parameters(self) -> None:
        """Official initialisation: Kaiming-normal (fan-out, ReLU) convolutions, as the official ResNet applies to
        every Conv3d; P1 ~ N(0, 1) * sqrt(1 / (M * dd)); I = identity."""
        for conv in (self.projection, getattr(self, "H1", None), self.H2, getattr(self, "G", None)):
            if conv is not None:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if self.kernel_type == "V+R":
            with torch.no_grad():
                self.P1.normal_().mul_(math.sqrt(1.0 / (self.window_size * self.latent_channels)))
        if self.context_type == "V+R":
            with torch.no_grad():
                self.I.copy_(torch.eye(self.value_channels).unsqueeze(0))

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, num_heads={self.num_heads}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, kernel_type={self.kernel_type!r}, "
            f"context_type={self.context_type!r}, key_channels={self.key_channels}, "
            f"value_channels={self.value_channels}, latent_channels={self.latent_channels}, "
            f"implementation={self.implementation!r}" + ("" if self.recompute_windows else ", recompute_windows=False")
        )

    # --- equations ------------------------------------------------------------------------------------------------

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """Queries, key (None for kernel "V") and value, each L2-normalised over its channels."""
        dk, dv, nh = self.key_channels, self.value_channels, self.num_heads
        key_size = dk if self.kernel_type != "V" else 0
        query, key, value = torch.split(self.projection(x), [nh * dk, key_size, dv], dim=1)
        query = l2_normalise(rearrange(query, "b (nh dk) t h w -> b nh dk t h w", nh=nh), dim=2)
        key = l2_normalise(key, dim=1) if key_size else None  # (b, dk, t, h, w)
        return query, key, l2_normalise(value, dim=1)  # value (b, dv, t, h, w)

    def relational_kernel(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """kappa^R in latent form: sum_c q[h, c] R[c, d], with R[c, d] = sum_m H1[c, d, m] k_{n+m,c}."""
        base = rearrange(self.H1(key), "b (dk dd) t h w -> b dk dd t h w", dk=self.key_channels)
        return einsum(query, base, "b nh dk t h w, b dk dd t h w -> b nh dd t h w")

    def basic_kernel(self, query: torch.Tensor) -> torch.Tensor:
        """kappa^V in latent form: sum_c q[h, c] P1[c, d] (kernel "V": the query itself)."""
        if self.kernel_type == "V":
            return query  # (b, nh, dk = dd, t, h, w)
        return einsum(query, self.P1[0], "b nh dk t h w, dk dd -> b nh dd t h w")

    def kernel(self, query: torch.Tensor, key: Optional[torch.Tensor]) -> torch.Tensor:
        """Latent kernel kappa (b, nh, dd, t, h, w) of the configured kernel type."""
        if self.kernel_type == "V":
            return self.basic_kernel(query)
        if self.kernel_type == "R":
            return self.relational_kernel(query, key)
        return self.basic_kernel(query) + self.relational_kernel(query, key)

    def value_windows(self, value: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Both window sums over the values, F (basic context) and A (relational mixing; None for context "V").

        F[c, d] = sum_m H2[d, m] v_{n+m,c}: the values of the window projected to dd latent offsets.
        A[c, e] = sum_m G[e, m] v_{n+m,c}, so that the relational context is X^R = V A = (V V^T) G.
        Both filter every value channel alike, so they run as ONE single-input convolution with the stacked
        weights [H2; G]: the input is read once, forward and backward (1.8x faster than two convolutions, measured
        forward + backward for 16 clips of 8 x 16 x 16 with dv = dd = 4 on 2 CPU cores).
        """
        dv, dd = self.value_channels, self.latent_channels
        per_channel = rearrange(value, "b dv t h w -> (b dv) 1 t h w")
        if self.context_type == "V":
            return rearrange(self.H2(per_channel), "(b dv) dd t h w -> b dv dd t h w", dv=dv), None
        weight = torch.cat([self.H2.weight, self.G.weight])  # (dd + dv, 1, kt, kh, kw)
        both = F.conv3d(per_channel, weight, padding=self.H2.padding)
        both = rearrange(both, "(b dv) j t h w -> b dv j t h w", dv=dv)
        return both[:, :, :dd], both[:, :, dd:]

    def mix_values(self, features: torch.Tensor, mixing: torch.Tensor) -> torch.Tensor:
        """sum_c (A[c, e] + I[c, e]) features[c, j] (context "R": A only): basic + relational context."""
        mixed = einsum(mixing, features, "b dv dv_out t h w, b dv j t h w -> b dv_out j t h w")
        if self.context_type == "V+R":
            mixed = mixed + einsum(self.I[0], features, "dv dv_out, b dv j t h w -> b dv_out j t h w")
        return mixed

    @staticmethod
    def aggregate(kernel: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """y[e, h] = sum_d kappa[h, d] context[e, d]."""
        return einsum(kernel, context, "b nh dd t h w, b dv dd t h w -> b dv nh t h w")

    # --- forward --------------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, T, H, W) -> (B, out_channels, T, H / stride, W / stride), by :meth:`forward_fast` or
        :meth:`forward_reference` (``implementation``); both compute the same function.

        Raises:
            ValueError: ``x`` not 5-D or with other than ``in_channels`` channels.
        """
        if x.dim() != 5:
            raise ValueError(f"RelationalSelfAttention expects a 5-D (B, C, T, H, W) input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"RelationalSelfAttention built with in_channels={self.in_channels} got an input with "
                f"{x.shape[1]} channels (shape {tuple(x.shape)})"
            )
        if self.implementation == "fast" and x.numel():  # an empty batch: the reference path returns it as is
            return self.forward_fast(x)
        return self.forward_reference(x)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The reference formulation, one method per equation, channels first (b, channels, t, h, w) throughout."""
        query, key, value = self.project(x)
        kernel = self.kernel(query, key)  # (b, nh, dd, t, h, w)
        context, mixing = self.value_windows(value)  # F (b, dv, dd, t, h, w), A (b, dv, dv_out, t, h, w) or None
        if mixing is None:
            y = self.aggregate(kernel, context)
        elif self.mix_after_aggregation:
            y = self.mix_values(self.aggregate(kernel, context), mixing)
        else:
            y = self.aggregate(kernel, self.mix_values(context, mixing))
        out = rearrange(y, "b dv nh t h w -> b (dv nh) t h w")  # value-major channels e * nh + h
        return self.pool(out)

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """The same function as :meth:`forward_reference`, laid out for speed and memory (see :mod:`.rsa_fast`)."""
        out = rsa_fast(self, x)  # (b, dv * nh, t, h, w)
        return self.pool(out)

    # --- inspection -----------------------------------------------------------------------------------------------

    def effective_kernels(self, x: torch.Tensor, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """The kernels the layer applies at ``positions``, as weights over the window: kappa_h = H2^T kappa_latent.

        With context "V" the output of head h at position n is y[e, h] = sum_m kappa_h[m] v_{n+m,e}; with the
        relational context the enriched values (X^V + X^R)[m, e] take the place of v_{n+m,e}. kappa_h, one weight per
        window offset m, is the paper's dynamic kernel, which the layer itself never builds (it aggregates in the
        latent dd space; see "Factorisation" in the module docstring). Computed with the layer's own projection and
        parameters (:meth:`project`, :meth:`basic_kernel`, :meth:`relational_kernel`, ``H2``), before the stride
        pooling.

        Args:
            x: the layer's input (B, in_channels, T, H, W).
            positions: (N, 4) integer rows (b, t, h, w): clip in the batch and query position at the input's
                resolution.

        Returns:
            ``{"basic": kappa^V, "relational": kappa^R, "combined": kappa^V + kappa^R}`` (only the terms of the
            kernel type; "combined" is always there and is the kernel the layer applies), each (N, nh, kt, kh, kw).
            Entry [i, head, p, q, r] weighs the neighbour (t + p - kt // 2, h + q - kh // 2, w + r - kw // 2) of
            the i-th position (b, t, h, w) (a cross-correlation, as ``nn.Conv3d``); neighbours outside the clip are
            zero padding.

        Raises:
            ValueError: ``positions`` not of shape (N, 4) or outside the input.
        """
        if positions.dim() != 2 or positions.shape[1] != 4:
            raise ValueError(f"positions must be (N, 4) rows (b, t, h, w), got shape {tuple(positions.shape)}")
        bounds = torch.tensor([x.shape[0], *x.shape[2:]], device=positions.device)
        if positions.numel() and ((positions < 0) | (positions >= bounds)).any():
            raise ValueError(f"positions must lie inside the input (B, T, H, W) = {tuple(bounds.tolist())}")
        query, key, _ = self.project(x)
        latent = {}  # name -> (b, nh, dd, t, h, w)
        if self.kernel_type != "R":
            latent["basic"] = self.basic_kernel(query)
        if self.kernel_type != "V":
            latent["relational"] = self.relational_kernel(query, key)
        b, t, h, w = positions.long().unbind(dim=1)
        at = {
            name: rearrange(kernel, "b nh dd t h w -> b t h w nh dd")[b, t, h, w]  # (n, nh, dd)
            for name, kernel in latent.items()
        }
        at["combined"] = sum(at.values())
        offsets = rearrange(self.H2.weight, "dd 1 kt kh kw -> dd kt kh kw")  # H2: latent -> window offsets
        return {name: einsum(kernel, offsets, "n nh dd, dd kt kh kw -> n nh kt kh kw") for name, kernel in at.items()}
