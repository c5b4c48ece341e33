"""Convert a released official RSANet checkpoint into a checkpoint that ``eval.py`` (and fine-tuning) accepts.

    python -m rsa_lightning.tools.convert_official SRC DST [--data NAME] [--class-names FILE] [--num-frames T]
        [--num-heads N] [key=value ...]

SRC is an official ``.pth.tar`` (``{'epoch', 'arch', 'state_dict', 'best_prec1'}``, or a bare state dict). DST is
written as a ``.ckpt`` holding
    state_dict   the VideoClassifier's tensors (``net.`` + our ResNet keys), read from SRC key by key
    config       the resolved ``model`` and ``data`` sections: ``conf/model/rsa_r50.yaml`` with the architecture
                 read from SRC's tensors (classes, blocks, widths, RSA positions, heads, window, types), and the
                 composed ``conf/data/<NAME>.yaml`` (``--num-frames`` and the trailing Hydra overrides applied)
    class_names  from ``--class-names`` (one per line, line i = class id i), when given
    official     where it came from: SRC and its epoch / arch / best_prec1
and the same config as YAML next to it (DST with a ``.yaml`` suffix). Then
``python eval.py ckpt_path=DST data.root=/path/to/videos`` evaluates it. The model config is instantiated and loaded
strictly before anything is written, so the ``_target_`` config provably builds the network of SRC. The trailing
overrides are composed with it, e.g. ``data.root=/videos`` (written into the config, so eval.py needs no override)
or ``model=tsn_r50`` for a checkpoint without RSA layers; the architecture read from SRC always wins.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from rsa_lightning.errors import CheckpointError, ConfigError, MissingFileError, UserError, run_cli
from rsa_lightning.models.official import describe_arch, official_to_resnet_state_dict, read_official_checkpoint
from rsa_lightning.tools.extract_frames import ToolArgumentParser

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"
MODEL_CONFIG = "rsa_r50"
DEFAULT_DATA = "ssv2"
PROG = "python -m rsa_lightning.tools.convert_official"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6 is a zip archive
LIGHTNING_KEY = b"pytorch-lightning_version"  # a key of every Lightning checkpoint, stored in its data.pkl


def read_class_names(path: str | Path, num_classes: int) -> list[str]:
    """One class name per line (blank lines ignored); there must be exactly ``num_classes``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"--class-names {path} is not a file: give a text file with one class name a line")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) != num_classes:
        raise ValueError(f"--class-names {path} lists {len(names)} classes, but the checkpoint has {num_classes}")
    return names


def compose_config(
    arch: dict[str, Any],
    *,
    data: str = DEFAULT_DATA,
    num_frames: Optional[int] = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """The resolved ``{"model", "data"}`` config of a converted checkpoint (see the module docstring).

    Raises ValueError when ``conf/data/<data>.yaml`` does not exist, or when its ``num_classes`` is not the
    checkpoint's.
    """
    if not (CONFIG_DIR / "data" / f"{data}.yaml").is_file():
        choices = sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml"))
        raise ValueError(
            f"no data config {CONFIG_DIR / 'data' / data}.yaml: pass --data NAME, one of {choices} "
            "(the data section written into the checkpoint)"
        )
    model = [] if any(o.startswith("model=") for o in overrides) else [f"model={MODEL_CONFIG}"]
    all_overrides = [*model, f"data={data}", *overrides]
    if num_frames is not None:
        all_overrides.append(f"data.num_frames={num_frames}")
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=all_overrides)
    except HydraException as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        hint = f" ({lines[1]})" if len(lines) > 1 and lines[1].startswith("To append") else ""
        raise ConfigError(
            f"the overrides {list(overrides)} do not compose with data={data}: {lines[0]}{hint}; check the keys "
            f"(python train.py data={data} --cfg job lists them)"
        ) from err
    if OmegaConf.is_missing(cfg.data, "root"):
        raise ConfigError(
            f"data.root is not set and data={data} needs it: add data.root=/path/to/dataset to the command line "
            "(it is written into the converted config)"
        )

    if OmegaConf.is_missing(cfg.data, "num_classes"):  # a data config that leaves the class count open
        cfg.data.num_classes = arch["num_classes"]
    if cfg.data.num_classes != arch["num_classes"]:
        raise ValueError(
            f"the checkpoint has {arch['num_classes']} classes but data={data} has {cfg.data.num_classes}: pass the "
            "--data config of the dataset it was trained on"
        )
    apply_arch(cfg.model.net, arch)
    try:
        return {key: OmegaConf.to_container(cfg[key], resolve=True, throw_on_missing=True) for key in ("model", "data")}
    except OmegaConfBaseException as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"data={data} with {list(overrides)} does not resolve: {first_line}; set that key") from err


