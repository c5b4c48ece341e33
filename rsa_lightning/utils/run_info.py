"""What a training run records about itself besides its config: model size and cost, code version, data, software.

``run_info(cfg, model, datamodule)`` gathers it as a JSON-ready nested dict, :func:`write_run_info` writes it to
``<run dir>/run_info.json`` and the loggers receive it under one key, ``log_hyperparams({"run_info": info})``:

- ``params``: ``total`` and ``trainable`` parameter counts of the LightningModule.
- ``cost``: ``gmacs_per_view`` (10^9 multiply-accumulates, the convention of :mod:`rsa_lightning.tools.flops`) of
  ``model.net`` for one view ``input_shape`` = (1, 3, num_frames, crop_size, crop_size) of the training data, and
  any ``warnings`` of the counter. None when the network cannot be counted (logged, never raised).
- ``git``: ``commit``, ``dirty`` and the first ``changed_files`` (``git status --porcelain``) of the project checkout
  (``cfg.paths.root_dir``); None when it is not a git checkout or git is missing or slow.
- ``data``: ``num_classes``, ``class_names``, ``num_videos`` per split (train, val), ``num_frames``, ``crop_size``.
- ``software``: python, torch, pytorch_lightning and CUDA versions; ``host``: the machine's name.

Cost: the MACs are counted on a copy of the network whose parameters and buffers are meta tensors (no memory, no
arithmetic; the real weights are neither copied nor touched), so the count costs about one Python pass over the
network's ops. Measured on a busy 2-core CPU: 0.1 s for rsa_tiny (8 x 56 x 56); 0.2 / 0.4 s for rsa_r50 and
0.5 / 0.75 s for tsn_r101 at 8 / 16 x 224 x 224; 6 / 11 s for local_sa_r50, whose attention loops over the 245
window offsets op by op. Torch's RNG states are restored afterwards in any case.
The class names and video counts come from the DataModule once it is set up; before that they are read from the
annotation files when these exist (None otherwise, e.g. a generated dataset before ``prepare_data``).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import platform
import socket
import subprocess
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig
from torch import nn

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 5.0
MAX_CHANGED_FILES = 50  # git.changed_files lists at most this many paths (num_changed_files counts all)
SPLITS = ("train", "val")
FILENAME = "run_info.json"


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``{"total": n, "trainable": n}``: parameters of ``model``, all and those with ``requires_grad``."""
    params = list(model.parameters())
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}


