"""Checks of a composed config before any heavy work (building the model, the trainer, reading the data set).

:func:`check_train_config` runs in :func:`rsa_lightning.train.train` right after the config is composed (and, for a
resume, merged with the run's); :func:`check_eval_config` at the top of :func:`rsa_lightning.evaluate.evaluate`.
Every problem raises :class:`rsa_lightning.errors.ConfigError` as ``<key> ...: <why>; <the fix>``, so ``train.py``
and ``eval.py`` exit with code 2 and one message (:mod:`rsa_lightning.errors`).

Only what is cheap and certain is checked, on the config alone (no file is read but the data config's comment):

- ``???`` values (``data.root`` of every real dataset, ``data.num_classes`` of ``data=list``) and interpolations
  that cannot be resolved, named by their key;
- ``data.root``: set, an existing, non-empty folder (unless the data config generates it: ``data.prepare``); the
  message quotes the layout from the data config's "Layout under data.root" comment;
- sizes: ``data.num_frames``, ``data.batch_size`` (per device, so any number of devices can split it),
  ``data.num_classes`` (at least 2, equal to ``model.num_classes`` and ``model.net.num_classes``),
  ``model.optimizer.lr``;
- the network (``model.net``): ``block_counts`` / ``widths`` of one length, the space-time mixer's window
  (``stmixer.kernel_size``: three odd positive sizes) and heads (``stmixer.num_heads`` divides the width of every
  stage holding the mixer), ``stmixer_positions`` (one list per stage, each index inside its stage);
- the device (``trainer``): GPUs requested but none visible, more GPUs than visible, fp16 mixed precision on the CPU
  (Lightning would silently switch to bf16), bf16 on a GPU without bf16;
- files a run needs: ``model.net.pretrained`` (the ImageNet weights of the experiments), ``ckpt_path``.

:class:`RunDirCheck` (a Hydra callback, ``conf/train.yaml``) refuses an output folder that cannot be created before
Hydra creates it, with one message instead of Hydra's traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import sys
import tempfile
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from rsa_lightning.errors import ConfigError, report
from rsa_lightning.resume import CONFIG_FILE
from rsa_lightning.utils.config import is_launched_as_rank_zero, overridden_keys, task_overrides

# a classifier needs two classes (top-1 over one class is always right; torchmetrics refuses num_classes=1)
MIN_CLASSES = 2
# ``ckpt_path`` values Lightning resolves itself (not a file)
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")
# the comment line of a data config that starts its layout block ("Layout under data.root:")
LAYOUT_HEADER = re.compile(r"Layout under data\.root")
FP16_MIXED = ("16", "16-mixed")
BF16 = ("bf16", "bf16-mixed", "bf16-true")

log = logging.getLogger(__name__)


def check_train_config(cfg: DictConfig) -> None:
    """Raises :class:`ConfigError` for the first value of ``cfg`` (a ``train.py`` config) that cannot work."""
    _check_data_root_is_set(cfg)
    _check_nothing_missing(cfg)
    _check_resolves(cfg)
    data = _section(cfg, "data")
    model = _section(cfg, "model")
    _check_seed(cfg.get("seed"))
    _check_data_sizes(data)
    _check_data_root(data)
    _check_classes(data, model)
    _check_optimizer(model)
    _check_network(model.get("net") or {})
    _check_trainer(_section(cfg, "trainer"))
    _check_epochs(_section(cfg, "trainer"))
    _check_files(cfg, model)


def check_eval_config(cfg: DictConfig) -> None:
    """Raises :class:`ConfigError` for a value of an ``eval.py`` config that cannot work: ``ckpt_path`` unset, or a
    ``trainer`` the machine cannot run. The model and data configs are the checkpoint's, checked by training."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError(
            "ckpt_path is not set: python eval.py ckpt_path=<run dir>/checkpoints/<name>.ckpt (or [a.ckpt,b.ckpt])"
        )
    _check_resolves(cfg, keys=("trainer",))
    _check_trainer(_section(cfg, "trainer"))
    _check_switch("plots", cfg.get("plots", True), "write the evaluation plots next to the predictions")


