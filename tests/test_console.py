"""What a user sees in a terminal: train.py and eval.py run in a pseudo-terminal (the progress bar renders as for a
user), their output read as a terminal shows it; plus the console pieces on their own (rsa_lightning/utils/console.py).
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import warnings
from pathlib import Path

import pytest
from conftest import ROOT, tiny_synthetic_overrides

from rsa_lightning.utils import console

EPOCHS = 2
# the start of a record in Hydra's format: '[2026-01-31 12:00:00,123][logger][INFO] - message'
LOG_RECORD = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]\[[\w.]+\]\[[A-Z]+\] - ")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BAR_TEXT = re.compile(r"\d+%\||it/s|s/it|█|Epoch \d")


def run_in_terminal(args: list[str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """Runs ``args`` with stdout and stderr on a pseudo-terminal of 120 x 40; returns (exit code, raw output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "TERM": "xterm"}
    proc = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError as err:  # EIO: the child closed the terminal
                if err.errno == errno.EIO:
                    break
                raise
            if not data:
                break
            chunks.append(data)
        else:
            proc.kill()
            pytest.fail(f"{args[1]} took longer than {timeout} s")
    finally:
        os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", errors="replace")


def terminal_lines(raw: str) -> list[str]:
    """The lines a terminal shows for ``raw``: each ``\\r`` returns to the line's start and later text overwrites
    earlier text (cursor-movement escapes dropped; tqdm moves between its bars' lines with them)."""
    lines = []
    for physical in ANSI.sub("", raw).replace("\r\n", "\n").split("\n"):
        shown = ""
        for piece in physical.split("\r"):
            shown = piece + shown[len(piece) :]
        lines.append(shown.rstrip())
    return lines


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny training run (2 epochs, progress bar on) and one evaluation of its checkpoint, both in a terminal
    (about 40 s on an idle 2-core CPU: two interpreters importing torch and Lightning, the data, 2 epochs)."""
    tmp = tmp_path_factory.mktemp("console")
    train = [
        *tiny_synthetic_overrides(tmp / "synthetic"),
        "data.prepare.workers=1",
        "model=rsa_tiny",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.accelerator=cpu",
        "trainer.log_every_n_steps=1",
        f"paths.log_dir={tmp / 'logs'}",
        f"hydra.run.dir={tmp / 'run'}",
    ]
    code, out = run_in_terminal([sys.executable, "train.py", *train], cwd=ROOT)
    assert code == 0, out[-4000:]
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    evaluation = [f"ckpt_path={ckpt}", "trainer.accelerator=cpu", "data.num_workers=0", f"hydra.run.dir={tmp / 'eval'}"]
    eval_code, eval_out = run_in_terminal([sys.executable, "eval.py", *evaluation], cwd=ROOT)
    assert eval_code == 0, eval_out[-4000:]
    return {"tmp": tmp, "run": tmp / "run", "train": out, "eval": eval_out}


@pytest.mark.slow
@pytest.mark.parametrize("which", ["train", "eval"])
def test_log_records_start_on_a_line_of_their_own(runs, which):
    lines = terminal_lines(runs[which])
    records = [line for line in lines if LOG_RECORD.search(line)]
    assert len(records) >= 3, runs[which][-3000:]
    for line in records:
        assert LOG_RECORD.match(line), f"a log record shares a line with other output: {line!r}"
        assert not BAR_TEXT.search(line), f"bar output left on a log record's line: {line!r}"
    if which == "train":  # the bar did render (else this test would prove nothing)
        assert any(re.match(r"Epoch 1/2: +\d+%\|", line) for line in lines), runs["train"][-3000:]


@pytest.mark.slow
def test_bar_and_epoch_summary_count_epochs_alike(runs):
    text = ANSI.sub("", runs["train"])
    bar_epochs = {tuple(map(int, m)) for m in re.findall(r"Epoch (\d+)/(\d+): ", text)}
    summary_epochs = {tuple(map(int, m)) for m in re.findall(r"- epoch (\d+)/(\d+): ", text)}
    assert summary_epochs == {(1, EPOCHS), (2, EPOCHS)}
    assert bar_epochs == summary_epochs
    assert not re.search(r"Epoch 0\b", text), "Lightning's 0-based epoch reached the console"


@pytest.mark.slow
def test_startup_lines_say_what_the_run_is(runs):
    text = ANSI.sub("", runs["train"])
    assert f"run dir: {runs['run']}" in text
    model = re.search(r"model: rsa_tiny = ResNet\(stmixer=RelationalSelfAttention\), ([\d,]+) parameters, "
                      r"([\d.]+) GMACs per view of 4 x 32 x 32", text)  # fmt: skip
    assert model, text[:4000]
    assert int(model.group(1).replace(",", "")) > 100_000 and float(model.group(2)) > 0
    assert re.search(r"data: synthetic from \S+: 20 train / 10 val videos, 10 classes, clips of 4 frames", text)
    assert re.search(r"clips of 4 frames x \d+ x \d+, decoded by decord", text)
    assert re.search(
        r"training: 2 epochs, global batch 4 = 4 clips x 1 device\(s\) x 1 accumulated, lr 0\.002 \(not scaled\), "
        r"precision 32-true on cpu",
        text,
    )


@pytest.mark.slow
@pytest.mark.parametrize("which", ["train", "eval"])
def test_no_advertising_or_library_noise(runs, which):
    text = runs[which]
    for noise in ("litmodels", "litlogger", "💡", "Total Flops", "GPU available", "TPU available", "LeafSpec"):
        assert noise not in text, f"{noise!r} on the {which} console"
    assert "instantiating callback" not in text and "Seed set to" not in text


@pytest.mark.slow
def test_log_file_is_plain_text_and_keeps_the_details(runs):
    log = (runs["run"] / "train.log").read_text()
    assert "\r" not in log and "\x1b" not in log and not BAR_TEXT.search(log)
    assert "epoch 2/2: " in log and "clips/s" in log
    assert "instantiating callback" in log and "global batch 4 = 4 clips per device" in log  # console details
    assert "GPU available" in log and "💡" not in log  # Lightning's records reach the file; its advertising does not


@pytest.mark.slow
def test_throughput_is_logged_per_epoch(runs):
    with (runs["run"] / "csv" / "metrics.csv").open(newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("train/clips_per_s")]
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    for row in rows:
        clips_per_s, epoch_time = float(row["train/clips_per_s"]), float(row["train/epoch_time_s"])
        # 3 batches of 4 clips took at least a 12th of the epoch: clips/s >= 12 / epoch time
        assert clips_per_s >= 12 / epoch_time > 0
    summary = re.findall(r"epoch \d/2: .*, (\d+) s, ([\d.]+) clips/s", ANSI.sub("", runs["train"]))
    assert len(summary) == EPOCHS


# ---------------------------------------------------------------------------------------------------------------------
# the same in this process (fast): the project's console set-up around train(), the bar writing into a buffer


@pytest.fixture
def logging_state():
    """Restores the logging and warnings state that :func:`console.setup_console` changes."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, warnings.filters[:])
    saved_lightning = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
        for name in console.LIGHTNING_LOGGERS
        if name in logging.root.manager.loggerDict
    }
    yield
    logging.captureWarnings(False)
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:], warnings.filters[:] = saved[0], saved[2]
    root.setLevel(saved[1])
    for name, (handlers, propagate) in saved_lightning.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate


def test_training_console_in_process(tmp_path, monkeypatch, logging_state):
    """train() with the bar on, logging set up as train.py's Hydra config does: records start on lines of their own,
    the bar and the epoch lines count alike, the log file has no bar, clips/s reach metrics.csv."""
    from conftest import compose_config

    from rsa_lightning.train import train

    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)  # the bar and the console handler write here
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    on_console = console.ProgressBarAwareHandler(sys.stdout)
    in_file = logging.FileHandler(tmp_path / "train.log")
    for handler in (on_console, in_file):
        handler.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [on_console, in_file]
    root.setLevel(logging.INFO)
    console.setup_console(console_details=console.TRAIN_CONSOLE_DETAILS)
    overrides = [
        *tiny_synthetic_overrides(tmp_path / "synthetic"),
        "data.prepare.workers=1",
        "model=rsa_tiny",
        "callbacks=[model_summary,epoch_summary]",  # the console's callbacks only (Lightning adds a checkpoint)
        "logger=csv",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.accelerator=cpu",
    ]
    train(compose_config("train", overrides, tmp_path / "run"))

    raw = out.getvalue()
    lines = terminal_lines(raw)
    records = [line for line in lines if LOG_RECORD.search(line)]
    assert any(re.match(r"Epoch 2/2: +\d+%\|", line) for line in lines), raw[-3000:]
    assert len(records) >= 5, raw[-3000:]
    for line in records:
        assert LOG_RECORD.match(line) and not BAR_TEXT.search(line), f"a record shares a line with the bar: {line!r}"
    text = ANSI.sub("", raw)
    bar_epochs = set(re.findall(r"Epoch (\d+/\d+): ", text))
    assert bar_epochs == set(re.findall(r"- epoch (\d+/\d+): ", text)) == {"1/2", "2/2"}
    for noise in ("litmodels", "💡", "Total Flops", "GPU available", "Seed set to"):
        assert noise not in text, noise
    assert "model: rsa_tiny = ResNet(stmixer=RelationalSelfAttention)" in text and "GMACs per view" in text
    assert re.search(r"training: 2 epochs, global batch 4 = 4 clips x 1 device\(s\) x 1 accumulated, lr 0\.002", text)

    log = (tmp_path / "train.log").read_text()
    assert "\r" not in log and not BAR_TEXT.search(log) and "GPU available" in log and "💡" not in log
    with (tmp_path / "run" / "csv" / "metrics.csv").open(newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("train/clips_per_s")]
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert all(float(r["train/clips_per_s"]) >= 8 / float(r["train/epoch_time_s"]) > 0 for r in rows)


