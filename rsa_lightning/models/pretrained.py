"""ImageNet initialisation of a built TSN ResNet from a local torchvision-layout ResNet state dict, and the factory
the model configs instantiate (:func:`create_resnet`: build, then load).

Source layout (torchvision ``torchvision.models.resnet``, e.g. ``resnet50-0676ba61.pth``): a flat dict of tensors,
``conv1.weight`` (64, 3, 7, 7); ``bn1.{weight,bias,running_mean,running_var,num_batches_tracked}``;
``layerS.I.convN.weight`` (O, I, k, k) and ``layerS.I.bnN.*`` for stage S = 1..4, block I, conv N (1..3 in a
bottleneck, 1..2 in a basic block); ``layerS.0.downsample.0.weight`` (O, I, 1, 1) and ``layerS.0.downsample.1.*``;
``fc.weight`` (1000, C) and ``fc.bias`` (1000,). These names equal :class:`ResNet`'s, so the key map is the identity
on the tensors that are loaded.

The 2D weights are inflated to (1, k, k) kernels and copied key by key through that explicit map, each shape
asserted. As in the RSANet paper, every block that holds a space-time mixer (RSA, 3D conv, local attention) is left
entirely random: its conv1, bn1, mixer, bn2, conv3 and bn3 (running statistics included) keep their fresh
initialisation, and the block's last BN gamma is set to 0 so the block starts as the identity. The projection
shortcut of such a block (none of RSANet's positions has one) is loaded. The classifier is always new. Nothing is
downloaded: the file is given by path (saved once on a machine with internet).

This module imports :mod:`rsa_lightning.models.resnet`, never the reverse: a network is built first, weights are
loaded into it afterwards (timm ``build_model_with_cfg``, nanoGPT ``from_pretrained``).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from rsa_lightning.errors import CheckpointError, MissingFileError
from rsa_lightning.models.resnet import ResNet

log = logging.getLogger(__name__)

CLASSIFIER_KEYS = ("fc.weight", "fc.bias")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth`` state dict (bare, or under ``state_dict`` / ``model``; a ``module.`` prefix is removed).

    Raises MissingFileError (a FileNotFoundError) when ``path`` is not a file; CheckpointError (a ValueError) when it
    cannot be read (truncated, not a torch file), needs code to unpickle (read with ``weights_only=True``), or holds
    no dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"model.net.pretrained={path} does not exist: give the path of a local torchvision ResNet state dict (.pth)"
        )
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" not in str(err).lower():  # a damaged file, not pickled code
            raise CheckpointError(
                f"model.net.pretrained={path} could not be read: truncated or not a state dict; re-copy it"
            ) from err
        raise CheckpointError(
            f"model.net.pretrained={path} needs code to be unpickled, not only tensors: refused (read with "
            "torch.load(weights_only=True), which never runs code from a file); save its state_dict() alone from a "
            "trusted copy: torch.save(model.state_dict(), 'resnet50.pth')"
        ) from err
    except Exception as err:  # torch raises OSError, EOFError, RuntimeError, ... for a damaged file
        reason = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"model.net.pretrained={path} could not be read: truncated or not a state dict ({reason}); re-copy it"
        ) from err
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"model.net.pretrained={path} is not a state dict (a dict of tensors, possibly under 'state_dict' or "
            "'model')"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def imagenet_key_map(net: ResNet) -> dict[str, str]:
    """Our state-dict key -> torchvision key, for every tensor that ImageNet weights initialise.

    Torchvision names equal ours (``conv1``, ``bn1``, ``layerS.I.convN``, ``layerS.I.downsample.{0,1}``); excluded are
    the classifier and the blocks listed in ``net.stmixer_blocks`` (except their shortcut).
    """
    random_prefixes = tuple(f"{name}." for name in net.stmixer_blocks)
    key_map = {}
    for key in net.state_dict():
        if key in CLASSIFIER_KEYS:
            continue
        if key.startswith(random_prefixes) and ".downsample." not in key:
            continue
        key_map[key] = key
    return key_map


def inflate(weight: torch.Tensor, target_shape: torch.Size) -> torch.Tensor:
    """A 2D conv kernel (O, I, kh, kw) as a (O, I, 1, kh, kw) 3D kernel; other tensors unchanged."""
    if weight.dim() == 4 and len(target_shape) == 5 and target_shape[2] == 1:
        return weight.unsqueeze(2)
    return weight


def load_imagenet_weights(net: ResNet, path: str | Path) -> ResNet:
    """Initialise the built ``net`` in place from the torchvision ResNet state dict at ``path``; returns ``net``.

    Every tensor of :func:`imagenet_key_map` is copied (2D kernels (O, I, k, k) inflated to (O, I, 1, k, k)); the
    blocks in ``net.stmixer_blocks`` keep their fresh weights with their last BN gamma set to 0, and the classifier
    stays new. The tensors loaded, left random, missing from the file and unused are logged once.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no state dict; a tensor's shape does not match (the message names the key, e.g.
            a ResNet-18 file for a ResNet-50); or none of its keys is a torchvision ResNet key. ``net`` is left
            unchanged when any of these is raised.
    """
    source = read_state_dict(path)
    own = net.state_dict()
    key_map = imagenet_key_map(net)
    loaded, missing = {}, []
    for key, src_key in key_map.items():
        if src_key not in source:
            missing.append(src_key)
            continue
        tensor = inflate(source[src_key], own[key].shape)
        if tensor.shape != own[key].shape:
            raise ValueError(
                f"{path}: '{src_key}' has shape {tuple(source[src_key].shape)}, the network needs "
                f"{tuple(own[key].shape)} for '{key}' (is it the ImageNet checkpoint of the same depth and width?)"
            )
        loaded[key] = tensor.to(own[key].dtype)
    if not loaded:
        raise ValueError(f"{path}: none of its keys matches a torchvision ResNet (e.g. 'conv1.weight', 'layer1.0.*')")
    used = set(key_map.values())
    skipped_blocks = tuple(f"{name}." for name in net.stmixer_blocks)
    unexpected = [k for k in source if k not in used and k not in CLASSIFIER_KEYS and not k.startswith(skipped_blocks)]
    with torch.no_grad():
        for key, tensor in loaded.items():
            own[key].copy_(tensor)
        for name in net.stmixer_blocks:
            nn.init.zeros_(net.get_submodule(name).last_bn.weight)
    log.info(
        "ImageNet weights from %s: %d tensors loaded; left random: classifier and blocks %s",
        path,
        len(loaded),
        ", ".join(net.stmixer_blocks) or "(none)",
    )
    if missing:
        log.warning("ImageNet weights from %s: %d tensors missing, left random: %s", path, len(missing), missing)
    if unexpected:
        log.warning("ImageNet weights from %s: %d unused tensors: %s", path, len(unexpected), unexpected)
    return net


def create_resnet(*, pretrained: Optional[str | Path] = None, **kwargs: Any) -> ResNet:
    """Build ``ResNet(**kwargs)``, then initialise it from ImageNet weights when ``pretrained`` is a path.

    The ``_target_`` of the model configs' ``net``: ``model.net.pretrained=/path/to/resnet50-0676ba61.pth`` loads
    torchvision's ResNet-50 with :func:`load_imagenet_weights`; null (the default) keeps the fresh initialisation,
    e.g. when a trained checkpoint's weights are loaded next. Every other keyword is a :class:`ResNet` argument.

    Raises:
        TypeError: an unknown keyword (a misspelt :class:`ResNet` argument), at construction.
        ValueError, FileNotFoundError: as :class:`ResNet` and :func:`load_imagenet_weights`.
    """
    net = ResNet(**kwargs)
    if pretrained is None:
        return net
    return load_imagenet_weights(net, pretrained)