def check_data_config(cfg: DictConfig) -> None:
    """Raises :class:`ConfigError` when ``cfg.data`` (of a tool reading a data set, e.g. ``scan_videos``) cannot
    work: ``data.root`` or another mandatory key unset, an unresolvable value, a root that is not a data set folder."""
    _check_data_root_is_set(cfg)
    _check_nothing_missing(cfg)
    _check_resolves(cfg, keys=("data",))
    data = _section(cfg, "data")
    _check_data_sizes(data)
    _check_data_root(data)


# ----------------------------------------------------------------------------------------------------------- values
def _section(cfg: DictConfig, key: str) -> dict[str, Any]:
    node = cfg.get(key)
    if node is None:
        return {}
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def _check_data_root_is_set(cfg: DictConfig) -> None:
    data = cfg.get("data")
    if not isinstance(data, DictConfig) or "root" not in _missing_keys(data):
        return
    name = _group_choice("data")
    layout = _data_layout(name) if name else None
    folder = "dataset" if name in (None, "list") else name
    where = f"data={name} needs data.root=/path/to/{folder}" if name else "give data.root=/path/to/dataset"
    raise ConfigError(f"data.root is not set: {where}" + (f" (layout: {layout})" if layout else ""))


def _check_nothing_missing(cfg: DictConfig) -> None:
    missing = [k for k in _missing_keys(cfg) if not k.startswith("hydra.")]
    if missing:
        key = missing[0]
        raise ConfigError(f"{key} is not set (??? in the config): give it on the command line, e.g. {key}=<value>")


def _missing_keys(cfg: DictConfig) -> list[str]:
    """Dotted keys whose value is ``???``, in config order, found without resolving any interpolation."""
    found: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            path = f"{prefix}.{key}" if isinstance(key, str) else f"{prefix}[{key}]"
            if value == "???":
                found.append(path.lstrip("."))
            else:
                walk(value, path)

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return found


def _check_resolves(cfg: DictConfig, keys: Optional[Sequence[str]] = None) -> None:
    """Every interpolation of ``cfg`` (or of its sections ``keys``) resolves; else ``ConfigError`` naming the key and
    OmegaConf's reason. Of several keys that fail (``data.root=${oops}`` also breaks every path built from it), the
    one the command line set is named, else the first in config order."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    failed: list[tuple[str, str]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}.{index}")
        elif isinstance(node, str) and "${" in node:
            try:
                OmegaConf.select(cfg, path, throw_on_missing=True)
            except OmegaConfBaseException as err:
                failed.append((path, str(getattr(err, "msg", None) or err).splitlines()[0]))

    for key in keys or [k for k in raw if k != "hydra"]:
        walk(raw.get(key), str(key))
    if not failed:
        return
    on_command_line = set(overridden_keys(task_overrides()))
    key, reason = next((f for f in failed if f[0] in on_command_line), failed[0])
    raise ConfigError(f"{key} cannot be resolved: {reason}; fix or override {key}=...")


def _positive_int(key: str, value: Any, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}: e.g. {key}={example}")


def _check_switch(key: str, value: Any, meaning: str) -> None:
    """A true/false key (Hydra reads ``true``/``false`` as booleans; ``maybe`` or ``1`` stay other types)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false ({meaning}), got {value!r}: e.g. {key}=false")


