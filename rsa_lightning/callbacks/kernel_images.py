"""Pictures of the RSA kernels of a few fixed validation clips during training, saved and logged every N epochs."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from rsa_lightning.data.transforms import normalize
from rsa_lightning.errors import ConfigError
from rsa_lightning.utils.console import epoch_label
from rsa_lightning.visualization.figures import figure_to_array, image_loggers, log_images, save_figure
from rsa_lightning.visualization.kernels import (
    AUTO,
    clip_title,
    kernel_pictures,
    render_kernels,
    rsa_layers,
    select_layer,
)

log = logging.getLogger(__name__)


class KernelImages(Callback):
    """After epochs 0, N, 2N, ... and the last one (N = ``every_n_epochs``; after the epoch's validation), renders
    the kernel figure (:func:`rsa_lightning.visualization.kernels.render_kernels`: basic, relational and combined
    kernel of every head of one RSA layer at one query position) of ``num_clips`` fixed validation clips, writes it to
    ``<output_dir>/figures/kernels/epoch<NNN>_<clip>.png`` (epoch 0-based, as in the checkpoint names) and logs it to
    the trainer's TensorBoard and W&B loggers as ``val/kernels_<clip>`` at the trainer's ``global_step``, so the
    kernels can be watched as they sharpen.

    The clips are the first video of each of the first ``num_clips`` classes of the datamodule's validation split
    (``datamodule.datasets["val"]``), read once with its evaluation transform; the query position is the position of
    largest motion energy of the layer's input at the first render (``position: auto``; see
    :func:`~rsa_lightning.visualization.kernels.motion_energy`), kept for later epochs so that the pictures compare.

    Training is not changed: global rank 0 only, no random numbers drawn (evaluation clips, eval mode: no dropout,
    no BatchNorm update), no gradients, every module's training flag restored. No cost at all for a model without
    RSA layers, or with no image logger and no ``output_dir``.

    Args:
        every_n_epochs: render after epochs ``0, N, 2N, ...`` (0-based) and after the last (``trainer.max_epochs``).
        num_clips: validation clips pictured (one per class, the first classes of the split).
        layer: module path of the RSA layer (``layer1.0.conv2``); ``auto``: the first RSA layer.
        output_dir: the run folder the PNGs go under (``${paths.output_dir}``); None: log only, write nothing.

    Raises:
        ConfigError (at the start of fitting): ``every_n_epochs`` or ``num_clips`` < 1, or ``layer`` not an RSA
        layer of the model (the message lists them).
    """

    def __init__(
        self,
        *,
        every_n_epochs: int = 1,
        num_clips: int = 2,
        layer: str = AUTO,
        output_dir: Optional[str | Path] = None,
    ) -> None:
        for key, value in (("every_n_epochs", every_n_epochs), ("num_clips", num_clips)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"callbacks.kernel_images.{key} must be a positive integer, got {value!r}")
        self.every_n_epochs = every_n_epochs
        self.num_clips = num_clips
        self.layer = layer
        self.output_dir = Path(output_dir) if output_dir else None
        self._layer_name: Optional[str] = None  # None: nothing to picture (no RSA layer)
        self._clips: Optional[list[tuple[str, int, torch.Tensor, np.ndarray]]] = (
            None  # (name, label, uint8 video, frames)
        )
        self._positions: dict[str, tuple[int, int, int]] = {}  # clip name -> query pixel (t, y, x)

    @staticmethod
    def network(pl_module: pl.LightningModule) -> torch.nn.Module:
        """The module's network (``pl_module.net``, unwrapped from ``torch.compile``), or the module itself."""
        net = getattr(pl_module, "net", pl_module)
        return getattr(net, "_orig_mod", net)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        net = self.network(pl_module)
        if not rsa_layers(net):
            log.debug("kernel images: the model has no RSA layer; nothing to picture")
            self._layer_name = None
            return
        try:
            self._layer_name, _ = select_layer(net, self.layer)
        except ConfigError as err:
            raise ConfigError(f"callbacks.kernel_images.layer: {err}") from err

    def due(self, trainer: pl.Trainer) -> bool:
        """Whether this epoch's pictures are made (on this process)."""
        if self._layer_name is None or not trainer.is_global_zero or trainer.sanity_checking:
            return False
        if self.output_dir is None and not image_loggers(trainer.loggers):
            return False
        epoch = trainer.current_epoch
        return epoch % self.every_n_epochs == 0 or epoch + 1 == trainer.max_epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.due(trainer):
            return
        start = time.perf_counter()
        images = self.render(pl_module, trainer.datamodule, trainer.current_epoch)
        if images:
            keys = {f"val/kernels_{name}": image for name, image in images.items()}
            log_images(trainer.loggers, keys, trainer.global_step)
        where = f" in {self.output_dir / 'figures' / 'kernels'}" if self.output_dir is not None else ""
        log.info(
            "kernel pictures of %d clips after epoch %s%s (%.1f s)",
            len(images),
            epoch_label(trainer.current_epoch, trainer.max_epochs),
            where,
            time.perf_counter() - start,
        )

    def _load_clips(self, datamodule: Any) -> list[tuple[str, int, torch.Tensor, np.ndarray]]:
        """The fixed validation clips: (name, uint8 (3, T, H, W) video, uint8 (T, H, W, 3) frames)."""
        datasets = getattr(datamodule, "datasets", None) or {}
        dataset = datasets.get("val")
        if dataset is None and hasattr(datamodule, "build_dataset"):
            dataset = datamodule.build_dataset("val")
        if dataset is None or not hasattr(datamodule, "mean") or not hasattr(datamodule, "std"):
            log.warning("kernel images: the datamodule has no validation dataset or no mean/std; no kernel pictures")
            return []
        chosen, labels = [], set()
        for index, record in enumerate(dataset.records):
            if record.label not in labels:
                labels.add(record.label)
                chosen.append(index)
            if len(chosen) == self.num_clips:
                break
        clips = []
        for index in chosen:
            sample = dataset[index * dataset.num_views]  # the video's first view; evaluation: no random numbers
            name = re.sub(r"[^\w.-]+", "_", Path(str(sample["video_id"])).with_suffix("").name)
            clips.append((name, int(sample["label"]), sample["video"], sample["video"].permute(1, 2, 3, 0).numpy()))
        return clips

    def render(self, pl_module: pl.LightningModule, datamodule: Any, epoch: int) -> dict[str, np.ndarray]:
        """The kernel pictures of the fixed clips at ``epoch``: ``{clip name: (H, W, 3) uint8 image}``, each also
        written as a PNG under ``output_dir``. The module is put in eval mode and every module's mode restored."""
        if self._layer_name is None:
            return {}
        if self._clips is None:
            self._clips = self._load_clips(datamodule)
        net = self.network(pl_module)
        modes = {module: module.training for module in pl_module.modules()}
        device = next(net.parameters()).device
        if not self._clips:
            return {}
        mean = torch.as_tensor(datamodule.mean, device=device)  # as the datamodule normalises its batches
        std = torch.as_tensor(datamodule.std, device=device)
        images = {}
        pl_module.eval()
        try:
            with torch.no_grad():
                class_names = list(getattr(datamodule, "class_names", None) or [])
                for name, label, video, frames in self._clips:
                    clip = normalize(video[None].to(device), mean, std)
                    # counted from 1, as on the console
                    title = clip_title(net, clip, name, label, class_names, f"after epoch {epoch + 1}")
                    position = self._positions.get(name)
                    picture = kernel_pictures(
                        net,
                        self._layer_name,
                        clip,
                        frames,
                        None if position is None else [position],
                        title=title,
                    )[0]
                    self._positions[name] = picture.pixel
                    figure = render_kernels(picture)
                    if self.output_dir is not None:
                        path = self.output_dir / "figures" / "kernels" / f"epoch{epoch:03d}_{name}.png"
                        images[name] = _read_png(save_figure(figure, path))
                    else:
                        images[name] = figure_to_array(figure)
        finally:
            for module, training in modes.items():
                module.training = training
        return images


def _read_png(path: Path) -> np.ndarray:
    """A PNG just written, as (H, W, 3) uint8 (cheaper than drawing the figure a second time)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
