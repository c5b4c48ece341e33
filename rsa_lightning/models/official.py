"""Load the released RSANet checkpoints of the official code (github.com/KimManjin/RSA) into our :class:`ResNet`.

A released file is ``torch.save({"epoch", "arch", "state_dict", "best_prec1"})`` written by the official ``main.py``
(``best_prec1`` is a Python float: the mean of ``prec1.item()`` values). Its ``state_dict`` comes from an
``nn.DataParallel(TSN)``, so every key starts with ``module.``, then:

    base_model.<key>   the backbone; <key> is our ResNet key, tensor for tensor (same names, same shapes)
    new_fc.weight      the classifier, a Conv1d (K, C, 1) applied to every frame's pooled features -> fc.weight (K, C)
    new_fc.bias        (K,) -> fc.bias

The official TSN averages the per-frame logits over time, as :meth:`ResNet.forward_head` does; inputs are
ImageNet-normalised RGB clips in both. (Trained with dropout 0, the official classifier would be ``base_model.fc1``;
that key is mapped to ``fc`` too.)

Nothing in the file describes the architecture, so it is read from the tensors: stages and blocks from the
``layerS.I.`` keys, widths, expansion and stem from the convolution shapes, the RSA positions from the blocks whose
``conv2`` has a ``projection``, and per RSA layer (see :class:`RelationalSelfAttention` for the parameters):

    kernel type   H1 and P1 -> "V+R", H1 only -> "R", neither -> "V"
    context type  G and I -> "V+R", G only -> "R", neither -> "V"
    window        H2.weight (dd, 1, kt, kh, kw)
    dd, dk, dv    dd = H2 rows; dk = H1 rows / dd (kernel "V": dk = dd); dv = G rows (context "V": from the heads)
    heads nh      projection rows = nh * dk + dk (no key for kernel "V") + dv, and nh * dv = block width

Every RSA layer must share one configuration (heads, window, types, and either the derived or one explicit dk / dd),
as our ResNet takes a single mixer factory. That usually fixes nh, but with context "V" the value size is not stored
and nh * dk + dk + dv with dv = dk equals 1 * dk + dk + nh * dk: if all RSA layers also have one width, nh heads and
1 head with dk = width / nh fit alike. The official default dk = dv (``dk=0, dv=0`` in ``ops/rsa.py``) then decides,
unless ``num_heads`` is given.

The inferred network is then built and the file must match its state dict exactly: any missing or unexpected key
or any other shape is a ValueError naming the file, the key, the shape found and the shape expected.
"""

from __future__ import annotations

import functools
import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from rsa_lightning.layers.rsa import RelationalSelfAttention
from rsa_lightning.models.resnet import ResNet

log = logging.getLogger(__name__)

DATA_PARALLEL_PREFIX = "module."
BACKBONE_PREFIX = "base_model."
CLASSIFIER_PREFIX = "new_fc."
OFFICIAL_FC1_PREFIX = "base_model.fc1."  # the classifier of an official model trained with dropout 0
CHECKPOINT_KEYS = ("epoch", "arch", "state_dict", "best_prec1")
BLOCK_KEY = re.compile(r"^layer(\d+)\.(\d+)\.")
MAX_LISTED = 5


# --- reading the file -------------------------------------------------------------------------------------------------


def read_official_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict of an official checkpoint and its metadata (``epoch``, ``arch``, ``best_prec1`` when present).

    The file is unpickled with ``weights_only=True``: tensors and plain Python values only, which is all an official
    checkpoint holds. A bare state dict (a dict of tensors) is accepted too.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file: give the path of an official RSANet checkpoint (.pth.tar)")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: refusing to unpickle it with weights_only=True ({_unpickling_reason(err)}); an official "
            f"checkpoint holds only {list(CHECKPOINT_KEYS)} (tensors, ints, floats, strings)"
        ) from err
    except Exception as err:  # not a torch file at all: zip/pickle errors of every kind
        raise ValueError(f"{path} cannot be read by torch.load ({type(err).__name__}: {err})") from err

    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state_dict = obj["state_dict"]
        meta = {key: _plain(obj[key]) for key in CHECKPOINT_KEYS if key != "state_dict" and key in obj}
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state_dict, meta = obj, {}
    else:
        found = sorted(obj)[:MAX_LISTED] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"{path} is neither an official checkpoint (a dict with {list(CHECKPOINT_KEYS)}) nor a bare state dict "
            f"(a dict of tensors); found {found}"
        )
    bad = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: state_dict entries are not tensors: {_listed(bad)}")
    return dict(state_dict), meta