def _check_seed(seed: Any) -> None:
    """``seed``: null or an integer numpy and torch accept (``[0, 2**32 - 1]``)."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32 - 1] or null, got {seed!r}: e.g. seed=42")


def _check_data_sizes(data: Mapping[str, Any]) -> None:
    if "num_frames" in data:
        _positive_int("data.num_frames", data["num_frames"], "8 (frames per clip)")
    if "batch_size" in data:
        # per device: the global batch is devices x num_nodes x batch_size x accumulate_grad_batches
        _positive_int("data.batch_size", data["batch_size"], "8 (clips per device)")
    if "crop_size" in data:
        _positive_int("data.crop_size", data["crop_size"], "224")
    for key, example in (("num_clips", "2 (clips per video in testing)"), ("num_crops", "3 (crops per clip)")):
        if key in data:
            _positive_int(f"data.{key}", data[key], example)
    timeout = data.get("decode_timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf
    ):
        raise ConfigError(
            f"data.decode_timeout must be a positive number of seconds or null, got {timeout!r}: e.g. "
            "data.decode_timeout=60 (a video that takes longer to decode is skipped), or null for no limit"
        )
    workers = data.get("num_workers")
    if isinstance(workers, int) and workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {workers}: e.g. data.num_workers=8 (0 decodes inline)")
    crop, resize = data.get("crop_size"), (data.get("eval_transform") or {}).get("resize")
    sides = [resize] if isinstance(resize, int) else list(resize) if isinstance(resize, (list, tuple)) else []
    if isinstance(crop, int) and sides and all(isinstance(x, int) for x in sides) and crop > min(sides):
        raise ConfigError(
            f"data.crop_size={crop} is larger than the frames data.eval_transform.resize={resize} makes: lower "
            f"data.crop_size, or raise data.eval_transform.resize (and data.train_transform.resize) to at least {crop}"
        )


def _check_data_root(data: Mapping[str, Any]) -> None:
    """A real dataset's root is an existing, non-empty folder (a generated one, ``data.prepare``, is made later)."""
    root = data.get("root")
    if root is None or data.get("prepare") is not None:
        return
    path = Path(str(root)).expanduser()
    name = _group_choice("data")
    layout = _data_layout(name) if name else None
    expected = f" (expected layout: {layout})" if layout else ""
    if not path.exists():
        raise ConfigError(f"data.root={root} does not exist: point data.root at the dataset folder{expected}")
    if not path.is_dir():
        raise ConfigError(f"data.root={root} is a file, not a folder: point data.root at the dataset folder{expected}")
    if not any(path.iterdir()):
        raise ConfigError(f"data.root={root} is an empty folder: point data.root at the dataset folder{expected}")


def _check_classes(data: Mapping[str, Any], model: Mapping[str, Any]) -> None:
    classes = data.get("num_classes")
    if classes is None:
        return
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < MIN_CLASSES:
        raise ConfigError(
            f"data.num_classes must be an integer >= {MIN_CLASSES}, got {classes!r}: a classifier needs at least two "
            "classes; set data.num_classes to the number of classes of the dataset"
        )
    for key, value in (("model.num_classes", model.get("num_classes")), ("model.net.num_classes", _net_classes(model))):
        if value is not None and value != classes:
            raise ConfigError(
                f"{key}={value} differs from data.num_classes={classes}: leave {key} at its default "
                "(${data.num_classes}) and set data.num_classes"
            )


def _net_classes(model: Mapping[str, Any]) -> Any:
    net = model.get("net")
    return net.get("num_classes") if isinstance(net, Mapping) else None


