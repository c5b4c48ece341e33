"""Throughput of the training data loader against bare decord decoding of the same frames, as ratios.

python benchmarks/loader.py                       # 32 clips per set, 8 frames per clip, 2 workers
python benchmarks/loader.py --clips 64 --cache /tmp/loader_bench   # keep the generated clips for the next run

Two SSv2-like sets are generated once: VP9 webm at 427 x 240, 12 fps, 3 s (as Something-Something v2 ships), and
the same content as H.264 mp4 (426 x 240: x264 needs even sizes), plus the webm set extracted to JPEG folders. For
each set, in one run, it times (clips per second, one pass over every clip, best of ``--repeats``):

* bare decord: ``VideoReader(path).get_batch(indices)``, one process; the reference (ratio 1.00);
* bare decord in ``--workers`` processes (the parallel ceiling for the loader);
* bare torchcodec: ``VideoDecoder(path, seek_mode="exact").get_frames_at(indices)``, one process (when torchcodec
  loads; else a line says why not);
* each backend alone, one process: DecordBackend (seek_mode auto / seek), PyAVBackend, TorchCodecBackend,
  FrameFolderBackend; TorchCodecBackend's frames are compared with PyAVBackend's (exact) on every clip;
* VideoDataset + the official recipe's :class:`TrainTransform` (TSN multi-scale crop of the frame resized to
  240 x 320, resized to 224, flip; the ``conf/data/_video_defaults.yaml`` settings: ``crop_first``, the window cut
  from the decoded frame and resampled once), in process;
* the same in a DataLoader with ``--workers`` workers (persistent workers, epochs after the first; the first,
  with start-up, separately), with the two-stage transform (``crop_first=False``: every frame resized to 240 x 320,
  then the window to 224), and without the transform;
* once, on one decoded clip: the frame resize of the transforms (uint8 kernel, ``transforms._interpolate``) against
  the earlier float path (uint8 -> float32, interpolate, round back), and the official TrainTransform with and
  without ``crop_first`` (the same random windows), in ms per clip.

All paths decode the same frames (segment centres of 8 segments). The acceptance of issue 14 is the line
``loader / bare decord in N processes`` of each set (the loader alone, no transform, against bare decoding of the same
indices in as many processes: >= 0.9); ``with TrainTransform`` adds the transform's cost. These ratios are not taken
from the rates above (measured minutes apart, while this machine's speed drifts) but from interleaved rounds: each
round times bare decoding in N processes and each DataLoader, in turn, over ``--pass-repeats`` passes over the clips
(by default 4: a shuffled epoch of 4 x ``--clips`` clips for a DataLoader); the median and range of the per-round
ratios are printed. Long passes, because a DataLoader hands its batches to the workers in turn (a worker that
finishes early waits at the end of an epoch, while a ``multiprocessing.Pool`` hands out chunks as processes free up):
with one pass of 64 clips (8 batches) that end-of-epoch wait is up to a quarter of the pass, in a training epoch of
hundreds of batches it is one batch. Numbers depend on the machine and its load: read the ratios, not the absolute
values.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rsa_layer import positive  # benchmarks/ is on sys.path when a script in it runs
from torch.utils.data import DataLoader, RandomSampler

from rsa_lightning.data.annotations import VideoRecord
from rsa_lightning.data.dataset import VideoDataset
from rsa_lightning.data.decoding import DecordBackend, FrameFolderBackend, PyAVBackend, TorchCodecBackend
from rsa_lightning.data.sampling import segment_centre_indices
from rsa_lightning.data.transforms import TrainTransform, resize_frames
from rsa_lightning.errors import ConfigError
from rsa_lightning.tools.extract_frames import ExtractOptions, extract_frames

NUM_SEGMENTS = 8
LOADER_CROP_FIRST, LOADER_TWO_STAGE, LOADER_ALONE = (
    ", with TrainTransform",
    ", with TrainTransform(crop_first=false)",
    "",
)


def render_clip(seed: int, num_frames: int, width: int, height: int) -> np.ndarray:
    """Moving sinusoidal textures plus noise: compresses like camera footage more than flat colours do."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    freq = rng.uniform(0.02, 0.12, (3, 2))
    speed = rng.uniform(-3, 3, (3, 2))
    frames = []
    for t in range(num_frames):
        channels = [
            127 + 100 * np.sin(freq[c, 0] * (x + speed[c, 0] * t)) * np.cos(freq[c, 1] * (y + speed[c, 1] * t))
            for c in range(3)
        ]
        frame = np.stack(channels, axis=-1) + rng.normal(0, 6, (height, width, 3))
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(frames)


