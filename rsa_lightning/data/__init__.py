from rsa_lightning.data.annotations import VideoRecord, read_class_names, read_video_list
from rsa_lightning.data.datamodule import VideoDataModule
from rsa_lightning.data.dataset import VideoDataset
from rsa_lightning.data.sampling import SegmentSampler, segment_centre_indices, segment_random_indices

__all__ = [
    "SegmentSampler",
    "VideoDataModule",
    "VideoDataset",
    "VideoRecord",
    "read_class_names",
    "read_video_list",
    "segment_centre_indices",
    "segment_random_indices",
]