def _check_optimizer(model: Mapping[str, Any]) -> None:
    smoothing = model.get("label_smoothing")
    if smoothing is not None and (
        isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1
    ):
        raise ConfigError(
            f"model.label_smoothing must be a number in [0, 1), got {smoothing!r}: e.g. model.label_smoothing=0.1 "
            "(0 for plain cross-entropy)"
        )
    optimizer = model.get("optimizer")
    if not isinstance(optimizer, Mapping) or "lr" not in optimizer:
        return
    lr = optimizer["lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ConfigError(f"model.optimizer.lr must be a positive number, got {lr!r}: e.g. model.optimizer.lr=0.02")


# ---------------------------------------------------------------------------------------------------------- network
def _check_network(net: Mapping[str, Any]) -> None:
    """The ResNet arguments (:class:`rsa_lightning.models.ResNet`) and its space-time mixer, before it is built."""
    block_counts = list(net.get("block_counts") or ())
    widths = list(net.get("widths") or ())
    if block_counts and widths and len(block_counts) != len(widths):
        raise ConfigError(
            f"model.net.block_counts {block_counts} and model.net.widths {widths} need the same length "
            "(one entry per stage)"
        )
    for key, values in (("model.net.block_counts", block_counts), ("model.net.widths", widths)):
        for i, value in enumerate(values):
            _positive_int(f"{key}[{i}]", value, str(value if isinstance(value, int) and value > 0 else 1))
    block = net.get("block")
    expansion = net.get("expansion")
    if isinstance(block, Mapping) and str(block.get("_target_", "")).endswith("BasicBlock") and expansion != 1:
        raise ConfigError(f"model.net.expansion={expansion}: a BasicBlock has expansion 1; set model.net.expansion=1")
    drop_path = net.get("drop_path_rate")
    if isinstance(drop_path, (int, float)) and not 0.0 <= drop_path < 1.0:
        raise ConfigError(f"model.net.drop_path_rate must be in [0, 1), got {drop_path}: e.g. 0.2 (0: off)")
    recompute = net.get("checkpoint_mixers", False)
    _check_switch("model.net.checkpoint_mixers", recompute, "activation checkpointing of the space-time mixers")
    _check_switch("model.net.channels_last", net.get("channels_last", False), "channels-last 3-D memory format")
    mixer = net.get("stmixer")
    if not isinstance(mixer, Mapping):
        if recompute:
            log.warning(
                "model.net.checkpoint_mixers=true does nothing: this model has no space-time mixer (model.net.stmixer)"
            )
        return
    if not mixer.get("_target_"):
        raise ConfigError(
            f"model.net.stmixer has no _target_ (got {dict(mixer)}): this model has no space-time mixer "
            "(model.net.stmixer: null), so drop the model.net.stmixer.* overrides, or pick a model with one "
            "(e.g. model=rsa_tiny)"
        )
    _check_mixer_window(mixer)
    is_rsa = "RelationalSelfAttention" in str(mixer["_target_"])
    implementation = mixer.get("implementation", "fast")
    if is_rsa and implementation not in ("fast", "reference"):
        raise ConfigError(
            f"model.net.stmixer.implementation must be fast or reference (the same function; README "
            f'"Performance"), got {implementation!r}: e.g. model.net.stmixer.implementation=fast'
        )
    if "recompute_windows" in mixer:
        if not is_rsa:
            raise ConfigError(
                f"model.net.stmixer.recompute_windows applies to the RSA layer only; this model's mixer is "
                f"{mixer['_target_']}: drop the override"
            )
        _check_switch(
            "model.net.stmixer.recompute_windows",
            mixer["recompute_windows"],
            "recomputation of the RSA window sums in backward (fast path)",
        )
    stages = _mixer_stages(net.get("stmixer_positions") or [], block_counts)
    _check_mixer_heads(mixer, stages, widths)


def _check_mixer_window(mixer: Mapping[str, Any]) -> None:
    if "kernel_size" not in mixer:
        return
    size = mixer["kernel_size"]
    sizes = list(size) if isinstance(size, (list, tuple)) else None
    if (
        sizes is None
        or len(sizes) != 3
        or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 for k in sizes)
    ):
        raise ConfigError(
            f"model.net.stmixer.kernel_size must be three odd positive sizes [kt, kh, kw] (a window centred on each "
            f"position), got {size!r}: e.g. model.net.stmixer.kernel_size=[5,7,7]"
        )


def _mixer_stages(positions: Sequence[Any], block_counts: Sequence[int]) -> list[int]:
    """The stages that hold the mixer; ConfigError for positions that are not one list of block indices per stage."""
    if block_counts and len(positions) != len(block_counts):
        raise ConfigError(
            f"model.net.stmixer_positions needs one list per stage ({len(block_counts)} stages: block_counts "
            f"{list(block_counts)}), got {list(positions)}: e.g. {[[0]] + [[] for _ in block_counts[1:]]}"
        )
    stages = []
    for stage, pos in enumerate(positions):
        indices = list(pos) if isinstance(pos, (list, tuple)) else [pos]
        count = block_counts[stage] if block_counts else None
        bad = [p for p in indices if not isinstance(p, int) or p < 0 or (count is not None and p >= count)]
        if bad:
            raise ConfigError(
                f"model.net.stmixer_positions[{stage}] has {bad}, but stage {stage} has {count} block(s) "
                f"(model.net.block_counts[{stage}]): positions are 0-based block indices, 0..{(count or 1) - 1}"
            )
        if indices:
            stages.append(stage)
    return stages


