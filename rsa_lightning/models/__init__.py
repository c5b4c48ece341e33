from rsa_lightning.models.official import load_official_checkpoint
from rsa_lightning.models.pretrained import load_imagenet_resnet
from rsa_lightning.models.resnet import BasicBlock, Bottleneck, DropPath, ResNet

__all__ = ["BasicBlock", "Bottleneck", "DropPath", "ResNet", "load_imagenet_resnet", "load_official_checkpoint"]
