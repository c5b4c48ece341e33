"""Clips per second of a full training step, model alone vs with the real data loader, fast vs reference RSA path.

python benchmarks/train_step.py                          # rsa_tiny and rsa_r50, 3 interleaved repetitions
python benchmarks/train_step.py --cache /tmp/train_step  # keep the generated videos for the next run
python benchmarks/train_step.py --models rsa_tiny --repeats 5 --threads 1   # rsa_tiny only, 1 thread (~1 min)
python benchmarks/train_step.py --models rsa_tiny --repeats 1 --steps 1     # a smoke run (under a minute)
python benchmarks/train_step.py --repeats 7 --steps 4    # more repetitions and longer segments (steadier ratios)

The default run took 8 min on the 2-core machine while other jobs held it (rsa_r50's steps take seconds each);
rsa_tiny alone with one thread, 1 min.

Both models and their data are built from the project's Hydra configs (``conf/train.yaml`` composed with
``model=<name>`` and ``data=synthetic``, as ``train.py`` does), so the benchmark times what training runs:

* ``rsa_tiny``: its own clips (``conf/data/synthetic.yaml``: 8 x 56 x 56, batch 16, 2 workers);
* ``rsa_r50``: 8 x 112 x 112, batch 2 (``data.crop_size=112``, frames generated and resized at 128 x 128).

The data is the generated motion-video set (:mod:`rsa_lightning.data.synthetic`, H.264 mp4), a small one
(``--per-class`` training videos of each of the 10 classes) under ``--cache``, or a temporary folder.

What one training step is: ``VideoDataModule.on_after_batch_transfer`` (uint8 -> float, mean/std normalisation), the
module's forward and loss (``VideoClassifier.criterion``), ``backward``, the configured optimiser's ``step`` (AdamW
for rsa_tiny, SGD with Nesterov momentum for rsa_r50, with the module's parameter groups) and ``zero_grad``; no
Lightning Trainer around it (its logging and metrics are not timed).

For each model it times (clips/s; ``--repeats`` repetitions, each running every case once, in the order below and
reversed in every other repetition):

* ``fast, model only``: the step on one fixed uint8 batch in memory (random pixels, the loader's shape and dtype),
  ``model.net.stmixer.implementation=fast``;
* ``fast, with loader``: the step on the batches of ``VideoDataModule.train_dataloader()`` (real decoding, sampling,
  transforms, ``data.num_workers`` persistent workers);
* ``loader alone``: the batches of that loader without a step (decoding speed in the same setting);
* ``reference, with loader`` and ``reference, model only``: the same with ``implementation=reference``.

Every case runs one untimed step first (warm-up); then each timed segment is ``--steps`` steps (``loader alone``: at
least the prefetch depth in batches). Before a segment that reads the loader, the batches the workers prefetched
during other segments (``num_workers x 2``) are dropped and one step runs untimed: the queue then holds what the
workers decode during one step, as in a steady run. Each ratio is the median of its per-repetition ratios (its two
terms measured close in time, under the same load), with their range.
Torch uses its default intra-op threads (the cores); the loader's workers share them, as in ``train.py``.

How to read it: ``with loader / model only`` near 1.0 means loading does not stall training (the acceptance of
issue 14: >= 0.8 for rsa_tiny where ``loader alone`` is faster than the model step); ``fast / reference`` is the
speed-up of the whole training step from the RSA fast path. Absolute clips/s depend on the machine and its load:
read the ratios.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = ("fast", "reference")
# timed steps per case and repetition (--steps): rsa_r50's step takes seconds on a CPU
DEFAULT_STEPS = {"rsa_tiny": 2, "rsa_r50": 1}
# model -> overrides of conf/train.yaml (besides the data root and size of the generated set)
MODELS = {
    "rsa_tiny": [],
    "rsa_r50": [
        "data.crop_size=112",
        "data.batch_size=2",
        "data.prepare.size=128",
        "data.train_transform.resize=128",
        "data.eval_transform.resize=128",
    ],
}


def compose(model: str, implementation: str, data_root: Path, per_class: int, extra: list[str]):
    """``conf/train.yaml`` with ``model=<model>``, ``data=synthetic`` at ``data_root`` and the RSA path chosen."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = [
        f"model={model}",
        "data=synthetic",
        f"data.root={data_root}",
        f"data.prepare.train_per_class={per_class}",
        "data.prepare.val_per_class=1",
        f"model.net.stmixer.implementation={implementation}",
        *MODELS[model],
        *extra,
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