def _check_mixer_heads(mixer: Mapping[str, Any], stages: Sequence[int], widths: Sequence[int]) -> None:
    heads = mixer.get("num_heads")
    if heads is None:
        return
    _positive_int("model.net.stmixer.num_heads", heads, "8")
    used = [widths[s] for s in stages if s < len(widths)]
    for stage in stages:
        if stage < len(widths) and widths[stage] % heads:
            common = math.gcd(*used)
            divisors = [d for d in range(1, common + 1) if common % d == 0]
            closest = min(divisors, key=lambda d: (abs(d - heads), -d))
            raise ConfigError(
                f"model.net.stmixer.num_heads={heads} does not divide the {widths[stage]} channels of the mixer at "
                f"stage {stage} (model.net.widths[{stage}]): the heads split the channels equally; choose a divisor "
                f"of every width holding the mixer ({used}), e.g. model.net.stmixer.num_heads={closest}"
            )


# ---------------------------------------------------------------------------------------------------------- trainer
def _check_trainer(trainer: Mapping[str, Any]) -> None:
    """Devices and precision the machine can run (CUDA and CPU; other accelerators are left to Lightning)."""
    if not trainer:
        return
    kind = _accelerator_kind(trainer.get("accelerator", "auto"))
    devices = trainer.get("devices", "auto")
    if kind == "missing-gpu":
        raise ConfigError(
            f"trainer.accelerator={trainer.get('accelerator')} but no GPU is visible: train on the CPU with "
            "trainer=cpu (or trainer.accelerator=cpu), or run on a machine with a GPU"
        )
    if kind == "cuda":
        _check_gpu_devices(devices)
    if kind == "cpu" and devices != "auto":
        count = _as_int(devices)
        if count is None or count < 1:
            raise ConfigError(
                f"trainer.devices={devices!r} on the CPU must be a positive number of processes, e.g. "
                "trainer.devices=1 (or trainer=ddp_cpu for 2)"
            )
    for key in ("accumulate_grad_batches", "num_nodes"):
        if key in trainer:
            _positive_int(f"trainer.{key}", trainer[key], "1")
    _check_precision(trainer.get("precision"), kind)


def _check_epochs(trainer: Mapping[str, Any]) -> None:
    """``trainer.max_epochs``: a positive integer. The learning-rate schedule is laid over the whole run, so it needs
    its length: null (Lightning's 1000 epochs) and -1 (no limit) are refused too; 0 would train nothing and still
    report the untrained model."""
    if "max_epochs" not in trainer:
        return
    epochs = trainer.get("max_epochs")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(
            f"trainer.max_epochs must be a positive integer (the schedule spans the whole run), got {epochs!r}: "
            "e.g. trainer.max_epochs=18"
        )


def _accelerator_kind(accelerator: Any) -> Optional[str]:
    """``cpu``, ``cuda``, ``mps``, ``missing-gpu`` (a GPU asked for, none visible) or None (not checked here)."""
    import torch

    name = str(accelerator).lower() if isinstance(accelerator, str) else None
    cuda = torch.cuda.is_available()
    mps = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if name == "cpu":
        return "cpu"
    if name in ("gpu", "cuda"):
        if cuda:
            return "cuda"
        if name == "gpu" and mps:
            return "mps"
        return "missing-gpu"
    if name == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    return None


def _as_int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def _check_gpu_devices(devices: Any) -> None:
    import torch

    visible = torch.cuda.device_count()
    if devices == "auto":
        return
    count = _as_int(devices)
    if count is not None:
        if count == 0 or count < -1:
            raise ConfigError(f"trainer.devices={devices}: give a number of GPUs (1..{visible}) or -1 for all of them")
        if count > visible:
            raise ConfigError(
                f"trainer.devices={devices} but this machine has {visible} visible GPU(s): trainer.devices={visible} "
                "or fewer (the global batch is devices x data.batch_size; raise trainer.accumulate_grad_batches to "
                "keep it)"
            )
        return
    indices = devices if isinstance(devices, (list, tuple)) else str(devices).split(",")
    ids = [_as_int(i) for i in indices if str(i).strip()]
    bad = [i for i in ids if i is None or not 0 <= i < visible]
    if bad:
        raise ConfigError(
            f"trainer.devices={devices} names GPU(s) {bad}, but the visible GPUs are 0..{visible - 1}: "
            "choose among them (or set CUDA_VISIBLE_DEVICES)"
        )


