"""Shared test helpers: videos with known frame contents, and composing the real Hydra configs."""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401  (imported before decord, as in the library)

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))


@pytest.fixture(scope="module", autouse=True)
def free_decoders_before_later_forks():
    """After every test module: PyAV frees some encoders and decoders (threads and all) only at a garbage collection;
    collected in a process forked later (a DataLoader or generator worker of another test), they hang or crash it.
    Collect them here, in this process."""
    yield
    gc.collect()


@pytest.fixture(scope="module", autouse=True)
def close_progress_bars_left_open():
    """After every test module: progress bars a test left open (a training that raised inside an epoch) are closed,
    so the next module, in whatever process pytest-xdist runs it, starts without them (an open bar moves new bars to
    a lower line and is cleared with every log record)."""
    yield
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or ()):
        with contextlib.suppress(Exception):  # its file may be closed
            bar.close()


class Background:
    """A command started in the background, so that processes that do not depend on each other run side by side
    (most of a ``train.py`` process's first seconds are imports on one core). Its output goes to temporary files: a
    full pipe never stalls it, however long the others take. :meth:`finish` waits and returns the result."""

    def __init__(self, args: list[str], **popen_kwargs) -> None:
        self.args = args
        self._files = [tempfile.TemporaryFile("w+") for _ in range(2)]  # noqa: SIM115 - closed by finish()
        self.proc = subprocess.Popen(args, stdout=self._files[0], stderr=self._files[1], text=True, **popen_kwargs)

    def finish(self, timeout: float = 600) -> subprocess.CompletedProcess:
        """Waits for the command (killed after ``timeout`` seconds: TimeoutExpired); its exit code and output."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        output = []
        for file in self._files:
            file.seek(0)
            output.append(file.read())
            file.close()
        return subprocess.CompletedProcess(self.args, self.proc.returncode, *output)

    def stop(self) -> None:
        """Kills the command if it still runs (a test that would have waited for it was not run)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for file in self._files:
            file.close()


def run_side_by_side(
    commands: dict[str, tuple[list[str], dict]], at_once: int = 3, timeout: float = 600
) -> dict[str, subprocess.CompletedProcess]:
    """Runs independent commands (name -> (args, keyword arguments of subprocess.Popen)), ``at_once`` at a time;
    returns name -> exit code and output. For command-line tests of commands refused in their first seconds, which
    are mostly imports on one core (a few at once keep memory small)."""
    results, running, waiting = {}, {}, list(commands.items())
    while waiting or running:
        while waiting and len(running) < at_once:
            name, (args, kwargs) = waiting.pop(0)
            running[name] = Background(args, **kwargs)
        name = next(iter(running))  # the oldest: started first, likely done first
        results[name] = running.pop(name).finish(timeout=timeout)
    return {name: results[name] for name in commands}


def train_tiny_run(tmp: Path) -> dict[str, Path]:
    """A checkpoint written by train.py: rsa_tiny, one short epoch on the tiny synthetic data (10 classes) under
    ``tmp``; returns ``tmp``, the checkpoint (``ckpt``) and the data root (``data``)."""
    from rsa_lightning.train import train

    overrides = tiny_synthetic_overrides(tmp / "synthetic") + ["model=rsa_tiny", *TINY_TRAINING]
    train(compose_config("train", overrides, tmp / "run"))
    return {"tmp": tmp, "ckpt": tmp / "run" / "checkpoints" / "last.ckpt", "data": tmp / "synthetic"}


def frame_brightness(i: int) -> int:
    """Grey level of frame ``i`` in :func:`write_brightness_video` (distinct by 7 levels, survives H.264)."""
    return 16 + 7 * (i % 32)


def write_video(path: Path, frames: np.ndarray, fps: int = 12) -> Path:
    """Write uint8 (T, H, W, 3) frames as closed-GOP H.264 mp4 with PyAV (near-lossless)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "4", "g": "8", "bf": "2", "open-gop": "0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_brightness_video(path: Path, num_frames: int, size: int = 32) -> Path:
    """A video whose frame ``i`` is uniformly grey at :func:`frame_brightness` ``(i)``."""
    frames = np.stack([np.full((size, size, 3), frame_brightness(i), np.uint8) for i in range(num_frames)])
    return write_video(path, frames)


def decoded_frame_index(frame: np.ndarray | torch.Tensor) -> int:
    """Invert :func:`frame_brightness` from a decoded frame's mean grey level."""
    mean = float(torch.as_tensor(frame).float().mean())
    return int(round((mean - 16) / 7))


@pytest.fixture
def brightness_dataset(tmp_path: Path) -> Path:
    """A 3-class list dataset of brightness videos of various lengths under ``tmp_path/ds``."""
    root = tmp_path / "ds"
    lengths = [3, 8, 13, 20, 7, 16]
    lines = []
    for i, n in enumerate(lengths):
        write_brightness_video(root / "videos" / f"clip{i}.mp4", n)
        lines.append(f"videos/clip{i}.mp4 {i % 3}")
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (root / "annotations" / "classes.txt").write_text("a\nb\nc\n")
    return root


def reference_stride2_pool(out: np.ndarray) -> np.ndarray:
    """The stride-2 output pooling of the mixers, written as loops: (B, C, T, H, W) -> 3x3 windows every 2 pixels,
    zero padded by 1, each the sum of its 9 cells / 9 (AvgPool3d((1,3,3), (1,2,2), (0,1,1)) counting the padding)."""
    batch, channels, frames, height, width = out.shape
    padded = np.pad(out, ((0, 0), (0, 0), (0, 0), (1, 1), (1, 1)))
    pooled = np.zeros((batch, channels, frames, (height + 1) // 2, (width + 1) // 2))
    for i in range(pooled.shape[3]):
        for j in range(pooled.shape[4]):
            pooled[:, :, :, i, j] = padded[:, :, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].sum(axis=(3, 4)) / 9
    return pooled


def compose_config(config_name: str, overrides: list[str], output_dir: Path):
    """Compose ``conf/<config_name>.yaml`` as ``train.py`` / ``eval.py`` would, with the run dir at ``output_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir.parent / "logs")
        del cfg.hydra
    return cfg


def tiny_synthetic_overrides(root: Path) -> list[str]:
    """The real synthetic data config shrunk to seconds: 10 classes x 2 train / 1 val clips of 8 frames at 32 px,
    rendered in the process that needs them (a pool of generator processes takes seconds to start, the 30 clips a
    fraction of one; the pool itself is tested in test_synthetic.py)."""
    return [
        f"data.root={root}",
        "data.prepare.workers=0",
        "data.prepare.train_per_class=2",
        "data.prepare.val_per_class=1",
        "data.prepare.num_frames=8",
        "data.prepare.size=32",
        "data.train_transform.resize=32",
        "data.train_transform.scales=[1.0]",
        "data.eval_transform.resize=32",
        "data.crop_size=32",
        "data.num_frames=4",
        "data.batch_size=4",
        "data.num_workers=0",
    ]


# the callbacks that draw pictures (kernels, evaluation plots, training clips; about half of a tiny run's time):
# tests of other features leave them out, their own tests (test_visualize_kernels, test_evaluation_plots) keep them
NO_PICTURES = ["~callbacks.kernel_images", "~callbacks.eval_plots", "~callbacks.clip_grid"]

# one short epoch of training and validation on the CPU, quietly, with the default callbacks
TINY_TRAINING_WITH_PICTURES = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "callbacks.model_summary.max_depth=0",
]
# the same without the picture callbacks: what most integration tests need
TINY_TRAINING = [*TINY_TRAINING_WITH_PICTURES, *NO_PICTURES]