def _unpickling_reason(err: Exception) -> str:
    """The one informative sentence of torch's weights-only error (e.g. "Unsupported global: GLOBAL x.Y ...")."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        return text.split(marker, 1)[1].strip().splitlines()[0].split(". ")[0]
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


def _plain(value: Any) -> Any:
    """A checkpoint's metadata value as a plain Python value (a 0-d tensor becomes its number)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


# --- key maps ---------------------------------------------------------------------------------------------------------


def official_key(key: str) -> str:
    """Our ResNet key -> its key in an official checkpoint (``fc.*`` -> ``module.new_fc.*``)."""
    if key.startswith("fc."):
        return DATA_PARALLEL_PREFIX + CLASSIFIER_PREFIX + key.removeprefix("fc.")
    return DATA_PARALLEL_PREFIX + BACKBONE_PREFIX + key


def resnet_to_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our ResNet state dict in the official layout (what the official ``main.py`` saves as ``state_dict``).

    ``fc.weight`` (K, C) becomes the Conv1d weight ``module.new_fc.weight`` (K, C, 1); every other key gets the
    ``module.base_model.`` prefix.
    """
    official = {}
    for key, value in state_dict.items():
        official[official_key(key)] = value.unsqueeze(-1) if key == "fc.weight" else value
    return official


class _StateDict:
    """Our-layout tensors of one source, remembering each tensor's original key for error messages."""

    def __init__(self, tensors: dict[str, torch.Tensor], origin: dict[str, str], source: str) -> None:
        self.tensors = tensors
        self.origin = origin
        self.source = source

    def name(self, key: str) -> str:
        return self.origin.get(key, official_key(key))

    def has(self, key: str) -> bool:
        return key in self.tensors

    def shape(self, key: str, ndim: Optional[int] = None) -> tuple[int, ...]:
        if key not in self.tensors:
            raise self.error(f"missing key {self.name(key)}")
        shape = tuple(self.tensors[key].shape)
        if ndim is not None and len(shape) != ndim:
            raise self.error(f"{self.name(key)} has shape {shape}, expected {ndim} dimensions")
        return shape

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.source}: {message}")


def _rename(state_dict: Mapping[str, torch.Tensor], source: str) -> _StateDict:
    """Official keys -> ours (``module.`` optional); unknown prefixes and duplicates are errors."""
    tensors: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unexpected = []
    for key, value in state_dict.items():
        short = key.removeprefix(DATA_PARALLEL_PREFIX)
        if short.startswith((CLASSIFIER_PREFIX, OFFICIAL_FC1_PREFIX)):
            ours = "fc." + short.removeprefix(CLASSIFIER_PREFIX).removeprefix(OFFICIAL_FC1_PREFIX)
            if ours == "fc.weight":
                if value.dim() != 3 or value.shape[-1] != 1:
                    raise ValueError(
                        f"{source}: {key} has shape {tuple(value.shape)}, expected (num_classes, channels, 1) "
                        "(the official per-frame Conv1d classifier)"
                    )
                value = value.squeeze(-1)
        elif short.startswith(BACKBONE_PREFIX) and not short.startswith(BACKBONE_PREFIX + "fc."):
            ours = short.removeprefix(BACKBONE_PREFIX)
        else:
            unexpected.append(key)
            continue
        if ours in tensors:
            raise ValueError(f"{source}: {origin[ours]} and {key} both map to our {ours}")
        tensors[ours] = value
        origin[ours] = key
    if unexpected:
        raise ValueError(
            f"{source}: unexpected keys {_listed(unexpected)}; an official RSANet state dict has only "
            f"'{DATA_PARALLEL_PREFIX}{BACKBONE_PREFIX}*' and '{DATA_PARALLEL_PREFIX}{CLASSIFIER_PREFIX}*' keys"
        )
    return _StateDict(tensors, origin, source)