def _precision_values() -> Optional[set[str]]:
    """Lightning's accepted ``precision`` values as strings, or None when they cannot be read."""
    try:
        from lightning_fabric.connector import _PRECISION_INPUT
    except ImportError:
        return None
    values: set[str] = set()
    stack = [_PRECISION_INPUT]
    while stack:
        item = stack.pop()
        args = typing.get_args(item)
        if args:
            stack.extend(args)
        else:
            values.add(str(item))
    return values or None


def _check_precision(precision: Any, kind: Optional[str]) -> None:
    if precision is None:
        return
    value = str(precision)
    allowed = _precision_values()
    if allowed is not None and value not in allowed:
        shown = ", ".join(sorted(v for v in allowed if "-" in v))
        raise ConfigError(f"trainer.precision={value} is not a precision Lightning knows: one of {shown} (or 32)")
    if kind == "cpu" and value in FP16_MIXED:
        raise ConfigError(
            f"trainer.precision={value}: fp16 mixed precision needs a CUDA GPU (on the CPU Lightning would silently "
            "train in bf16 instead); use trainer.precision=bf16-mixed or 32 on the CPU"
        )
    if kind == "cuda" and value in BF16:
        import torch

        if not torch.cuda.is_bf16_supported():
            raise ConfigError(
                f"trainer.precision={value}: this GPU ({torch.cuda.get_device_name()}) has no bfloat16; use "
                "trainer.precision=16-mixed (fp16 with loss scaling) or 32"
            )


# ------------------------------------------------------------------------------------------------------------ files
def _check_files(cfg: DictConfig, model: Mapping[str, Any]) -> None:
    net = model.get("net")
    pretrained = net.get("pretrained") if isinstance(net, Mapping) else None
    if pretrained is not None and not Path(str(pretrained)).expanduser().is_file():
        raise ConfigError(
            f"model.net.pretrained={pretrained} does not exist: save torchvision's ImageNet ResNet weights there "
            "(e.g. resnet50-0676ba61.pth), give their path with model.net.pretrained=/path/to/weights.pth, or "
            "model.net.pretrained=null to train from scratch"
        )
    ckpt = cfg.get("ckpt_path")
    if ckpt is None or str(ckpt) in LIGHTNING_CKPT_NAMES:
        return
    if not Path(str(ckpt)).expanduser().is_file():
        raise ConfigError(
            f"ckpt_path={ckpt} does not exist: give a .ckpt file of a train.py run (or resume=<run dir> to continue "
            "a run in its own folder)"
        )


# ---------------------------------------------------------------------------------------------------- data configs
def _group_choice(group: str) -> Optional[str]:
    """The option of config group ``group`` this run was composed with (``data=ssv2`` -> ``ssv2``), if known."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get(group)
    return str(choice) if choice else None


def _config_dirs() -> list[Path]:
    from hydra.core.hydra_config import HydraConfig

    dirs = []
    if HydraConfig.initialized():
        for source in HydraConfig.get().runtime.config_sources:
            if source.get("schema") == "file" and source.get("path"):
                dirs.append(Path(re.sub(r"^file://", "", str(source.path))))
    project = os.environ.get("PROJECT_ROOT")
    if project:
        dirs.append(Path(project) / "conf")
    return dirs


def _data_layout(name: str) -> Optional[str]:
    """The layout block of ``conf/data/<name>.yaml``'s header comment, on one line (asides after 3 spaces dropped)."""
    for conf in _config_dirs():
        path = conf / "data" / f"{name}.yaml"
        if path.is_file():
            return layout_from_comment(path.read_text())
    return None


