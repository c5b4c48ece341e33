"""TSN-style ResNet on clips (B, C, T, H, W) with an injectable space-time mixer.

Every frame goes through a 2D ResNet (kernels (1, k, k), time never downsampled) except at the blocks listed in
``stmixer_positions``, whose spatial 3x3 convolution is replaced by ``stmixer`` (e.g. an RSA layer), which mixes
space *and* time. With no ``stmixer`` the network is a frame-wise TSN; with ``temporal_shift`` it is a TSM. The head
pools space per frame, applies dropout and a linear classifier per frame, and averages the logits over time (TSN
average consensus). ResNet-18/34 use :class:`BasicBlock` (``block``, expansion 1), ResNet-50/101 :class:`Bottleneck`.

In a BasicBlock the mixer replaces the second 3x3 conv (``conv2``, never strided; ``conv1`` keeps the stride), so
a mixer always sits at the same place: the block's ``conv2``, as in the official RSANet bottlenecks.

Module names follow torchvision's ResNet (``conv1 bn1 layer1..4``, blocks ``conv1 bn1 conv2 bn2 conv3 bn3
downsample``) so ImageNet and official RSANet weights map onto it key by key. Construction reads no file: weights are
loaded into a built network by :mod:`rsa_lightning.models.pretrained` (ImageNet; ``create_resnet`` for configs) and
:mod:`rsa_lightning.models.official` (released RSANet checkpoints), which import this module, never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from rsa_lightning.layers.conv import SpatialConv

MixerFactory = Callable[..., nn.Module]
BlockFactory = Callable[..., nn.Module]
ShiftFactory = Callable[..., nn.Module]


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``1 - survival``; scale by 1/survival."""

    def __init__(self, survival: float) -> None:
        super().__init__()
        if not 0.0 < survival <= 1.0:
            raise ValueError(f"survival probability must be in (0, 1], got {survival}")
        self.survival = survival

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.survival == 1.0:
            return x
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(self.survival)
        return x * mask / self.survival

    def extra_repr(self) -> str:
        return f"survival={self.survival:.3f}"


def make_downsample(in_channels: int, out_channels: int, stride: int) -> Optional[nn.Sequential]:
    """The projection shortcut (1x1x1 conv + BN) when a block changes resolution or width; None otherwise."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel_size=1, stride=(1, stride, stride), bias=False),
        nn.BatchNorm3d(out_channels),
    )


def run_mixer(mixer: nn.Module, x: torch.Tensor, recompute: bool) -> torch.Tensor:
    """``mixer(x)``; with ``recompute`` (and autograd recording) under activation checkpointing: nothing inside the
    mixer is kept for backward, its forward runs again there (``torch.utils.checkpoint``, non-reentrant). A mixer is
    deterministic (no dropout, no batch statistics), so the recomputed forward is the same function."""
    if recompute and torch.is_grad_enabled():
        return checkpoint(mixer, x, use_reentrant=False)
    return mixer(x)


class BasicBlock(nn.Module):
    """3x3 (strided) -> mixer (the second 3x3 conv, or an RSA layer), with a residual connection (ResNet-18/34).

    ``width`` must equal ``out_channels`` (expansion 1).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        width: int,
        out_channels: int,
        stride: int,
        mixer: MixerFactory,
        survival: float = 1.0,
        zero_init_residual: bool = True,
        temporal_shift: Optional[ShiftFactory] = None,
        checkpoint_mixer: bool = False,
    ) -> None:
        super().__init__()
        self.checkpoint_mixer = checkpoint_mixer
        if width != out_channels:
            raise ValueError(f"BasicBlock has expansion 1: width {width} must equal out_channels {out_channels}")
        self.shift = temporal_shift(channels=in_channels) if temporal_shift is not None else nn.Identity()
        self.conv1 = SpatialConv(in_channels=in_channels, out_channels=width, stride=stride)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = mixer(in_channels=width, out_channels=width, stride=1)
        self.bn2 = nn.BatchNorm3d(width)
        if zero_init_residual:
            nn.init.zeros_(self.bn2.weight)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_downsample(in_channels, out_channels, stride)
        self.drop_path = DropPath(survival)

    @property
    def last_bn(self) -> nn.BatchNorm3d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(self.shift(x))))
        out = self.bn2(run_mixer(self.conv2, out, self.checkpoint_mixer))
        return self.relu(self.drop_path(out) + identity)


