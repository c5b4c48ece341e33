"""Pictures of the dynamic kernels an RSA layer of a trained model applies to a video::

    python -m rsa_lightning.tools.visualize_kernels ckpt_path=<run>/checkpoints/last.ckpt video=clip.mp4
    python -m rsa_lightning.tools.visualize_kernels ckpt_path=... video=videos/val_00003 layer=layer2.0.conv2 \\
        position=[3,20,30] track=auto

Options in ``conf/visualize_kernels.yaml``. The clip is read as ``eval.py`` reads it (the run's decoder, evaluation
sampler and transform, :func:`rsa_lightning.inference.load_model`). For one query position the figure shows, per
head, the basic, the relational and the combined kernel over the layer's ``kt x kh x kw`` window next to the input
frames with the window outlined (:mod:`rsa_lightning.visualization.kernels`); it is written as a PNG, and with
``track=`` an animated GIF follows a list of query positions.

``position``: ``t,y,x`` (frame, row, column in pixels of the network's input clip, i.e. after the evaluation
transform's resize and crop: 0 <= y, x < crop_size) or ``auto``: the position of largest motion energy, defined as
the squared difference of the layer's input feature map to its previous and next frame summed over channels, at the
layer's resolution (:func:`rsa_lightning.visualization.kernels.motion_energy`). ``layer``: the module path of an RSA
layer (``layer1.0.conv2``); ``auto``: the first. Bad input (an unknown layer, a position outside the clip, a model
without RSA layers, a missing checkpoint or video) ends with one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import hydra
import torch
from omegaconf import DictConfig, ListConfig

from rsa_lightning.data.annotations import UNLABELLED, VideoRecord
from rsa_lightning.data.dataset import UndecodableVideosError, VideoDataset
from rsa_lightning.data.decoding import FrameFolderBackend
from rsa_lightning.data.transforms import normalize
from rsa_lightning.errors import ConfigError, DataError, MissingFileError, handle_errors, run_hydra_main
from rsa_lightning.inference import LoadedModel, load_model
from rsa_lightning.utils.config import task_overrides
from rsa_lightning.visualization.figures import figure_to_array, save_figure
from rsa_lightning.visualization.kernels import (
    AUTO,
    clip_title,
    kernel_pictures,
    render_kernels,
    select_layer,
    write_gif,
)

log = logging.getLogger(__name__)

SPLITS = ("val", "train", "test")


def parse_position(value: Any, key: str = "position") -> Optional[tuple[int, int, int]]:
    """``"auto"`` / None -> None; ``"t,y,x"`` or a list ``[t, y, x]`` -> three ints; ConfigError otherwise."""
    if value is None or str(value) == AUTO:
        return None
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else re.split(r"[,\s]+", str(value).strip())
    try:
        numbers = tuple(int(str(v).strip("[]() ")) for v in items if str(v).strip("[]() "))
    except ValueError:
        numbers = ()
    if len(numbers) != 3:
        raise ConfigError(
            f"{key}={value} is not a position: give auto or t,y,x (frame, row, column in pixels of the network's "
            f"input clip), e.g. "
            + ("track=[[0,20,10],[1,20,14]] (a list of positions)" if key == "track" else f"{key}=[3,20,30]")
        )
    return numbers


def parse_track(value: Any) -> tuple[bool, Optional[list[tuple[int, int, int]]]]:
    """``track``: None/false -> (False, None); ``auto`` -> (True, None); a list of positions -> (True, positions)."""
    if value is None or value is False or str(value).lower() in ("false", "null", "none"):
        return False, None
    if str(value) == AUTO:
        return True, None
    if not isinstance(value, (list, tuple, ListConfig)) or not value:
        raise ConfigError(
            f"track={value} is not a track: give auto (the position of largest motion energy in every frame) or a "
            "list of positions, e.g. track=[[0,20,10],[1,20,14],[2,20,18]]"
        )
    return True, [parse_position(p, key="track") for p in value]


def parse_frame_ms(value: Any) -> int:
    """``gif_frame_ms``: how long each frame of the track's GIF is shown, a positive whole number of milliseconds;
    ConfigError otherwise."""
    try:
        frame_ms = int(str(value))
    except ValueError:
        frame_ms = 0
    if frame_ms <= 0:
        raise ConfigError(f"gif_frame_ms={value}: give how long each GIF frame is shown in milliseconds, e.g. 500")
    return frame_ms


def find_video(video: str, data: DictConfig) -> VideoRecord:
    """The video ``video`` names: an existing file, else a video id of the run's dataset (``data.annotations`` under
    ``data.root``; splits val, train, test). MissingFileError when it is neither."""
    path = Path(str(video))
    if path.is_file():
        return VideoRecord(path=path.resolve(), label=UNLABELLED, video_id=str(video))
    reason = ""
    try:
        annotations = hydra.utils.instantiate(data.annotations)
        annotations = annotations(root=Path(data.root)) if callable(annotations) else annotations
        available = tuple(getattr(annotations, "splits", SPLITS))
        for split in (s for s in SPLITS if s in available):
            try:
                records = annotations.records(split)
            except (OSError, ValueError):  # e.g. no test list
                continue
            # an id as the split lists write it, with or without the file extension (videos/val_00000[.mp4])
            found = [r for r in records if str(video) in (r.video_id, str(Path(r.video_id).with_suffix("")))]
            found = found or [r for r in records if Path(str(video)).with_suffix("") == Path(r.video_id)]
            if found:
                return found[0]
            if not reason and records:
                reason = f" (ids look like {records[0].video_id})"
    except Exception as err:  # noqa: BLE001  (the dataset cannot be read here: say so with the file error)
        reason = f" (the dataset could not be read: {str(err).splitlines()[0] if str(err) else type(err).__name__})"
    raise MissingFileError(
        f"video={video} is neither a file nor a video id of the run's dataset at data.root={data.root}{reason}: "
        "give a video file or an id from its split lists"
    )


def read_clip(model: LoadedModel, record: VideoRecord) -> torch.Tensor:
    """The clip of ``record`` as ``eval.py`` reads it (one centre view): uint8 (3, T, crop, crop).

    Raises ConfigError for a video file given to a frame-folder backend, DataError (one line naming the file) for a
    file the decoder cannot read; the native decoders' own stderr lines are then held back (logged at debug level)."""
    if isinstance(model.backend, FrameFolderBackend) and record.path.is_file():
        raise ConfigError(
            f"the model's data.backend reads folders of extracted frames (data/backend=frames), but {record.path} is "
            "a video file: give data/backend=pyav (or decord) to decode video files"
        )
    dataset = VideoDataset(
        records=[record],
        backend=model.backend,
        sampler=model.sampler,
        transform=model.eval_transform,
        training=False,
        max_decode_retries=0,
    )
    dataset_log = logging.getLogger(VideoDataset.__module__)
    level = dataset_log.level
    dataset_log.setLevel(logging.ERROR)  # its "skipping video" warning would repeat the error below
    # What the native decoders (FFmpeg, decord) print to file descriptor 2 while reading is held back: written out
    # as it came when the clip decodes (or anything else goes wrong), only logged (debug) when the file cannot be
    # decoded, so that a bad file gets the one line below.
    error: Optional[UndecodableVideosError] = None
    with tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            video = dataset[0]["video"]
        except UndecodableVideosError as err:
            error = err
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            dataset_log.setLevel(level)
            held.seek(0)
            native = held.read().decode(errors="replace")
            if error is None and native:
                sys.stderr.write(native)
                sys.stderr.flush()
    if error is None:
        return video
    log.debug("decoder output for %s:\n%s", record.path, native)
    reason = dataset.skipped.get(record.video_id) or str(error)
    raise DataError(
        f"video={record.path} cannot be decoded ({reason.splitlines()[0]}): give a video file the run's "
        "decoder reads (or another data/backend=...)"
    ) from error