def layout_from_comment(text: str) -> Optional[str]:
    """``"videos/<id>.webm; annotations/..."`` from a data config's comment::

        # Layout under data.root:
        #   videos/<id>.webm            (an aside, dropped)
        #                               (a continuation of the aside, dropped)
        #   annotations/...json

    None when the text has no such block."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("#") and LAYOUT_HEADER.search(line)), None)
    if start is None:
        return None
    entries = []
    for line in lines[start + 1 :]:
        match = re.match(r"#( +)(\S.*)$", line)
        if match is None or len(match.group(1)) < 3:
            break
        if len(match.group(1)) == 3:
            entries.append(re.split(r"\s{3,}", match.group(2).strip())[0])
    return "; ".join(entries) or None


# ------------------------------------------------------------------------------------------------------- run folder
class RunDirCheck(Callback):
    """Hydra callback (``conf/hydra/default.yaml``): before Hydra creates the run folder (``hydra.run.dir``, or a
    multirun's ``hydra.sweep.dir``), checks that it can be created; if not, prints one message naming the folder and
    the fix and exits with code 2 (instead of Hydra's traceback)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")
        if "resume" in config and config.get("resume") in (None, ""):  # a new training run
            try:
                folder = Path(str(OmegaConf.select(config, "hydra.run.dir")))
            except OmegaConfBaseException:  # an interpolation only Hydra can resolve: Hydra reports it its way
                return
            try:
                claim_new_run_dir(folder)
            except ConfigError as err:
                sys.exit(report(err) or 2)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")
        if "resume" in config:  # a training sweep: its jobs must not land in an earlier sweep's job folders
            sweep_dir = Path(os.path.abspath(str(OmegaConf.select(config, "hydra.sweep.dir"))))
            earlier = sorted(p.name for p in sweep_dir.glob("*") if p.is_dir() and _holds_a_run(p))
            if earlier:
                sys.exit(
                    report(
                        ConfigError(
                            f"hydra.sweep.dir={sweep_dir} holds an earlier sweep's runs (job folders "
                            f"{', '.join(earlier[:5])}{', ...' if len(earlier) > 5 else ''}): its jobs would replace "
                            "their files. Start the sweep in another folder, or continue a job with "
                            f"python train.py resume={sweep_dir / earlier[0]}"
                        )
                    )
                    or 2
                )

    @staticmethod
    def _check(config: DictConfig, key: str) -> None:
        try:
            folder = str(OmegaConf.select(config, key))
            log_dir = OmegaConf.select(config, "paths.log_dir", default=None)
        except InterpolationResolutionError as err:  # e.g. paths.log_dir=${oc.env:SCRATCH}/logs, SCRATCH unset
            if "HydraConfig" in str(err):  # an interpolation only Hydra can resolve: Hydra reports it its way
                return
            sys.exit(report(_unresolved_folder(config, key, err)) or 2)
        except Exception:  # noqa: BLE001  (anything else: Hydra reports it its way)
            return
        problem = unwritable_reason(Path(folder))
        if problem is None:
            return
        overrides = [str(o) for o in OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False)]
        named = any(o.startswith(f"{key}=") for o in overrides)
        fix = f"{key}=/a/writable/folder" if named else f"paths.log_dir=/a/writable/folder (now {log_dir})"
        code = report(ConfigError(f"cannot create the output folder {folder}: {problem}; choose another: {fix}"))
        sys.exit(code or 2)


def _unresolved_folder(config: DictConfig, key: str, err: Exception) -> ConfigError:
    """The message for a run folder whose interpolation does not resolve: the key the command line set that fails
    (``paths.log_dir``, ``task_name``, the folder's own key), else the folder's key."""
    overrides = [str(o) for o in OmegaConf.to_container(config.hydra.overrides.task, resolve=False)]
    overrides += [str(o) for o in OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False)]
    named = set(overridden_keys(overrides))
    failing = key
    for candidate in ("paths.log_dir", "task_name", "paths.root_dir", key):
        if candidate not in named:
            continue
        try:
            OmegaConf.select(config, candidate)
        except InterpolationResolutionError:
            failing = candidate
            break
    reason = str(getattr(err, "msg", None) or err).splitlines()[0]
    return ConfigError(f"{failing} cannot be resolved: {reason}; fix or override {failing}=...")


# Created, exclusively, in a new training run's folder by the process that starts it, before Hydra writes anything
# there; so of two runs started at once in one folder (the same RSA_RUN_NAME) the second is refused untouched.
RUN_CLAIM_FILE = ".rsa_run"
_claimed: set[Path] = set()


