"""Lightning callbacks, one per module; each has its config in ``conf/callbacks/`` (composed by ``default.yaml``)."""

from rsa_lightning.callbacks.clip_grid import ClipGrid
from rsa_lightning.callbacks.disk_space import DiskSpaceCheck, NotEnoughDiskSpace
from rsa_lightning.callbacks.epoch_summary import EpochSummary
from rsa_lightning.callbacks.eval_plots import EvalPlots
from rsa_lightning.callbacks.kernel_images import KernelImages
from rsa_lightning.callbacks.nonfinite import FiniteModelCheckpoint, NonFiniteGuard, TrainingDiverged
from rsa_lightning.callbacks.preemption import Interrupted, StopOnSignal
from rsa_lightning.callbacks.resume import LastCheckpoint, ResumeState
from rsa_lightning.callbacks.run_config import ConfigInCheckpoint, SameRunDirOnAllRanks
from rsa_lightning.callbacks.skipped_samples import SkippedSamplesMonitor, TooManySkippedVideosError

__all__ = [
    "ClipGrid",
    "ConfigInCheckpoint",
    "DiskSpaceCheck",
    "EpochSummary",
    "EvalPlots",
    "FiniteModelCheckpoint",
    "Interrupted",
    "KernelImages",
    "LastCheckpoint",
    "NonFiniteGuard",
    "NotEnoughDiskSpace",
    "ResumeState",
    "SameRunDirOnAllRanks",
    "SkippedSamplesMonitor",
    "StopOnSignal",
    "TooManySkippedVideosError",
    "TrainingDiverged",
]