def meta_copy(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` whose parameters and buffers are meta tensors of the same shapes and dtypes.

    Nothing is allocated or initialised (the copy shares the structure, hooks and settings of ``net``, not its
    data); ``net`` itself is not changed. Tensors kept in plain attributes (neither parameter nor buffer) are copied.
    """
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(net.parameters(), net.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        if isinstance(tensor, nn.Parameter):
            meta = nn.Parameter(meta, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = meta
    return copy.deepcopy(net, memo)


class _TorchRNGPreserved:
    """Restores torch's CPU RNG state (and the CUDA states, if CUDA is already initialised) on exit."""

    def __enter__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def __exit__(self, *exc: Any) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def macs_per_view(net: nn.Module, input_shape: Sequence[int]) -> Optional[dict[str, Any]]:
    """GMACs of one forward pass of ``net`` on a clip of ``input_shape`` (B, C, T, H, W), counted on a meta copy.

    Returns ``{"gmacs_per_view": float, "input_shape": [...], "warnings": [...]}`` (the counter's warnings, e.g. a
    module type it has no rule for), or None when the network cannot be copied or run on the meta device (logged as
    a warning). ``net``'s weights, mode and torch's RNG states are unchanged afterwards.
    """
    from rsa_lightning.tools.flops import count_macs

    try:
        with _TorchRNGPreserved(), warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            report = count_macs(meta_copy(net), input_shape)
    except Exception as err:  # any model: a run never fails for its cost report
        log.warning("could not count the MACs of %s: %s: %s", type(net).__name__, type(err).__name__, err)
        return None
    return {
        "gmacs_per_view": report.total() / 1e9,
        "input_shape": list(report.input_shape),
        "warnings": list(report.warnings),
    }


def _git(args: Sequence[str], cwd: Path, timeout: float) -> str:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}  # never take the index lock of a user's checkout
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=True
    )
    return result.stdout


def git_state(path: str | Path, timeout: float = GIT_TIMEOUT_S) -> Optional[dict[str, Any]]:
    """The commit and dirty state of the git checkout containing ``path``.

    Returns ``{"commit": 40-hex str, "dirty": bool, "num_changed_files": int, "changed_files": [...]}`` (changed
    means modified, staged, deleted or untracked and not ignored, as ``git status --porcelain`` lists them; at most
    :data:`MAX_CHANGED_FILES` paths), or None when ``path`` is not in a git checkout (or one without commits), git is
    not installed, or a git command takes longer than ``timeout`` seconds. Never raises.
    """
    try:
        commit = _git(["rev-parse", "HEAD"], Path(path), timeout).strip()
        status = _git(["status", "--porcelain"], Path(path), timeout)
    except (OSError, subprocess.SubprocessError) as err:  # git missing, not a checkout, no commit, timeout
        log.debug("no git state for %s: %s", path, err)
        return None
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {
        "commit": commit,
        "dirty": bool(changed),
        "num_changed_files": len(changed),
        "changed_files": changed[:MAX_CHANGED_FILES],
    }


def _class_names(datamodule: Any) -> Optional[list[str]]:
    names = getattr(datamodule, "class_names", None)
    if names:
        return list(names)
    if hasattr(datamodule, "load_class_names"):
        try:
            return list(datamodule.load_class_names())
        except Exception as err:  # annotations not there yet (generated at prepare_data) or unreadable
            log.debug("class names not available yet: %s", err)
    return None


def _num_videos(datamodule: Any, split: str) -> Optional[int]:
    dataset = getattr(datamodule, "datasets", {}).get(split)
    if dataset is not None:
        return len(dataset.records)
    if hasattr(datamodule, "records"):
        try:
            return len(datamodule.records(split))
        except Exception as err:
            log.debug("number of %s videos not available yet: %s", split, err)
    return None


def software_versions() -> dict[str, Optional[str]]:
    """Versions of python, torch, pytorch_lightning and the CUDA torch was built with (None: a CPU build).

    Plain ``str``: ``torch.__version__`` is a ``TorchVersion``, which YAML (the CSV and TensorBoard loggers'
    ``hparams.yaml``) would write as a Python object that ``yaml.safe_load`` cannot read back.
    """
    import pytorch_lightning as pl

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "pytorch_lightning": str(pl.__version__),
        "cuda": None if torch.version.cuda is None else str(torch.version.cuda),
    }


def run_info(cfg: DictConfig, model: nn.Module, datamodule: Any) -> dict[str, Any]:
    """Everything a run should record besides its config (see the module docstring); JSON-serialisable.

    Args:
        cfg: the run config: ``paths.root_dir`` (the checkout whose git state is recorded) and, when the DataModule
            does not have them as attributes, ``data.num_frames``, ``data.crop_size`` and ``data.num_classes``.
        model: the LightningModule; its ``net`` (or the module itself if it has none) is counted for MACs.
        datamodule: the run's DataModule (``class_names`` / ``load_class_names()``, ``datasets`` / ``records()``).

    Never raises for a missing piece: what cannot be found is None (git, cost, class names, video counts).
    """
    data_cfg = cfg.get("data") or {}
    num_frames = int(getattr(datamodule, "num_frames", None) or data_cfg.get("num_frames"))
    crop_size = int(getattr(datamodule, "crop_size", None) or data_cfg.get("crop_size"))
    root_dir = cfg.get("paths", {}).get("root_dir") or Path(__file__).resolve().parents[2]
    return {
        "params": parameter_counts(model),
        "cost": macs_per_view(getattr(model, "net", model), (1, 3, num_frames, crop_size, crop_size)),
        "git": git_state(root_dir),
        "data": {
            "num_classes": getattr(datamodule, "num_classes", None) or data_cfg.get("num_classes"),
            "class_names": _class_names(datamodule),
            "num_videos": {split: _num_videos(datamodule, split) for split in SPLITS},
            "num_frames": num_frames,
            "crop_size": crop_size,
        },
        "software": software_versions(),
        "host": socket.gethostname(),
    }


def write_run_info(info: Mapping[str, Any], output_dir: str | Path) -> Path:
    """Write ``info`` as indented JSON to ``<output_dir>/run_info.json``; returns the path."""
    path = Path(output_dir) / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2) + "\n")
    return path


def flatten_for_loggers(info: Mapping[str, Any], prefix: str = "run_info", sep: str = "/") -> dict[str, Any]:
    """``info`` as one level of ``prefix/a/b`` keys with scalar values: lists become one comma-separated string.

    For loggers that only take scalars (e.g. MLflow's params, TensorBoard's hparams table, which shows a list as its
    ``str``); CSV, TensorBoard and W&B in this project take the nested dict as it is.
    """
    flat: dict[str, Any] = {}
    for key, value in info.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_for_loggers(value, name, sep))
        elif isinstance(value, (list, tuple)):
            flat[name] = ", ".join(str(v) for v in value)
        else:
            flat[name] = value
    return flat