def _holds_a_run(folder: Path) -> bool:
    """Whether ``folder`` is (or was started as) a training run's folder: its config, checkpoints or claim."""
    return any((folder / name).exists() for name in (CONFIG_FILE, "checkpoints", RUN_CLAIM_FILE))


def check_new_run_dir(output_dir: Path) -> None:
    """A new run never writes into the folder of an earlier run (its checkpoints, config, log and ``result.json``
    would be replaced): ``ConfigError`` pointing to ``resume=`` when ``output_dir`` holds a run's config, checkpoints
    or the claim of another process (``hydra.run.dir=`` or ``RSA_RUN_NAME`` naming an existing run)."""
    names = [CONFIG_FILE, "checkpoints"]
    if Path(os.path.abspath(output_dir)) not in _claimed:  # abspath, as Hydra's runtime.output_dir
        names.append(RUN_CLAIM_FILE)
    found = [name for name in names if (output_dir / name).exists()]
    if not found:
        return
    raise ConfigError(
        f"{output_dir} is the folder of an earlier run ({', '.join(found)}): a new run would replace its files. "
        f"Continue it with resume={output_dir}, or start a new run in another folder"
    )


def claim_new_run_dir(folder: Path, environ: Optional[Mapping[str, str]] = None) -> None:
    """Before Hydra creates a new training run's folder and writes into it (``RunDirCheck.on_run_start``): refuses
    an earlier run's folder (:func:`check_new_run_dir`) and claims the folder with :data:`RUN_CLAIM_FILE`, created
    exclusively. Nothing for the other processes of a distributed run (they share rank 0's folder) and for a SLURM
    job that SLURM requeued (it continues its own folder, :func:`rsa_lightning.resume.requeued_run_dir`)."""
    environ = os.environ if environ is None else environ
    if not is_launched_as_rank_zero(environ) or int(environ.get("SLURM_RESTART_COUNT") or 0) >= 1:
        return
    folder = Path(os.path.abspath(folder))  # as Hydra makes hydra.runtime.output_dir (``..`` resolved)
    check_new_run_dir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        (folder / RUN_CLAIM_FILE).open("x").close()
    except FileExistsError:  # another process claimed it since the check
        check_new_run_dir(folder)
    _claimed.add(folder)


class RunInUse(ConfigError):
    """Another process is training the run folder right now (:func:`run_lock`): nothing of the folder is this
    process's to write, ``result.json`` included."""


@contextlib.contextmanager
def run_lock(output_dir: Path, environ: Optional[Mapping[str, str]] = None) -> Iterator[None]:
    """Held by the first process of a training run while it trains: an exclusive ``flock`` on the run folder's
    :data:`RUN_CLAIM_FILE` (released by the kernel however the process ends, ``kill -9`` included). A second process
    training the same folder at the same time (``resume=`` of a run that is still running, a resubmitted job) gets
    ``ConfigError`` instead of writing the same checkpoints and logs. Nothing where ``fcntl`` does not exist."""
    environ = os.environ if environ is None else environ
    try:
        import fcntl
    except ImportError:  # Windows
        fcntl = None  # type: ignore[assignment]
    if fcntl is None or not is_launched_as_rank_zero(environ):
        yield
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(output_dir / RUN_CLAIM_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInUse(
                f"{output_dir} is being trained right now by another process (it holds {RUN_CLAIM_FILE}): two "
                f"processes would write the same checkpoints and logs. Wait for it to end (or stop it: it saves and "
                f"stops on SIGTERM), then continue with resume={output_dir}"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def unwritable_reason(folder: Path) -> Optional[str]:
    """Why ``folder`` cannot be created (or written into), or None when it can. Creates nothing that stays: the
    nearest existing ancestor gets a temporary folder, removed at once."""
    folder = folder.expanduser().absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        Path(tempfile.mkdtemp(prefix=".rsa_write_check_", dir=existing)).rmdir()
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"{existing} is not writable ({err.strerror})"
        return f"no folder can be created in {existing} ({err.strerror})"  # e.g. /proc, /sys
    return None
