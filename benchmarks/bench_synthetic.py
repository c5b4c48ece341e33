"""Time the synthetic motion dataset: rendering alone, encoding alone, and full parallel generation.

python benchmarks/bench_synthetic.py                      # 10 classes x (120 + 30) clips, 16 x 64 x 64, 2 workers
python benchmarks/bench_synthetic.py --per-class 20 --workers 1
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from rsa_lightning.data.synthetic import MOTIONS, _encode_mp4, generate_synthetic_dataset, render_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=120, help="train clips per class (val gets a quarter)")
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample", type=int, default=40, help="clips timed one by one for the render/encode split")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    motions = list(MOTIONS)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        clips = [
            render_clip(motions[i % len(motions)], np.random.default_rng(i), num_frames=args.num_frames, size=args.size)
            for i in range(args.sample)
        ]
        render_s = (time.perf_counter() - start) / args.sample
        start = time.perf_counter()
        for i, clip in enumerate(clips):
            _encode_mp4(Path(tmp) / f"{i}.mp4", clip, fps=12)
        encode_s = (time.perf_counter() - start) / args.sample
        print(
            f"one process: render {render_s * 1e3:.1f} ms/clip, encode {encode_s * 1e3:.1f} ms/clip "
            f"(render share {render_s / (render_s + encode_s):.0%})"
        )

        val_per_class = max(1, args.per_class // 4)
        total = len(motions) * (args.per_class + val_per_class)
        start = time.perf_counter()
        generate_synthetic_dataset(
            Path(tmp) / "dataset",
            train_per_class=args.per_class,
            val_per_class=val_per_class,
            num_frames=args.num_frames,
            size=args.size,
            workers=args.workers,
        )
        elapsed = time.perf_counter() - start
        serial = total * (render_s + encode_s)
        print(
            f"generate: {total} clips ({len(motions)} classes, {args.num_frames} x {args.size} x {args.size}) with "
            f"{args.workers} worker(s) in {elapsed:.1f} s = {total / elapsed:.1f} clips/s "
            f"(speed-up {serial / elapsed:.2f}x over one process)"
        )


if __name__ == "__main__":
    main()
