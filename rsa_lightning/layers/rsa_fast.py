"""The fast formulation of Relational Self-Attention: the function of ``RelationalSelfAttention.forward_reference``
(see :mod:`rsa_lightning.layers.rsa` for the paper, the equations and the deviations from the official layer),
computed in a layout chosen for CPU convolutions and small matrix products, with less kept for backward.

What changes, and why (forward + backward, fp32, one thread, batch 2 x 8 frames at the RSANet-R50 stage shapes;
``benchmarks/rsa_layer.py``, figures in ``benchmarks/README.md``):
- Positions first. Every per-position tensor is a row matrix (P, ...), P = b * t * h * w (the channels-last layout):
  the projection is one matrix product, R comes out of its convolution as (P, dk, dd) without a copy, and every
  product of the layer is one batched product over P small matrices (:func:`position_matmul`).
- Time folded into channels. A (kt, kh, kw) window sum over one channel equals a (kh, kw) 2-D convolution over kt
  time-shifted copies of it (:func:`time_shifted`: channel c * kt + p holds frame t + p - kt // 2, zero outside the
  clip). oneDNN's backward of the reference's 3-D convolutions with one input channel (per group) is 3-10x their
  forward; over kt input channels, channels-last, it is 2-4x. The key's H1 sums are a grouped 2-D convolution over
  the (b * t) frames (:func:`window_sums`); the values' [H2; G] sums, whose filters are shared by every value
  channel, a 2-D convolution over (b * dv * t) one-channel frames (:func:`value_windows`).
- Small products element-wise. ``bmm`` pays a fixed cost per matrix; when the matrices are tiny (rsa_tiny's dk = dv =
  2 or 4) :func:`position_matmul` sums k element-wise products over all positions at once instead.
- P1 and I folded in: kappa = q (R + P1) (the official form) and the value mixing uses A + I, one product each.
- The products' backward written out (:func:`kernel_and_context_backward`): the per-position gradients are the
  transposed products (dX = dZ Y, dY = dZ^T X), no autograd graph of the products is kept.
- Recomputation. Kept for backward: the normalised queries, key and values, the latent kernel and (when the mixing
  comes last) F kappa^T, about (3 nh + 2) * dv values per position. The window sums [F, A] (dv * (dd + dv) values)
  are recomputed in backward, and R (dk * dd) too where it is small (:func:`keep_relations_for_backward`); the
  reference path keeps all of them, which is most of its saved activations. Cost: one more forward pass of those
  convolutions, about a quarter of their forward + backward time. ``recompute_windows=False`` (the layer's option)
  keeps [F, A] and R instead, for layers whose memory does not matter (``rsa_tiny``).
- Normalisation keeps its output and norm only (:class:`_L2Normalise`), not its input, square and sum, and normalises
  the queries, key and values of a position in one call when dk = dv (one backward, no zero-filled gradient slices).

The results equal the reference path's up to fp32 rounding (other summation orders): outputs within 1e-5 and
gradients within 1e-4 relative, for all 9 kernel x context types (``tests/test_rsa_fast.py``), and both paths match
the float64 loop written from the equations (``tests/test_rsa_layer.py``). Under autocast the convolutions and
``bmm`` run in the autocast dtype as in the reference path; the normalisation is computed in fp32 in both.

Axis names as in :mod:`rsa_lightning.layers.rsa`; P = b * t * h * w positions, row-major over (b, t, h, w).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch.nn import functional as F

if TYPE_CHECKING:
    from rsa_lightning.layers.rsa import RelationalSelfAttention

L2_EPS = 1e-6  # the official normalisation epsilon (also rsa.L2_EPS)
HALF_DTYPES = (torch.float16, torch.bfloat16)


class _L2Normalise(torch.autograd.Function):
    """x / sqrt(sum(x^2) + 1e-6) over the last dim, keeping only the output y and the norm n for backward:
    dx = (dy - y * sum(dy * y)) / n. Half-precision inputs are normalised in fp32 (see ``rsa.l2_normalise``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float() if x.dtype in HALF_DTYPES else x
        norm = torch.sqrt(x32.pow(2).sum(dim=-1, keepdim=True) + L2_EPS)  # (..., 1)
        y = (x32 / norm).to(x.dtype)
        ctx.save_for_backward(y, norm)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        y, norm = ctx.saved_tensors
        y32, g32 = y.to(norm.dtype), grad.to(norm.dtype)
        return ((g32 - y32 * (g32 * y32).sum(dim=-1, keepdim=True)) / norm).to(grad.dtype)


def autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype active for ``device``'s type, or None (autocast off, or a device type autocast does not
    know, such as ``meta``, which :mod:`rsa_lightning.tools.flops` uses)."""
    try:
        return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    except RuntimeError:  # "unknown device type for autocast"
        return None


def l2_normalise_rows(x: torch.Tensor) -> torch.Tensor:
    """L2 normalisation over the last dim (the official epsilon), lean in memory; see :class:`_L2Normalise`."""
    return _L2Normalise.apply(x)


def time_shifted(rows: torch.Tensor, shape: tuple[int, int, int, int], kt: int) -> torch.Tensor:
    """kt time-shifted copies of every channel, as frames for a 2-D convolution.

    Args:
        rows: (P, c) per-position channels, P = b * t * h * w row-major.
        shape: (b, t, h, w).
        kt: temporal window size (odd).

    Returns:
        (b * t, c * kt, h, w) in channels-last memory: channel ci * kt + p of frame (b, t) is channel ci of frame
        t + p - kt // 2 (zero outside the clip), so a (kh, kw) convolution with kt input channels per group is the
        (kt, kh, kw) window sum.
    """
    b, t, h, w = shape
    c = rows.shape[1]
    padded = F.pad(rows.reshape(b, t, h * w * c), (0, 0, kt // 2, kt // 2))  # (b, t + kt - 1, h w c)
    shifted = padded.unfold(1, kt, 1)  # (b, t, h w c, kt): a view
    frames = shifted.reshape(b * t, h, w, c * kt)  # the one copy
    return frames.permute(0, 3, 1, 2)  # (b t, c kt, h, w), channels-last strides


WIDE_GROUPS = 32  # window_sums: from this many groups on, the 3-D grouped convolution is the faster form


def window_sums(
    rows: torch.Tensor, weight: torch.Tensor, shape: tuple[int, int, int, int], groups: int
) -> torch.Tensor:
    """Per-position window sums of a grouped (kt, kh, kw) convolution with one input channel per group.

    Args:
        rows: (P, groups) input channels per position.
        weight: (groups * o, 1, kt, kh, kw), the weight of ``nn.Conv3d(groups, groups * o, groups=groups)``.
        shape: (b, t, h, w).
        groups: input channels (one per group).

    Returns:
        (P, groups, o): entry [n, c, j] = sum_m weight[c * o + j, 0, m] rows[n + m, c] (zero padding), equal to the
        zero-padded ``F.conv3d`` with that weight.

    Below ``WIDE_GROUPS`` groups this is a time-folded grouped 2-D convolution (:func:`time_shifted`), channels-last,
    whose output is already (P, groups, o); from there on the 3-D grouped convolution itself, whose forward + backward
    is then faster (165 vs 189 ms at 32 groups, 155 vs 186 ms at 64, against 238 vs 146 ms at 16: RSANet-R50 stage
    shapes, one thread).
    """
    kt, kh, kw = weight.shape[2:]
    if groups >= WIDE_GROUPS:  # the 3-D grouped convolution, on (b, groups, t, h, w) clips
        b, t, h, w = shape
        clips = rows.reshape(b, t, h, w, groups).permute(0, 4, 1, 2, 3)  # (b, groups, t, h, w), a strided view
        out = F.conv3d(clips.contiguous(), weight, padding=(kt // 2, kh // 2, kw // 2), groups=groups)
        return out.permute(0, 2, 3, 4, 1).reshape(rows.shape[0], groups, -1)  # (P, groups, o)
    out = F.conv2d(
        time_shifted(rows, shape, kt),
        weight.reshape(weight.shape[0], kt, kh, kw),  # (groups o, kt, kh, kw): kt input channels per group
        padding=(kh // 2, kw // 2),
        groups=groups,
    )  # (b t, groups o, h, w), channels-last
    return out.permute(0, 2, 3, 1).reshape(rows.shape[0], groups, -1)  # (P, groups, o): a view when channels-last


def value_windows(value: torch.Tensor, weight: torch.Tensor, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Window sums of every value channel with the shared filters [H2; G]: the basic context F and the mixing A.

    Forward only (inside :class:`_RecomputedWindows`; the gradients come from :func:`value_windows_backward`). Every
    value channel is filtered alike, so the channels go into the batch: one 3-D convolution over b * dv one-channel
    clips with J = dd (+ dv) outputs, oneDNN's fastest forward here (1.5-2x the time-folded form below).

    Args:
        value: (P, dv) normalised values.
        weight: (J, 1, kt, kh, kw), the stacked [H2; G] weights.
        shape: (b, t, h, w).

    Returns:
        (P, dv, J): entry [n, c, j] = sum_m weight[j, 0, m] value[n + m, c] (zero padding).
    """
    b, t, h, w = shape
    dv, outputs = value.shape[1], weight.shape[0]
    padding = tuple(k // 2 for k in weight.shape[2:])
    clips = value.reshape(b, t * h * w, dv).transpose(1, 2).reshape(b * dv, 1, t, h, w)  # one clip per channel
    out = F.conv3d(clips, weight, padding=padding)  # (b dv, J, t, h, w)
    return out.view(b, dv, outputs, t * h * w).permute(0, 3, 1, 2).reshape(-1, dv, outputs)  # (P, dv, J)


def value_windows_backward(
    grad: torch.Tensor, value: torch.Tensor, weight: torch.Tensor, shape: tuple[int, int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of :func:`value_windows` for the output gradient ``grad`` (P, dv, J): d value (P, dv) and d weight.

    Computed on the time-folded form of the same convolution: (b * dv * t) frames of kt time-shifted copies of one
    channel (:func:`time_shifted`), a (kh, kw) 2-D convolution, channels-last. Its backward is 2-3x faster than that of
    the 3-D convolution over one input channel (measured at the RSANet-R50 stage shapes).
    """
    b, t, h, w = shape
    dv, outputs = value.shape[1], weight.shape[0]
    kt, kh, kw = weight.shape[2:]
    with torch.enable_grad():
        columns = value.detach().reshape(b, t * h * w, dv).transpose(1, 2).reshape(-1, 1).requires_grad_()
        frames = time_shifted(columns, (b * dv, t, h, w), kt)  # (b dv t, kt, h, w), channels-last
    grad_out = grad.view(b, t, h, w, dv, outputs).permute(0, 4, 1, 2, 3, 5).reshape(b * dv * t, h, w, outputs)
    grad_out = grad_out.permute(0, 3, 1, 2)  # (b dv t, J, h, w), channels-last
    weight_2d = weight.reshape(outputs, kt, kh, kw)
    dtype = autocast_dtype(grad_out.device)  # the dtype the forward convolution ran in
    if dtype is None:
        dtype = torch.promote_types(grad_out.dtype, frames.dtype)
    grad_frames, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad_out.to(dtype),
        frames.detach().to(dtype),
        weight_2d.to(dtype),
        None,
        [1, 1],
        [kh // 2, kw // 2],
        [1, 1],
        False,
        [0, 0],
        1,
        [True, True, False],
    )
    (grad_columns,) = torch.autograd.grad(frames, columns, grad_frames.to(frames.dtype))  # sums the time shifts
    grad_value = grad_columns.view(b, dv, t * h * w).transpose(1, 2).reshape(-1, dv)  # (P, dv)
    return grad_value.to(value.dtype), grad_weight.view_as(weight).to(weight.dtype)


SMALL_PRODUCT = 128  # position_matmul: matrices with m * k * n up to this -> element-wise products


def position_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One small matrix product per position: (P, m, k) @ (P, k, n) -> (P, m, n), as ``torch.bmm``.

    ``bmm`` costs a fixed overhead per matrix, which dominates when the matrices are tiny (rsa_tiny: k = 2 or 4).
    For m * k * n <= ``SMALL_PRODUCT`` (and outside autocast, whose dtype rules only ``bmm`` follows) the product is
    k element-wise multiply-adds over (m, n, P) tensors with the positions innermost: 1.3-2.7x faster than ``bmm``
    at P = 25088 for (m, k, n) = (8, 2, 2), (8, 4, 4), (4, 4, 8), (4, 8, 4), and 5x slower at (8, 8, 8) (measured,
    one thread). The result is then a (P, m, n) view of an (m, n, P) tensor; equal to ``bmm``'s up to the order
    of the sums.
    """
    m, k, n = a.shape[1], a.shape[2], b.shape[2]
    if m * k * n > SMALL_PRODUCT or autocast_dtype(a.device) is not None:
        return torch.bmm(a, b)
    a_t = a.permute(1, 2, 0).contiguous()  # (m, k, P)
    b_t = b.permute(1, 2, 0).contiguous()  # (k, n, P)
    out = a_t[:, 0, None, :] * b_t[None, 0]  # (m, n, P)
    for i in range(1, k):
        out.addcmul_(a_t[:, i, None, :], b_t[None, i])
    return out.permute(2, 0, 1)


def with_p1(relations: torch.Tensor, p1: Optional[torch.Tensor]) -> torch.Tensor:
    """R + P1 (kernel "V+R": kappa = q (R + P1), the official form) or R; (P, dk, dd)."""
    return relations if p1 is None else relations + p1


def kernel_and_context(
    query: torch.Tensor,
    relations: Optional[torch.Tensor],
    p1: Optional[torch.Tensor],
    windows: torch.Tensor,
    eye: Optional[torch.Tensor],
    *,
    latent_channels: int,
    mix_after_aggregation: bool,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Latent kernel, context and their product at every position (the per-position matrix products).

    Args:
        query: (P, nh, dk) normalised queries.
        relations: R (P, dk, dd), None for kernel "V".
        p1: P1 (dk, dd), None unless kernel "V+R".
        windows: [F, A] (P, dv, dd [+ dv_out]) from :func:`value_windows`; A only with a relational context.
        eye: I (dv, dv), None unless context "V+R".
        latent_channels: dd.
        mix_after_aggregation: apply the value mixing after the kernel (nh < dd; see rsa.py "Contraction order").

    Returns:
        y (P, dv_out, nh) with y[n, e, h] = sum_d kappa[n, h, d] F'[n, e, d]; the latent kernel kappa (P, nh, dd);
        and the unmixed aggregate F kappa^T (P, dv, nh) when the mixing comes after it, else None.
    """
    dd = latent_channels
    kernel = query if relations is None else position_matmul(query, with_p1(relations, p1))  # kappa (P, nh, dd)
    context = windows[:, :, :dd]  # F (P, dv, dd)
    if windows.shape[2] == dd:  # context "V"
        return position_matmul(context, kernel.transpose(1, 2)), kernel, None  # (P, dv, nh)
    mixing = mixing_matrix(windows, eye, dd)  # (P, dv, dv_out)
    if mix_after_aggregation:
        aggregate = position_matmul(context, kernel.transpose(1, 2))  # F kappa^T (P, dv, nh)
        return position_matmul(mixing.transpose(1, 2), aggregate), kernel, aggregate  # (P, dv_out, nh)
    mixed = position_matmul(mixing.transpose(1, 2), context)  # F' (P, dv_out, dd)
    return position_matmul(mixed, kernel.transpose(1, 2)), kernel, None


def mixing_matrix(windows: torch.Tensor, eye: Optional[torch.Tensor], dd: int) -> torch.Tensor:
    """A + I (context "V+R") or A (context "R"), (P, dv, dv_out), from the windows [F, A]."""
    mixing = windows[:, :, dd:]
    return mixing + eye if eye is not None else mixing


def kernel_and_context_backward(
    grad: torch.Tensor,
    query: torch.Tensor,
    relations: Optional[torch.Tensor],
    p1: Optional[torch.Tensor],
    windows: torch.Tensor,
    eye: Optional[torch.Tensor],
    kernel: torch.Tensor,
    aggregate: Optional[torch.Tensor],
    *,
    latent_channels: int,
    mix_after_aggregation: bool,
) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
    """Gradients of :func:`kernel_and_context` (same arguments; ``kernel``, ``aggregate`` as it returned them) for
    the output gradient ``grad`` (P, dv_out, nh): d query, d relations, d P1, d windows, d I (None where unused).

    Each product Z = X Y^T (per position) passes dX = dZ Y and dY = dZ^T X; a matrix used transposed gets the
    transposed gradient.
    """
    dd = latent_channels
    context = windows[:, :, :dd]
    grad_mixing = None
    if windows.shape[2] == dd:  # y = F kappa^T
        grad_context = position_matmul(grad, kernel)  # (P, dv, dd)
        grad_kernel = position_matmul(grad.transpose(1, 2), context)  # (P, nh, dd)
    elif mix_after_aggregation:  # y = M^T (F kappa^T)
        mixing = mixing_matrix(windows, eye, dd)
        grad_mixing = position_matmul(aggregate, grad.transpose(1, 2))  # (P, dv, dv_out)
        grad_aggregate = position_matmul(mixing, grad)  # (P, dv, nh)
        grad_context = position_matmul(grad_aggregate, kernel)
        grad_kernel = position_matmul(grad_aggregate.transpose(1, 2), context)
    else:  # y = (M^T F) kappa^T
        mixing = mixing_matrix(windows, eye, dd)
        mixed = position_matmul(mixing.transpose(1, 2), context)  # F' (P, dv_out, dd), recomputed
        grad_mixed = position_matmul(grad, kernel)  # (P, dv_out, dd)
        grad_kernel = position_matmul(grad.transpose(1, 2), mixed)
        grad_mixing = position_matmul(context, grad_mixed.transpose(1, 2))  # (P, dv, dv_out)
        grad_context = position_matmul(mixing, grad_mixed)
    grad_windows = grad_context if grad_mixing is None else torch.cat([grad_context, grad_mixing], dim=2)
    grad_eye = grad_mixing.sum(0) if eye is not None else None

    if relations is None:
        return grad_kernel, None, None, grad_windows, grad_eye
    grad_query = position_matmul(grad_kernel, with_p1(relations, p1).transpose(1, 2))  # (P, nh, dk)
    grad_relations = position_matmul(query.transpose(1, 2), grad_kernel)  # (P, dk, dd)
    grad_p1 = grad_relations.sum(0) if p1 is not None else None  # (dk, dd)
    return grad_query, grad_relations, grad_p1, grad_windows, grad_eye


class _RecomputedWindows(torch.autograd.Function):
    """Kernel and context from the normalised queries, (key or relations) and values, keeping for backward only
    small tensors: the window sums [F, A] (and R unless given as an input) are recomputed in backward, where the
    products' gradients are computed by :func:`kernel_and_context_backward`, the values' convolution's by
    :func:`value_windows_backward` and H1's by autograd.

    Inputs (see :func:`kernel_and_context`): query, relations R or None (computed outside, kept), key or None (R
    computed here from it and the H1 weight, recomputed in backward), value, H1 weight or None, P1 or None, [H2; G]
    weight, I or None. Output y (P, dv_out, nh). The autocast state of the inputs' device is recorded in forward and
    restored in backward (as ``torch.amp.custom_bwd`` does for one fixed device type).
    """

    @staticmethod
    def forward(ctx, options: dict, query, relations, key, value, h1, p1, h2g, eye) -> torch.Tensor:
        shape = options["shape"]
        ctx.autocast = (query.device.type, autocast_dtype(query.device))
        if key is not None:
            relations_here = window_sums(key, h1, shape, groups=key.shape[1])  # R (P, dk, dd)
        windows = value_windows(value, h2g, shape)  # (P, dv, J)
        y, kernel, aggregate = kernel_and_context(
            query,
            relations if key is None else relations_here,
            p1,
            windows,
            eye,
            latent_channels=options["latent_channels"],
            mix_after_aggregation=options["mix_after_aggregation"],
        )
        ctx.options = options
        kept = windows if options["keep_windows"] else None
        ctx.save_for_backward(query, relations, key, value, h1, p1, h2g, eye, kernel, aggregate, kept)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        device, dtype = ctx.autocast
        if dtype is None:
            return _RecomputedWindows._backward(ctx, grad)
        with torch.autocast(device, dtype=dtype):
            return _RecomputedWindows._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        query, relations, key, value, h1, p1, h2g, eye, kernel, aggregate, windows = ctx.saved_tensors
        options = ctx.options
        shape = options["shape"]
        if windows is None:
            windows = value_windows(value, h2g, shape)  # [F, A] again
        if key is not None:
            with torch.enable_grad():  # R again, this time for its backward
                key_ = key.detach().requires_grad_()
                h1_ = h1.detach().requires_grad_()
                relations_here = window_sums(key_, h1_, shape, groups=key.shape[1])
        grad_query, grad_relations, grad_p1, grad_windows, grad_eye = kernel_and_context_backward(
            grad.contiguous(),
            query,
            relations if key is None else relations_here.detach(),
            p1,
            windows,
            eye,
            kernel,
            aggregate,
            latent_channels=options["latent_channels"],
            mix_after_aggregation=options["mix_after_aggregation"],
        )
        grad_value, grad_h2g = value_windows_backward(grad_windows.contiguous(), value, h2g, shape)
        grad_key, grad_h1 = None, None
        if key is not None:
            grad_key, grad_h1 = torch.autograd.grad(relations_here, [key_, h1_], grad_relations)
        return (
            None,
            grad_query,
            grad_relations if key is None else None,
            grad_key,
            grad_value,
            grad_h1,
            grad_p1,
            grad_h2g,
            grad_eye,
        )


def rsa_fast(layer: RelationalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """The layer's output before stride pooling, (B, in_channels, T, H, W) -> (B, dv * nh, T, H, W).

    Same parameters, same function as ``layer.forward_reference`` (before its pooling). The output is in x's memory
    format (contiguous, or channels-last 3-D).
    """
    b, _, t, h, w = x.shape
    nh, dk, dv, dd = layer.num_heads, layer.key_channels, layer.value_channels, layer.latent_channels
    has_key = layer.kernel_type != "V"
    channels_last = x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()

    rows = x.permute(0, 2, 3, 4, 1).reshape(b * t * h * w, x.shape[1])  # (P, C): a view if x is channels-last
    projected = F.linear(rows, layer.projection.weight.flatten(1))  # (P, nh dk + [dk] + dv)
    if dk == dv:  # one normalisation over nh + 2 (or nh + 1) groups of dk channels: one backward, no zero-filling
        groups = l2_normalise_rows(projected.view(projected.shape[0], -1, dk))  # (P, nh + [1] + 1, dk)
        query, value = groups[:, :nh], groups[:, -1]  # (P, nh, dk), (P, dv)
        key = groups[:, nh] if has_key else None  # (P, dk)
    else:
        query = l2_normalise_rows(projected[:, : nh * dk].view(-1, nh, dk))  # (P, nh, dk)
        key = l2_normalise_rows(projected[:, nh * dk : nh * dk + dk]) if has_key else None  # (P, dk)
        value = l2_normalise_rows(projected[:, projected.shape[1] - dv :])  # (P, dv)

    h2g = layer.H2.weight if layer.context_type == "V" else torch.cat([layer.H2.weight, layer.G.weight])
    h1 = layer.H1.weight if has_key else None
    keep_windows = not layer.recompute_windows
    keep_relations = has_key and (keep_windows or keep_relations_for_backward(dk, dd))
    relations = window_sums(key, h1, (b, t, h, w), groups=dk) if keep_relations else None  # R (P, dk, dd)
    options = dict(
        shape=(b, t, h, w),
        latent_channels=dd,
        mix_after_aggregation=layer.mix_after_aggregation,
        keep_windows=keep_windows,
    )
    y = _RecomputedWindows.apply(
        options,
        query,
        relations,
        None if keep_relations else key,
        value,
        None if keep_relations else h1,
        layer.P1[0] if layer.kernel_type == "V+R" else None,
        h2g,
        layer.I[0] if layer.context_type == "V+R" else None,
    )  # (P, dv, nh)
    out = y.reshape(b, t, h, w, dv * nh).permute(0, 4, 1, 2, 3)  # value-major channels e * nh + h, channels-last
    return out.contiguous(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)


def keep_relations_for_backward(dk: int, dd: int) -> bool:
    """Whether R (dk x dd per position) is kept for backward (True) or recomputed there with [F, A] (False).

    Keeping R saves one H1 convolution in backward; recomputing it keeps the saved activations at most half of the
    reference path's for small dk * dd, where R is as large as the rest of what is kept (measured with
    ``benchmarks/rsa_layer.py``: at dk = dd = 8 keeping R saves 0.47x of the reference's bytes instead of 0.32x).
    """
    return dk * dd >= 1024
