"""Trained runs from their checkpoints: read a ``.ckpt`` written by ``train.py`` and rebuild its model.

A checkpoint written by ``train.py`` holds, next to Lightning's ``state_dict``, the run's resolved config
(``"config"``, stored by :class:`rsa_lightning.callbacks.ConfigInCheckpoint`) and the class names
(``"class_names"``), so the model and its input pipeline can be rebuilt from the file alone (no Hydra run, no
dataset). ImageNet initialisation (``model.net.pretrained``) is switched off when rebuilding: the weights come from
the checkpoint, and the ImageNet file need not exist where the model is evaluated.

Files are unpickled with ``torch.load(weights_only=True)``: tensors and plain Python values only (what ``train.py``
writes: the config is stored as plain dicts and lists, numpy's RNG state as numbers), so opening a checkpoint never
runs code from it. Every file that is not such a checkpoint is refused with a
:class:`~rsa_lightning.errors.CheckpointError` saying what it is and what to do: truncated or not a checkpoint at all,
a released official RSANet checkpoint (convert it with ``rsa_lightning.tools.convert_official``), a file that needs
code to unpickle (convert it once with :func:`resave_trusted` if its source is trusted), or weights of another model
than the one built.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from rsa_lightning.errors import CheckpointError, MissingFileError
from rsa_lightning.utils.config import overridden_keys

OFFICIAL_KEY_HINTS = ("module.base_model.", "base_model.")
OFFICIAL_CLASSIFIER_KEYS = ("module.new_fc.weight", "new_fc.weight", "module.base_model.fc1.weight")
# the keys eval.py, predict and load_model read; what resave_trusted keeps
EVAL_KEYS = ("state_dict", "config", "class_names")
CHECKPOINT_SUFFIXES = (".ckpt", ".pth", ".pt", ".tar")
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
MAX_LISTED = 5


def _listed(items: list[str], limit: int = MAX_LISTED) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def other_checkpoints(folder: Path, *, exclude: Optional[Path] = None) -> list[str]:
    """Checkpoint files in ``folder`` and its ``checkpoints/`` subfolder (a run folder), ``last.ckpt`` first."""
    found = []
    for where in (folder, folder / "checkpoints"):
        if where.is_dir():
            found += [p for p in where.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES and p != exclude]
    found.sort(key=lambda p: (p.name != "last.ckpt", str(p)))
    return [str(p) for p in found]


def needs_code(err: Exception) -> bool:
    """A weights-only unpickling error about a global (a class or function the file pickles), not a damaged file:
    "Unsupported global: GLOBAL x.Y", or "unsupported GLOBAL posix.system whose module posix is blocked"."""
    return "unsupported global" in str(err).lower()


def _unpickling_reason(err: Exception) -> str:
    """The one informative sentence of torch's weights-only error (e.g. "Unsupported global: GLOBAL x.Y ...")."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    globals_ = [line for line in lines if "unsupported global" in line.lower()]
    lines = globals_ or lines
    return lines[0].split(" was not an allowed global")[0].strip() if lines else type(err).__name__


def read_checkpoint(path: Path, *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU (memory-mapped with ``mmap``: tensors are read when used);
    every failure as a :class:`~rsa_lightning.errors.CheckpointError` naming ``path`` and the fix."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except PermissionError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror}; check the file's permissions") from err
    except pickle.UnpicklingError as err:
        if not needs_code(err):
            raise CheckpointError(
                f"{path} could not be read: truncated or not a checkpoint ({_unpickling_reason(err)}); "
                f"{_fix_unreadable(path)}"
            ) from err
        raise CheckpointError(
            f"{path} needs code to be unpickled ({_unpickling_reason(err)}), not only tensors and plain values: "
            "refused, as torch.load(weights_only=True) refuses to run code stored in a file (a checkpoint from an "
            'untrusted source could run anything). If you trust its source, convert it once: python -c "from '
            "rsa_lightning.evaluation.checkpoints import resave_trusted; "
            f"resave_trusted('{path}', '{path.with_suffix('')}_plain.ckpt')\""
        ) from err
    except Exception as err:  # torch raises OSError, EOFError, RuntimeError, KeyError, ... for a damaged file
        text = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else ""  # torch's first sentence
        reason = f"{type(err).__name__}: {text}" if text else type(err).__name__
        raise CheckpointError(
            f"{path} could not be read: truncated or not a checkpoint ({reason}); {_fix_unreadable(path)}"
        ) from err


