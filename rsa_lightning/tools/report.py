"""Compare runs: one markdown table (model, frames, views, cost, accuracy, speed, time) and their training curves.

``python -m rsa_lightning.tools.report <run dir or sweep dir> [...] [--out DIR] [--sort top1] [--label NAME ...]``

Each argument is a training run's folder (``logs/train/runs/<time>``), a sweep's folder (``logs/train/multiruns/
<time>``: expanded into its numbered job folders, in job order) or an ``eval.py`` run's folder (``logs/eval/runs/
<time>``). The table is printed and written to ``<out>/report.md``, the curves to ``<out>/curves.png``. ``--out``
defaults to the sweep's folder when the only argument is a sweep, else to the current folder.

Rows. A training run gives one row for its last validation epoch, then one row per ``metrics_<split>.json`` in its
folder (``test_after_training``); an ``eval.py`` folder gives one row per ``metrics_<split>.json``, with the model,
cost and speed of the training run its checkpoint came from (``<run>/checkpoints/<name>.ckpt``) when that folder
exists. Every number is read from the files the runs wrote, never recomputed:

- ``top-1``, ``top-5``, ``mean class`` (%): ``val/acc1``, ``val/acc5``, ``val/mean_class_acc`` of the last
  validation epoch in ``csv/metrics.csv`` (the last row of that epoch), or ``acc1``, ``acc5``, ``mean_class_acc`` of
  ``metrics_<split>.json``; the definitions are those of ``rsa_lightning/evaluation/metrics.py`` (README,
  "Evaluation"). ``n/a`` when the run did not record the number (top-5 needs more than 5 classes).
- ``best val top-1``: ``val/acc1`` in ``csv/metrics.csv`` at the epoch of the best checkpoint, chosen by the
  checkpoint monitor ``data.monitor`` (``result.json`` ``best_epoch``, else the ``checkpoints/best_epoch_<NNN>.ckpt``
  name). Epochs are counted from 1, as the console counts them (``epoch 3/18``,
  :func:`rsa_lightning.utils.console.epoch_label`); file names and ``metrics.csv`` count from 0
  (``best_epoch_002.ckpt`` is epoch 3).
- ``views``: clips x crops per video: ``num_clips`` x ``num_crops`` of ``metrics_<split>.json``; for validation during
  training 1 x 1 (one centre view), or ``data.num_clips`` x ``data.num_crops`` with ``data.multi_view_val=true``.
- ``frames``: ``data.num_frames`` (``run_info.json``, else the run's config); an evaluation's own ``num_frames``.
- ``GMACs/view`` and ``params (M)``: ``cost.gmacs_per_view`` and ``params.total`` of ``run_info.json``
  (:mod:`rsa_lightning.utils.run_info`; one view = one clip of ``frames`` x crop size^2).
- ``clips/s``: the median over epochs of ``train/clips_per_s`` (training clips per second of an epoch's training
  steps) in ``csv/metrics.csv``; ``n/a`` for runs that did not log it (the per-epoch time of older runs' epoch
  summaries includes validation, so a rate derived from it would be a second, different definition).
- ``wall-clock``: ``time_min`` of ``result.json``: from the start of ``train.py``'s job (after Hydra composed the
  config) to the end of training, including data preparation (e.g. generating the synthetic videos), the validation
  epochs and ``test_after_training``. A resumed run's ``result.json`` measures its last session only (noted). Without
  ``result.json`` (a run killed or still running): the time between the first and the last line of ``train.log``
  (noted).

Runs that failed, did not finish or lack files appear with what is known and a note (``failed: <error>``,
``no result.json: running or killed``, ``no csv/metrics.csv`` ...); a path that is neither a run's nor a sweep's
folder is an error (one line, exit code 2). Labels: ``--label`` (one per run, in the order of the table before
sorting), else the model (or experiment) and the command-line overrides that differ between the reported runs, as
W&B names runs (:class:`rsa_lightning.utils.loggers.HydraJob`). ``--sort top1``: runs by the top-1 of their first row,
highest first (a run's rows stay together); default: the order given.

``result.json`` is read by :func:`rsa_lightning.sweeps.read_job`, the reader of the sweep summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import yaml

from rsa_lightning.errors import ConfigError, MissingFileError, run_cli
from rsa_lightning.resume import CONFIG_FILE
from rsa_lightning.sweeps import COMPLETED, NOT_FINISHED, RESULT_FILE, read_job
from rsa_lightning.tools.extract_frames import ToolArgumentParser
from rsa_lightning.utils.console import epoch_label
from rsa_lightning.utils.csv_logger import METRICS_FILE
from rsa_lightning.utils.loggers import HydraJob
from rsa_lightning.utils.run_info import FILENAME as RUN_INFO_FILE

log = logging.getLogger(__name__)

PROG = "python -m rsa_lightning.tools.report"
REPORT_FILE = "report.md"
CURVES_FILE = "curves.png"
CSV_PATH = Path("csv") / METRICS_FILE
HYDRA_CONFIG = Path(".hydra") / "config.yaml"
HYDRA_SETTINGS = Path(".hydra") / "hydra.yaml"
EVAL_METRICS_GLOB = "metrics_*.json"
# a folder holding any of these is a run's folder
RUN_MARKERS = (RESULT_FILE, RUN_INFO_FILE, CONFIG_FILE, str(CSV_PATH), str(HYDRA_CONFIG))
SORT_KEYS = ("given", "top1")
NOT_AVAILABLE = "n/a"
MISSING = "–"  # a cell whose number the run did not record
CLIPS_PER_S_KEY = "train/clips_per_s"
LEGEND_CHARS = 60  # longer run labels are cut in the curves' legend (the table keeps them whole)
# ``[2026-12-06 22:22:45,463][logger][LEVEL] - message``: Hydra's default job log format
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]")
LOGGED_ERROR = re.compile(r"^\[[^]]*\]\[[^]]*\]\[(?:ERROR|CRITICAL)\] - error: (.*)$")  # a log record of errors.report
BEST_CHECKPOINT = re.compile(r"^best_epoch_(\d+)\.ckpt$")


@dataclass(frozen=True)
class Evaluation:
    """One row's numbers: what was evaluated, with how many views, and its accuracies (fractions in [0, 1]).

    ``source``: the file the numbers come from; ``num_frames``: frames per view when the evaluation says (else the
    run's); ``best_acc1`` / ``best_epoch``: the validation top-1 at the best checkpoint's epoch (from 0, as logged;
    validation rows only).
    """

    what: str
    source: str
    num_clips: Optional[int] = None
    num_crops: Optional[int] = None
    acc1: Optional[float] = None
    acc5: Optional[float] = None
    mean_class_acc: Optional[float] = None
    num_frames: Optional[str] = None
    best_acc1: Optional[float] = None
    best_epoch: Optional[int] = None


@dataclass
class Curves:
    """Per-epoch values of ``csv/metrics.csv``: ``{epoch (from 0, as logged): value}`` for the training loss
    (``train/loss_epoch``), the validation loss and the validation top-1 (a fraction)."""

    train_loss: dict[int, float] = field(default_factory=dict)
    val_loss: dict[int, float] = field(default_factory=dict)
    val_acc1: dict[int, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.train_loss or self.val_loss or self.val_acc1)


@dataclass
class RunReport:
    """What a report knows about one run's folder; every field may be None when the run did not record it.

    ``gmacs_per_view`` in 10^9 multiply-accumulates, ``params`` a count, ``clips_per_s`` training clips per second,
    ``wall_clock_min`` in minutes (module docstring for each definition); ``notes`` explain missing or partial data.
    """

    path: Path
    status: str
    task: str = "train"
    model: Optional[str] = None
    experiment: Optional[str] = None
    overrides: tuple[str, ...] = ()
    num_frames: Optional[int] = None
    gmacs_per_view: Optional[float] = None
    params: Optional[int] = None
    clips_per_s: Optional[float] = None
    wall_clock_min: Optional[float] = None
    evaluations: list[Evaluation] = field(default_factory=list)
    curves: Curves = field(default_factory=Curves)
    notes: list[str] = field(default_factory=list)
    label: str = ""

    @property
    def top1(self) -> Optional[float]:
        """The top-1 of the run's first row (its last validation epoch, for a training run), for ``--sort top1``."""
        return self.evaluations[0].acc1 if self.evaluations else None


# ---------------------------------------------------------------------------------------------------------------
# finding runs


def is_run_dir(path: Path) -> bool:
    """True for a folder holding any of :data:`RUN_MARKERS` or an evaluation's ``metrics_<split>.json``."""
    return path.is_dir() and (any((path / m).exists() for m in RUN_MARKERS) or any(path.glob(EVAL_METRICS_GLOB)))


def sweep_jobs(path: Path) -> list[Path]:
    """The job folders ``<path>/<job num>/`` of a sweep's folder, by job number; empty for a folder none of whose
    numbered subfolders is a run's. A job folder without any run file (a job that failed before writing one) is
    kept: its row says so."""
    if not path.is_dir():
        return []
    jobs = [d for d in path.iterdir() if d.is_dir() and d.name.isdigit()]
    if not any(is_run_dir(d) for d in jobs):
        return []
    return sorted(jobs, key=lambda d: int(d.name))


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """Run folders for the command line's paths: a run's folder as it is, a sweep's folder as its job folders.

    Raises:
        MissingFileError: a path that does not exist or is neither a run's nor a sweep's folder.
    """
    runs: list[Path] = []
    for path in dict.fromkeys(paths):  # a path given twice is reported once
        if not path.exists():
            raise MissingFileError(f"{path} does not exist: pass a run folder (logs/train/runs/<time>) or a sweep")
        if is_run_dir(path):
            runs.append(path)
            continue
        jobs = sweep_jobs(path)
        numbered = path.is_dir() and any(d.is_dir() and d.name.isdigit() for d in path.iterdir())
        if not jobs and numbered:
            raise MissingFileError(
                f"{path} has numbered job folders, but none holds a run's files yet (no {RESULT_FILE}, "
                f"{RUN_INFO_FILE}, {CSV_PATH} or {HYDRA_CONFIG}): its jobs have not started or wrote nothing; see the "
                "sweep's log"
            )
        if not jobs:
            raise MissingFileError(
                f"{path} is not a run folder (no {RESULT_FILE}, {RUN_INFO_FILE}, {CSV_PATH} or {HYDRA_CONFIG}) nor a "
                "sweep folder (numbered job folders): pass logs/train/runs/<time> or logs/train/multiruns/<time>"
            )
        runs.extend(jobs)
    return list(dict.fromkeys(runs))


# ---------------------------------------------------------------------------------------------------------------
# reading one run


def _number(text: Any) -> Optional[float]:
    """A finite float, or None for an empty cell, a non-number or NaN / inf."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv`` with their non-empty numeric cells (``epoch`` and ``step`` included).

    Raises:
        OSError: the file cannot be read.
    """
    with path.open(newline="") as file:
        rows = []
        for raw in csv.DictReader(file):
            rows.append({k: v for k, v in ((k, _number(c)) for k, c in raw.items() if k) if v is not None})
    return rows


def epoch_values(rows: Sequence[Mapping[str, float]], key: str) -> dict[int, float]:
    """``{epoch: value}`` of ``key`` over the rows that have both; an epoch logged twice (several validations per
    epoch, or a resumed run) keeps its last row's value."""
    values: dict[int, float] = {}
    for row in rows:
        if key in row and "epoch" in row:
            values[int(row["epoch"])] = row[key]
    return values


def _read_yaml(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _get(mapping: Optional[Mapping[str, Any]], *keys: str) -> Any:
    """``mapping[k1][k2]...``, or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _int(value: Any) -> Optional[int]:
    number = _number(value)
    return int(number) if number is not None and number == int(number) else None


def _config(run_dir: Path) -> Optional[dict[str, Any]]:
    """The run's resolved config (``config_resolved.yaml``), else Hydra's composed one (``.hydra/config.yaml``)."""
    return _read_yaml(run_dir / CONFIG_FILE) or _read_yaml(run_dir / HYDRA_CONFIG)


def _choice(run_dir: Path, overrides: Sequence[str], group: str) -> Optional[str]:
    """The option of a config group the run used: Hydra's ``runtime.choices``, else a ``group=option`` override."""
    choice = _get(_read_yaml(run_dir / HYDRA_SETTINGS), "hydra", "runtime", "choices", group)
    if choice:
        return str(choice)
    for override in overrides:
        key, _, value = override.lstrip("+").partition("=")
        if key == group and value:
            return value
    return None


def log_span_min(path: Path) -> Optional[float]:
    """Minutes between the first and the last time-stamped line of a Hydra job log (``train.log``); None without
    two time stamps."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    stamps = []
    for line in lines:
        match = LOG_TIME.match(line)
        if match:
            stamps.append(datetime.strptime(f"{match[1]}.{match[2]}", "%Y-%m-%d %H:%M:%S.%f"))
    return (stamps[-1] - stamps[0]).total_seconds() / 60.0 if len(stamps) >= 2 else None


def logged_error(path: Path) -> Optional[str]:
    """The message of the last ``error: <message>`` record of a job log (what :func:`rsa_lightning.errors.report`
    writes there when a run is refused or fails); None without one or without the file."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [m[1] for m in map(LOGGED_ERROR.search, lines) if m]
    return errors[-1] if errors else None


def _best_epoch_from_checkpoints(run_dir: Path) -> Optional[int]:
    """The epoch in the name of the only ``checkpoints/best_epoch_<NNN>.ckpt``; None without one, or with several
    (``save_top_k`` > 1: the name does not say which is best)."""
    names = [BEST_CHECKPOINT.match(p.name) for p in (run_dir / "checkpoints").glob("best_epoch_*.ckpt")]
    epochs = [int(m[1]) for m in names if m]
    return epochs[0] if len(epochs) == 1 else None


def _validation_views(config: Optional[Mapping[str, Any]]) -> tuple[int, int]:
    """Clips x crops per video of validation during training (README "Evaluation": one centre view unless
    ``data.multi_view_val``)."""
    if _get(config, "data", "multi_view_val") is True:
        return _int(_get(config, "data", "num_clips")) or 1, _int(_get(config, "data", "num_crops")) or 1
    return 1, 1


def _validation_row(
    rows: Sequence[Mapping[str, float]], config: Optional[Mapping[str, Any]], best_epoch: Optional[int]
) -> Optional[Evaluation]:
    """The last validation epoch of ``metrics.csv`` (and top-1 at ``best_epoch``), None when it has none."""
    acc1 = epoch_values(rows, "val/acc1")
    if not acc1:
        return None
    last = max(acc1)
    num_clips, num_crops = _validation_views(config)
    best = acc1.get(best_epoch) if best_epoch is not None else None
    what = f"val, epoch {epoch_label(last, _int(_get(config, 'trainer', 'max_epochs')))} (last)"
    return Evaluation(
        what=what,
        source=str(CSV_PATH),
        num_clips=num_clips,
        num_crops=num_crops,
        acc1=acc1[last],
        acc5=epoch_values(rows, "val/acc5").get(last),
        mean_class_acc=epoch_values(rows, "val/mean_class_acc").get(last),
        best_acc1=best,
        best_epoch=best_epoch if best is not None else None,
    )


def _launch_path(run_dir: Path, path: str) -> Path:
    """``path`` as the run's command line gave it, made absolute against the folder the run was started from
    (``.hydra/hydra.yaml``: ``hydra.runtime.cwd``), so that a relative ``ckpt_path`` resolves from anywhere."""
    if Path(path).is_absolute():
        return Path(path)
    try:
        cwd = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["cwd"]
    except Exception:  # noqa: BLE001  (no Hydra record: relative to where the report runs, as given)
        return Path(path)
    return Path(str(cwd)) / path


def _eval_rows(run_dir: Path, notes: list[str]) -> tuple[list[Evaluation], list[Path]]:
    """One row per ``metrics_<split>.json`` (sorted by name) and the checkpoints they evaluated."""
    evaluations, checkpoints = [], []
    for path in sorted(run_dir.glob(EVAL_METRICS_GLOB)):
        metrics = _read_json(path)
        if metrics is None:
            notes.append(f"unreadable {path.name}")
            continue
        ckpts = [_launch_path(run_dir, str(c)) for c in metrics.get("checkpoints") or ()]
        checkpoints.extend(ckpts)
        split = metrics.get("split") or path.stem.removeprefix("metrics_")
        what = ", ".join(str(x) for x in (split, " + ".join(c.name for c in ckpts), metrics.get("protocol")) if x)
        frames = metrics.get("num_frames")
        frames = "+".join(str(f) for f in frames) if isinstance(frames, list) else frames
        evaluations.append(
            Evaluation(
                what=what,
                source=path.name,
                num_clips=_int(metrics.get("num_clips")),
                num_crops=_int(metrics.get("num_crops")),
                acc1=_number(metrics.get("acc1")),
                acc5=_number(metrics.get("acc5")),
                mean_class_acc=_number(metrics.get("mean_class_acc")),
                num_frames=None if frames is None else str(frames),
            )
        )
    return evaluations, checkpoints


def _clips_per_s(rows: Sequence[Mapping[str, float]]) -> Optional[float]:
    rates = list(epoch_values(rows, CLIPS_PER_S_KEY).values())
    return statistics.median(rates) if rates else None


def _run_facts(report: RunReport, run_dir: Path, notes: list[str]) -> bool:
    """Model, frames, cost and params from ``run_dir``'s ``run_info.json`` and config; False without run_info."""
    info = _read_json(run_dir / RUN_INFO_FILE)
    config = _config(run_dir)
    report.num_frames = _int(_get(info, "data", "num_frames")) or _int(_get(config, "data", "num_frames"))
    report.gmacs_per_view = _number(_get(info, "cost", "gmacs_per_view"))
    report.params = _int(_get(info, "params", "total"))
    if info is not None and report.gmacs_per_view is None:
        notes.append("MACs not counted (run_info.json cost is null)")
    return info is not None


def read_overrides(run_dir: Path) -> tuple[str, ...]:
    """A run's command-line overrides: ``result.json``'s, else ``.hydra/overrides.yaml``'s (empty when neither)."""
    result = _read_json(run_dir / RESULT_FILE)
    if result is not None and isinstance(result.get("overrides"), list):
        return tuple(str(o) for o in result["overrides"])
    try:
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return ()
    return tuple(str(o) for o in overrides) if isinstance(overrides, list) else ()


def _training_results(report: RunReport, run_dir: Path, rows: Sequence[Mapping[str, float]], notes: list[str]) -> None:
    """Status, the validation row, clips/s, wall-clock and curves of a training run's folder."""
    try:
        job = read_job(run_dir, missing_status=NOT_FINISHED, job_name=report.task)
    except (AttributeError, TypeError, ValueError):  # JSON, but not the dict train.py writes
        job = None
        notes.append(f"unreadable {RESULT_FILE}")
    has_result = job is not None and (run_dir / RESULT_FILE).is_file() and job.status != NOT_FINISHED
    report.status = job.status if job is not None else NOT_FINISHED
    if job is not None and job.status != COMPLETED and has_result:
        notes.append(f"{job.status}: {_one_line(job.error)}" if job.error else job.status)
    elif job is not None and (run_dir / RESULT_FILE).exists() and not has_result:
        notes.append(f"unreadable {RESULT_FILE}")
    elif job is not None and not has_result:
        notes.append(f"no {RESULT_FILE}: running or killed")

    best_epoch = job.best_epoch if job is not None and job.best_epoch is not None else None
    if best_epoch is None:
        best_epoch = _best_epoch_from_checkpoints(run_dir)
    validation = _validation_row(rows, _config(run_dir), best_epoch)
    if validation is not None:
        report.evaluations.insert(0, validation)
    elif rows:
        notes.append("no validation epoch logged")
    report.clips_per_s = _clips_per_s(rows)

    sessions = 1 + sum(d.is_dir() for d in (run_dir / ".hydra" / "resumed").glob("*"))
    if has_result and job is not None and job.time_min is not None:
        report.wall_clock_min = job.time_min
        if sessions > 1:
            notes.append(f"resumed: wall-clock of the last of {sessions} sessions")
    else:
        report.wall_clock_min = log_span_min(run_dir / f"{report.task}.log")
        if report.wall_clock_min is not None:
            notes.append(f"wall-clock from {report.task}.log")
    report.curves = Curves(
        train_loss=epoch_values(rows, "train/loss_epoch"),  # the epoch's mean (``train/loss`` may be a step's)
        val_loss=epoch_values(rows, "val/loss"),
        val_acc1=epoch_values(rows, "val/acc1"),
    )


def read_run(run_dir: Path) -> RunReport:
    """Everything the report shows about ``run_dir``, read from its files (module docstring).

    Never raises for a missing or unreadable file of the run: ``notes`` say what is missing or partial.
    """
    run_dir = Path(run_dir)
    if run_dir.is_dir() and not any(run_dir.iterdir()):  # e.g. a sweep's job that failed before writing anything
        report = RunReport(path=run_dir, status="empty", task="train", overrides=())
        report.notes = ["empty folder: the job ended before writing any file (see the sweep's log)"]
        return report
    notes: list[str] = []
    task = str(_get(_config(run_dir), "task_name") or "train")
    rows: list[dict[str, float]] = []
    has_csv = (run_dir / CSV_PATH).is_file()
    if has_csv:
        try:
            rows = read_metrics_csv(run_dir / CSV_PATH)
        except (OSError, csv.Error, UnicodeDecodeError) as err:
            notes.append(f"unreadable {CSV_PATH}: {err}")
    evaluations, checkpoints = _eval_rows(run_dir, notes)
    is_eval = task == "eval" or (not has_csv and bool(evaluations) and not (run_dir / RESULT_FILE).exists())
    report = RunReport(path=run_dir, status="evaluated", task=task, overrides=read_overrides(run_dir))
    report.evaluations = evaluations

    if is_eval:
        error = None if evaluations else logged_error(run_dir / f"{task}.log")
        if error is not None:  # e.g. a refused eval.py: its folder holds the config and the log only
            report.status = "failed"
            notes.append(f"failed: {_one_line(error)}")
        elif not evaluations:
            notes.append(f"no {EVAL_METRICS_GLOB}")
    else:
        if not has_csv:
            notes.append(f"no {CSV_PATH}")
        _training_results(report, run_dir, rows, notes)

    # model, frames, cost: the run's own run_info.json, or that of the training run an evaluation's checkpoint is from
    facts_dir = run_dir
    if not (run_dir / RUN_INFO_FILE).is_file() and checkpoints:
        facts_dir = checkpoints[0].parent.parent  # <training run>/checkpoints/<name>.ckpt
    if not _run_facts(report, facts_dir, notes):
        notes.append(f"no {RUN_INFO_FILE}" + (f" in {facts_dir}" if facts_dir != run_dir else ""))
    facts_overrides = report.overrides if facts_dir == run_dir else read_overrides(facts_dir)
    report.model = _choice(facts_dir, facts_overrides, "model")
    report.experiment = _choice(facts_dir, facts_overrides, "experiment")
    report.notes = notes
    return report


def _one_line(text: Optional[str], limit: int = 80) -> str:
    """The first line of ``text``, at most ``limit`` characters."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------------------
# labels, table, curves


def assign_labels(runs: Sequence[RunReport], labels: Optional[Sequence[str]] = None) -> None:
    """Sets each run's ``label``: ``labels`` (one per run) when given, else the model (or experiment) and the
    overrides that not every run of the same task shares (:meth:`HydraJob.run_name`; ``(eval)`` after an ``eval.py``
    folder's), made unique by the folder's name in brackets where two are equal.

    Raises:
        ConfigError: ``labels`` given with another count than ``runs``.
    """
    if labels:
        if len(labels) != len(runs):
            raise ConfigError(f"--label was given {len(labels)} times for {len(runs)} runs: give one per run")
        for run, label in zip(runs, labels):
            run.label = label
        return
    for task in {run.task for run in runs}:  # an eval.py folder's overrides are compared with other evaluations'
        group = [run for run in runs if run.task == task]
        shared = set.intersection(*(set(run.overrides) for run in group))
        for run in group:
            varying = [o for o in run.overrides if o not in shared]
            job = HydraJob(task_name=run.task, model=run.model, experiment=run.experiment, overrides=varying)
            run.label = job.run_name() + (f" ({task})" if task != "train" else "")
    base = {id(run): run.label for run in runs}
    for where in (lambda r: r.path.name, lambda r: f"{r.path.parent.name}/{r.path.name}", lambda r: str(r.path)):
        counts: dict[str, int] = {}
        for run in runs:
            counts[run.label] = counts.get(run.label, 0) + 1
        if all(n == 1 for n in counts.values()):
            return
        for run in runs:
            if counts[run.label] > 1:
                run.label = f"{base[id(run)]} [{where(run)}]"


def sort_runs(runs: Sequence[RunReport], key: str) -> list[RunReport]:
    """``runs`` as given (``given``) or by the top-1 of their first row, highest first, runs without one last
    (``top1``; ties keep the given order)."""
    if key == "given":
        return list(runs)
    if key == "top1":
        return sorted(runs, key=lambda r: (r.top1 is None, -(r.top1 or 0.0)))
    raise ConfigError(f"--sort {key} is not one of {', '.join(SORT_KEYS)}")


def _pct(value: Optional[float]) -> str:
    return NOT_AVAILABLE if value is None else f"{100 * value:.2f}"


def _significant(value: Optional[float], digits: int = 3) -> str:
    """``digits`` significant digits without exponent for values below 10^digits (0.00977, 0.310, 24.6, 331)."""
    if value is None:
        return NOT_AVAILABLE
    if value == 0 or abs(value) >= 10 ** (digits - 1):
        return f"{value:.0f}"
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    return f"{value:.{decimals}f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


TABLE_COLUMNS = (
    ("run", "---"),
    ("model", "---"),
    ("evaluated", "---"),
    ("frames", "---:"),
    ("views", "---:"),
    ("GMACs/view", "---:"),
    ("params (M)", "---:"),
    ("top-1 (%)", "---:"),
    ("top-5 (%)", "---:"),
    ("mean class (%)", "---:"),
    ("best val top-1 (%)", "---:"),
    ("clips/s", "---:"),
    ("wall-clock (min)", "---:"),
    ("notes", "---"),
)


def table_rows(runs: Sequence[RunReport]) -> list[dict[str, str]]:
    """The table's cells, one dict per row (keys: the headers of :data:`TABLE_COLUMNS`), runs in the given order."""
    table = []
    for run in runs:
        model = run.experiment or run.model or NOT_AVAILABLE
        for evaluation in run.evaluations or [None]:
            e = evaluation or Evaluation(what=NOT_AVAILABLE, source="")
            best = NOT_AVAILABLE if e.best_acc1 is None else f"{_pct(e.best_acc1)} (epoch {e.best_epoch + 1})"
            views = f"{e.num_clips}x{e.num_crops}" if e.num_clips and e.num_crops else NOT_AVAILABLE
            frames = e.num_frames or (NOT_AVAILABLE if run.num_frames is None else str(run.num_frames))
            clips_per_s = _significant(run.clips_per_s)
            wall_clock = NOT_AVAILABLE if run.wall_clock_min is None else f"{run.wall_clock_min:.1f}"
            cells = [
                run.label,
                model,
                e.what,
                frames,
                views,
                _significant(run.gmacs_per_view),
                _significant(None if run.params is None else run.params / 1e6),
                _pct(e.acc1),
                _pct(e.acc5),
                _pct(e.mean_class_acc),
                best,
                clips_per_s,
                wall_clock,
                "; ".join(run.notes),
            ]
            table.append(dict(zip((name for name, _ in TABLE_COLUMNS), cells)))
    return table


LEGEND = (
    "top-1 / top-5 / mean class: % of the videos of the row's evaluation (`rsa_lightning/evaluation/metrics.py`): "
    "`val, epoch N/M (last)` is the last validation epoch in `csv/metrics.csv`, `<split>, <checkpoint>` an "
    "evaluation's `metrics_<split>.json`. best val top-1: at the epoch of the best checkpoint by `data.monitor`; "
    "epochs count from 1, as on the console. "
    "views: clips x crops per video. GMACs per view (one clip of `frames` frames; `python -m rsa_lightning.tools.flops`"
    "). clips/s: median over epochs of the training clips per second. wall-clock: `result.json` `time_min` (the whole "
    "job: data preparation, training, validation and testing)."
)


def shown_path(path: Path) -> str:
    """``path`` relative to the current folder when it lies below it (``logs/train/runs/<time>``), else absolute."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(absolute)


def shared_overrides(runs: Sequence[RunReport]) -> list[str]:
    """The command-line overrides every training run of several shares (in the first one's order), else none."""
    trained = [run for run in runs if run.task != "eval"]
    if len(trained) < 2:
        return []
    return [o for o in trained[0].overrides if all(o in run.overrides for run in trained[1:])]


def report_markdown(runs: Sequence[RunReport]) -> str:
    """The report as markdown: the table (the ``run`` column left out when every label is the model's name; the
    ``notes`` column when no run has a note), a legend of the columns, the overrides all training runs share and the
    runs' folders (relative to the current folder when below it)."""
    rows = table_rows(runs)
    columns = list(TABLE_COLUMNS)
    if all(row["run"] == row["model"] for row in rows):
        columns = [c for c in columns if c[0] != "run"]
    if not any(row["notes"] for row in rows):
        columns = [c for c in columns if c[0] != "notes"]
    lines = [
        "| " + " | ".join(name for name, _ in columns) + " |",
        "| " + " | ".join(align for _, align in columns) + " |",
    ]
    lines += ["| " + " | ".join(_cell(row[name]) for name, _ in columns) + " |" for row in rows]
    lines += ["", LEGEND, ""]
    shared = shared_overrides(runs)
    if shared:
        lines += ["Overrides of every training run: `" + " ".join(shared) + "`", ""]
    lines += ["Runs:", ""]
    lines += [f"- `{run.label}`: `{shown_path(run.path)}`" for run in runs]
    return "\n".join(lines) + "\n"


def _colours(count: int) -> list[Any]:
    """One distinct colour per run: matplotlib's tab10 (up to 10), tab20 (up to 20), else spread over viridis."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return [colormaps["viridis"](i / max(count - 1, 1)) for i in range(count)]


def plot_curves(runs: Sequence[RunReport], path: Path) -> Optional[Path]:
    """``path`` (PNG): loss (training solid, validation dashed) and validation top-1 (%) against the epoch (from 1),
    one colour per run, the legend naming the runs by label. None (nothing written) when no run has curves."""
    from matplotlib.lines import Line2D

    from rsa_lightning.visualization.figures import new_figure, save_figure

    plotted = [run for run in runs if run.curves]
    if not plotted:
        return None
    columns = min(len(plotted), 4 if max(len(run.label) for run in plotted) <= LEGEND_CHARS // 2 else 2)
    legend_rows = math.ceil(len(plotted) / columns)
    figure = new_figure(12.0, 4.5 + 0.25 * legend_rows)
    loss_axes, acc_axes = figure.subplots(1, 2)
    handles = []
    for run, colour in zip(plotted, _colours(len(plotted))):
        curves = run.curves
        for axes, values, scale, style in (
            (loss_axes, curves.train_loss, 1.0, "-"),
            (loss_axes, curves.val_loss, 1.0, "--"),
            (acc_axes, curves.val_acc1, 100.0, "-"),
        ):
            epochs = sorted(values)
            x = [e + 1 for e in epochs]  # counted from 1, as on the console
            axes.plot(x, [scale * values[e] for e in epochs], style, color=colour, marker="o", ms=3)
        handles.append(Line2D([], [], color=colour, marker="o", ms=3))
    loss_axes.set(title="loss (solid: training, dashed: validation)", xlabel="epoch", ylabel="loss")
    acc_axes.set(title="validation top-1", xlabel="epoch", ylabel="top-1 (%)")
    for axes in (loss_axes, acc_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    labels = [run.label if len(run.label) <= LEGEND_CHARS else run.label[: LEGEND_CHARS - 3] + "..." for run in plotted]
    figure.legend(handles, labels, loc="lower center", ncol=columns, frameon=False)
    figure.tight_layout(rect=(0, 0.06 + 0.05 * legend_rows, 1, 1))
    return save_figure(figure, path)


# ---------------------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = ToolArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, sweep folders or eval.py run folders")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for report.md and curves.png (default: the sweep's folder "
        "when the only path is a sweep, else the current folder)",
    )
    parser.add_argument("--sort", choices=SORT_KEYS, default="given", help="row order (default: as given)")
    parser.add_argument(
        "--label", action="append", default=None, help="a run's name in the table and legend; once per run, in order"
    )
    return parser.parse_args(argv)


def default_out(paths: Sequence[Path]) -> Path:
    """The sweep's folder when ``paths`` is one sweep's folder, else the current folder."""
    if len(paths) == 1 and not is_run_dir(paths[0]) and sweep_jobs(paths[0]):
        return paths[0]
    return Path.cwd()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line (module docstring): prints the markdown table, writes ``report.md`` and ``curves.png``.

    Raises:
        MissingFileError: a path that is not a run's or a sweep's folder (one line, exit code 2 under ``run_cli``).
        ConfigError: a bad argument.
    """
    args = parse_args(argv)
    runs = [read_run(path) for path in expand_paths(args.paths)]
    assign_labels(runs, args.label)
    runs = sort_runs(runs, args.sort)
    out = args.out if args.out is not None else default_out(args.paths)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a folder for {REPORT_FILE} and {CURVES_FILE}")
    text = report_markdown(runs)
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / REPORT_FILE
    report_path.write_text(text)
    curves_path = plot_curves(runs, out / CURVES_FILE)
    print(text, end="")  # the report is this tool's output
    written = f"wrote {report_path}" + (f" and {curves_path}" if curves_path else " (no training curves to plot)")
    print(written, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
