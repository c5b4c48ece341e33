"""Whole RSANet-R50, forward + backward: the fast against the reference RSA path, and activation checkpointing of the
RSA layers (``model.net.checkpoint_mixers``), on one input.

Networks (174 classes, the ``rsa_r50`` config's architecture: RSA in 7 blocks, drop path off so that every variant
computes the same function), fp32, training mode, batch 2 x 8 frames x 112 x 112 (``--size``):
    reference                  implementation="reference" in every RSA layer
    fast                       implementation="fast" (the default)
    fast + checkpoint_mixers   the fast path with its RSA layers recomputed in backward
    TSN (no RSA)               the same ResNet-50 with its 3x3 spatial convolutions at the RSA positions: what the
                               network costs without RSA, the bound of any speed-up from the RSA layers alone
and with ``--extra``:
    fast, channels-last        input and weights in the channels-last 3-D memory format
    fast, bf16 autocast        forward under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (bf16-mixed)
    fast, torch.compile        ``torch.compile(net)`` (inductor); its compilation is timed separately
Times: median over ``--repeats`` rounds, each running every network once (forward, loss = sum of squared logits,
backward), in turn. Saved: bytes of the distinct tensors autograd keeps for backward in one forward pass
(saved-tensor hooks, parameters excluded) for the whole network. The logits and the input gradient of every variant
are compared with the reference's (largest relative difference). Only ratios in one run mean anything.

    python benchmarks/rsa_network.py [--threads 1] [--repeats 3] [--size 112] [--frames 8] [--batch 2] [--extra]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from rsa_layer import positive  # benchmarks/ is on sys.path when a script in it runs

from rsa_lightning.layers import RelationalSelfAttention
from rsa_lightning.models import ResNet
from rsa_lightning.utils.memory import saved_tensor_bytes

RSA_POSITIONS = [[2], [1, 3], [1, 3, 5], [1]]  # conf/model/rsa_r50.yaml


def build(implementation: str, checkpoint_mixers: bool, rsa_layers: bool = True) -> ResNet:
    """RSANet-R50 as ``conf/model/rsa_r50.yaml`` builds it (without drop path), same weights for every variant;
    ``rsa_layers=False``: the TSN ResNet-50 (spatial 3x3 convolutions everywhere)."""
    torch.manual_seed(0)
    rsa = functools.partial(RelationalSelfAttention, num_heads=8, kernel_size=(5, 7, 7), implementation=implementation)
    net = ResNet(
        num_classes=174,
        stmixer=rsa if rsa_layers else None,
        stmixer_positions=RSA_POSITIONS if rsa_layers else [],
        drop_path_rate=0.0,
        dropout=0.0,
        zero_init_residual=False,  # every block contributes (the official init zeroes the RSA blocks' last BN)
        checkpoint_mixers=checkpoint_mixers,
    )
    return net.train()


def run_forward(net: ResNet, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return net(x.clone().requires_grad_())


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=positive, default=1, help="torch threads")
    parser.add_argument("--repeats", type=positive, default=3, help="timed rounds (after one warm-up)")
    parser.add_argument("--size", type=positive, default=112, help="frame height and width (px)")
    parser.add_argument("--frames", type=positive, default=8, help="frames per clip")
    parser.add_argument("--batch", type=positive, default=2, help="clips per batch")
    parser.add_argument("--extra", action="store_true", help="also channels-last, bf16 autocast, torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = {
        "reference": build("reference", False),
        "fast": build("fast", False),
        "fast + checkpoint_mixers": build("fast", True),
        "TSN (no RSA)": build("fast", False, rsa_layers=False),
    }
    torch.manual_seed(1)
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size)
    inputs = {name: x for name in variants}
    autocast = {name: False for name in variants}
    if args.extra:
        variants["fast, channels-last"] = build("fast", False).to(memory_format=torch.channels_last_3d)
        inputs["fast, channels-last"] = x.contiguous(memory_format=torch.channels_last_3d)
        variants["fast, bf16 autocast"] = build("fast", False)
        inputs["fast, bf16 autocast"] = x
        autocast["fast, channels-last"], autocast["fast, bf16 autocast"] = False, True
        compiled = torch.compile(build("fast", False))
        start = time.perf_counter()
        compiled(x.clone().requires_grad_()).square().sum().backward()
        print(f"torch.compile: first forward + backward (compilation) {time.perf_counter() - start:.0f} s")
        variants["fast, torch.compile"] = compiled
        inputs["fast, torch.compile"] = x
        autocast["fast, torch.compile"] = False
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), fp32, RSANet-R50 (174 classes) on "
        f"{args.batch} x 3 x {args.frames} x {args.size} x {args.size}, median of {args.repeats} rounds"
    )
    times: dict[str, list[float]] = {name: [] for name in variants}
    results = {}
    for round_ in range(args.repeats + 1):
        for name, net in variants.items():
            net.zero_grad(set_to_none=True)
            xi = inputs[name].clone().requires_grad_()
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast[name]):
                logits = net(xi)
            logits.float().square().sum().backward()
            elapsed = time.perf_counter() - start
            if round_:
                times[name].append(elapsed)
            results[name] = (logits.detach().float(), xi.grad.float())
    saved = {
        name: saved_tensor_bytes(
            lambda name=name, net=net: run_forward(net, inputs[name], autocast[name]), exclude=net.parameters()
        )
        for name, net in variants.items()
        if "compile" not in name  # compiled graphs save what inductor decides, outside the hooks' view
    }
    ref_time, ref_saved = statistics.median(times["reference"]), saved["reference"]
    ref_logits, ref_grad = results["reference"]
    header = f"{'variant':>26} | {'fwd+bwd s':>9} {'speed-up':>8} | {'saved MB':>8} {'of ref':>6}"
    print(f"{header} | rel. diff (logits, input grad)")
    for name in variants:
        t = statistics.median(times[name])
        logits, grad = results[name]
        print(
            f"{name:>26} | {t:9.2f} {ref_time / t:7.2f}x | {saved.get(name, float('nan')) / 2**20:8.0f} "
            f"{saved.get(name, float('nan')) / ref_saved:5.2f}x | "
            + (f"{relative(logits, ref_logits):.1e}, {relative(grad, ref_grad):.1e}" if "TSN" not in name else "-")
        )


if __name__ == "__main__":
    main()
