from rsa_lightning.modules.lr_schedule import warmup_cosine_factor
from rsa_lightning.modules.video_classifier import VideoClassifier

__all__ = ["VideoClassifier", "warmup_cosine_factor"]
