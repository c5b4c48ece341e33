"""Smoke tests of the benchmark scripts: they start, and a tiny run prints its ratio lines (no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN_STEP = ROOT / "benchmarks" / "train_step.py"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TRAIN_STEP), *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


def test_train_step_help_names_its_options(tmp_path):
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--models", "--repeats", "--steps", "--cache", "--workers"):
        assert option in result.stdout
    assert "with loader / model only" in result.stdout  # how to read the ratios


@pytest.mark.parametrize("bad", [["--repeats", "0"], ["--threads", "0"], ["--workers", "-1"]])
def test_train_step_rejects_bad_counts_in_one_line(bad, tmp_path):
    result = run(*bad, cwd=tmp_path)
    assert result.returncode == 2 and bad[0] in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_train_step_tiny_run_prints_the_ratios(tmp_path):
    cache = tmp_path / "cache"
    args = ("--models", "rsa_tiny", "--repeats", "1", "--steps", "1", "--per-class", "2", "--cache", str(cache))
    result = run(*args, "--workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "clips: 8 x 56 x 56 (3 channels, uint8), batch 16, 1 workers" in out
    ratios = dict(re.findall(r"ratio rsa_tiny ([^=]+) = (\d+\.\d\d)", out))
    assert set(ratios) == {
        "fast: with loader / model only",
        "reference: with loader / model only",
        "model only: fast / reference",
        "with loader: fast / reference",
        "loader alone / fast model only",
    }
    assert all(float(value) > 0 for value in ratios.values())
    for case in ("fast, model only", "reference, with loader", "loader alone"):
        assert re.search(rf"{case}\s+\d+\.\d\d", out), case
    assert (cache / "synthetic_64px_2" / "annotations" / "train.txt").is_file()  # the generated set is kept


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = ROOT / "benchmarks" / name
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.parametrize("name", ["rsa_layer.py", "rsa_network.py"])
def test_layer_and_network_benchmarks_start_and_refuse_bad_counts(name, tmp_path):
    result = run_script(name, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--repeats" in result.stdout and "--threads" in result.stdout
    for bad in (["--repeats", "0"], ["--threads", "0"]):
        result = run_script(name, *bad, cwd=tmp_path)
        assert result.returncode == 2 and bad[0] in result.stderr and "Traceback" not in result.stderr


def test_layer_benchmark_refuses_a_stage_resnet50_does_not_have(tmp_path):
    result = run_script("rsa_layer.py", "--stages", "4", cwd=tmp_path)
    assert result.returncode == 2 and "--stages" in result.stderr


@pytest.mark.slow
def test_layer_benchmark_prints_the_ratios_at_the_last_stage(tmp_path):
    result = run_script("rsa_layer.py", "--threads", "1", "--repeats", "1", "--stages", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    row = next(line for line in result.stdout.splitlines() if "512/7" in line)
    assert row.count("x") >= 6  # the time and memory ratios
    assert re.search(r"worst fast/reference: time \d+\.\d\dx, saved activations 0\.\d\dx", result.stdout)


def test_tiny_options_refuses_bad_counts_in_one_line(tmp_path):
    for bad in (["--repeats", "0"], ["--threads", "0"], ["--trajectory", "-1"], ["--threads", "4096"]):
        result = run_script("tiny_options.py", *bad, cwd=tmp_path)
        assert result.returncode == 2 and bad[0] in result.stderr and "Traceback" not in result.stderr


def test_tiny_options_times_every_variant_and_keeping_the_windows_trains_bit_identically(tmp_path):
    result = run_script("tiny_options.py", "--repeats", "1", "--steps", "1", "--trajectory", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    rows = {line[:26].strip(): line[26:].split() for line in lines if line.startswith(("rsa", "tsn"))}
    assert set(rows) >= {"rsa_tiny, lean", "rsa_tiny, keep windows", "rsa_tiny, both", "tsn_tiny, channels-last"}
    assert rows["rsa_tiny, lean"][1] == "1.00x"
    # the trajectory rows: step, keep windows, channels-last, both; keeping the windows changes no bit
    steps = [line.split() for line in lines if re.match(r"\s+\d+\s+\d", line)]
    assert [int(row[0]) for row in steps] == [0, 1]
    assert all(float(row[1]) == 0.0 for row in steps)
    assert all(float(row[2]) > 0.0 for row in steps)  # channels-last rounds differently


@pytest.mark.slow
def test_tiny_options_profiles_the_default_step(tmp_path):
    """--profile: torch.profiler tables of rsa_tiny's step, the RSA window convolutions among the operations."""
    result = run_script("tiny_options.py", "--profile", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "self CPU per step:" in result.stdout and "aten::convolution_backward" in result.stdout
    assert "[8, 5, 7, 7]" in result.stdout  # a window convolution's weight (dd + dv = 8 filters, kt = 5 frames)


@pytest.mark.slow
def test_loader_benchmark_prints_the_interleaved_ratios(tmp_path):
    """Two clips per set (one batch: one worker does all the work, so the ratios mean nothing here): every row and
    the interleaved acceptance lines are printed, the transforms' timing included."""
    result = run_script("loader.py", "--clips", "2", "--repeats", "1", "--cache", str(tmp_path / "clips"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for line in (
        "loader / bare decord in 2 processes:",
        "loader with TrainTransform / bare decord in 2 processes:",
        "the same with crop_first=false / bare decord in 2 processes:",
        "median and range of 5 rounds",
        "crop_first=false / crop_first=true:",
        "smoke test: 1 batches per round for 2 workers",
    ):
        assert result.stdout.count(line) >= 1, line
    assert result.stdout.count("interleaved (median and range") == 2  # both sets
    bad = run_script("loader.py", "--pass-repeats", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "--pass-repeats: must be >= 1, got 0" in bad.stderr
