"""Soak: a few hundred steps of ``rsa_tiny`` on generated videos, 5 % of them corrupt, stopped by SIGTERM and resumed
twice, ends with the same weights as the uninterrupted run over the same data (bit for bit).

300 optimiser steps (80 training videos, 4 of them overwritten with garbage, batch 4: 20 steps per epoch, 15 epochs)
at 32 px and 4 frames, one DataLoader worker. The interrupted run gets SIGTERM (from this test, as from a cluster)
during steps 70 and 190; each time it must save ``last.ckpt`` and exit with code 3, and ``resume=<run dir>`` must
continue it. The corrupt videos are skipped and replaced by the next one in both runs alike.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_config, tiny_synthetic_overrides

from rsa_lightning.callbacks.preemption import INTERRUPTED_EXIT

STEPS = 300
SIGNAL_AT = (70, 190)


def data_overrides(root: Path) -> list[str]:
    """The tests' tiny synthetic data with 8 training clips per class (80 in all, so a few hundred steps) and a
    DataLoader worker (the soak covers worker processes too)."""
    changed = {"data.prepare.train_per_class": "8", "data.num_workers": "1"}
    keys = [override.split("=", 1)[0] for override in tiny_synthetic_overrides(root)]
    return [
        f"{key}={changed[key]}" if key in changed else override
        for key, override in zip(keys, tiny_synthetic_overrides(root))
    ]


def env() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WANDB_")) and k != "RSA_RUN_NAME"}
    return {
        **keep,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), keep.get("PYTHONPATH", "")]),
    }


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )


def make_data(root: Path, tmp: Path) -> list[Path]:
    """Generates the videos, then overwrites 5 % of the training videos with garbage; returns those."""
    from hydra.utils import instantiate

    cfg = compose_config("train", data_overrides(root), tmp / "prepare")
    instantiate(cfg.data).prepare_data()
    listed = (root / "annotations" / "train.txt").read_text().split("\n")
    videos = [root / line.split()[0] for line in listed if line.strip()]
    rng = np.random.default_rng(0)
    corrupt = [videos[i] for i in sorted(rng.choice(len(videos), size=len(videos) // 20, replace=False))]
    for path in corrupt:
        path.write_bytes(rng.integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())
    return corrupt


@pytest.mark.slow
def test_soak_sigterm_and_resume_twice_equals_an_uninterrupted_run(tmp_path):
    began = time.monotonic()
    root = tmp_path / "data"
    corrupt = make_data(root, tmp_path)
    assert len(corrupt) == 4
    common = [
        *data_overrides(root),
        "model=rsa_tiny",
        "seed=11",
        "trainer.max_epochs=15",
        "trainer.accelerator=cpu",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "callbacks.model_summary.max_depth=0",
        "callbacks.skipped_samples.max_skipped_fraction=0.1",
    ]
    marks = []
    for i, step in enumerate(SIGNAL_AT):
        marks += [
            f"+callbacks.mark{i}._target_=fault_switch.MarkAtStep",
            f"+callbacks.mark{i}.step={step}",
            f"+callbacks.mark{i}.marker={tmp_path / f'signal{i}'}",
        ]
    whole_dir, run_dir = tmp_path / "whole", tmp_path / "interrupted"
    whole = start(*common, f"hydra.run.dir={whole_dir}")  # side by side with the interrupted run
    proc = start(*common, *marks, f"hydra.run.dir={run_dir}")
    for i, step in enumerate(SIGNAL_AT):
        marker = tmp_path / f"signal{i}"
        while not marker.exists():
            assert proc.poll() is None, f"the run ended before step {step}:\n{proc.stderr.read()[-3000:]}"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == INTERRUPTED_EXIT, err[-3000:]
        assert f"resume={run_dir}" in err
        last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert last["global_step"] == step + 1
        assert json.loads((run_dir / "result.json").read_text())["status"] == "interrupted"
        proc = start(f"resume={run_dir}")
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    _, err = whole.communicate(timeout=900)
    assert whole.returncode == 0, err[-3000:]

    ref = torch.load(whole_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    out = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert out["global_step"] == ref["global_step"] == STEPS
    for name, value in ref["state_dict"].items():
        assert torch.equal(value, out["state_dict"][name]), f"{name} differs from the uninterrupted run"
    assert json.loads((run_dir / "result.json").read_text())["status"] == "completed"
    log = (run_dir / "train.log").read_text()
    assert all(path.stem in log for path in corrupt)  # skipped (and replaced), named in the log
    print(f"soak: {STEPS} steps, 2 x SIGTERM + resume, {time.monotonic() - began:.0f} s")
