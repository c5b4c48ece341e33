from rsa_lightning.models.official import load_official_checkpoint
from rsa_lightning.models.pretrained import create_resnet, load_imagenet_weights
from rsa_lightning.models.resnet import BasicBlock, Bottleneck, DropPath, ResNet

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "DropPath",
    "ResNet",
    "create_resnet",
    "load_imagenet_weights",
    "load_official_checkpoint",
]