class Case:
    """One model with one RSA path: the module, its optimiser and one training step on a uint8 batch."""

    def __init__(self, cfg, datamodule) -> None:
        import hydra

        from rsa_lightning.modules.optim import param_groups

        torch.manual_seed(0)
        self.module = hydra.utils.instantiate(cfg.model)
        self.module.train()
        self.optimizer = self.module.optimizer_factory(
            params=param_groups(self.module.net, self.module.hparams.weight_decay)
        )
        self.datamodule = datamodule

    def step(self, batch: dict) -> None:
        batch = self.datamodule.on_after_batch_transfer(dict(batch), 0)  # uint8 -> normalised float
        logits = self.module(batch["video"])  # (B, num_classes)
        loss = self.module.criterion(logits, batch["label"])
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def endless(loader) -> Iterator[dict]:
    """The loader's batches, epoch after epoch (persistent workers stay up between epochs)."""
    while True:
        yield from loader


def timed(run: Callable[[], None], steps: int, clips_per_step: int, settle: Callable[[], None] | None = None) -> float:
    """clips/s of ``steps`` calls of ``run``, after ``settle()`` (untimed) when given."""
    if settle is not None:
        settle()
    start = time.perf_counter()
    for _ in range(steps):
        run()
    return steps * clips_per_step / (time.perf_counter() - start)


def benchmark_model(model: str, args: argparse.Namespace, cache: Path) -> dict[str, list[float]]:
    """clips/s of every case of ``model`` in each repetition (keys ``"<path>, model only"``, ``"<path>, with loader"``,
    ``"loader alone"``)."""
    import hydra

    size = 128 if model == "rsa_r50" else 64
    data_root = cache / f"synthetic_{size}px_{args.per_class}"
    extra = [f"data.num_workers={args.workers}"] if args.workers is not None else []
    configs = {impl: compose(model, impl, data_root, args.per_class, extra) for impl in IMPLEMENTATIONS}
    cfg = configs["fast"]
    datamodule = hydra.utils.instantiate(cfg.data, seed=0)
    start = time.perf_counter()
    datamodule.prepare_data()  # generates the videos on first use
    datamodule.setup("fit")
    print(f"  data: {data_root} ({time.perf_counter() - start:.0f} s to prepare)", flush=True)
    cases = {impl: Case(configs[impl], datamodule) for impl in IMPLEMENTATIONS}
    prefetched = 2 * datamodule.num_workers  # the loader's prefetch depth (prefetch_factor 2)
    # one epoch spans the whole run (the list of videos repeated), so no epoch start stalls a timed segment
    dataset = datamodule.datasets["train"]
    steps = args.steps or DEFAULT_STEPS[model]
    loader_steps = max(steps, prefetched)  # batches timed for "loader alone" (cheap)
    needed = (args.repeats * (3 * prefetched + 2 * steps + loader_steps + 3) + 6) * datamodule.batch_size
    dataset.records = dataset.records * math.ceil(needed / len(dataset.records))
    loader = datamodule.train_dataloader()
    batches = endless(loader)
    first = next(batches)  # starts the workers
    batch_size = first["video"].shape[0]
    generator = torch.Generator().manual_seed(0)
    fixed = {
        "video": torch.randint(0, 256, first["video"].shape, dtype=torch.uint8, generator=generator),
        "label": torch.randint(0, cfg.data.num_classes, (batch_size,), generator=generator),
    }
    c, t, h, w = first["video"].shape[1:]
    print(f"  clips: {t} x {h} x {w} ({c} channels, uint8), batch {batch_size}, {datamodule.num_workers} workers")

    fast, reference = cases["fast"], cases["reference"]
    runs: dict[str, Callable[[], None]] = {  # in this order, then reversed: the pairs of a ratio are neighbours
        "fast, model only": lambda: fast.step(fixed),
        "fast, with loader": lambda: fast.step(next(batches)),
        "loader alone": lambda: next(batches),
        "reference, with loader": lambda: reference.step(next(batches)),
        "reference, model only": lambda: reference.step(fixed),
    }

    def settle(run: Callable[[], None]) -> Callable[[], None]:
        """Drop what the loader prefetched during other segments, then run once untimed: the queue then holds what
        the workers decode during one step, as in a steady run, whichever of loading and the step is faster."""

        def drop_then_run() -> None:
            for _ in range(prefetched):
                next(batches)
            run()

        return drop_then_run

    for run in runs.values():  # warm-up, untimed: first-call set-up (allocations, kernel choices)
        run()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(args.repeats):
        names = list(runs) if rep % 2 == 0 else list(reversed(runs))  # drift in the machine's load cancels out
        for name in names:
            count = loader_steps if name == "loader alone" else steps
            rates[name].append(timed(runs[name], count, batch_size, settle(runs[name]) if "loader" in name else None))
        print(f"  repetition {rep + 1}/{args.repeats} done", flush=True)
    return rates


