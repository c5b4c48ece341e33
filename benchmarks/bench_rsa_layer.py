"""Forward + backward time of RelationalSelfAttention relative to the (1, 3, 3) spatial convolution it replaces.

Both layers are timed in the same run on the same input; only ratios are meaningful across machines. The backward
pass gets a dense random gradient, as from the BatchNorm that follows the mixer in a network (``out.sum().backward()``
would pass a stride-0 gradient that sends CPU ``bmm`` down a slow per-matrix path and overstates RSA's cost).
One thread by default: on a shared machine, multi-threaded (OpenMP) timings are dominated by contention.

    python benchmarks/bench_rsa_layer.py [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from rsa_lightning.layers import RelationalSelfAttention

# (batch, channels, frames, height, width): bottleneck (mixer) width and resolution of ResNet-50 stages 2 and 3 for
# 224 px frames, one 8-frame clip.
SIZES = [(1, 128, 8, 28, 28), (1, 256, 8, 14, 14)]


def time_forward_backward(layer: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward + backward pass (after one warm-up pass)."""
    grad = torch.randn_like(layer(x))
    times = []
    for step in range(repeats + 1):
        layer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        layer(x).backward(grad)
        if step:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, forward + backward, median of {args.repeats}")
    print(
        f"{'input (B, C, T, H, W)':>24} {'conv 1x3x3 ms':>14} {'RSA 5x7x7 ms':>13} {'RSA 3x3x3 ms':>13} "
        f"{'5x7x7/conv':>11} {'3x3x3/conv':>11}"
    )
    for size in SIZES:
        channels = size[1]
        x = torch.randn(size)
        conv = nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1), bias=False)
        rsa = RelationalSelfAttention(in_channels=channels, out_channels=channels, kernel_size=(5, 7, 7))
        rsa_small = RelationalSelfAttention(in_channels=channels, out_channels=channels, kernel_size=(3, 3, 3))
        t_conv = time_forward_backward(conv, x, args.repeats)
        t_rsa = time_forward_backward(rsa, x, args.repeats)
        t_small = time_forward_backward(rsa_small, x, args.repeats)
        print(
            f"{str(size):>24} {1e3 * t_conv:14.1f} {1e3 * t_rsa:13.1f} {1e3 * t_small:13.1f} "
            f"{t_rsa / t_conv:10.1f}x {t_small / t_conv:10.1f}x"
        )


if __name__ == "__main__":
    main()
