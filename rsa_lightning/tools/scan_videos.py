"""Check every video of a data set once, before training: write the exclusion list and the list of files decord
must not seek in (``open_gop.txt``).

    python -m rsa_lightning.tools.scan_videos data=<name> [data.root=...] [splits=[train,val]] [workers=8]
        [verify=true] [seek_check_samples=4] [exclusions_file=...] [open_gop_file=...]

The data config (``conf/data/<name>.yaml``, composed with ``conf/scan.yaml``) is instantiated as the training run
would, but without its exclusion list, so a re-scan checks every video again; its DataModule provides
``records(split)`` and, optionally, a ``backend`` attribute (default: decord). ``splits: null`` scans every split the
annotations have. Each distinct file is checked in a process pool: it must open, have frames, and decode its first,
middle and last frame through the backend (which also counts the frames of a damaged file that the container
overstates).

With ``verify=true`` (the default) every video file is then decoded once sequentially (the reference decode of
:mod:`rsa_lightning.data.video_io`, which defines the file's frames) and compared per pixel, where training reads
(the first, middle and last frames, the last frames alone and ``seek_check_samples`` random ones, in clip-sized
reads), with what decord with seeks, decord sequentially, PyAV and the configured backend return. Each file's report
says, per reader, ``exact`` or why not (wrong frames and where, another frame count or size, an error); a file the
configured backend (with the list below in place) does not read exactly is excluded with that reason. With
``verify=false`` only the packets are checked for open GOPs and, with ``seek_check_samples > 0``, decord's seeks are
compared with decord's own sequential decode (:func:`rsa_lightning.data.probing.check_seek_accuracy`).

Outputs: ``exclusions_file`` (``<split>\\t<video_id>\\t<path>\\t<reason>`` per failing video, see
:func:`rsa_lightning.data.exclusions.write_exclusions`; written even when empty) and ``open_gop_file``: one
``<path>\\t<mode>: <reason>`` a line for the files decord must not seek in (open GOPs, decode-order timestamps,
seeks found wrong, a display matrix); ``DecordBackend(seek_mode="auto", open_gop_files=...)`` reads mode
``sequential`` files from frame 0 and mode ``pyav`` files with PyAV. Or re-encode them once with
``rsa_lightning.tools.reencode_videos``.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import hydra
import numpy as np
from omegaconf import DictConfig

from rsa_lightning.config_checks import check_data_config
from rsa_lightning.data.annotations import VideoRecord
from rsa_lightning.data.decoding import DecordBackend, FrameFolderBackend, PyAVBackend
from rsa_lightning.data.exclusions import Exclusion, write_exclusions
from rsa_lightning.data.probing import (
    EXACT,
    SEQUENTIAL,
    check_seek_accuracy,
    detect_open_gop,
    probe_pixel_format,
    probe_video,
    rgb_conversion_risk,
)
from rsa_lightning.data.video_io import IDENTITY, VideoDecodeError, describe, open_container, reference_frames
from rsa_lightning.errors import handle_errors, run_hydra_main
from rsa_lightning.utils.processes import worker_context

SPLITS = ("train", "val", "test")
os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[2]))
log = logging.getLogger(__name__)


@dataclass
class FileReport:
    """The outcome of checking one file.

    ``readers`` says, per reader the scan tried (``decord seek``, ``decord sequential``, ``pyav`` and the configured
    ``backend``), ``"exact"`` or why not (wrong frames, another frame count, an error); ``decord_mode`` is how
    ``DecordBackend(seek_mode="auto")`` must read the file (None: with seeks; ``"sequential"``; ``"pyav"``).
    """

    path: str
    ok: bool
    reason: str = ""
    num_frames: Optional[int] = None  # frames of the clip that decode
    listed_frames: Optional[int] = None  # frames the container (or annotation) claims, when they differ
    open_gop: bool = False  # decord must not seek in it (open GOPs, decode-order timestamps, wrong seeks found)
    seek_wrong: list[int] = field(default_factory=list)
    readers: dict[str, str] = field(default_factory=dict)
    decord_mode: Optional[str] = None


@dataclass
class ScanResult:
    """Per-file reports plus, per split, the ids checked and the exclusion entries written."""

    reports: dict[str, FileReport]
    checked: dict[str, int]
    exclusions: list[Exclusion]
    open_gop: list[str]
    exclusions_file: Optional[Path] = None
    open_gop_file: Optional[Path] = None


def verification_indices(num_frames: int, samples: int, seed: int = 0) -> list[np.ndarray]:
    """Frame groups to compare with the reference, read as training reads them (one sorted clip per read): the
    first, middle and last frames together, the last frame alone (a fresh seek to the end), the last three, and
    ``samples`` random frames in sorted groups of four."""
    n = num_frames
    groups = [np.unique([0, n // 2, n - 1]), np.array([n - 1]), np.arange(max(0, n - 3), n)]
    if samples > 0:
        rng = np.random.default_rng(seed)
        chosen = rng.choice(n, size=min(samples, n), replace=False)
        groups += [np.sort(g) for g in np.array_split(chosen, max(1, int(np.ceil(len(chosen) / 4))))]
    return groups


def verify_reader(read, groups: list[np.ndarray], count: int, reference: dict[int, np.ndarray]) -> tuple[str, list]:
    """``("exact", [])`` when ``read(choose)`` (a backend's read of the whole file) returns the reference frames for
    every group, else ``(reason, wrong indices)``."""
    lengths: list[int] = []
    wrong: set[int] = set()
    max_diff = 0
    for group in groups:

        def choose(n: int, group: np.ndarray = group) -> np.ndarray:
            lengths.append(n)
            return group[group < n] if (group < n).any() else np.array([n - 1])

        try:
            frames, indices = read(choose)
        except Exception as err:
            return (str(err).split(": ", 1)[-1] if isinstance(err, VideoDecodeError) else describe(err)), []
        if lengths and lengths[-1] != count:
            return f"counts {lengths[-1]} frames, the reference decode {count}", []
        for i, frame in zip(indices.tolist(), frames):
            if frame.shape != reference[i].shape:
                shown, stored = reference[i].shape, frame.shape
                return f"frames of {stored[1]}x{stored[0]}, shown as {shown[1]}x{shown[0]} (orientation)", []
            diff = int(np.abs(frame.astype(np.int16) - reference[i].astype(np.int16)).max())
            if diff:
                wrong.add(i)
                max_diff = max(max_diff, diff)
    if wrong:
        return f"wrong frames at {sorted(wrong)[:8]} (pixels differ by up to {max_diff})", sorted(wrong)
    return "exact", []


def verify_file(record: VideoRecord, *, backend: Any, samples: int) -> FileReport:
    """Compare, per pixel, the frames decord (seek and sequential), PyAV and ``backend`` return where training reads
    (first, middle, last frames and ``samples`` random ones) with the sequential reference decode of the file.

    ``backend`` is checked as training will use it: a ``DecordBackend(seek_mode="auto")`` with the file's
    ``decord_mode`` listed (as the scan's list will tell it).
    """
    path = str(record.path)
    whole = replace(record, start_frame=None, end_frame=None, num_frames=None)
    report = FileReport(path, ok=True)
    try:
        count, _ = reference_frames(path, [0])
        groups = verification_indices(count, samples, seed=zlib.crc32(path.encode()))
        count, reference = reference_frames(path, np.unique(np.concatenate(groups)))
    except VideoDecodeError as err:
        report.readers["reference"] = str(err)
        return report
    report.num_frames = count

    def verify(name: str, reader: Any, sequential: bool = False) -> list[int]:
        # a sequential reader decodes from frame 0 whatever the group: one read of every index says as much
        read_groups = [np.unique(np.concatenate(groups))] if sequential else groups
        report.readers[name], wrong = verify_reader(lambda c: reader.read(whole, c), read_groups, count, reference)
        return wrong

    report.seek_wrong = verify("decord seek", DecordBackend(seek_mode="seek", fallback=False))
    verify("decord sequential", DecordBackend(seek_mode="sequential", fallback=False), sequential=True)
    verify("pyav", PyAVBackend())
    if rgb_conversion_reason(path) is not None:  # decord's readers above were PyAV's already (DecordBackend.mode_for)
        report.decord_mode = EXACT
    elif report.readers["decord seek"] != "exact" or probe_video(path).orientation != IDENTITY:
        # decord ignores mirrors: a file with a display matrix is left to PyAV
        exact_sequential = report.readers["decord sequential"] == "exact" and report.readers["decord seek"] != "exact"
        report.decord_mode = SEQUENTIAL if exact_sequential else EXACT
    if isinstance(backend, PyAVBackend):
        report.readers["backend"] = report.readers["pyav"]
    elif isinstance(backend, DecordBackend) and backend.seek_mode == "auto":
        configured = copy.copy(backend)
        configured.listed_modes = {**backend.listed_modes, os.path.normpath(path): report.decord_mode or "seek"}
        verify("backend", configured, sequential=report.decord_mode == SEQUENTIAL)
    else:
        verify("backend", backend)
    return report


def declared_frames(path: str) -> Optional[int]:
    """The frame count the container's header states for the video stream (mp4's sample table, an AVI header), or
    None when it states none (webm, mkv) or cannot be read."""
    try:
        with open_container(path) as container:
            frames = container.streams.video[0].frames if container.streams.video else 0
    except Exception:  # noqa: BLE001  (the decode above already judged the file; no header count, no verdict)
        return None
    return int(frames) if frames and frames > 0 else None


def is_truncated(declared: int, decoded: int) -> bool:
    """A file whose header states ``declared`` frames but that decodes far fewer (the end of the file was lost: a
    copy cut short, a download that stopped). Headers may miscount by a frame or two (edit lists, dropped frames),
    so fewer than 90 % and at least 2 frames short."""
    return decoded < 0.9 * declared and declared - decoded >= 2


def check_file(
    record: VideoRecord,
    *,
    backend: Any,
    seek_check_samples: int = 0,
    exclude_truncated: bool = True,
    verify: bool = False,
) -> FileReport:
    """Check one record's file with ``backend``; never raises (the failure is the report's ``reason``).

    With ``verify``, every reader is compared with the reference decode (:func:`verify_file`, ``seek_check_samples``
    random frames besides the first, middle and last ones); a file the configured backend does not read exactly
    fails with the reason, and ``decord_mode`` says how ``DecordBackend(seek_mode="auto")`` reads it exactly.
    Without, only the open-GOP detection and (``seek_check_samples > 0``) decord's seeks against decord's sequential
    decode say which files decord must not seek in.
    """
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
    declared = None if isinstance(backend, FrameFolderBackend) else declared_frames(path)
    if len(lengths) > 1 or (declared is not None and is_truncated(declared, lengths[-1])):
        report.listed_frames = lengths[0] if len(lengths) > 1 else declared
        if exclude_truncated:
            report.ok = False
            report.reason = f"{path}: truncated or damaged: {lengths[0]} frames listed, {lengths[-1]} decode"
    if isinstance(backend, FrameFolderBackend):
        return report
    if verify and report.ok:
        verified = verify_file(record, backend=backend, samples=seek_check_samples)
        report.readers, report.seek_wrong, report.decord_mode = (
            verified.readers,
            verified.seek_wrong,
            verified.decord_mode,
        )
        report.open_gop = report.decord_mode is not None or probe_video(path).seek_risk is not None
        verdict = report.readers.get("backend", report.readers.get("reference", "exact"))
        if verdict != "exact":
            fix = "(read it with data/backend=pyav, or data.backend.seek_mode=auto)" if report.readers else ""
            report.ok, report.reason = False, f"{path}: {backend!r} does not read it exactly: {verdict} {fix}".strip()
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
            with worker_context().Pool(workers, initializer, initargs) as pool:
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
    verify: bool = False,
    exclusions_file: Optional[Path] = None,
    open_gop_file: Optional[Path] = None,
) -> ScanResult:
    """Check the files of ``records`` (split -> records), each distinct path once (:func:`check_file`); write the two
    lists if given."""
    unique: dict[str, VideoRecord] = {}
    for split_records in records.values():
        for record in split_records:
            unique.setdefault(str(record.path), record)
    options = {
        "backend": backend,
        "seek_check_samples": seek_check_samples,
        "exclude_truncated": exclude_truncated,
        "verify": verify,
    }
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
        lines = [
            "# videos decord must not seek in (open GOPs, decode-order timestamps, wrong seeks found), one a line:\n"
            "# <path>\\t<mode>: <reason>; mode sequential: decord reads it from frame 0; pyav: PyAV decodes it.\n"
            "# Written by scan_videos; DecordBackend(seek_mode=auto, open_gop_files=...) reads it.\n"
        ]
        for path in open_gop:
            lines.append(f"{path}\t{list_note(reports[path])}\n")
        open_gop_file.write_text("".join(lines))
        result.open_gop_file = open_gop_file
    return result


def rgb_conversion_reason(path: str) -> Optional[str]:
    """Why decord's frames of ``path`` are not trusted to be the reference's pixels (its RGB conversion; None: they
    are), from the header (:func:`rsa_lightning.data.probing.rgb_conversion_risk`)."""
    header = probe_pixel_format(path)
    return None if header is None else rgb_conversion_risk(*header, decoder="decord")


def _probe_reason(path: str) -> str:
    """Why a file whose sampled seeks were exact is still not left to decord's seeks (what its packets say)."""
    rgb = rgb_conversion_reason(path)
    if rgb is not None:
        return f"decord converts its {rgb} to RGB otherwise than the reference"
    probe = probe_video(path)
    if probe.orientation != IDENTITY:
        return "display matrix (decord ignores mirrors)"
    return probe.seek_risk or "decord's seeks are not trusted in it (detected from the packets)"