def report(model: str, rates: dict[str, list[float]]) -> list[str]:
    """The result lines: median clips/s (and the range over repetitions) of each case, then each ratio as the median
    of its per-repetition ratios (both terms measured minutes apart at most, under the same load)."""
    lines = [f"{model}: clips/s, median (min - max over repetitions)"]
    for name in ("fast, model only", "reference, model only", "fast, with loader", "reference, with loader"):
        values = rates[name]
        lines.append(f"  {name:24s} {statistics.median(values):8.2f}   ({min(values):.2f} - {max(values):.2f})")
    values = rates["loader alone"]
    lines.append(f"  {'loader alone':24s} {statistics.median(values):8.2f}   ({min(values):.2f} - {max(values):.2f})")

    def ratio(numerator: str, denominator: str) -> str:
        each = [a / b for a, b in zip(rates[numerator], rates[denominator])]
        return f"{statistics.median(each):.2f}   ({min(each):.2f} - {max(each):.2f})"

    for impl in IMPLEMENTATIONS:
        lines.append(
            f"  ratio {model} {impl}: with loader / model only = {ratio(f'{impl}, with loader', f'{impl}, model only')}"
        )
    for mode in ("model only", "with loader"):
        lines.append(f"  ratio {model} {mode}: fast / reference = {ratio(f'fast, {mode}', f'reference, {mode}')}")
    lines.append(f"  ratio {model} loader alone / fast model only = {ratio('loader alone', 'fast, model only')}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS), help="models to time")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions (medians are reported)")
    parser.add_argument(
        "--steps", type=int, default=None, help=f"timed steps per case and repetition (default: {DEFAULT_STEPS})"
    )
    parser.add_argument("--per-class", type=int, default=4, help="generated training videos per class (10 classes)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: data.num_workers)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--cache", type=Path, default=None, help="folder for the generated videos (kept)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or (args.steps is not None and args.steps < 1) or args.per_class < 1:
        parser.error("--repeats, --steps and --per-class must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.workers is not None and args.workers < 0:
        parser.error(f"--workers must be >= 0 (0: load in the training process), got {args.workers}")
    if args.repeats == 1:
        print("one repetition: a smoke run, its ratios are not measurements (use --repeats 3 or more)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(ROOT))

    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        steps = args.steps or ", ".join(f"{DEFAULT_STEPS[m]} ({m})" for m in args.models)
        threads = torch.get_num_threads()
        print(f"torch {torch.__version__}, {threads} threads; {args.repeats} repetitions x {steps} timed steps a case")
        lines = []
        for model in args.models:
            print(f"{model}:", flush=True)
            lines += report(model, benchmark_model(model, args, cache))
        print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
