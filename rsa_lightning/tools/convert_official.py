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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import hydra
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from rsa_lightning.models.official import describe_arch, official_to_resnet_state_dict, read_official_checkpoint

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"
MODEL_CONFIG = "rsa_r50"
DEFAULT_DATA = "ssv2"


def read_class_names(path: str | Path, num_classes: int) -> list[str]:
    """One class name per line (blank lines ignored); there must be exactly ``num_classes``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--class-names {path} is not a file")
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
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=all_overrides)

    if OmegaConf.is_missing(cfg.data, "num_classes"):  # a data config that leaves the class count open
        cfg.data.num_classes = arch["num_classes"]
    if cfg.data.num_classes != arch["num_classes"]:
        raise ValueError(
            f"the checkpoint has {arch['num_classes']} classes but data={data} has {cfg.data.num_classes}: pass the "
            "--data config of the dataset it was trained on"
        )
    apply_arch(cfg.model.net, arch)
    return {key: OmegaConf.to_container(cfg[key], resolve=True, throw_on_missing=True) for key in ("model", "data")}


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
    if dst.resolve() == src.resolve():
        raise ValueError(f"DST {dst} would overwrite SRC; choose another file")
    state_dict, meta = read_official_checkpoint(src)
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
    torch.save(checkpoint, dst)
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
    parser = argparse.ArgumentParser(
        prog="python -m rsa_lightning.tools.convert_official",
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


def main(argv: Optional[Sequence[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("PROJECT_ROOT", str(PROJECT_ROOT))  # as train.py / eval.py: paths.root_dir
    args = parse_args(argv)
    try:
        convert_official(
            args.src,
            args.dst,
            data=args.data,
            class_names_file=args.class_names,
            num_frames=args.num_frames,
            num_heads=args.num_heads,
            overrides=args.overrides,
        )
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"convert_official: error: {err}") from err


if __name__ == "__main__":
    main()