def _fix_unreadable(path: Path) -> str:
    """The fix for an unreadable checkpoint: the other checkpoints of its run when it lies in a run folder (one that
    holds the run's config), never other files that merely sit beside it."""
    from rsa_lightning.resume import CONFIG_FILE

    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    others = other_checkpoints(run_dir, exclude=path) if (run_dir / CONFIG_FILE).is_file() else []
    if others:
        return f"re-copy it, or use another checkpoint of the run: {_listed(others, 3)}"
    return "re-copy it, or use <run dir>/checkpoints/last.ckpt of the run that wrote it"


def official_convert_command(path: Path, state_dict: Mapping[str, Any]) -> str:
    """The ``convert_official`` command for an official RSANet checkpoint, ``--data`` chosen by its class count."""
    num_classes = next(
        (int(state_dict[k].shape[0]) for k in OFFICIAL_CLASSIFIER_KEYS if isinstance(state_dict.get(k), torch.Tensor)),
        None,
    )
    datasets = []  # convert_official's default (ssv2) first
    for file in sorted(CONFIG_DIR.glob("data/*.yaml"), key=lambda f: (f.stem != "ssv2", f.stem)):
        value = OmegaConf.load(file).get("num_classes")
        if isinstance(value, int) and value == num_classes:
            datasets.append(file.stem)
    data = datasets[0] if datasets else "<conf/data name>"
    others = f" (or {' / '.join(datasets[1:])})" if len(datasets) > 1 else ""
    name = path.name
    for suffix in (".tar", ".pth", ".pt", ".ckpt"):
        name = name.removesuffix(suffix)
    dst = path.with_name(f"{name}.ckpt" if path.name != f"{name}.ckpt" else f"{name}_converted.ckpt")
    return (
        f"python -m rsa_lightning.tools.convert_official {path} {dst} --data {data}{others} "
        "--num-frames <its clip length, 8 or 16> [--class-names <classes.txt>]"
    )


def load_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    """Load a checkpoint written by ``train.py`` (it must hold ``state_dict`` and the run's ``config``) on the CPU,
    with ``torch.load(weights_only=True)``.

    Raises ``MissingFileError`` (no such file) or ``CheckpointError`` naming the file: a folder, truncated or not a
    checkpoint, pickled code, no config (e.g. a released official RSANet checkpoint, which must be converted first:
    the message holds the command).
    """
    path = Path(path)
    if path.is_dir():
        found = other_checkpoints(path)
        listed = f": {_listed(found, 3)}" if found else ""
        raise CheckpointError(f"ckpt_path={path} is a folder; pass one checkpoint file{listed}")
    if not path.is_file():
        raise MissingFileError(f"ckpt_path={path} does not exist: pass a .ckpt file from <run dir>/checkpoints/")
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(checkpoint).__name__}, not a checkpoint (a dict with a state_dict)"
        )
    tensors = checkpoint.get("state_dict") if isinstance(checkpoint.get("state_dict"), Mapping) else checkpoint
    if any(str(k).startswith(OFFICIAL_KEY_HINTS) for k in list(tensors)[:5]) and "config" not in checkpoint:
        raise CheckpointError(
            f"{path} is a released official RSANet checkpoint (no config, official key layout): eval.py, predict and "
            f"load_model need it converted once: {official_convert_command(path, tensors)}; then pass the .ckpt"
        )
    missing = [k for k in ("state_dict", "config") if k not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{path} has no {' or '.join(missing)}: it was not written by rsa_lightning's train.py, so the model "
            "cannot be rebuilt from it; pass a .ckpt from <run dir>/checkpoints/"
        )
    return dict(checkpoint)


