"""Logger factories used by ``conf/logger``."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

# Override keys left out of a run's default W&B name: where files go, how they are logged and where a run resumes
# from, not what is trained.
NAME_IGNORED_KEYS = ("hydra", "paths", "logger", "resume", "ckpt_path")


def override_key(override: str) -> str:
    """The key of a Hydra override: ``+model.x=1`` -> ``model.x``, ``~seed`` -> ``seed``."""
    return override.lstrip("+~").split("=", 1)[0]


@dataclass(frozen=True)
class HydraJob:
    """The facts of a Hydra job that a W&B run's default name and group are made of (``conf/logger/wandb.yaml``).

    ``experiment`` and ``model`` are the Hydra choices of those groups (``experiment`` None without one);
    ``overrides`` the job's task overrides (``hydra.overrides.task``); ``num`` the job number in a multirun, None in a
    single run; ``sweep_dir`` the multirun's folder (``hydra.sweep.dir``).
    """

    task_name: str
    model: Optional[str] = None
    experiment: Optional[str] = None
    overrides: Sequence[str] = ()
    num: Optional[int] = None
    sweep_dir: Optional[str] = None

    def run_name(self) -> str:
        """``<experiment, else model> <overrides>``, e.g. ``rsa_tiny seed=2 model.optimizer.lr=0.01``.

        Overrides of ``hydra.*``, ``paths.*`` and ``logger`` are left out, and so is the one that chose the label.
        """
        label_group = "experiment" if self.experiment else "model"
        label = self.experiment or self.model or self.task_name
        kept = [
            o
            for o in self.overrides
            if override_key(o).split(".")[0] not in NAME_IGNORED_KEYS and o.lstrip("+") != f"{label_group}={label}"
        ]
        return " ".join([label, *kept])

    def sweep_group(self) -> Optional[str]:
        """``<task_name>/<sweep folder name>`` for a job of a multirun (the jobs of one sweep share it), else None."""
        if self.num is None or not self.sweep_dir:
            return None
        return f"{self.task_name}/{Path(self.sweep_dir).name}"


def wandb_api_key_configured() -> bool:
    """True when W&B credentials are available (``WANDB_API_KEY`` or a netrc entry from ``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def finish_open_wandb_run() -> None:
    """Finish a W&B run still open in this process (e.g. by an earlier job of a multirun that did not finish it).

    Both Lightning's ``WandbLogger`` and ``wandb.init`` return the open run instead of starting a new one, so without
    this every job of a sweep after the first would log into the first job's run.
    """
    import wandb

    if wandb.run is not None:
        log.warning("finishing the W&B run %s (%s) left open by an earlier job", wandb.run.id, wandb.run.name)
        wandb.finish()


def wandb_logger(
    *,
    offline: Optional[bool] = None,
    name: Optional[str] = None,
    group: Optional[str] = None,
    id: Optional[str] = None,
    job: Optional[HydraJob] = None,
    **kwargs: Any,
):
    """A ``WandbLogger`` writing one new W&B run per job (or continuing run ``id``).

    ``offline=None`` means offline unless an API key is configured. ``name`` None: ``job.run_name()``; ``group`` None:
    ``job.sweep_group()`` (the sweep in a multirun, no group for a single run). ``id``: a run to continue
    (``resume="allow"``: W&B appends to that run, or starts a run with this id if there is none). Other keywords go to
    ``WandbLogger`` / ``wandb.init``.
    """
    from pytorch_lightning.loggers import WandbLogger

    if offline is None:
        offline = not wandb_api_key_configured()
        if offline:
            log.info("no W&B API key configured: logging offline (sync later with `wandb sync`)")
    if job is not None:
        name = name or job.run_name()
        group = group or job.sweep_group()
    finish_open_wandb_run()
    Path(kwargs.get("save_dir", ".")).mkdir(parents=True, exist_ok=True)
    log.info("W&B run %r%s%s", name, f" in group {group!r}" if group else "", f", continuing id {id}" if id else "")
    return WandbLogger(offline=offline, name=name, group=group, id=id, resume="allow", **kwargs)
