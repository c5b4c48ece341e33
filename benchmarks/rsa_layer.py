"""RelationalSelfAttention: time and saved activations of the fast and the reference path, against the convolutions
it is compared with, at the four RSANet-R50 stage shapes.

Layers, each on the same input (B, C, T, H, W) = (2, C, 8, px, px) with C/px = 64/56, 128/28, 256/14, 512/7 (the
bottleneck width and resolution of ResNet-50's four stages on 8 frames of 224 px, batch 2), fp32:
    fast        RelationalSelfAttention(implementation="fast"), kernel V+R, context V+R, window 5x7x7, 8 heads
    reference   the same layer with implementation="reference" (the formulation of the official ops/rsa.py)
    conv1x3x3   the (1, 3, 3) convolution an RSA layer replaces in RSANet
    conv3x3x3   a full 3-D convolution
Times: median over ``--repeats`` rounds; in every round each layer runs once (forward, then forward + backward),
in turn, so a load change on the machine hits all layers alike. Backward gets a dense random gradient (as from the
BatchNorm after the mixer). Saved: bytes of the distinct tensors autograd keeps for backward (saved-tensor hooks,
parameters excluded), the measure of activation memory that does not depend on the allocator.
Only ratios measured in one run are meaningful; the absolute times depend on the machine and its load.

    python benchmarks/rsa_layer.py [--threads 1 2] [--repeats 7] [--stages 0 1 2 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from rsa_lightning.layers import RelationalSelfAttention
from rsa_lightning.utils.memory import saved_tensor_bytes

STAGES = [(64, 56), (128, 28), (256, 14), (512, 7)]  # (channels, pixels) of ResNet-50 stages 1-4 at 224 px
BATCH, FRAMES = 2, 8


def saved_bytes(layer: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct tensors saved for backward by one forward pass (parameters excluded)."""
    return saved_tensor_bytes(lambda: layer(x), exclude=layer.parameters())


def build_layers(channels: int) -> dict[str, nn.Module]:
    """The four compared layers for ``channels`` in and out channels; fast and reference share their weights."""
    fast = RelationalSelfAttention(in_channels=channels, out_channels=channels, implementation="fast")
    reference = RelationalSelfAttention(in_channels=channels, out_channels=channels, implementation="reference")
    reference.load_state_dict(fast.state_dict())
    return {
        "fast": fast,
        "reference": reference,
        "conv1x3x3": nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1), bias=False),
        "conv3x3x3": nn.Conv3d(channels, channels, 3, padding=1, bias=False),
    }


def time_forward_backward(layer: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward + backward pass with a dense random gradient (after one warm-up pass)."""
    grad = torch.randn_like(layer(x))
    times = []
    for step in range(repeats + 1):
        layer.zero_grad(set_to_none=True)
        elapsed = timed(lambda: layer(x).backward(grad))
        if step:
            times.append(elapsed)
    return statistics.median(times)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_stage(channels: int, pixels: int, repeats: int) -> dict[str, dict[str, float]]:
    """Median forward and forward + backward seconds and saved bytes of every layer at one stage shape."""
    torch.manual_seed(0)
    x = torch.randn(BATCH, channels, FRAMES, pixels, pixels, requires_grad=True)
    layers = build_layers(channels)
    grads = {name: torch.randn_like(layer(x)) for name, layer in layers.items()}
    times: dict[str, dict[str, list[float]]] = {name: {"fwd": [], "fwd_bwd": []} for name in layers}
    for round_ in range(repeats + 1):  # round 0 warms up
        for name, layer in layers.items():
            with torch.no_grad():
                t_fwd = timed(lambda layer=layer: layer(x))
            layer.zero_grad(set_to_none=True)
            x.grad = None
            t_both = timed(lambda layer=layer, name=name: layer(x).backward(grads[name]))
            if round_:
                times[name]["fwd"].append(t_fwd)
                times[name]["fwd_bwd"].append(t_both)
    return {
        name: {
            "fwd": statistics.median(times[name]["fwd"]),
            "fwd_bwd": statistics.median(times[name]["fwd_bwd"]),
            "saved": saved_bytes(layer, x),
        }
        for name, layer in layers.items()
    }


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=positive, nargs="+", default=[1, 2], help="torch thread counts to run")
    parser.add_argument("--repeats", type=positive, default=7, help="timed rounds per stage (after one warm-up)")
    parser.add_argument(
        "--stages", type=int, nargs="+", default=[0, 1, 2, 3], choices=range(4), help="0-based ResNet-50 stages"
    )
    args = parser.parse_args()
    print(f"torch {torch.__version__}, fp32, batch {BATCH} x {FRAMES} frames, median of {args.repeats} rounds")
    header = (
        f"{'threads':>7} {'C/px':>7} | {'fast ms':>8} {'ref ms':>8} {'conv133':>8} {'conv333':>8} | "
        f"{'fast/ref':>8} {'fast/c133':>9} {'ref/c133':>8} {'fast/c333':>9} | {'fwd f/r':>7} | "
        f"{'saved MB f':>10} {'ref':>6} {'f/r':>5}"
    )
    print("forward + backward times; 'fwd f/r' is the forward-only ratio; saved = activations kept for backward")
    print(header)
    worst_time, worst_saved = 0.0, 0.0
    for threads in args.threads:
        torch.set_num_threads(threads)
        for stage in args.stages:
            channels, pixels = STAGES[stage]
            r = measure_stage(channels, pixels, args.repeats)
            both = {name: v["fwd_bwd"] for name, v in r.items()}
            ratio = both["fast"] / both["reference"]
            saved_ratio = r["fast"]["saved"] / r["reference"]["saved"]
            worst_time, worst_saved = max(worst_time, ratio), max(worst_saved, saved_ratio)
            print(
                f"{threads:>7} {f'{channels}/{pixels}':>7} | {1e3 * both['fast']:8.1f} {1e3 * both['reference']:8.1f} "
                f"{1e3 * both['conv1x3x3']:8.1f} {1e3 * both['conv3x3x3']:8.1f} | {ratio:7.2f}x "
                f"{both['fast'] / both['conv1x3x3']:8.2f}x {both['reference'] / both['conv1x3x3']:7.2f}x "
                f"{both['fast'] / both['conv3x3x3']:8.2f}x | {r['fast']['fwd'] / r['reference']['fwd']:6.2f}x | "
                f"{r['fast']['saved'] / 2**20:10.1f} {r['reference']['saved'] / 2**20:6.1f} {saved_ratio:4.2f}x",
                flush=True,
            )
    print(f"worst fast/reference: time {worst_time:.2f}x, saved activations {worst_saved:.2f}x")


if __name__ == "__main__":
    main()
