"""The training step of the tiny networks with the speed options of the model config, and whether they change the
training trajectory.

    python benchmarks/tiny_options.py                      # 1 thread, 5 interleaved rounds of 3 steps
    python benchmarks/tiny_options.py --threads 2 --repeats 7
    python benchmarks/tiny_options.py --trajectory 40      # also: 40 AdamW steps side by side, logits compared
    python benchmarks/tiny_options.py --threads 2 --profile  # where make train's step goes (torch.profiler)

Variants (``conf/train.yaml`` composed as ``train.py`` does, ``model=rsa_tiny`` / ``tsn_tiny``, same weights):
    rsa_tiny, lean             ``model.net.stmixer.recompute_windows=true`` (the layer's default: the RSA window sums
                               recomputed in backward), contiguous memory: the default before these options
    rsa_tiny, keep windows     ``recompute_windows=false`` (the window sums kept for backward; rsa_tiny's default)
    rsa_tiny, channels-last    ``model.net.channels_last=true`` with the lean RSA layer
    rsa_tiny, both             both options
    tsn_tiny                   the same network without RSA, contiguous and ``channels_last=true``

One training step: forward of a fixed (16, 3, 8, 56, 56) batch (``data=synthetic``'s clips, normalised), cross-entropy,
backward, AdamW step, zero_grad; training mode. Time per step: the median over ``--repeats`` rounds, each running
every variant ``--steps`` times, in turn (the order reversed every other round). With one thread it is the thread's
CPU time (``time.thread_time``: steady when other processes load the machine); with more, wall-clock time. The ratio
is to ``rsa_tiny, lean`` (``tsn_tiny, channels-last`` to ``tsn_tiny``). Only ratios in one run mean anything.

``--trajectory N`` trains the four rsa_tiny variants side by side for N AdamW steps (lr 2e-3, dropout off) on the
same random batches and prints how far each one's logits are from the lean variant's (relative Frobenius norm):
0 means bit-identical training; channels-last rounds differently (other summation orders in oneDNN's convolutions)
and AdamW's first steps amplify that (a parameter with a near-zero gradient moves by +-lr whatever its sign noise),
so a run with it follows another trajectory from the same seed.

``--profile`` runs ``torch.profiler`` instead over 5 training steps of ``rsa_tiny`` as ``make train`` builds it
(``recompute_windows=false``, contiguous memory) and prints the operations by self CPU time, without and with
their input shapes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from rsa_layer import positive  # benchmarks/ is on sys.path when a script in it runs

CONF = Path(__file__).resolve().parents[1] / "conf"
KEEP, RECOMPUTE = "model.net.stmixer.recompute_windows=false", "model.net.stmixer.recompute_windows=true"
CHANNELS_LAST, CONTIGUOUS = "model.net.channels_last=true", "model.net.channels_last=false"
VARIANTS = {
    "rsa_tiny, lean": ("rsa_tiny", [RECOMPUTE, CONTIGUOUS]),
    "rsa_tiny, keep windows": ("rsa_tiny", [KEEP, CONTIGUOUS]),
    "rsa_tiny, channels-last": ("rsa_tiny", [RECOMPUTE, CHANNELS_LAST]),
    "rsa_tiny, both": ("rsa_tiny", [KEEP, CHANNELS_LAST]),
    "tsn_tiny": ("tsn_tiny", [CONTIGUOUS]),
    "tsn_tiny, channels-last": ("tsn_tiny", [CHANNELS_LAST]),
}
BASELINE = {name: "tsn_tiny" if name.startswith("tsn") else "rsa_tiny, lean" for name in VARIANTS}


def build(model: str, overrides: list[str], dropout: float | None = None) -> torch.nn.Module:
    """The network of ``model=<model>`` with ``overrides``, seeded so every variant starts from the same weights."""
    extra = [] if dropout is None else [f"model.net.dropout={dropout}"]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", *overrides, *extra])
    torch.manual_seed(0)
    return instantiate(cfg.model.net).train()


class Step:
    """One training step of a network on a fixed batch (AdamW, the rsa_tiny recipe's lr)."""

    def __init__(self, net: torch.nn.Module, video: torch.Tensor, labels: torch.Tensor) -> None:
        self.net, self.video, self.labels = net, video, labels
        self.optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3)

    def __call__(self) -> torch.Tensor:
        logits = self.net(self.video)
        torch.nn.functional.cross_entropy(logits, self.labels).backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return logits.detach()


def fixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded (16, 3, 8, 56, 56) batch and its labels that every timed or profiled step runs on."""
    torch.manual_seed(1)
    return torch.randn(16, 3, 8, 56, 56), torch.randint(0, 10, (16,))


def time_steps(args: argparse.Namespace) -> None:
    video, labels = fixed_batch()
    steps = {name: Step(build(model, overrides), video, labels) for name, (model, overrides) in VARIANTS.items()}
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    for step in steps.values():  # warm-up: oneDNN primitives, allocator
        step()
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(args.repeats):
        for name in list(steps) if round_ % 2 == 0 else list(steps)[::-1]:
            start = clock()
            for _ in range(args.steps):
                steps[name]()
            times[name].append((clock() - start) / args.steps * 1000)
    medians = {name: statistics.median(values) for name, values in times.items()}
    kind = "thread CPU" if args.threads == 1 else "wall-clock"
    print(f"training step, batch 16 x 8 x 56 x 56, {args.threads} thread(s), {kind} ms, median of {args.repeats}")
    if args.repeats == 1:
        print("(one round: a smoke run, its ratios are not measurements)")
    print(f"{'variant':<26} {'ms':>8} {'speed-up':>9}")
    for name, ms in medians.items():
        print(f"{name:<26} {ms:8.1f} {medians[BASELINE[name]] / ms:8.2f}x")


def profile_step(steps: int = 5, rows: int = 25) -> None:
    """torch.profiler tables (self CPU time) of ``steps`` training steps of rsa_tiny as ``make train`` builds it."""
    from torch.profiler import ProfilerActivity, profile

    step = Step(build("rsa_tiny", [KEEP, CONTIGUOUS]), *fixed_batch())
    for _ in range(3):  # warm-up: oneDNN primitives, allocator
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    averages = prof.key_averages()
    total = sum(event.self_cpu_time_total for event in averages)
    print(f"rsa_tiny training step, batch 16 x 8 x 56 x 56, {torch.get_num_threads()} thread(s), {steps} steps")
    print(f"self CPU per step: {total / steps / 1000:.1f} ms")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40))
    print(
        prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=30, max_shapes_column_width=90
        )
    )


def trajectory(args: argparse.Namespace) -> None:
    names = [name for name in VARIANTS if name.startswith("rsa_tiny")]
    nets = {name: build(*VARIANTS[name], dropout=0.0) for name in names}
    optimizers = {name: torch.optim.AdamW(net.parameters(), lr=2e-3) for name, net in nets.items()}
    generator = torch.Generator().manual_seed(1)
    print(f"\nlogits against 'rsa_tiny, lean' after each step (relative), {args.trajectory} AdamW steps, dropout off")
    print("step  " + "  ".join(f"{name.removeprefix('rsa_tiny, '):>14}" for name in names[1:]))
    for step in range(args.trajectory):
        video = torch.randn(16, 3, 8, 56, 56, generator=generator)
        labels = torch.randint(0, 10, (16,), generator=generator)
        logits = {}
        for name, net in nets.items():
            logits[name] = net(video)
            torch.nn.functional.cross_entropy(logits[name], labels).backward()
            optimizers[name].step()
            optimizers[name].zero_grad()
        if step < 3 or step % 10 == 9 or step == args.trajectory - 1:
            lean = logits[names[0]].detach()
            diffs = [((logits[name].detach() - lean).norm() / lean.norm()).item() for name in names[1:]]
            print(f"{step:4d}  " + "  ".join(f"{d:14.1e}" for d in diffs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive, default=1, help="torch intra-op threads (1: CPU time is timed)")
    parser.add_argument("--repeats", type=positive, default=5, help="interleaved rounds (medians are reported)")
    parser.add_argument("--steps", type=positive, default=3, help="steps per variant and round")
    parser.add_argument("--trajectory", type=int, default=0, help="also train side by side for this many steps")
    parser.add_argument("--profile", action="store_true", help="profile make train's rsa_tiny step instead")
    args = parser.parse_args(argv)
    if args.trajectory < 0:
        parser.error(f"--trajectory must be >= 0, got {args.trajectory}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if args.threads > cores:
        parser.error(
            f"--threads {args.threads} is more than the {cores} core(s) this process may use: threads would share cores"
        )
    torch.set_num_threads(args.threads)
    if args.profile:
        profile_step()
        return
    time_steps(args)
    if args.trajectory:
        trajectory(args)


if __name__ == "__main__":
    sys.exit(main())
