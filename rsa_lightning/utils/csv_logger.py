"""A CSV logger that continues its file: a resumed run appends to the rows it logged before.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so resuming a run into its own folder
used to leave only the steps after the resume. :class:`ResumableCSVLogger` keeps the file and appends (rewriting the
header when new columns appear, as Lightning does), and writes every logged row at once (no buffering: a killed run
keeps what it logged). :func:`cut_csv_log` removes the rows a killed run logged after its last checkpoint, which
the resumed run logs again (``train.py resume=...`` calls it with the checkpoint's logging step).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from lightning_fabric.loggers.csv_logs import _ExperimentWriter as _FabricWriter
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

log = logging.getLogger(__name__)

METRICS_FILE = _FabricWriter.NAME_METRICS_FILE


class _ContinuingWriter(ExperimentWriter):
    """Lightning's writer, minus deleting the previous ``metrics.csv``; its columns are read back instead."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = next(csv.reader(file), [])
            self.metrics_keys = sorted(header)
            log.info("appending to %s", self.metrics_file_path)


class ResumableCSVLogger(CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that appends to an existing ``metrics.csv``; same arguments.

    ``flush_logs_every_n_steps`` defaults to 1 here (Lightning: 100): rows reach the file when logged.
    """

    def __init__(self, *args: Any, flush_logs_every_n_steps: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, flush_logs_every_n_steps=flush_logs_every_n_steps, **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


def cut_csv_log(path: str | Path, last_step: int) -> int:
    """Drops the rows of ``path`` (a ``metrics.csv``) logged at a step after ``last_step``; returns how many.

    Rows without a step are kept. The file is replaced atomically. Missing file: nothing to do (0).
    """
    path = Path(path)
    if not path.is_file():
        return 0
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        fields, rows = reader.fieldnames or [], list(reader)
    kept = [r for r in rows if not r.get("step") or int(float(r["step"])) <= last_step]
    if len(kept) == len(rows):
        return 0
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, path)
    return len(rows) - len(kept)
