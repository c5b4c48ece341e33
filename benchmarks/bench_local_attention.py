"""Forward + backward time of LocalSelfAttention relative to RelationalSelfAttention with the same channels, heads and
window (the paper's SA vs RSA comparison).

Both layers are timed in the same run on the same input; only the ratio is meaningful across machines. The backward
pass gets a dense random gradient, as from the BatchNorm that follows the mixer in a network. One thread by default:
on a shared machine, multi-threaded (OpenMP) timings are dominated by contention.

    python benchmarks/bench_local_attention.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch
from rsa_layer import time_forward_backward  # same timing loop as the RSA benchmark (benchmarks/ is on sys.path)

from rsa_lightning.layers import LocalSelfAttention, RelationalSelfAttention

# (batch, channels, frames, height, width): two 8-frame clips at the bottleneck width and resolution of ResNet-50
# stage 2 for 112 px frames / stage 3 for 224 px frames.
SIZES = [(2, 64, 8, 28, 28)]
WINDOWS = [(5, 7, 7), (3, 3, 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, forward + backward, median of {args.repeats}")
    print(f"{'input (B, C, T, H, W)':>24} {'window':>10} {'RSA ms':>9} {'SA ms':>9} {'SA+relpos ms':>13} {'SA/RSA':>7}")
    for size, window in ((size, window) for size in SIZES for window in WINDOWS):
        channels = size[1]
        x = torch.randn(size)
        common = dict(in_channels=channels, out_channels=channels, num_heads=8, kernel_size=window)
        t_rsa = time_forward_backward(RelationalSelfAttention(**common), x, args.repeats)
        t_sa = time_forward_backward(LocalSelfAttention(**common), x, args.repeats)
        t_rel = time_forward_backward(LocalSelfAttention(**common, relative_position=True), x, args.repeats)
        print(
            f"{str(size):>24} {str(window):>10} {1e3 * t_rsa:9.1f} {1e3 * t_sa:9.1f} {1e3 * t_rel:13.1f} "
            f"{t_sa / t_rsa:6.2f}x"
        )


if __name__ == "__main__":
    main()
