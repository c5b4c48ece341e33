"""Cost report: parameters and multiply-accumulates (MACs) of a configured network for one view.

    python -m rsa_lightning.tools.flops model=rsa_r50 data.num_classes=174 data.num_frames=16

The config is ``conf/flops.yaml`` (the ``data`` and ``model`` groups of ``train.py``, any override works): the network
is ``model.net``, one view is a (1, 3, T, S, S) clip with T = ``num_frames`` (default ``data.num_frames``) and
S = ``input_size`` (default 224, the crop of the paper's cost figures; ``input_size=${data.crop_size}`` counts at the
training crop). The report prints the parameter count, the GMACs of the view, a table per group (stem, layer1..4,
head) split into convolutions, RSA layers, matrix products and BatchNorm, and a table per space-time mixer.

Counting convention (the one of the official RSA code, which logged RSANet-R50 at 16 x 224 x 224 as
"71.774G" FLOPs and 22.034M parameters with fvcore ``FlopCountAnalysis``; this tool gives 71.774 GMACs):
- One MAC per multiply-add; fvcore and the official code call these "FLOPs" (they are not 2 x MACs).
- Counted: convolutions, output elements x (in_channels / groups) x kernel volume (the zero-padded border counts like
  any other position, biases are free); linear layers and every other matrix product (mm, addmm, bmm, baddbmm, so
  also ``einsum`` and ``matmul``, which PyTorch runs as these), n x k x m each; scaled dot-product attention.
- Not counted: BatchNorm and other normalisation layers, pooling, activations, softmax, the L2 normalisation inside
  RSA, residual and other element-wise additions and multiplications, dropout, the temporal shift. The official log
  shows the fvcore of the time skipping ``aten::batch_norm`` (53 calls) as well as the pooling and element-wise ops.
  (Later fvcore versions count BatchNorm as 5 FLOPs per element in training mode and 2 in eval mode: +0.89 and
  +0.36 G on RSANet-R50 at 16 frames, which no longer reproduces 71.774.) ``count_norm=true`` adds one MAC per
  normalised element (the folded scale-and-shift of inference); the BatchNorm column is always shown.
- The RSA layer is counted as fvcore counts the official op sequence (``ops/rsa.py``), see
  :func:`rsa_official_macs`: the 1x1x1 projection, the H1, H2 and G window convolutions, and the three official
  einsums (kernel q^T (K H1 + P1), context (V G + I)^T (V H2), output kernel x context); the additions of P1 and I,
  the normalisation and the stride's average pooling are free. This layer's own contraction order differs (see
  ``rsa_lightning/layers/rsa.py``); what it actually runs is shown next to it ("as run here") but not used.

How it counts: the network is built on the meta device (no memory, no weights; ``pretrained`` is ignored) and run
once on a meta clip in eval mode. A dispatch mode sees every tensor op with its shapes and charges it to the module
that runs it; modules with an analytic counter (:data:`ANALYTIC_COUNTERS`: RSA, local self-attention; column
"RSA/attn") are charged their formula instead.
A module whose type has no rule (neither a PyTorch module, one of this project's composition modules, nor an analytic
counter) is still counted by its convolutions and matrix products, with a warning: products written as element-wise
multiply + sum (e.g. a local attention looping over window offsets) are invisible to the op counter. An unknown tensor
op (neither element-wise, a view, data movement nor one of the counted products) is also warned about, counted as 0.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import hydra
import torch
from omegaconf import DictConfig, open_dict
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from rsa_lightning.errors import handle_errors, run_hydra_main
from rsa_lightning.layers.local_attention import LocalSelfAttention
from rsa_lightning.layers.rsa import RelationalSelfAttention
from rsa_lightning.layers.shift import TemporalShift
from rsa_lightning.models.resnet import BasicBlock, Bottleneck, DropPath, ResNet

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[2]))
log = logging.getLogger(__name__)

# MAC categories: conv and matmul come from the ops that run, rsa from the analytic counter, norm counts elements.
CATEGORIES = ("conv", "rsa", "matmul", "norm")

# Modules whose own forward only composes their children with element-wise ops, pooling or data movement, all free
# under the convention; every PyTorch module (forward defined in torch) is trusted the same way.
COMPOSITION_MODULES = (ResNet, Bottleneck, BasicBlock, DropPath, TemporalShift)

# Ops that cost nothing under the convention besides element-wise ops (torch.Tag.pointwise) and views.
FREE_OPS = {
    "mean", "sum", "amax", "amin", "max", "min", "argmax", "argmin", "var", "var_mean", "std", "std_mean",
    "logsumexp", "cumsum", "_softmax", "_log_softmax", "max_pool1d", "max_pool2d", "max_pool3d",
    "max_pool2d_with_indices", "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_max_pool2d", "adaptive_max_pool3d", "cat", "stack",
    "copy_", "_to_copy", "clone", "_unsafe_view", "constant_pad_nd", "empty", "empty_like", "empty_strided", "zeros",
    "zeros_like", "ones", "ones_like", "full", "full_like", "new_empty", "new_empty_strided", "new_zeros", "new_ones",
    "new_full", "fill_", "zero_", "arange", "bernoulli", "bernoulli_", "native_dropout", "rand_like", "randn_like",
    "normal_", "uniform_", "index", "index_select", "gather", "scatter", "roll", "flip", "repeat", "promote_types",
}  # fmt: skip
NORM_OPS = {
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional", "native_layer_norm", "native_group_norm",
}  # fmt: skip


class UncountedWarning(UserWarning):
    """Part of the network may be missing from the count (a module type or op without a MAC rule)."""


# --- analytic counters ------------------------------------------------------------------------------------------------


def rsa_official_macs(layer: RelationalSelfAttention, input_shape: Sequence[int]) -> dict[str, int]:
    """MACs of one call of ``layer`` on an input of ``input_shape`` (B, C, T, H, W), counted as fvcore counts the
    official op sequence (``ops/rsa.py``), per part.

    With N = B * T * H * W positions (the layer works at its input resolution; a stride only average-pools the
    output, free), a window of M = kt * kh * kw offsets and nh, dk, dv, dd as in the layer:
        projection     N * C * (nh * dk + dk + dv)   1x1x1 conv to queries, key (not for kernel "V"), value
        H1             N * dk * dd * M               key window conv, dk groups of dd filters (kernel "R", "V+R")
        H2             N * dv * dd * M               one single-channel conv over every value channel
        G              N * dv * dv * M               likewise (context "R", "V+R")
        kernel einsum  N * dk * nh * dd              q^T (K H1 + P1) per position (kernel "R", "V+R")
        context einsum N * dv * dv * dd              (V G + I)^T (V H2) per position (context "R", "V+R")
        output einsum  N * nh * dd * dv              kernel x context per position
    The additions of P1 and I, the L2 normalisations and the pooling are element-wise, hence free.
    """
    b, _, t, h, w = input_shape
    n = b * t * h * w
    m = layer.window_size
    nh, dk, dv, dd = layer.num_heads, layer.key_channels, layer.value_channels, layer.latent_channels
    has_key = layer.kernel_type != "V"
    parts = {"projection": n * layer.in_channels * (nh * dk + (dk if has_key else 0) + dv)}
    if has_key:
        parts["H1"] = n * dk * dd * m
    parts["H2"] = n * dv * dd * m
    if layer.context_type != "V":
        parts["G"] = n * dv * dv * m
    if has_key:
        parts["kernel einsum"] = n * dk * nh * dd
    if layer.context_type != "V":
        parts["context einsum"] = n * dv * dv * dd
    parts["output einsum"] = n * nh * dd * dv
    return parts


def local_attention_macs(layer: LocalSelfAttention, input_shape: Sequence[int]) -> dict[str, int]:
    """MACs of one call of a :class:`LocalSelfAttention` layer on an input of ``input_shape`` (B, C, T, H, W).

    With N positions and M window offsets: the projection N * C * nh * (2 dk + dv), the logits q . k over the window
    N * nh * dk * M and the weighted sum of the values N * nh * dv * M. As for convolutions, every offset counts, also
    the masked ones beyond the clip border; softmax and the relative-position bias are free.
    """
    b, _, t, h, w = input_shape
    n = b * t * h * w
    m = layer.window_size
    nh, dk, dv = layer.num_heads, layer.key_channels, layer.value_channels
    return {
        "projection": n * layer.in_channels * nh * (2 * dk + dv),
        "attention logits": n * nh * dk * m,
        "attention sum": n * nh * dv * m,
    }


# module type -> (module, input shape) -> MACs per part; the module's own ops are then not counted.
ANALYTIC_COUNTERS: dict[type, Callable[[Any, Sequence[int]], dict[str, int]]] = {
    RelationalSelfAttention: rsa_official_macs,
    LocalSelfAttention: local_attention_macs,
}


# --- op rules -----------------------------------------------------------------------------------------------------


def op_cost(func: Any, args: Sequence[Any], out: Any) -> tuple[Optional[str], int]:
    """(category, amount) of one aten op under the convention; category None: free; "unknown": no rule."""
    name = func.overloadpacket.__name__
    if name == "convolution":
        x, weight, transposed = args[0], args[1], args[6]
        per_output = weight.shape[1] * math.prod(weight.shape[2:])  # (in_channels / groups) x kernel volume
        # a transposed convolution's weight is (C_in, C_out / groups, k...): every input element feeds it once
        return "conv", (x.numel() if transposed else out.numel()) * per_output
    if name in ("mm", "addmm", "bmm", "baddbmm"):
        a, b = (args[1], args[2]) if name in ("addmm", "baddbmm") else (args[0], args[1])
        return "matmul", a.numel() * b.shape[-1]  # (batch x) n x k  times  k x m
    if name in ("mv", "dot"):
        return "matmul", args[0].numel()
    if name.startswith("_scaled_dot_product"):
        q, k, v = args[:3]  # (b, heads, L, d), (b, heads, S, d), (b, heads, S, dv)
        return "matmul", q.numel() * k.shape[-2] + math.prod(q.shape[:-1]) * v.shape[-2] * v.shape[-1]
    if name in NORM_OPS:
        return "norm", args[0].numel()
    if torch.Tag.pointwise in func.tags or func.is_view or name in FREE_OPS:
        return None, 0
    return "unknown", 0


# --- counting -------------------------------------------------------------------------------------------------------


@dataclass
class CostReport:
    """Costs of one forward pass, per module (its own ops, children excluded). MACs per category in
    :data:`CATEGORIES`; ``norm`` counts normalised elements and enters the total only with ``count_norm``."""

    input_shape: tuple[int, ...]
    params: int
    count_norm: bool
    own: dict[str, Counter] = field(default_factory=dict)  # module name -> category -> MACs
    types: dict[str, str] = field(default_factory=dict)  # module name -> type name, for modules that ran
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)  # module name -> input shape (first call)
    order: list[str] = field(default_factory=list)  # module names in order of first call
    child_params: dict[str, int] = field(default_factory=dict)  # top-level child -> parameters
    analytic_parts: dict[str, Counter] = field(default_factory=dict)  # analytic module -> part -> MACs
    as_run: dict[str, int] = field(default_factory=dict)  # analytic module -> MACs of the ops it actually ran
    mixers: list[str] = field(default_factory=list)  # space-time mixer modules (ResNet stmixer positions)
    warnings: list[str] = field(default_factory=list)

    def subtree(self, name: str) -> Counter:
        """MACs per category of module ``name`` and everything under it ("" is the whole network)."""
        total: Counter = Counter()
        for module, macs in self.own.items():
            if not name or module == name or module.startswith(name + "."):
                total.update(macs)
        return total

    def total(self, macs: Optional[Counter] = None) -> int:
        """The counted MACs of ``macs`` (default: the whole network) under the convention."""
        macs = self.subtree("") if macs is None else macs
        return sum(v for k, v in macs.items() if k != "norm" or self.count_norm)

    def groups(self) -> dict[str, list[str]]:
        """Top-level children grouped in call order: ``layer<i>`` stages, "stem" before the first, "head" after the
        last (without stages every child is its own group); the network's own ops go to "head"."""
        children = [n for n in self.order if n and "." not in n]
        stages = [n for n in children if re.fullmatch(r"layer\d+", n)]
        groups: dict[str, list[str]] = {}
        first = children.index(stages[0]) if stages else 0
        for i, child in enumerate(children):
            key = child if not stages or child in stages else ("stem" if i < first else "head")
            groups.setdefault(key, []).append(child)
        groups.setdefault("head", []).append("")  # the root's own ops (e.g. the head's pooling)
        return groups

    def group_macs(self, members: Sequence[str]) -> Counter:
        total: Counter = Counter()
        for member in members:
            total.update(self.own.get("", Counter()) if member == "" else self.subtree(member))
        return total


