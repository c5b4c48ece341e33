from rsa_lightning.data.annotations import (
    UNLABELLED,
    Diving48Annotations,
    GymAnnotations,
    KineticsAnnotations,
    ListAnnotations,
    SSv1Annotations,
    SSv2Annotations,
    VideoRecord,
    read_class_names,
    read_video_list,
)
from rsa_lightning.data.datamodule import VideoDataModule
from rsa_lightning.data.dataset import VideoDataset
from rsa_lightning.data.sampling import (
    DenseSampler,
    FrameSampler,
    SegmentSampler,
    segment_centre_indices,
    segment_random_indices,
)

__all__ = [
    "UNLABELLED",
    "DenseSampler",
    "FrameSampler",
    "Diving48Annotations",
    "GymAnnotations",
    "KineticsAnnotations",
    "ListAnnotations",
    "SSv1Annotations",
    "SSv2Annotations",
    "SegmentSampler",
    "VideoDataModule",
    "VideoDataset",
    "VideoRecord",
    "read_class_names",
    "read_video_list",
    "segment_centre_indices",
    "segment_random_indices",
]
