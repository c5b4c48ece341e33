from rsa_lightning.models.resnet import Bottleneck, DropPath, ResNet

__all__ = ["Bottleneck", "DropPath", "ResNet"]