def resave_trusted(src: Union[str, Path], dst: Union[str, Path]) -> Path:
    """Convert a checkpoint that needs code to unpickle into one ``load_checkpoint`` reads: ONLY for a file from a
    trusted source (it is unpickled with ``weights_only=False``, which can run any code stored in it).

    ``dst`` keeps the keys eval needs (:data:`EVAL_KEYS`): the tensors of ``state_dict``, ``config`` as plain dicts
    and lists (OmegaConf containers converted) and ``class_names`` as strings; it is checked to load with
    ``weights_only=True`` before it is returned. Training state (optimiser, loops) is not kept: resume from ``src``.
    """
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise CheckpointError(f"resave_trusted: {dst} would overwrite {src}; choose another file")
    checkpoint = torch.load(src, map_location="cpu", weights_only=False)  # the caller trusts src
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(f"{src} has no state_dict: not a checkpoint")
    plain: dict[str, Any] = {
        "state_dict": {str(k): v for k, v in checkpoint["state_dict"].items() if isinstance(v, torch.Tensor)}
    }
    if "config" in checkpoint:
        plain["config"] = OmegaConf.to_container(OmegaConf.create(checkpoint["config"]), resolve=True)
    if checkpoint.get("class_names") is not None:
        plain["class_names"] = [str(name) for name in checkpoint["class_names"]]
    torch.save(plain, dst)
    load_checkpoint(dst)
    return dst


def upgrade_run_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run config saved by an earlier rsa_lightning, in today's keys (same meaning; a copy, ``config`` unchanged).

    - ``model``: ``warmup_epochs`` / ``warmup_start_factor`` / ``min_lr_factor`` / ``schedule_interval`` become the
      ``scheduler`` partial (:func:`rsa_lightning.modules.lr_schedule.warmup_cosine`) and ``scheduler_interval``;
      ``optimizer.weight_decay`` becomes ``weight_decay``; ``headline_metric`` is dropped (now ``data.monitor``);
      ``net._target_: rsa_lightning.models.ResNet`` with a ``pretrained`` key becomes ``create_resnet``.
    - ``data``: ``headline_metric: x`` becomes ``monitor: val/x``; the sampler's ``num_segments`` / ``num_frames``
      (now passed by the DataModule from ``data.num_frames``) are dropped.
    """
    config = OmegaConf.to_container(OmegaConf.create(config))
    model, data = config.get("model") or {}, config.get("data") or {}
    if "warmup_epochs" in model or "schedule_interval" in model:
        model["scheduler"] = {
            "_target_": "rsa_lightning.modules.lr_schedule.warmup_cosine",
            "_partial_": True,
            "warmup_epochs": model.pop("warmup_epochs", 5.0),
            "start_factor": model.pop("warmup_start_factor", 0.001),
            "end_factor": model.pop("min_lr_factor", 0.001),
        }
        model["scheduler_interval"] = model.pop("schedule_interval", "epoch")
    optimizer = model.get("optimizer")
    if isinstance(optimizer, dict) and "weight_decay" in optimizer:
        model["weight_decay"] = optimizer.pop("weight_decay")
    model.pop("headline_metric", None)
    net = model.get("net")
    if isinstance(net, dict) and net.get("_target_") == "rsa_lightning.models.ResNet" and "pretrained" in net:
        net["_target_"] = "rsa_lightning.models.create_resnet"
    if "headline_metric" in data:
        data["monitor"] = f"val/{data.pop('headline_metric')}"
    sampler = data.get("sampler")
    if isinstance(sampler, dict):
        for key in ("num_segments", "num_frames"):
            sampler.pop(key, None)
    return config


def run_config(checkpoint: dict[str, Any]) -> DictConfig:
    """The training run's resolved config stored in ``checkpoint`` (upgraded: :func:`upgrade_run_config`)."""
    return OmegaConf.create(upgrade_run_config(checkpoint["config"]))