class Bottleneck(nn.Module):
    """1x1x1 -> mixer (the spatial 3x3 conv, or an RSA layer) -> 1x1x1, with a residual connection."""

    def __init__(
        self,
        *,
        in_channels: int,
        width: int,
        out_channels: int,
        stride: int,
        mixer: MixerFactory,
        survival: float = 1.0,
        zero_init_residual: bool = True,
        temporal_shift: Optional[ShiftFactory] = None,
        checkpoint_mixer: bool = False,
    ) -> None:
        super().__init__()
        self.checkpoint_mixer = checkpoint_mixer
        self.shift = temporal_shift(channels=in_channels) if temporal_shift is not None else nn.Identity()
        self.conv1 = nn.Conv3d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = mixer(in_channels=width, out_channels=width, stride=stride)
        self.bn2 = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_channels)
        if zero_init_residual:
            nn.init.zeros_(self.bn3.weight)  # each block starts as the identity
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_downsample(in_channels, out_channels, stride)
        self.drop_path = DropPath(survival)

    @property
    def last_bn(self) -> nn.BatchNorm3d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(self.shift(x))))
        out = self.relu(self.bn2(run_mixer(self.conv2, out, self.checkpoint_mixer)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.drop_path(out) + identity)


class ResNet(nn.Module):
    """A TSN ResNet whose blocks at ``stmixer_positions`` use ``stmixer`` instead of the spatial conv.

    Maps clips (B, 3, T, H, W) to logits (B, num_classes); :meth:`forward_features` gives the last stage's
    (B, num_features, T, H', W') map, H' = H / 2^(S + 1) for S stages (H / 32 for ResNet-50; one halving less without
    ``stem_pool``), T never downsampled. Weights are freshly initialised (Kaiming fan-out convolutions, classifier
    N(0, 0.001)); the constructor reads no file. For ImageNet initialisation build through
    :func:`rsa_lightning.models.create_resnet` (``pretrained=<path>``) or apply
    :func:`rsa_lightning.models.load_imagenet_weights` to the built network.

    Args:
        num_classes: classifier outputs.
        block_counts: bottleneck blocks per stage (ResNet-50: 3, 4, 6, 3).
        widths: bottleneck (mixer) width per stage; a stage outputs ``width * expansion`` channels.
        expansion: bottleneck expansion (4 in ResNet-50).
        stem_width: channels of the stem convolution.
        stem_kernel: spatial size of the stem convolution (7 in ResNet-50).
        stem_pool: max-pool (1, 3, 3) / 2 after the stem (ResNet-50); off keeps 2x more resolution for small clips.
        stmixer: factory ``(in_channels=, out_channels=, stride=) -> nn.Module`` for the space-time mixer, e.g.
            ``functools.partial(RelationalSelfAttention, num_heads=8, kernel_size=(5, 7, 7))``; None: frame-wise TSN.
        stmixer_positions: per stage, the 0-based indices of the blocks that use ``stmixer``.
        spatial_mixer: factory for every other block's mixer (default: the 3x3 spatial conv).
        dropout: dropout before the classifier.
        drop_path_rate: stochastic depth; survival falls linearly from 1 (first block) to ``1 - drop_path_rate``.
        zero_init_residual: start every block's last BN gamma at 0, so each block begins as the identity (the
            official RSANet init); False starts it at 1.
        block: block factory, :class:`Bottleneck` (ResNet-50/101) or :class:`BasicBlock` (ResNet-18/34, expansion 1).
        temporal_shift: factory ``(channels=) -> nn.Module`` applied on the residual branch of every block before
            its first conv, e.g. ``functools.partial(TemporalShift, fold_div=8)`` (TSM); None: no shift.
        checkpoint_mixers: activation checkpointing of the ``stmixer`` layers (:func:`run_mixer`): in training
            nothing inside them is kept for backward and their forward runs twice; same results. See the README
            ("Performance") for the memory it saves and the time it costs.
        channels_last: keep the weights and every activation in PyTorch's channels-last 3-D memory format
            (``torch.channels_last_3d``: (B, T, H, W, C) in memory); the input is converted on entry. The same
            function (results equal up to fp32 summation order, which sends a training run on another trajectory
            from the same seed); the speed depends on the network and the CPU: on this project's 2-core machine a
            training step of ``rsa_tiny`` is 1.04-1.19x faster, ``tsn_tiny`` 1.2-1.34x, RSANet-R50 0.90x
            (``benchmarks/tiny_options.py``, ``benchmarks/rsa_network.py``; README "Performance"). The RSA fast path
            reads a channels-last input without a copy.

    Raises:
        TypeError: an unknown keyword argument (e.g. a misspelt config key).
        ValueError: ``block_counts`` and ``widths`` of different lengths, ``stmixer_positions`` without one list per
            stage or with a block index outside its stage, ``drop_path_rate`` outside [0, 1), or a
            :class:`BasicBlock` with ``expansion`` other than 1.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        block_counts: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        expansion: int = 4,
        stem_width: int = 64,
        stem_kernel: int = 7,
        stem_pool: bool = True,
        stmixer: Optional[MixerFactory] = None,
        stmixer_positions: Sequence[Sequence[int]] = (),
        spatial_mixer: MixerFactory = SpatialConv,
        dropout: float = 0.3,
        drop_path_rate: float = 0.0,
        zero_init_residual: bool = True,
        block: BlockFactory = Bottleneck,
        temporal_shift: Optional[ShiftFactory] = None,
        checkpoint_mixers: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if len(block_counts) != len(widths):
            raise ValueError(f"block_counts {list(block_counts)} and widths {list(widths)} need the same length")
        positions = [list(p) for p in stmixer_positions] if stmixer is not None else []
        if stmixer is not None:
            if len(positions) != len(block_counts):
                raise ValueError(
                    f"stmixer_positions needs one list per stage ({len(block_counts)}), got {stmixer_positions}"
                )
            for stage, (count, pos) in enumerate(zip(block_counts, positions)):
                bad = [p for p in pos if not 0 <= p < count]
                if bad:
                    raise ValueError(f"stmixer_positions[{stage}] has {bad}: stage {stage} has {count} blocks")
        if not isinstance(checkpoint_mixers, bool):
            raise ValueError(f"checkpoint_mixers must be True or False, got {checkpoint_mixers!r}")
        if not isinstance(channels_last, bool):
            raise ValueError(f"channels_last must be True or False, got {channels_last!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")

        self.conv1 = nn.Conv3d(
            3,
            stem_width,
            kernel_size=(1, stem_kernel, stem_kernel),
            stride=(1, 2, 2),
            padding=(0, stem_kernel // 2, stem_kernel // 2),
            bias=False,
        )
        self.bn1 = nn.BatchNorm3d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)) if stem_pool else nn.Identity()
        )

        total = sum(block_counts)
        self.stmixer_blocks: list[str] = []  # names ("layer2.1", ...) of the blocks whose conv2 is ``stmixer``
        block_id = 0
        in_channels = stem_width
        for stage, (count, width) in enumerate(zip(block_counts, widths)):
            blocks = []
            for i in range(count):
                survival = 1.0 - drop_path_rate * block_id / max(total - 1, 1)
                use_st = stmixer is not None and i in positions[stage]
                if use_st:
                    self.stmixer_blocks.append(f"layer{stage + 1}.{i}")
                blocks.append(
                    block(
                        in_channels=in_channels,
                        width=width,
                        out_channels=width * expansion,
                        stride=2 if (i == 0 and stage > 0) else 1,
                        mixer=stmixer if use_st else spatial_mixer,
                        survival=survival,
                        zero_init_residual=zero_init_residual,
                        temporal_shift=temporal_shift,
                        checkpoint_mixer=checkpoint_mixers and use_st,
                    )
                )
                in_channels = width * expansion
                block_id += 1
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        self.num_stages = len(block_counts)
        self.num_features = in_channels
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights()
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last_3d)

    def blocks(self) -> list[nn.Module]:
        """Every residual block, in order."""
        return [b for stage in range(self.num_stages) for b in getattr(self, f"layer{stage + 1}")]

    def _init_weights(self) -> None:
        # Kaiming (fan-out) for the network's own convolutions; a space-time mixer keeps its own initialisation.
        mixers = [b for b in self.blocks() if not isinstance(b.conv2, nn.Conv3d)]
        own = {id(p) for b in mixers for p in b.conv2.parameters()}
        for m in self.modules():
            if isinstance(m, nn.Conv3d) and id(m.weight) not in own:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, C, T, H', W') (channels-last memory with ``channels_last``)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(self.num_stages):
            x = getattr(self, f"layer{stage + 1}")(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H', W') -> (B, K): per-frame pooled features -> dropout -> linear, logits averaged over T."""
        x = x.mean(dim=(3, 4)).transpose(1, 2)  # (B, T, C)
        logits = self.fc(self.dropout(x))  # (B, T, K)
        return logits.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, num_classes) logits; ValueError for any other layout."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"ResNet expects clips of shape (B, 3, T, H, W), got {tuple(x.shape)}")
        return self.forward_head(self.forward_features(x))