def apply_arch(net: DictConfig, arch: dict[str, Any]) -> None:
    """Set the ResNet config ``net`` to the architecture ``arch`` (:func:`official_arch`), in place.

    ``num_classes`` stays the interpolation of the data's; the RSA kwargs go into ``net.stmixer`` (keeping its
    ``_target_``), or ``stmixer: null`` when there is no RSA layer. ImageNet initialisation is switched off.
    """
    with open_dict(net):
        for key, value in arch.items():
            if key in ("num_classes", "stmixer"):
                continue
            net[key] = value
        if arch["stmixer"] is None:
            net.stmixer = None
        else:
            if net.get("stmixer") is None:
                net.stmixer = {"_target_": "rsa_lightning.layers.RelationalSelfAttention", "_partial_": True}
            for key, value in arch["stmixer"].items():
                net.stmixer[key] = value
        net.pretrained = None


def check_source(src: Path) -> None:
    """Refuse what can be told not to be an official checkpoint without unpickling it: a missing, empty or truncated
    file, or a Lightning checkpoint (of rsa_lightning: it needs no conversion). The message names the fix."""
    if not src.exists():
        raise MissingFileError(
            f"{src} does not exist: give the path of a released official RSANet checkpoint (.pth.tar)"
        )
    if not src.is_file():
        raise MissingFileError(
            f"{src} is not a file: give the path of a released official RSANet checkpoint (.pth.tar)"
        )
    if src.stat().st_size == 0:
        raise CheckpointError(f"{src} is empty (0 bytes): download the official checkpoint again")
    with open(src, "rb") as file:
        magic = file.read(len(ZIP_MAGIC))
    if magic != ZIP_MAGIC:
        return  # a legacy (pre-1.6) torch file, or not a torch file: read_official_checkpoint says which
    if not zipfile.is_zipfile(src):
        raise CheckpointError(
            f"{src} is truncated (its zip archive has no end; {src.stat().st_size} bytes): download it again"
        )
    with zipfile.ZipFile(src) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
        if pickles and LIGHTNING_KEY in archive.read(pickles[0]):
            raise CheckpointError(
                f"{src} is a Lightning checkpoint (of rsa_lightning), not an official one: it needs no conversion, "
                f"evaluate it with python eval.py ckpt_path={src}"
            )


def check_destination(src: Path, dst: Path) -> None:
    """Refuse a ``dst`` that would overwrite ``src``, is a folder, or cannot be written, before any work."""
    if dst.resolve() == src.resolve():
        raise ConfigError(f"DST {dst} would overwrite SRC; choose another file")
    if dst.is_dir():
        raise ConfigError(f"DST {dst} is a folder: give the file to write, e.g. {dst / 'rsa.ckpt'}")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {dst.parent}: {err.strerror or err}; choose a writable DST") from err
    if not os.access(dst.parent, os.W_OK | os.X_OK) or (dst.exists() and not os.access(dst, os.W_OK)):
        raise UserError(f"cannot write {dst}: permission denied; choose a writable DST")


