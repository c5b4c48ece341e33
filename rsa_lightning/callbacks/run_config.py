"""The run's config in every checkpoint, and one run folder for all processes of a distributed run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback

log = logging.getLogger(__name__)


class ConfigInCheckpoint(Callback):
    """Stores the run's resolved config (``checkpoint["config"]``) in every checkpoint, so ``eval.py``,
    :func:`rsa_lightning.load_model` and ``VideoClassifier.load_from_checkpoint`` rebuild the model from the file
    alone.

    Args:
        config_file: the resolved config ``train.py`` writes before fitting (``<run dir>/config_resolved.yaml``);
            read at setup. Raises ``FileNotFoundError`` on the process that saves checkpoints (global rank 0) when it
            is missing.
    """

    def __init__(self, config_file: str) -> None:
        self.config_file = Path(config_file)
        self.config: Optional[dict[str, Any]] = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.config_file.is_file():
            self.config = OmegaConf.to_container(OmegaConf.load(self.config_file), resolve=True)
        elif trainer.is_global_zero:
            raise FileNotFoundError(
                f"{self.config_file} does not exist: ConfigInCheckpoint stores the config train.py writes there "
                "(callbacks.config_in_checkpoint.config_file)"
            )

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if self.config is not None:
            checkpoint["config"] = self.config


class SameRunDirOnAllRanks(Callback):
    """Stops a distributed run whose processes resolved different run folders, instead of scattering its outputs.

    Lightning's DDP launcher and SLURM jobs share one folder by construction (see
    :func:`rsa_lightning.utils.config.distributed_launch_overrides`); a run started by hand on several nodes, or by
    torchrun, needs the same ``hydra.run.dir`` (or ``RSA_RUN_NAME``) on every node, and this says so when it is not.

    Args:
        output_dir: this process's run folder (``${paths.output_dir}``); compared as an absolute path.
    """

    def __init__(self, output_dir: str) -> None:
        self.output_dir = str(Path(output_dir).resolve())

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        rank_zero_dir = trainer.strategy.broadcast(self.output_dir)
        if trainer.strategy.reduce_boolean_decision(rank_zero_dir != self.output_dir, all=False):
            raise RuntimeError(
                f"the processes of this run resolved different run folders (rank {trainer.global_rank}: "
                f"{self.output_dir}, rank 0: {rank_zero_dir}); pass the same hydra.run.dir=... (or RSA_RUN_NAME) "
                "to the command on every node"
            )