# ---------------------------------------------------------------------------------------------------------------------
# the pieces


def test_epoch_label_counts_from_one():
    assert console.epoch_label(0, 18) == "1/18"
    assert console.epoch_label(17, 18) == "18/18"
    assert console.epoch_label(4, -1) == "5" and console.epoch_label(4, None) == "5"


def test_handler_clears_an_active_tqdm_bar_before_a_record(monkeypatch):
    from tqdm import tqdm

    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    handler = console.ProgressBarAwareHandler(sys.stdout)  # looked up at each write: the StringIO
    handler.setFormatter(logging.Formatter("[rec] %(message)s"))
    # position=0: a bar another test left open in this process (pytest-xdist runs several files in one) must not
    # move this one to the second line
    bar = tqdm(total=10, file=sys.stdout, ncols=60, desc="Epoch 1/2", mininterval=0, position=0)
    try:
        bar.update(3)
        handler.handle(logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None))
        bar.update(1)
    finally:
        bar.close()
    raw = out.getvalue()
    assert "[rec] hello\n" in raw
    before = raw[: raw.index("[rec] hello")]
    assert before.endswith("\r"), f"the record does not start at the line's start: {before[-80:]!r}"
    shown = terminal_lines(raw)
    assert "[rec] hello" in shown and any(line.startswith("Epoch 1/2:") and "4/10" in line for line in shown)


def test_handler_without_bar_writes_to_the_current_stdout(monkeypatch):
    handler = console.ProgressBarAwareHandler(sys.stdout)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)  # e.g. rich's live display redirecting stdout
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.handle(logging.LogRecord("x", logging.INFO, __file__, 1, "above the bar", None, None))
    assert out.getvalue() == "above the bar\n"


def test_record_filter_drops_matching_info_only():
    flt = console.RecordFilter([("pytorch_lightning", r"^GPU available")])

    def passes(name: str, level: int, msg: str) -> bool:
        return flt.filter(logging.LogRecord(name, level, __file__, 1, msg, None, None))

    assert not passes("pytorch_lightning.utilities.rank_zero", logging.INFO, "GPU available: False, used: False")
    assert passes("pytorch_lightning.utilities.rank_zero", logging.WARNING, "GPU available but not used")
    assert passes("pytorch_lightning_other", logging.INFO, "GPU available: False")  # not a child logger
    assert passes("rsa_lightning.train", logging.INFO, "GPU available: False")


def test_setup_console_filters_handlers_and_warnings(logging_state):
    root = logging.getLogger()
    console_out, file_out = io.StringIO(), io.StringIO()
    on_console, in_file = console.ProgressBarAwareHandler(console_out), logging.FileHandler(os.devnull, delay=True)
    in_file.stream = file_out  # a log file, in memory
    lightning = logging.getLogger("pytorch_lightning")
    root.handlers[:] = [on_console, in_file]
    root.setLevel(logging.INFO)
    lightning.handlers[:] = [logging.StreamHandler(io.StringIO())]  # as Lightning adds when imported first
    lightning.propagate = False
    console.setup_console()
    console.setup_console()  # idempotent: one filter of each role
    assert [type(f).__name__ for f in on_console.filters] == ["RecordFilter", "RecordFilter"]
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    rank_zero.info("GPU available: False, used: False")
    rank_zero.info("💡 Tip: try installing litmodels")
    rank_zero.warning("a real warning")
    assert console_out.getvalue() == "a real warning\n"
    assert file_out.getvalue() == "GPU available: False, used: False\na real warning\n"
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("something the user should know", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something the user should know"]
