"""Check every video of a data set once, before training: write the exclusion list and the open-GOP list.

    python -m rsa_lightning.tools.scan_videos data=<name> [data.root=...] [splits=[train,val]] [workers=8]
        [seek_check_samples=8] [exclusions_file=...] [open_gop_file=...]

The data config (``conf/data/<name>.yaml``, composed with ``conf/scan.yaml``) is instantiated as the training run
would, but without its exclusion list, so a re-scan checks every video again; its DataModule provides
``records(split)`` and, optionally, a ``backend`` attribute (default: decord). ``splits: null`` scans every split the
annotations have. Each
distinct file is checked in a process pool: it must open, have frames, and decode its first, middle and last frame
through the backend (which also counts the frames of a damaged file that the container overstates). For video
files, open GOPs are detected from the packets and, with ``seek_check_samples > 0``, confirmed per pixel
(:func:`rsa_lightning.data.probing.check_seek_accuracy`).

Outputs: ``exclusions_file`` (``<split>\\t<video_id>\\t<path>\\t<reason>`` per failing video, see
:func:`rsa_lightning.data.exclusions.write_exclusions`; written even when empty) and ``open_gop_file`` (one path a line;
``DecordBackend(open_gop_files=...)`` decodes these sequentially; or re-encode them with
``rsa_lightning.tools.reencode_videos``).
"""

from __future__ import annotations

import inspect
import logging
import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import hydra
import numpy as np
from omegaconf import DictConfig

from rsa_lightning.data.annotations import VideoRecord
from rsa_lightning.data.decoding import DecordBackend, FrameFolderBackend
from rsa_lightning.data.exclusions import Exclusion, write_exclusions
from rsa_lightning.data.probing import check_seek_accuracy, detect_open_gop
from rsa_lightning.data.video_io import VideoDecodeError, describe

SPLITS = ("train", "val", "test")
os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[2]))
log = logging.getLogger(__name__)


@dataclass
class FileReport:
    """The outcome of checking one file."""

    path: str
    ok: bool
    reason: str = ""
    num_frames: Optional[int] = None  # frames of the clip that decode
    listed_frames: Optional[int] = None  # frames the container (or annotation) claims, when they differ
    open_gop: bool = False
    seek_wrong: list[int] = field(default_factory=list)


@dataclass
class ScanResult:
    """Per-file reports plus, per split, the ids checked and the exclusion entries written."""

    reports: dict[str, FileReport]
    checked: dict[str, int]
    exclusions: list[Exclusion]
    open_gop: list[str]
    exclusions_file: Optional[Path] = None
    open_gop_file: Optional[Path] = None