def encode(args: tuple) -> None:
    import av

    path, seed, num_frames, width, height, codec = args
    frames = render_clip(seed, num_frames, width, height)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libvpx-vp9":
            stream.options = {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8", "g": "60"}
        else:
            stream.options = {"crf": "23", "preset": "fast", "g": "16"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_sets(root: Path, clips: int, workers: int) -> dict[str, list[Path]]:
    jobs, sets = [], {"webm": [], "mp4": []}
    for i in range(clips):
        for name, codec, width in (("webm", "libvpx-vp9", 427), ("mp4", "libx264", 426)):
            path = root / name / f"{i:05d}.{name}"
            sets[name].append(path)
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                jobs.append((path, i, 36, width, 240, codec))
    if jobs:
        start = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pool.map(encode, jobs)
        print(f"generated {len(jobs)} clips in {time.perf_counter() - start:.0f} s under {root}")
    extract_frames(root / "webm", root / "frames", workers=workers, options=ExtractOptions(quality=90))
    sets["frames"] = [root / "frames" / p.stem for p in sets["webm"]]
    return sets


def centre_sampler(n: int, rng=None, view: int = 0, num_views: int = 1) -> np.ndarray:
    return segment_centre_indices(n, NUM_SEGMENTS)


def official_train_transform(crop_first: bool = True) -> TrainTransform:
    """The training transform of the real-dataset configs (``conf/data/_video_defaults.yaml``), flipping any clip."""
    return TrainTransform(
        resize=[240, 320],
        crop_size=224,
        scales=[1.0, 0.875, 0.75, 0.66],
        max_distort=1,
        flip="always",
        crop_first=crop_first,
    )


def float_resize(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The earlier resize path of the transforms: uint8 (C, T, H, W) -> float32, bilinear (antialiased), rounded."""
    frames = video.permute(1, 0, 2, 3).float()  # (T, C, H, W)
    frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)
    return frames.round_().clamp_(0, 255).to(torch.uint8).permute(1, 0, 2, 3)


def resize_ms(clip: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median ms of resizing ``clip`` (uint8 (C, T, H, W)) to 240 x 320 by both paths, interleaved."""
    times: dict[str, list[float]] = {"uint8 kernel": [], "float path": []}
    for _ in range(max(5, 5 * repeats)):
        for name, fn in (("uint8 kernel", resize_frames), ("float path", float_resize)):
            start = time.perf_counter()
            fn(clip, (240, 320))
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: float(np.median(values)) for name, values in times.items()}


def transform_ms(clip: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median ms of the official TrainTransform of ``clip`` with and without ``crop_first``, interleaved, the same
    random window for both in each round (the window size varies between rounds)."""
    transforms = {"crop_first=true": official_train_transform(), "crop_first=false": official_train_transform(False)}
    times: dict[str, list[float]] = {name: [] for name in transforms}
    for seed in range(max(20, 20 * repeats)):
        for name, transform in transforms.items():
            start = time.perf_counter()
            transform(clip, label=0, generator=torch.Generator().manual_seed(seed))
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: float(np.median(values)) for name, values in times.items()}


def bare_decord(path: Path) -> int:
    import decord

    reader = decord.VideoReader(str(path), num_threads=1)
    frames = reader.get_batch(segment_centre_indices(len(reader), NUM_SEGMENTS).tolist()).asnumpy()
    return frames.shape[0]


def bare_torchcodec(path: Path) -> int:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(str(path), seek_mode="exact", num_ffmpeg_threads=1, dimension_order="NHWC")
    indices = segment_centre_indices(decoder.metadata.num_frames, NUM_SEGMENTS)
    return decoder.get_frames_at(indices.tolist()).data.shape[0]


def torchcodec_backend() -> TorchCodecBackend | None:
    """TorchCodecBackend, or None (printed why) when torchcodec cannot be loaded here."""
    try:
        return TorchCodecBackend()
    except ConfigError as err:
        print(f"torchcodec rows left out: {err}")
        return None


def same_frames(backend, reference_backend, records: list) -> bool:
    """Whether ``backend`` returns the frames of ``reference_backend`` (per pixel) on every clip of ``records``."""
    return all(
        np.array_equal(backend.read(r, centre_sampler)[0], reference_backend.read(r, centre_sampler)[0])
        for r in records
    )


def best_rate(fn, count: int, repeats: int) -> float:
    """Best clips/s of ``repeats`` runs of ``fn`` (which handles ``count`` clips)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def interleaved_ratios(fns: dict[str, Callable[[], object]], reference: str, rounds: int) -> dict[str, list[float]]:
    """Per round, the time of ``fns[reference]`` over the time of each other function (a speed ratio: > 1 is faster
    than the reference), all run once per round in turn, the order reversed every other round: ratios measured
    seconds apart, which the machine's changes of speed move far less than rates measured minutes apart."""
    names = list(fns)
    ratios: dict[str, list[float]] = {name: [] for name in names if name != reference}
    for round_index in range(rounds):
        seconds = {}
        for name in names if round_index % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            seconds[name] = time.perf_counter() - start
        for name in ratios:
            ratios[name].append(seconds[reference] / seconds[name])
    return ratios


def measure(
    name: str, sets: dict, records: dict, args: argparse.Namespace, torchcodec
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """clips/s of every path on set ``name`` (``torchcodec``: a TorchCodecBackend, or None to leave its rows out), and
    the per-round ratios of the DataLoaders to bare decord in as many processes (:func:`interleaved_ratios`)."""
    n, paths, rates = args.clips, sets[name], {}
    rates["bare decord, 1 process"] = best_rate(lambda: [bare_decord(p) for p in paths], n, args.repeats)
    if torchcodec is not None:
        rates["bare torchcodec, 1 process"] = best_rate(lambda: [bare_torchcodec(p) for p in paths], n, args.repeats)
    backends = {
        "DecordBackend(auto)": (DecordBackend(), records[name]),
        "DecordBackend(seek)": (DecordBackend(seek_mode="seek"), records[name]),
        "PyAVBackend": (PyAVBackend(), records[name]),
    }
    if torchcodec is not None:
        backends["TorchCodecBackend"] = (torchcodec, records[name])
    if name == "webm":
        backends["FrameFolderBackend (JPEG q90)"] = (FrameFolderBackend(), records["frames"])
    for label, (backend, recs) in backends.items():
        rates[label] = best_rate(lambda b=backend, rs=recs: [b.read(r, centre_sampler) for r in rs], n, args.repeats)

    def dataset(transform: TrainTransform | None) -> VideoDataset:
        return VideoDataset(
            records=records[name], backend=DecordBackend(), sampler=centre_sampler, transform=transform, training=True
        )

    in_process = dataset(official_train_transform())
    rates["VideoDataset + TrainTransform, in process"] = best_rate(
        lambda: [in_process[i] for i in range(len(in_process))], n, args.repeats
    )
    bare_parallel = f"bare decord, {args.workers} processes"
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        pool.map(bare_decord, paths[: args.workers])  # warm-up
        rates[bare_parallel] = best_rate(lambda: pool.map(bare_decord, paths), n, args.repeats)
        long_passes = {bare_parallel: lambda: pool.map(bare_decord, paths * args.pass_repeats)}
        for label, transform in (
            (LOADER_CROP_FIRST, official_train_transform()),
            (LOADER_TWO_STAGE, official_train_transform(False)),
            (LOADER_ALONE, None),
        ):
            clips = dataset(transform)
            loader = DataLoader(
                clips, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, persistent_workers=True
            )
            start = time.perf_counter()
            for _ in loader:  # first epoch: includes worker start-up
                pass
            if label == LOADER_CROP_FIRST:
                rates[f"DataLoader, {args.workers} workers, epoch 1 (start-up)"] = n / (time.perf_counter() - start)
            rates[f"DataLoader, {args.workers} workers{label}"] = best_rate(
                lambda lo=loader: [None for _ in lo], n, args.repeats
            )
            del loader  # its workers stop
            long_loader = DataLoader(  # the interleaved rounds: one shuffled epoch of pass_repeats x n clips
                clips,
                batch_size=args.batch_size,
                sampler=RandomSampler(clips, num_samples=args.pass_repeats * n),
                num_workers=args.workers,
                persistent_workers=True,
            )
            long_passes[label] = lambda loader=long_loader: [None for _ in loader]
            long_passes[label]()  # start-up
        ratios = interleaved_ratios(long_passes, bare_parallel, rounds=max(5, 2 * args.repeats))
    return rates, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=positive, default=32, help="clips per set")
    parser.add_argument("--workers", type=positive, default=2, help="DataLoader workers (and parallel bare decoding)")
    parser.add_argument("--batch-size", type=positive, default=8)
    parser.add_argument(
        "--repeats", type=positive, default=3, help="rates: best of N passes; ratios: max(5, 2 N) interleaved rounds"
    )
    parser.add_argument("--pass-repeats", type=positive, default=4, help="passes over the clips per interleaved round")
    parser.add_argument("--cache", type=Path, default=None, help="folder for the generated clips (kept)")
    args = parser.parse_args()
    if args.cache is not None and args.cache.exists() and not args.cache.is_dir():
        parser.error(f"--cache {args.cache}: not a folder")
    if args.cache is not None:
        try:
            args.cache.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            parser.error(f"--cache {args.cache}: cannot create the folder ({err.strerror})")
    torch.set_num_threads(1)
    batches_per_round = args.clips * args.pass_repeats // args.batch_size
    if args.repeats == 1 or batches_per_round < 4 * args.workers:
        print(
            f"smoke test: {batches_per_round} batches per round for {args.workers} workers and --repeats "
            f"{args.repeats}; the ratios are not measurements (the documented runs: --clips 64 --repeats 3)"
        )

    with tempfile.TemporaryDirectory() as tmp:
        root = args.cache or Path(tmp)
        sets = make_sets(root, args.clips, args.workers)
        records = {name: [VideoRecord(path=p, label=0, video_id=p.stem) for p in paths] for name, paths in sets.items()}
        torchcodec = torchcodec_backend()
        print(f"\n{args.clips} clips per set, {NUM_SEGMENTS} frames per clip, {args.workers} workers")
        print("clips/s and ratio to bare decord in one process")

        for name in ("webm", "mp4"):
            rates, ratios = measure(name, sets, records, args, torchcodec)
            bare = rates["bare decord, 1 process"]
            print(f"\n{name} ({'VP9 427x240' if name == 'webm' else 'H.264 426x240'}, 36 frames)")
            for label, rate in rates.items():
                print(f"  {label:62s} {rate:7.1f} clips/s   {rate / bare:5.2f}x")
            rounds = len(ratios[LOADER_ALONE])
            print(
                f"  against bare decord in {args.workers} processes, interleaved (median and range of {rounds} "
                f"rounds of {args.pass_repeats} x {args.clips} clips):"
            )
            for label, text in (
                (LOADER_ALONE, "loader"),
                (LOADER_CROP_FIRST, "loader with TrainTransform"),
                (LOADER_TWO_STAGE, "the same with crop_first=false"),
            ):
                values = ratios[label]
                print(
                    f"  {text} / bare decord in {args.workers} processes: {statistics.median(values):.2f} "
                    f"({min(values):.2f}-{max(values):.2f})"
                )
            if torchcodec is not None:
                backend_ratio = rates["TorchCodecBackend"] / rates["DecordBackend(auto)"]
                bare_ratio = rates["bare torchcodec, 1 process"] / bare
                exact = same_frames(torchcodec, PyAVBackend(), records[name])
                print(f"  TorchCodecBackend / DecordBackend(auto): {backend_ratio:.2f}")
                print(f"  bare torchcodec / bare decord: {bare_ratio:.2f}")
                print(f"  TorchCodecBackend's frames equal PyAVBackend's on every clip: {exact}")
        clip = torch.from_numpy(DecordBackend().read(records["webm"][0], centre_sampler)[0]).permute(3, 0, 1, 2)
        times = resize_ms(clip, args.repeats)
        print(f"\nresize of one decoded clip {tuple(clip.shape)} to 240 x 320, ms (median)")
        for name, ms in times.items():
            print(f"  {name:62s} {ms:7.2f} ms")
        print(f"  float path / uint8 kernel: {times['float path'] / times['uint8 kernel']:.2f}")
        times = transform_ms(clip, args.repeats)
        print("\nofficial TrainTransform of the same clip (to 3 x 8 x 224 x 224), ms (median)")
        for name, ms in times.items():
            print(f"  {name:62s} {ms:7.2f} ms")
        print(f"  crop_first=false / crop_first=true: {times['crop_first=false'] / times['crop_first=true']:.2f}")


if __name__ == "__main__":
    main()
