"""Lightning callbacks, one per module; each has its config in ``conf/callbacks/`` (composed by ``default.yaml``)."""

from rsa_lightning.callbacks.epoch_summary import EpochSummary
from rsa_lightning.callbacks.resume import LastCheckpoint, ResumeState
from rsa_lightning.callbacks.run_config import ConfigInCheckpoint, SameRunDirOnAllRanks
from rsa_lightning.callbacks.skipped_samples import SkippedSamplesMonitor, TooManySkippedVideosError

__all__ = [
    "ConfigInCheckpoint",
    "EpochSummary",
    "LastCheckpoint",
    "ResumeState",
    "SameRunDirOnAllRanks",
    "SkippedSamplesMonitor",
    "TooManySkippedVideosError",
]