def check_file(
    record: VideoRecord, *, backend: Any, seek_check_samples: int = 0, exclude_truncated: bool = True
) -> FileReport:
    """Check one record's file with ``backend``; never raises (the failure is the report's ``reason``)."""
    path = str(record.path)
    lengths: list[int] = []

    def choose(n: int) -> np.ndarray:
        lengths.append(n)
        return np.unique([0, n // 2, n - 1])

    try:
        backend.read(record, choose)
    except VideoDecodeError as err:
        return FileReport(path, ok=False, reason=str(err))
    except Exception as err:  # a bug or an unexpected library error: report, keep scanning
        return FileReport(path, ok=False, reason=f"{path}: {describe(err)}")
    report = FileReport(path, ok=True, num_frames=lengths[-1])
    if len(lengths) > 1:
        report.listed_frames = lengths[0]
        if exclude_truncated:
            report.ok = False
            report.reason = f"{path}: truncated or damaged: {lengths[0]} frames listed, {lengths[-1]} decode"
    if isinstance(backend, FrameFolderBackend):
        return report
    report.open_gop = detect_open_gop(path)
    if seek_check_samples > 0:
        try:
            check = check_seek_accuracy(path, num_samples=seek_check_samples)
            report.seek_wrong = check.wrong
            report.open_gop = report.open_gop or not check.accurate
        except VideoDecodeError as err:
            report.ok, report.reason = False, str(err)
    return report


_worker_options: dict[str, Any] = {}


def _init_worker(options: dict[str, Any]) -> None:
    _worker_options.update(options)  # the backend reaches each worker once, not with every task


def _check_in_worker(record: VideoRecord) -> FileReport:
    return check_file(record, **_worker_options)


def progress_map(fn, tasks: list, workers: int, description: str, initializer=None, initargs=()) -> list:
    """``map(fn, tasks)`` in ``workers`` processes (inline for ``workers <= 1``) with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    results = []
    with Progress(*columns) as progress:
        bar = progress.add_task(description, total=len(tasks))
        if workers <= 1:
            if initializer is not None:
                initializer(*initargs)
            for task in tasks:
                results.append(fn(task))
                progress.advance(bar)
        else:
            with multiprocessing.get_context("fork").Pool(workers, initializer, initargs) as pool:
                for result in pool.imap(fn, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers)))):
                    results.append(result)
                    progress.advance(bar)
    return results


def scan(
    records: dict[str, list[VideoRecord]],
    *,
    backend: Any,
    workers: int = 2,
    seek_check_samples: int = 0,
    exclude_truncated: bool = True,
    exclusions_file: Optional[Path] = None,
    open_gop_file: Optional[Path] = None,
) -> ScanResult:
    """Check the files of ``records`` (split -> records), each distinct path once; write the two lists if given."""
    unique: dict[str, VideoRecord] = {}
    for split_records in records.values():
        for record in split_records:
            unique.setdefault(str(record.path), record)
    options = {"backend": backend, "seek_check_samples": seek_check_samples, "exclude_truncated": exclude_truncated}
    checked = progress_map(
        _check_in_worker, list(unique.values()), workers, "scanning videos", _init_worker, (options,)
    )
    reports = {r.path: r for r in checked}
    exclusions = [
        Exclusion(split, record.video_id, str(record.path), reports[str(record.path)].reason)
        for split, split_records in records.items()
        for record in split_records
        if not reports[str(record.path)].ok
    ]
    open_gop = sorted(path for path, report in reports.items() if report.open_gop)
    result = ScanResult(reports, {s: len(r) for s, r in records.items()}, exclusions, open_gop)
    if exclusions_file is not None:
        result.exclusions_file = write_exclusions(exclusions_file, exclusions)
    if open_gop_file is not None:
        open_gop_file = Path(open_gop_file)
        open_gop_file.parent.mkdir(parents=True, exist_ok=True)
        lines = ["# open-GOP videos (decord mis-seeks in them), one path a line; written by scan_videos\n"]
        for path in open_gop:
            wrong = reports[path].seek_wrong
            lines.append(f"{path}\t{len(wrong)} sampled frames wrong after seeking\n" if wrong else f"{path}\n")
        open_gop_file.write_text("".join(lines))
        result.open_gop_file = open_gop_file
    return result


def print_summary(result: ScanResult, records: dict[str, list[VideoRecord]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="video scan")
    for column in ("split", "videos", "ok", "excluded", "open GOP", "truncated"):
        table.add_column(column, justify="right" if column != "split" else "left")
    excluded = Counter(e.split for e in result.exclusions)
    for split, split_records in records.items():
        reports = [result.reports[str(r.path)] for r in split_records]
        table.add_row(
            split,
            str(len(reports)),
            str(len(reports) - excluded[split]),
            str(excluded[split]),
            str(sum(r.open_gop for r in reports)),
            str(sum(r.listed_frames is not None for r in reports)),
        )
    console = Console()
    console.print(table)
    for entry in result.exclusions[:20]:
        console.print(f"excluded {entry.split}/{entry.video_id}: {entry.reason}", markup=False)
    if len(result.exclusions) > 20:
        console.print(f"... and {len(result.exclusions) - 20} more (see {result.exclusions_file})")
    if result.exclusions_file is not None:
        console.print(f"exclusion list: {result.exclusions_file}", markup=False)
    if result.open_gop_file is not None:
        console.print(f"open-GOP list: {result.open_gop_file} ({len(result.open_gop)} files)", markup=False)


def scan_from_config(cfg: DictConfig) -> ScanResult:
    """Instantiate ``cfg.data``, gather ``records(split)`` for ``cfg.splits`` and :func:`scan` them."""
    # every video is checked again, also those an earlier scan excluded (the DataModule would leave them out)
    data_exclusions = cfg.data.get("exclusions_file")
    accepts = inspect.signature(hydra.utils.get_class(cfg.data._target_)).parameters
    no_exclusions = {"exclusions_file": None} if "exclusions_file" in accepts else {}
    datamodule = hydra.utils.instantiate(cfg.data, **no_exclusions)
    backend = getattr(datamodule, "backend", None) or DecordBackend()
    splits = cfg.get("splits") or getattr(getattr(datamodule, "annotations", None), "splits", SPLITS)
    records = {split: list(datamodule.records(split)) for split in splits}
    # where the DataModule reads it (data.exclusions_file, relative to data.root), unless given explicitly
    exclusions_file = Path(cfg.get("exclusions_file") or data_exclusions or "exclusions.txt")
    if not exclusions_file.is_absolute():
        exclusions_file = Path(cfg.data.root) / exclusions_file
    log.info("scanning %s with %r", ", ".join(f"{s}: {len(r)}" for s, r in records.items()), backend)
    result = scan(
        records,
        backend=backend,
        workers=int(cfg.workers),
        seek_check_samples=int(cfg.seek_check_samples),
        exclude_truncated=bool(cfg.exclude_truncated),
        exclusions_file=Path(exclusions_file),
        open_gop_file=Path(cfg.open_gop_file) if cfg.get("open_gop_file") else None,
    )
    print_summary(result, records)
    return result


@hydra.main(version_base="1.3", config_path="../../conf", config_name="scan")
def main(cfg: DictConfig) -> None:
    scan_from_config(cfg)


if __name__ == "__main__":
    main()
