"""Sweeps that report themselves: a table of every job of a Hydra multirun, kept up to date while the sweep runs.

``python train.py -m seed=1,2 model.optimizer.lr=0.01,0.02`` runs one job per combination, each in
``<sweep dir>/<job num>/`` (``hydra.sweep.subdir``; the Optuna sweeper and the submitit launcher number their jobs the
same way). At its end every job writes ``result.json`` into its folder (``train.py``; :data:`RESULT_FILE`):
status, overrides, the optimised metric's value, best epoch, error, time. Epochs: ``summary.md`` counts them from
1, as the console and the run report do; ``summary.csv``'s ``best_epoch`` is ``result.json``'s (from 0, as
``metrics.csv`` and the checkpoint names count: ``best_epoch_002.ckpt`` is epoch 3). :class:`SweepSummary`
(registered in ``conf/hydra/default.yaml``) turns the folders into ``<sweep dir>/summary.csv`` and ``summary.md``:

- after every job (``on_job_end``: a sweep killed half-way still has its summary; under submitit this runs in the
  job's own process, so the files are replaced atomically, and the last job to finish writes the complete table);
- at the end of the sweep (``on_multirun_end``, in the launching process), where the table is also logged, and the
  process exits with status 1 when a job failed or never finished, after naming those jobs and their log files.

A job folder without ``result.json`` is ``running`` while the sweep runs and ``not finished`` at its end (killed, or
died without Python's exception handling); its overrides then come from ``.hydra/overrides.yaml``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
SUMMARY_STEM = "summary"
# statuses of a job row: the first two come from result.json, the others mean there is none (yet)
COMPLETED, FAILED, RUNNING, NOT_FINISHED = "completed", "failed", "running", "not finished"
# longest error message in the markdown table (summary.csv keeps it whole)
SHORT_ERROR_CHARS = 80
CSV_COLUMNS = (
    "job",
    "status",
    "overrides",
    "metric",
    "value",
    "value_pct",
    "best_epoch",
    "time_min",
    "error",
    "run_dir",
    "log_file",
)


def metric_in_percent(metric: Optional[str]) -> bool:
    """Accuracies are shown in % (0.5403 -> 54.03); losses as they are."""
    return bool(metric) and "loss" not in metric


@dataclass(frozen=True)
class JobRow:
    """One job of a sweep, as read from its folder (``num``: the job number, None for a single run's folder)."""

    num: Optional[int]
    status: str
    overrides: tuple[str, ...]
    run_dir: str
    metric: Optional[str] = None
    value: Optional[float] = None
    best_epoch: Optional[int] = None
    time_min: Optional[float] = None
    error: Optional[str] = None
    log_file: Optional[str] = None

    @property
    def value_pct(self) -> Optional[float]:
        return 100.0 * self.value if self.value is not None and metric_in_percent(self.metric) else None

    def shown_value(self) -> str:
        if self.value is None:
            return ""
        return f"{self.value_pct:.2f}" if self.value_pct is not None else f"{self.value:.4g}"


def _finite(value: Any) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _job_log_file(job_dir: Path, job_name: str) -> Optional[str]:
    """The job's Hydra log file (``<job dir>/<hydra.job.name>.log``, e.g. ``train.log``), else any ``*.log`` there."""
    named = job_dir / f"{job_name}.log"
    if named.is_file():
        return str(named)
    found = sorted(job_dir.glob("*.log"))
    return str(found[0]) if found else None


def _hydra_overrides(job_dir: Path) -> tuple[str, ...]:
    try:
        return tuple(yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or ())
    except (OSError, yaml.YAMLError):
        return ()


def read_job(job_dir: Path, *, missing_status: str = NOT_FINISHED, job_name: str = "train") -> JobRow:
    """A job's row from ``<job_dir>/result.json``; ``missing_status`` when it has none (or an unreadable one).

    Also reads a single run's folder (``logs/train/runs/<time>``: ``num`` None), for :mod:`rsa_lightning.tools.report`.
    """
    log_file = _job_log_file(job_dir, job_name)
    num = int(job_dir.name) if job_dir.name.isdigit() else None
    try:
        result = json.loads((job_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):  # none yet, or being written by a job that does not replace it atomically
        return JobRow(num, missing_status, _hydra_overrides(job_dir), str(job_dir), log_file=log_file)
    best_epoch = result.get("best_epoch")
    return JobRow(
        num=num,
        status=str(result.get("status") or NOT_FINISHED),
        overrides=tuple(result.get("overrides") or _hydra_overrides(job_dir)),
        run_dir=str(result.get("run_dir") or job_dir),
        metric=result.get("optimized_metric"),
        value=_finite(result.get("value")),
        best_epoch=int(best_epoch) if best_epoch is not None else None,
        time_min=_finite(result.get("time_min")),
        error=result.get("error"),
        log_file=log_file,
    )


def collect_jobs(sweep_dir: Path, *, missing_status: str = NOT_FINISHED, job_name: str = "train") -> list[JobRow]:
    """One row per job folder ``<sweep_dir>/<job num>/``, by job number."""
    if not sweep_dir.is_dir():
        return []
    job_dirs = [d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()]
    return [
        read_job(d, missing_status=missing_status, job_name=job_name)
        for d in sorted(job_dirs, key=lambda d: int(d.name))
    ]


def _common_overrides(rows: Sequence[JobRow]) -> list[str]:
    """The overrides every job shares (only when there are several jobs: they are what the sweep did not vary)."""
    if len(rows) < 2:
        return []
    return [o for o in rows[0].overrides if all(o in r.overrides for r in rows[1:])]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _short(text: Optional[str]) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= SHORT_ERROR_CHARS else line[: SHORT_ERROR_CHARS - 3] + "..."


def summary_markdown(rows: Sequence[JobRow], sweep_dir: Path) -> str:
    """The summary as markdown: a header line, the overrides all jobs share, and one table row per job showing the
    overrides that differ between jobs."""
    counts = {s: sum(r.status == s for r in rows) for s in (COMPLETED, FAILED, RUNNING, NOT_FINISHED)}
    header = f"Sweep `{sweep_dir}`: {len(rows)} jobs, " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines = [header, ""]
    common = _common_overrides(rows)
    if common:
        lines += ["Overrides of every job: `" + " ".join(common) + "`", ""]
    metrics = {r.metric for r in rows if r.metric}
    metric = next(iter(metrics)) if len(metrics) == 1 else "value"
    value_header = f"{metric} (%)" if metric_in_percent(metric) and len(metrics) == 1 else metric
    lines += [
        f"| job | overrides | {value_header} | best epoch | status | error | run dir |",
        "| ---: | --- | ---: | ---: | --- | --- | --- |",
    ]
    for r in rows:
        varying = " ".join(o for o in r.overrides if o not in common)
        value = r.shown_value() if len(metrics) <= 1 else f"{r.shown_value()} {r.metric or ''}".strip()
        best_epoch = "" if r.best_epoch is None else str(r.best_epoch + 1)  # from 1, as the console counts
        cells = [str(r.num), varying, value, best_epoch, r.status, _short(r.error), r.run_dir]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def summary_csv(rows: Sequence[JobRow]) -> str:
    """The summary as CSV: :data:`CSV_COLUMNS`, the value as logged (``value``) and in % (``value_pct``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        pct = "" if r.value_pct is None else f"{r.value_pct:.2f}"
        writer.writerow(
            [
                r.num,
                r.status,
                " ".join(r.overrides),
                r.metric or "",
                "" if r.value is None else repr(r.value),
                pct,
                "" if r.best_epoch is None else r.best_epoch,
                "" if r.time_min is None else f"{r.time_min:.2f}",
                r.error or "",
                r.run_dir,
                r.log_file or "",
            ]
        )
    return out.getvalue()


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``: a reader (or a job finishing
    at the same time) sees the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # one per writer
    try:
        with tmp.open("x", encoding="utf-8") as f:  # the umask's permissions, unlike tempfile.mkstemp's 0600
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_summary(sweep_dir: Path, rows: Sequence[JobRow]) -> tuple[Path, Path]:
    """``<sweep_dir>/summary.csv`` and ``summary.md``; returns their paths."""
    csv_path, md_path = sweep_dir / f"{SUMMARY_STEM}.csv", sweep_dir / f"{SUMMARY_STEM}.md"
    write_atomically(csv_path, summary_csv(rows))
    write_atomically(md_path, summary_markdown(rows, sweep_dir))
    return csv_path, md_path


def result_from_job_return(config: DictConfig, job_return: JobReturn) -> dict[str, Any]:
    """A ``result.json`` for a job that ended without writing one (an exception escaped before ``train.py`` could):
    its status and error as Hydra saw them."""
    error = None
    value = None
    if job_return.status == JobStatus.FAILED:
        exc = job_return._return_value
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    elif isinstance(job_return._return_value, (int, float)):
        value = _finite(job_return._return_value)
    return {
        "status": FAILED if job_return.status == JobStatus.FAILED else COMPLETED,
        "task_name": str(config.hydra.job.name),
        "overrides": list(job_return.overrides or ()),
        "optimized_metric": OmegaConf.select(
            config, "optimized_metric", default=None, throw_on_resolution_failure=False
        ),
        "value": value,
        "best_epoch": None,
        "best_checkpoint": None,
        "metrics": {},
        "error": error,
        "time_min": None,
        "run_dir": str(config.hydra.runtime.output_dir),
    }


class SweepSummary(Callback):
    """Hydra callback writing ``summary.csv`` / ``summary.md`` into a multirun's sweep folder (module docstring).

    ``exit_on_failure``: at the end of the sweep, exit with status 1 when a job failed or never finished (after the
    summary is written and logged), so a script or CI step running the sweep sees it.
    """

    def __init__(self, *, exit_on_failure: bool = True) -> None:
        self.exit_on_failure = exit_on_failure

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:  # also called for a single run: nothing to summarise
            return
        job_dir = Path(str(config.hydra.runtime.output_dir))
        if not (job_dir / RESULT_FILE).exists():
            write_atomically(job_dir / RESULT_FILE, json.dumps(result_from_job_return(config, job_return), indent=2))
        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows = collect_jobs(sweep_dir, missing_status=RUNNING, job_name=str(config.hydra.job.name))
        write_summary(sweep_dir, rows)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows = collect_jobs(sweep_dir, missing_status=NOT_FINISHED, job_name=str(config.hydra.job.name))
        if not rows:
            log.warning("sweep summary: no job folders in %s", sweep_dir)
            return
        csv_path, md_path = write_summary(sweep_dir, rows)
        log.info("sweep summary (%s, %s):\n%s", md_path, csv_path.name, summary_markdown(rows, sweep_dir))
        unsuccessful = [r for r in rows if r.status != COMPLETED]
        if unsuccessful:
            named = "; ".join(f"job {r.num} {r.status} (log: {r.log_file or r.run_dir})" for r in unsuccessful)
            log.error("%d of %d jobs did not complete: %s", len(unsuccessful), len(rows), named)
            if self.exit_on_failure:
                sys.exit(1)