def default_output(ckpt_path: Path, video_id: str, layer: str, pixel: Sequence[int]) -> Path:
    """``<run dir>/figures/kernels/<video>_<layer>_t<t>y<y>x<x>.png``; the run dir holds ``checkpoints/``."""
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    stem = re.sub(r"[^\w.-]+", "_", Path(video_id).with_suffix("").name)
    t, y, x = pixel
    return run_dir / "figures" / "kernels" / f"{stem}_{layer}_t{t}y{y}x{x}.png"


def visualize_kernels(cfg: DictConfig, overrides: Sequence[str] = ()) -> list[Path]:
    """Run ``conf/visualize_kernels.yaml``'s job; returns the files written (the PNG, then the GIF if any).
    ``overrides``: the command line, whose ``data`` groups and keys replace the run's (``data/backend=pyav``)."""
    device = cfg.get("device", "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: no CUDA device is visible to this torch build; use device=cpu")
    # the keys that need no model are checked first: a typo costs no checkpoint load
    position = parse_position(cfg.get("position", AUTO))
    tracked, track = parse_track(cfg.get("track"))
    frame_ms = parse_frame_ms(cfg.get("gif_frame_ms", 500))
    if cfg.get("out") and Path(str(cfg.out)).suffix.lower() != ".png":
        raise ConfigError(
            f"out={cfg.out}: the picture is written as PNG; give a file name ending in .png (the track's GIF is "
            "written next to it with the suffix .gif)"
        )
    model = load_model(
        cfg.ckpt_path, num_frames=cfg.get("num_frames"), device=device, composed=cfg, overrides=overrides
    )
    try:
        layer_name, _ = select_layer(model.net, cfg.get("layer", AUTO))
    except ConfigError as err:
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: {err}") from err
    record = find_video(str(cfg.video), model.config.data)
    video = read_clip(model, record)  # uint8 (3, T, H, W)
    if position is None and bool((video == video[:, :1]).all()):
        raise ConfigError(
            f"video={cfg.video}: its {video.shape[1]} frames are all the same (a still image?), so position=auto has "
            "no motion to find; give a query position, e.g. position=[0,20,20] (frame, y, x)"
        )
    frames = video.permute(1, 2, 3, 0).numpy()  # (T, H, W, 3)
    mean = torch.tensor(model.mean, device=model.device)
    std = torch.tensor(model.std, device=model.device)
    clip = normalize(video[None].to(model.device), mean, std)
    title = clip_title(model.net, clip, record.video_id, record.label, model.class_names, Path(str(cfg.ckpt_path)).name)
    picture = kernel_pictures(
        model.net, layer_name, clip, frames, None if position is None else [position], title=title
    )[0]
    out = (
        Path(cfg.out)
        if cfg.get("out")
        else default_output(Path(cfg.ckpt_path), record.video_id, layer_name, picture.pixel)
    )
    figure = render_kernels(picture)
    written = [save_figure(figure, out)]
    if tracked:
        pictures = kernel_pictures(model.net, layer_name, clip, frames, track, track=True, title=title)
        images = [figure_to_array(render_kernels(p)) for p in pictures]
        written.append(write_gif(images, out.with_suffix(".gif"), frame_ms))
    t, y, x = picture.pixel
    print(f"{layer_name}, query at frame {t}, pixel (y {y}, x {x}): {written[0]}")  # the tool's output
    if tracked:
        print(f"track of {len(pictures)} positions: {written[1]}")
    return written


@hydra.main(version_base="1.3", config_path="../../conf", config_name="visualize_kernels")
@handle_errors  # bad input: one message and exit code 2 (rsa_lightning.errors)
def main(cfg: DictConfig) -> None:
    visualize_kernels(cfg, overrides=task_overrides())


if __name__ == "__main__":
    run_hydra_main(main)