# --- architecture inference -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RSALayer:
    """The sizes one RSA layer's tensors fix (value_channels None: not stored, context "V")."""

    block: str
    width: int
    projection: int
    kernel_type: str
    context_type: str
    kernel_size: tuple[int, ...]
    key_channels: int
    latent_channels: int
    value_channels: Optional[int]

    def fits(self, num_heads: int) -> bool:
        """Whether ``num_heads`` heads explain the projection rows (nh * dk + key + dv) and the width (nh * dv)."""
        if self.width % num_heads:
            return False
        dv = self.width // num_heads
        key = self.key_channels if self.kernel_type != "V" else 0
        return self.value_channels in (None, dv) and num_heads * self.key_channels + key + dv == self.projection

    def describe(self) -> str:
        return (
            f"{self.block}: kernel {self.kernel_type}, context {self.context_type}, window {self.kernel_size}, "
            f"dk {self.key_channels}, dd {self.latent_channels}"
        )


def _rsa_layer(sd: _StateDict, block: str) -> _RSALayer:
    """Types, window and sizes of the RSA layer at ``<block>.conv2``."""
    prefix = f"{block}.conv2."
    projection = sd.shape(prefix + "projection.weight", ndim=5)  # (nh * dk + dk + dv, width, 1, 1, 1)
    h2 = sd.shape(prefix + "H2.weight", ndim=5)  # (dd, 1, kt, kh, kw)
    has_h1, has_p1 = sd.has(prefix + "H1.weight"), sd.has(prefix + "P1")
    has_g, has_i = sd.has(prefix + "G.weight"), sd.has(prefix + "I")
    if has_p1 and not has_h1:
        raise sd.error(
            f"{sd.name(prefix + 'P1')} without {sd.name(prefix + 'H1.weight')}: P1 needs a relational kernel"
        )
    if has_i and not has_g:
        raise sd.error(f"{sd.name(prefix + 'I')} without {sd.name(prefix + 'G.weight')}: I needs a relational context")
    kernel_type = "V+R" if has_p1 else "R" if has_h1 else "V"
    context_type = "V+R" if has_i else "R" if has_g else "V"
    kernel_size = h2[2:]
    dd = h2[0]
    dk = dd
    if has_h1:
        h1 = sd.shape(prefix + "H1.weight", ndim=5)  # (dk * dd, 1, kt, kh, kw)
        if h1[0] % dd or h1[2:] != kernel_size:
            raise sd.error(
                f"{sd.name(prefix + 'H1.weight')} has shape {h1}, expected (dk * {dd}, 1, *{kernel_size}) "
                f"to match {sd.name(prefix + 'H2.weight')} {h2}"
            )
        dk = h1[0] // dd
    dv = None
    if has_g:
        g = sd.shape(prefix + "G.weight", ndim=5)  # (dv, 1, kt, kh, kw)
        if g[2:] != kernel_size:
            raise sd.error(
                f"{sd.name(prefix + 'G.weight')} has window {g[2:]}, but {sd.name(prefix + 'H2.weight')} has "
                f"{kernel_size}"
            )
        dv = g[0]
    return _RSALayer(
        block=block,
        width=projection[1],
        projection=projection[0],
        kernel_type=kernel_type,
        context_type=context_type,
        kernel_size=kernel_size,
        key_channels=dk,
        latent_channels=dd,
        value_channels=dv,
    )


def _shared_size(name: str, sizes: dict[str, int], derived: dict[str, int]) -> Optional[int]:
    """None when every layer's size is the derived one; else the one explicit size all layers share."""
    if sizes == derived:
        return None
    if len(set(sizes.values())) == 1:
        return next(iter(sizes.values()))
    per_layer = ", ".join(f"{block} {size}" for block, size in sizes.items())
    raise ValueError(f"the RSA layers differ in {name} ({per_layer}); our ResNet uses one RSA configuration")