class _OpCounter(TorchDispatchMode):
    """Charges every op to the innermost running module, or to the enclosing analytic module's ``as_run``."""

    def __init__(self, report: CostReport) -> None:
        super().__init__()
        self.report = report
        self.stack: list[str] = [""]
        self.analytic: list[str] = []  # analytic modules currently running (outermost first)
        self.unknown: dict[str, set[str]] = {}  # op -> modules

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        category, amount = op_cost(func, args, out)
        module = self.stack[-1]
        if category == "unknown":
            self.unknown.setdefault(str(func), set()).add(module or "(network)")
        elif category is not None:
            if self.analytic:
                outer = self.analytic[0]
                if category != "norm":
                    self.report.as_run[outer] = self.report.as_run.get(outer, 0) + amount
            else:
                self.report.own.setdefault(module, Counter())[category] += amount
        return out


def _trusted(module: nn.Module) -> bool:
    """True when the module's own forward does no MAC work that the op counter cannot see."""
    forward_module = getattr(type(module).forward, "__module__", "") or ""
    return forward_module.startswith("torch.") or isinstance(module, COMPOSITION_MODULES)


def count_macs(net: nn.Module, input_shape: Sequence[int], *, count_norm: bool = False) -> CostReport:
    """Count parameters and MACs of one forward pass of ``net`` on a tensor of ``input_shape``.

    ``net`` may live on any device; it is run on a tensor of its parameters' device and dtype (build it on the meta
    device for an instant count of any size). It is put in eval mode for the count and restored afterwards.
    """
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("meta")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    report = CostReport(
        input_shape=tuple(int(s) for s in input_shape),
        params=sum(p.numel() for p in net.parameters()),
        count_norm=count_norm,
        child_params={name: sum(p.numel() for p in child.parameters()) for name, child in net.named_children()},
        mixers=[f"{block}.conv2" for block in getattr(net, "stmixer_blocks", [])],
    )
    counter = _OpCounter(report)
    untrusted: dict[str, list[str]] = {}

    def pre_hook(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            counter.stack.append(name)
            if name not in report.types:
                report.types[name] = type(module).__name__
                report.order.append(name)
                if args and isinstance(args[0], torch.Tensor):
                    report.inputs[name] = tuple(args[0].shape)
            counter_fn = ANALYTIC_COUNTERS.get(type(module))
            if counter_fn is not None and not counter.analytic:
                parts = counter_fn(module, args[0].shape)
                report.analytic_parts.setdefault(name, Counter()).update(parts)
                report.own.setdefault(name, Counter())["rsa"] += sum(parts.values())
            if counter_fn is not None:
                counter.analytic.append(name)
            elif not counter.analytic and not _trusted(module):
                untrusted.setdefault(type(module).__name__, []).append(name)

        return hook

    def post_hook(name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            counter.stack.pop()
            if counter.analytic and counter.analytic[-1] == name:
                counter.analytic.pop()

        return hook

    handles = []
    for name, module in net.named_modules():
        handles.append(module.register_forward_pre_hook(pre_hook(name)))
        handles.append(module.register_forward_hook(post_hook(name)))
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad(), counter:
            net(torch.zeros(report.input_shape, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)

    for type_name, names in untrusted.items():
        names = list(dict.fromkeys(names))
        macs = sum(report.total(report.subtree(n)) for n in names)
        where = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        report.warnings.append(
            f"no MAC rule for {type_name} (at {where}): only the convolutions and "
            f"matrix products it runs are counted ({_giga(macs)} GMACs in total); work written as element-wise "
            f"multiply + sum (e.g. attention over window offsets) is missing. Add a counter to ANALYTIC_COUNTERS in "
            "rsa_lightning.tools.flops."
        )
    for op, modules in counter.unknown.items():
        report.warnings.append(f"no MAC rule for op {op} (run by {', '.join(sorted(modules)[:3])}): counted as 0")
    for message in report.warnings:
        warnings.warn(message, UncountedWarning, stacklevel=2)
    return report


# --- from a config ------------------------------------------------------------------------------------------------


def build_net(cfg: DictConfig) -> nn.Module:
    """``cfg.model.net`` instantiated on the meta device (no memory; a ``pretrained`` path is not loaded)."""
    net_cfg = copy.deepcopy(cfg.model.net)
    if net_cfg.get("pretrained") is not None:
        log.info("ignoring model.net.pretrained=%s: weights do not change the cost", net_cfg.pretrained)
        with open_dict(net_cfg):
            net_cfg.pretrained = None
    with torch.device("meta"):
        return hydra.utils.instantiate(net_cfg)


def cost_report(cfg: DictConfig) -> CostReport:
    """The cost of ``cfg.model.net`` for one (1, 3, ``cfg.num_frames``, ``cfg.input_size``, ``cfg.input_size``) view."""
    shape = (1, 3, int(cfg.num_frames), int(cfg.input_size), int(cfg.input_size))
    return count_macs(build_net(cfg), shape, count_norm=bool(cfg.get("count_norm", False)))


# --- report -------------------------------------------------------------------------------------------------------


def _giga(macs: float) -> str:
    return f"{macs / 1e9:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))
    )
    return [line(header), "-" * len(line(header)), *[line(r) for r in rows]]


def format_report(report: CostReport, title: str = "") -> str:
    """The printed report: totals, the per-group table and the per-mixer tables (in G, or M below 1 G in total)."""
    scale, unit = (1e9, "G") if report.total() >= 1e9 else (1e6, "M")
    fmt = lambda macs: f"{macs / scale:.3f}"
    total = report.subtree("")
    norm_note = "counted, 1 MAC per element" if report.count_norm else "not counted (count_norm=true adds 1 MAC each)"
    lines = [
        f"Cost of one view {report.input_shape}" + (f": {title}" if title else ""),
        f"parameters  {report.params:,}",
        f"{unit}MACs       {fmt(report.total())}  (multiply-accumulates; fvcore and the official code call them FLOPs)",
        f"BatchNorm   {fmt(total['norm'])} {unit} elements, {norm_note}",
        "",
    ]
    rows = []
    for group, members in report.groups().items():
        macs = report.group_macs(members)
        params = sum(report.child_params.get(m, 0) for m in members)
        if params or any(macs.values()):
            rows.append([group, f"{params:,}", *(fmt(macs[c]) for c in CATEGORIES), fmt(report.total(macs))])
    rows.append(["total", f"{report.params:,}", *(fmt(total[c]) for c in CATEGORIES), fmt(report.total())])
    bn = "bn" if report.count_norm else "bn*"
    lines += _table(["group", "params", "conv", "RSA/attn", "matmul", bn, f"total {unit}MACs"], rows)
    if not report.count_norm:
        lines.append(f"* BatchNorm elements ({unit}), not in the total")

    mixers = [m for m in dict.fromkeys([*report.mixers, *report.analytic_parts]) if m in report.types]
    if mixers:
        rows = []
        for name in mixers:
            t, h, w = report.inputs[name][2:]
            macs = report.total(report.subtree(name))
            share = f"{100 * macs / max(report.total(), 1):.1f}%"
            rows.append([name, report.types[name], f"{t}x{h}x{w}", fmt(macs), share])
        lines += ["", *_table(["space-time mixer", "type", "input TxHxW", f"{unit}MACs", "of total"], rows)]
    rsa_layers = {n: p for n, p in report.analytic_parts.items() if report.types[n] == "RelationalSelfAttention"}
    if rsa_layers:
        convs = ("projection", "H1", "H2", "G")
        rows = []
        for name, parts in rsa_layers.items():
            einsums = sum(v for k, v in parts.items() if k not in convs)
            row = [name, *(fmt(parts[k]) for k in convs), fmt(einsums), fmt(sum(parts.values()))]
            rows.append(row + [fmt(report.as_run.get(name, 0))])
        lines += ["", f"RSA layers, official op order ({unit}MACs); 'as run here': this layer's own contraction order"]
        lines += _table(["RSA layer", "projection", "H1", "H2", "G", "einsums", "total", "as run here"], rows)
    for message in report.warnings:
        lines += ["", f"WARNING: {message}"]
    return "\n".join(lines)


def _model_name(cfg: DictConfig) -> str:
    """The chosen model config (``model=rsa_r50``) when run by Hydra, else the network's class."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("model")
        if choice:
            return f"model={choice}"
    return cfg.model.net._target_


@hydra.main(version_base="1.3", config_path="../../conf", config_name="flops")
@handle_errors  # bad input (an unknown group option, a bad value): one message and exit code 2 (rsa_lightning.errors)
def main(cfg: DictConfig) -> CostReport:
    """Print the cost report of ``cfg.model.net`` (see the module docstring); returns it."""
    report = cost_report(cfg)
    print(format_report(report, title=_model_name(cfg)))  # the report is this tool's output
    return report


if __name__ == "__main__":
    run_hydra_main(main)