def describe_model(model_cfg: DictConfig | Mapping[str, Any]) -> str:
    """A model config in one line: network factory, depth and widths, space-time mixer and where, classes."""
    net = model_cfg.get("net") or {}
    parts = [str(net.get("_target_", model_cfg.get("_target_", "?"))).rsplit(".", 1)[-1]]
    for key in ("block_counts", "widths"):
        if net.get(key) is not None:
            parts.append(f"{key} {OmegaConf.to_container(OmegaConf.create({'v': net[key]}))['v']}")
    mixer = net.get("stmixer")
    if mixer:
        positions = OmegaConf.to_container(OmegaConf.create({"v": net.get("stmixer_positions")}))["v"]
        parts.append(f"{str(mixer.get('_target_', '?')).rsplit('.', 1)[-1]} at {positions}")
    else:
        parts.append("no space-time mixer")
    if model_cfg.get("num_classes") is not None:
        parts.append(f"{model_cfg.get('num_classes')} classes")
    return ", ".join(parts)


def weights_difference(built: Mapping[str, torch.Tensor], stored: Mapping[str, Any]) -> str:
    """How a checkpoint's tensors differ from a model's: keys missing, unexpected and of another shape (a few each)."""
    missing = [k for k in built if k not in stored]
    unexpected = [k for k in stored if k not in built]
    shapes = [
        f"{k} {tuple(stored[k].shape)} vs {tuple(v.shape)}"
        for k, v in built.items()
        if k in stored and isinstance(stored[k], torch.Tensor) and stored[k].shape != v.shape
    ]
    counts = [
        (len(items), what, items)
        for what, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes))
        if items
    ]
    if not counts:
        return "the tensors differ"
    return f"tensors {', '.join(f'{n} {what}' for n, what, _ in counts)}, e.g. {counts[0][2][0]}"


def model_overrides(overrides: Sequence[str]) -> tuple[str, ...]:
    """The command-line overrides that change the model config (``model=tsn_tiny``, ``model.net.widths=...``)."""
    return tuple(o for o in overrides if any(k.split(".")[0] == "model" for k in overridden_keys([o])))


def model_from_config(
    model_cfg: DictConfig,
    checkpoint: dict[str, Any],
    *,
    strict: bool = True,
    path: Union[str, Path] = "the checkpoint",
    changed_by: tuple[str, ...] = (),
) -> Any:
    """Instantiate ``model_cfg`` (a run's ``model`` section, e.g. a ``VideoClassifier``), load the checkpoint's
    weights and class names into it and return it in eval mode. ImageNet initialisation is skipped.

    Raises ``CheckpointError`` when the weights do not fit the model: naming both models (the checkpoint's own
    config and ``model_cfg``) and ``changed_by`` (the command-line overrides that changed the model config, e.g.
    ``("model=tsn_tiny",)``), with the tensors that differ.
    """
    model_cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))  # against its root: ${data.*}
    if OmegaConf.select(model_cfg, "net.pretrained") is not None:
        model_cfg.net.pretrained = None  # the checkpoint holds the weights
    model = hydra.utils.instantiate(model_cfg)
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=strict)
    except RuntimeError as err:
        difference = weights_difference(model.state_dict(), checkpoint["state_dict"])
        built = describe_model(model_cfg)
        if changed_by and "config" in checkpoint:
            own = describe_model(run_config(checkpoint).model)
            given = " ".join(changed_by)
            raise CheckpointError(
                f"{path} holds another model than {given} builds: the checkpoint's is {own}; {given} builds {built} "
                f"({difference}). eval.py builds the model from the checkpoint's own config: leave out {given}"
            ) from err
        raise CheckpointError(
            f"{path}: its weights do not fit the model of its config ({built}): {difference}; was the checkpoint's "
            "config edited, or its state_dict taken from another run?"
        ) from err
    if hasattr(model, "on_load_checkpoint"):
        model.on_load_checkpoint(checkpoint)
    return model.eval()


def model_from_checkpoint(
    path: Union[str, Path], *, strict: bool = True, model_cfg: Optional[DictConfig] = None
) -> Any:
    """The LightningModule of a ``train.py`` checkpoint, in eval mode (``model_cfg``: another model config)."""
    checkpoint = load_checkpoint(path)
    return model_from_config(model_cfg or run_config(checkpoint).model, checkpoint, strict=strict, path=path)
