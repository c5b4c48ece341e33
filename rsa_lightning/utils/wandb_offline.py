"""W&B offline runs after a kill: read what an offline run folder holds, and log again what a killed process lost.

Offline, W&B writes a run's records to ``<save_dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb`` through its
service process, which buffers them: a training process killed with SIGKILL (a pre-empted node, an out-of-memory
kill) can leave that file without a single history row (seen with wandb 0.31). A resumed run continues the same
run id in a new offline folder; :func:`replay_lost_history` then logs the rows of the CSV log (which is written at
once, :mod:`rsa_lightning.utils.csv_logger`) whose steps no earlier offline folder of that id holds, so the synced
run has every step. Online, W&B has already received what it streamed and nothing is replayed.

The ``.wandb`` file is a LevelDB-style log (the format of wandb's own ``datastore``: a 7-byte file header, 32 KiB
blocks, records in chunks with a 7-byte header: CRC32, length, type FULL/FIRST/MIDDLE/LAST) of
``wandb_internal_pb2.Record`` protobufs. A truncated last record is ignored.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BLOCK = 32768
CHUNK_HEADER = 7  # <I checksum, <H length, <B type
FILE_HEADER = 7  # b":W&B" + magic (2 bytes) + version
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
STEP_KEY = "trainer/global_step"  # the step Lightning's WandbLogger logs with every row


def records(path: str | Path) -> Iterator[bytes]:
    """The serialized records of a ``.wandb`` file, in order."""
    data = Path(path).read_bytes()
    pos, pending = FILE_HEADER, b""
    while pos + CHUNK_HEADER <= len(data):
        if BLOCK - pos % BLOCK < CHUNK_HEADER:  # block trailer too small for a header: padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        pos += CHUNK_HEADER
        if pos + length > len(data):
            return  # truncated
        chunk, pos = data[pos : pos + length], pos + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""
        else:
            return  # zero padding at the end of a preallocated block


def history_rows(path: str | Path) -> list[dict[str, Any]]:
    """The history rows (``wandb.log`` calls) of a ``.wandb`` file, as ``{key: value}``."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for data in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.history.item}
            )
    return rows


def logged_steps(wandb_dir: str | Path, run_id: str) -> set[int]:
    """The ``trainer/global_step`` values the offline folders of run ``run_id`` under ``wandb_dir`` hold."""
    steps: set[int] = set()
    for path in Path(wandb_dir).glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"):
        steps.update(int(row[STEP_KEY]) for row in history_rows(path) if STEP_KEY in row)
    return steps


def replay_lost_history(logger: Any, csv_rows: Sequence[dict[str, str]]) -> int:
    """Logs to ``logger`` (a Lightning ``WandbLogger`` continuing an offline run) the CSV rows whose steps no earlier
    offline folder of the run holds; returns how many rows it logged. Empty cells are left out."""
    wandb_dir = Path(logger.save_dir or ".") / "wandb"
    seen = logged_steps(wandb_dir, logger.version)
    replayed = 0
    for row in csv_rows:
        step = int(float(row["step"])) if row.get("step") else None
        metrics = {k: float(v) for k, v in row.items() if k != "step" and v not in ("", None)}
        if step is None or step in seen or not metrics:
            continue
        logger.log_metrics(metrics, step=step)
        replayed += 1
    if replayed:
        log.info(
            "W&B offline run %s: %d rows the killed process did not write logged again from the CSV log",
            logger.version,
            replayed,
        )
    return replayed