def _channel_kwargs(layers: list[_RSALayer], num_heads: int) -> dict[str, Optional[int]]:
    """key/latent_channels of one RSA configuration with ``num_heads`` heads (None: derived); ValueError if none."""
    key_channels = _shared_size(
        "key_channels (dk)",
        {la.block: la.key_channels for la in layers},
        {la.block: la.width // num_heads for la in layers},  # derived: dk = dv
    )
    latent_channels = _shared_size(
        "latent_channels (dd)",
        {la.block: la.latent_channels for la in layers},
        {la.block: la.key_channels for la in layers},  # derived: dd = dk
    )
    return {"key_channels": key_channels, "value_channels": None, "latent_channels": latent_channels}


def _head_choices(layers: list[_RSALayer]) -> dict[int, dict[str, Optional[int]]]:
    """Every head count that fits all layers' shapes and gives them one configuration -> its channel kwargs."""
    fits = set.intersection(*({nh for nh in range(1, la.width + 1) if la.fits(nh)} for la in layers))
    if not fits:
        shapes = "; ".join(f"{la.block}: width {la.width}, projection rows {la.projection}" for la in layers)
        raise ValueError(f"no number of heads explains every RSA layer's projection (nh * dk + dk + dv): {shapes}")
    choices, errors = {}, []
    for nh in sorted(fits):
        try:
            choices[nh] = _channel_kwargs(layers, nh)
        except ValueError as err:
            errors.append(f"{nh} heads: {err}")
    if not choices:
        raise ValueError("; ".join(errors))
    return choices


def _stmixer_arch(sd: _StateDict, blocks: list[str], num_heads: Optional[int]) -> dict[str, Any]:
    """RelationalSelfAttention kwargs shared by the RSA layers at ``blocks``.

    Ties between head counts (context "V", all RSA layers of one width) go to the official default dk == dv
    (``key_channels`` None), unless ``num_heads`` is given.
    """
    layers = [_rsa_layer(sd, block) for block in blocks]
    first = layers[0]
    for layer in layers[1:]:
        if (layer.kernel_type, layer.context_type, layer.kernel_size) != (
            first.kernel_type,
            first.context_type,
            first.kernel_size,
        ):
            raise sd.error(
                f"inconsistent RSA layers ({first.describe()}; {layer.describe()}); our ResNet uses one RSA "
                "configuration for every position"
            )
    try:
        choices = _head_choices(layers)
    except ValueError as err:
        raise sd.error(str(err)) from err
    if num_heads is not None:
        if num_heads not in choices:
            raise sd.error(f"num_heads={num_heads} does not fit the RSA layers' shapes; {sorted(choices)} do")
        nh = num_heads
    elif len(choices) == 1:
        nh = next(iter(choices))
    else:
        default = [h for h, kwargs in choices.items() if kwargs["key_channels"] is None]
        if len(default) != 1:
            raise sd.error(f"the RSA layers' shapes fit {sorted(choices)} heads; pass num_heads to choose")
        nh = default[0]
        log.info("RSA heads: %s fit the shapes; chose %d (dk == dv, the official default)", sorted(choices), nh)
    return {
        "num_heads": nh,
        "kernel_size": list(first.kernel_size),
        "kernel_type": first.kernel_type,
        "context_type": first.context_type,
        **choices[nh],
    }


def _infer_arch(sd: _StateDict, num_heads: Optional[int]) -> dict[str, Any]:
    stem = sd.shape("conv1.weight", ndim=5)  # (stem_width, 3, 1, k, k)
    if stem[1:3] != (3, 1) or stem[3] != stem[4] or stem[3] % 2 == 0:
        raise sd.error(f"{sd.name('conv1.weight')} has shape {stem}, expected (stem_width, 3, 1, k, k), k odd")
    num_classes = sd.shape("fc.weight", ndim=2)[0]

    counts: dict[int, int] = {}
    for key in sd.tensors:
        match = BLOCK_KEY.match(key)
        if match:
            stage, index = int(match[1]), int(match[2])
            counts[stage] = max(counts.get(stage, 0), index + 1)
    stages = sorted(counts)
    if not stages or stages != list(range(1, len(stages) + 1)):
        found = ", ".join(f"layer{s}" for s in stages) or "none"
        raise sd.error(f"expected residual stages layer1, layer2, ... (ResNet); found {found}")

    widths, expansions = [], set()
    for stage in stages:
        width = sd.shape(f"layer{stage}.0.conv1.weight", ndim=5)[0]
        out_channels = sd.shape(f"layer{stage}.0.conv3.weight", ndim=5)[0]
        if out_channels % width:
            raise sd.error(f"layer{stage}.0: conv3 outputs {out_channels} channels, not a multiple of width {width}")
        widths.append(width)
        expansions.add(out_channels // width)
    if len(expansions) != 1:
        raise sd.error(f"the stages differ in bottleneck expansion ({sorted(expansions)}); expected one")

    positions = [
        [i for i in range(counts[stage]) if sd.has(f"layer{stage}.{i}.conv2.projection.weight")] for stage in stages
    ]
    rsa_blocks = [f"layer{stage}.{i}" for stage, pos in zip(stages, positions) for i in pos]
    return {
        "num_classes": num_classes,
        "block_counts": [counts[stage] for stage in stages],
        "widths": widths,
        "expansion": expansions.pop(),
        "stem_width": stem[0],
        "stem_kernel": stem[3],
        "stem_pool": True,  # the official stem always max-pools
        "stmixer": _stmixer_arch(sd, rsa_blocks, num_heads) if rsa_blocks else None,
        "stmixer_positions": positions if rsa_blocks else [],
    }


def official_arch(
    state_dict: Mapping[str, torch.Tensor], *, num_heads: Optional[int] = None, source: str = "state dict"
) -> dict[str, Any]:
    """:class:`ResNet` kwargs (YAML-ready) of an official-layout state dict; ``stmixer`` holds the
    :class:`RelationalSelfAttention` kwargs (or None: no RSA layer). The layout itself is not checked here; see
    :func:`official_to_resnet_state_dict`."""
    return _infer_arch(_rename(state_dict, source), num_heads)


def build_resnet(arch: Mapping[str, Any]) -> ResNet:
    """The :class:`ResNet` of :func:`official_arch`'s kwargs (the RSA kwargs become the mixer factory)."""
    kwargs = dict(arch)
    rsa = kwargs.pop("stmixer")
    if rsa is not None:
        kwargs["stmixer"] = functools.partial(RelationalSelfAttention, **rsa)
    return ResNet(**kwargs)


def describe_arch(arch: Mapping[str, Any]) -> str:
    """One line for logs: classes, blocks, RSA positions, heads, window, types."""
    text = f"{arch['num_classes']} classes, blocks {arch['block_counts']}, widths {arch['widths']}"
    rsa = arch["stmixer"]
    if rsa is None:
        return text + ", no RSA layer"
    return (
        f"{text}, RSA at {arch['stmixer_positions']}: {rsa['num_heads']} heads, window {tuple(rsa['kernel_size'])}, "
        f"kernel {rsa['kernel_type']}, context {rsa['context_type']}"
    )


def _check_layout(sd: _StateDict, arch: Mapping[str, Any]) -> None:
    """Every key and shape of the network ``arch`` describes, and nothing else (built on the meta device)."""
    try:
        with torch.device("meta"):
            expected = {key: tuple(t.shape) for key, t in build_resnet(arch).state_dict().items()}
    except ValueError as err:
        raise sd.error(f"the inferred network ({describe_arch(arch)}) cannot be built: {err}") from err
    missing = [sd.name(key) for key in expected if not sd.has(key)]
    unexpected = [sd.name(key) for key in sd.tensors if key not in expected]
    wrong = [
        f"{sd.name(key)} has shape {tuple(sd.tensors[key].shape)}, expected {shape}"
        for key, shape in expected.items()
        if sd.has(key) and tuple(sd.tensors[key].shape) != shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_listed(unexpected)}")
    if wrong:
        problems.append(_listed(wrong))
    if problems:
        raise sd.error(
            f"does not match the network its tensors describe ({describe_arch(arch)}): " + "; ".join(problems)
        )


def official_to_resnet_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, num_heads: Optional[int] = None, source: str = "state dict"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An official-layout state dict as our ResNet's state dict, and the ResNet kwargs (:func:`official_arch`).

    Raises ValueError (naming ``source``, the key, the shapes) unless the tensors are exactly those of the inferred
    network. Works on meta tensors too (only shapes are read).
    """
    sd = _rename(state_dict, source)
    arch = _infer_arch(sd, num_heads)
    _check_layout(sd, arch)
    return sd.tensors, arch


def load_official_checkpoint(path: str | Path, *, num_heads: Optional[int] = None) -> ResNet:
    """The official RSANet checkpoint at ``path`` as our :class:`ResNet`, in eval mode.

    The network takes ImageNet-normalised clips (B, 3, T, H, W), any T, and returns (B, K) logits averaged over the
    frames, as the official TSN does. ``num_heads`` only settles the rare shape ambiguity described in the module
    docstring.
    """
    state_dict, meta = read_official_checkpoint(path)
    ours, arch = official_to_resnet_state_dict(state_dict, num_heads=num_heads, source=str(path))
    net = build_resnet(arch)
    net.load_state_dict(ours, strict=True)
    net.eval()
    log.info("loaded %s (%s): %s", path, ", ".join(f"{k} {v}" for k, v in meta.items()) or "bare", describe_arch(arch))
    return net