def convert_official(
    src: str | Path,
    dst: str | Path,
    *,
    data: str = DEFAULT_DATA,
    class_names_file: Optional[str | Path] = None,
    num_frames: Optional[int] = None,
    num_heads: Optional[int] = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Write the converted checkpoint ``dst`` and its YAML config; returns a summary (also logged)."""
    src, dst = Path(src), Path(dst)
    check_source(src)
    check_destination(src, dst)
    state_dict, meta = read_official_checkpoint(src)
    if state_dict and all(key.startswith("net.") for key in state_dict):
        raise CheckpointError(
            f"{src} is already an rsa_lightning checkpoint (its keys start with 'net.'), not an official one: "
            f"evaluate it with python eval.py ckpt_path={src}"
        )
    net_state, arch = official_to_resnet_state_dict(state_dict, num_heads=num_heads, source=str(src))
    class_names = read_class_names(class_names_file, arch["num_classes"]) if class_names_file else None
    config = compose_config(arch, data=data, num_frames=num_frames, overrides=overrides)

    model = hydra.utils.instantiate(config["model"])
    try:
        model.net.load_state_dict(net_state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"conf/model/{MODEL_CONFIG}.yaml with the inferred architecture builds another net: {err}"
        ) from err
    checkpoint: dict[str, Any] = {
        "state_dict": model.state_dict(),
        "config": config,
        "official": {"source": str(src), **meta},
    }
    if class_names is not None:
        checkpoint["class_names"] = class_names

    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(f".{dst.name}.partial")
    try:
        torch.save(checkpoint, partial)
        os.replace(partial, dst)  # a failed save (disk full, killed) never leaves a DST that looks complete
    finally:
        partial.unlink(missing_ok=True)
    config_file = dst.with_suffix(".yaml")
    header = f"# {dst.name}: converted from the official checkpoint {src} ({meta or 'a bare state dict'})\n"
    config_file.write_text(header + OmegaConf.to_yaml(OmegaConf.create(config)))

    summary = {
        "checkpoint": str(dst),
        "config": str(config_file),
        "num_classes": arch["num_classes"],
        "stmixer_positions": arch["stmixer_positions"],
        "num_heads": arch["stmixer"]["num_heads"] if arch["stmixer"] else None,
        "kernel_size": arch["stmixer"]["kernel_size"] if arch["stmixer"] else None,
        "num_params": sum(p.numel() for p in model.net.parameters()),
    }
    log.info("converted %s -> %s", src, dst)
    log.info("%s; %s parameters", describe_arch(arch), f"{summary['num_params']:,}")
    log.info("data=%s (%d frames); class names: %s", data, config["data"]["num_frames"], class_names_file or "none")
    log.info("evaluate: python eval.py ckpt_path=%s data.root=<videos>", dst)
    return summary


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = ToolArgumentParser(
        prog=PROG,
        description="Convert an official RSANet checkpoint (.pth.tar) into an rsa_lightning .ckpt for eval.py.",
    )
    parser.add_argument("src", type=Path, help="official checkpoint (or bare state dict)")
    parser.add_argument("dst", type=Path, help="the .ckpt to write (its config also goes to DST with .yaml)")
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"conf/data/<NAME>.yaml (default: {DEFAULT_DATA})")
    parser.add_argument("--class-names", type=Path, default=None, help="class names, one per line, in id order")
    parser.add_argument("--num-frames", type=int, default=None, help="frames per clip (data.num_frames)")
    parser.add_argument("--num-heads", type=int, default=None, help="RSA heads, only when the shapes are ambiguous")
    parser.add_argument("overrides", nargs="*", default=[], help="Hydra overrides, e.g. data.root=/videos")
    return parser.parse_intermixed_args(argv)  # overrides may follow the options


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; a bad argument or file raises a :class:`UserError` (one line and exit code 2 under
    :func:`rsa_lightning.errors.run_cli`)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("PROJECT_ROOT", str(PROJECT_ROOT))  # as train.py / eval.py: paths.root_dir
    args = parse_args(argv)
    convert_official(
        args.src,
        args.dst,
        data=args.data,
        class_names_file=args.class_names,
        num_frames=args.num_frames,
        num_heads=args.num_heads,
        overrides=args.overrides,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