def list_note(report: FileReport) -> str:
    """``<mode>: <reason>`` of a file in the list of files decord must not seek in."""
    mode = report.decord_mode or SEQUENTIAL
    if report.readers:
        seek = report.readers.get("decord seek", "")
        why = seek if seek != "exact" else _probe_reason(report.path)
        if mode == EXACT and report.readers.get("decord sequential", "exact") != "exact":
            why = f"decord sequential: {report.readers['decord sequential']}"
    elif report.seek_wrong:
        why = f"{len(report.seek_wrong)} sampled frames wrong after seeking"
    else:
        why = "open GOPs or decode-order timestamps (detected from the packets)"
    return " ".join(f"{mode}: {why}".split())


def print_summary(result: ScanResult, records: dict[str, list[VideoRecord]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="video scan")
    for column in ("split", "videos", "ok", "excluded", "no decord seek", "decord: PyAV", "truncated"):
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
            str(sum(r.decord_mode == EXACT for r in reports)),
            str(sum(r.listed_frames is not None for r in reports)),
        )
    console = Console()
    console.print(table)
    for entry in result.exclusions[:20]:
        console.print(f"excluded {entry.split}/{entry.video_id}: {entry.reason}", markup=False)
    if len(result.exclusions) > 20:
        console.print(f"... and {len(result.exclusions) - 20} more (see {result.exclusions_file})")
    for path in result.open_gop[:20]:
        console.print(f"decord must not seek in {path}: {list_note(result.reports[path])}", markup=False)
    if len(result.open_gop) > 20:
        console.print(f"... and {len(result.open_gop) - 20} more (see {result.open_gop_file})")
    if result.exclusions_file is not None:
        console.print(f"exclusion list: {result.exclusions_file}", markup=False)
    if result.open_gop_file is not None:
        console.print(
            f"list of files decord must not seek in: {result.open_gop_file} ({len(result.open_gop)} files)",
            markup=False,
        )


def scan_from_config(cfg: DictConfig) -> ScanResult:
    """Instantiate ``cfg.data``, gather ``records(split)`` for ``cfg.splits`` and :func:`scan` them."""
    check_data_config(cfg)  # data.root unset or not a data set folder: one message naming it
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
        verify=bool(cfg.get("verify", False)),
        exclusions_file=Path(exclusions_file),
        open_gop_file=Path(cfg.open_gop_file) if cfg.get("open_gop_file") else None,
    )
    print_summary(result, records)
    return result


@hydra.main(version_base="1.3", config_path="../../conf", config_name="scan")
@handle_errors  # bad input: one message, exit code 2 (rsa_lightning.errors)
def main(cfg: DictConfig) -> None:
    scan_from_config(cfg)


if __name__ == "__main__":
    run_hydra_main(main)
