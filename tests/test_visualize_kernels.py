"""Relational-kernel pictures: the layer's effective kernels against its forward pass, a hand-set layer whose
relational kernel follows a moving blob, the visualize_kernels tool on a trained rsa_tiny, and the KernelImages
callback (PNGs, TensorBoard and W&B images, training unchanged)."""

from __future__ import annotations

import itertools
import math
import re
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from conftest import (
    ROOT,
    TINY_TRAINING_WITH_PICTURES,
    compose_config,
    tiny_synthetic_overrides,
    train_tiny_run,
    write_video,
)
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from rsa_lightning.callbacks.kernel_images import KernelImages
from rsa_lightning.errors import ConfigError, DataError, classify
from rsa_lightning.layers import RelationalSelfAttention
from rsa_lightning.visualization.kernels import _kernel_mosaic, kernel_pictures, motion_energy

TYPES = ("V", "R", "V+R")


# --- effective kernels of the layer ----------------------------------------------------------------------------------


def normalised(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).sum(dim=0, keepdim=True) + 1e-6)


def window_values(layer: RelationalSelfAttention, x: torch.Tensor, b: int, t: int, i: int, j: int) -> torch.Tensor:
    """v_{n+m,c} for every window offset m of position (b, t, i, j), written out: (dv, kt, kh, kw), zero padded.
    The value is the last dv outputs of the 1x1x1 projection, L2-normalised (the layer's equations)."""
    kt, kh, kw = layer.kernel_size
    weight = layer.projection.weight.detach().double()[-layer.value_channels :, :, 0, 0, 0]  # (dv, C)
    frames, height, width = x.shape[2:]
    out = torch.zeros(layer.value_channels, kt, kh, kw, dtype=torch.float64)
    for a, c, d in itertools.product(range(kt), range(kh), range(kw)):
        tt, ii, jj = t + a - kt // 2, i + c - kh // 2, j + d - kw // 2
        if 0 <= tt < frames and 0 <= ii < height and 0 <= jj < width:
            out[:, a, c, d] = normalised((weight @ x[b, :, tt, ii, jj].double())[:, None])[:, 0]
    return out


@pytest.mark.parametrize("context_type", ["V", "V+R"])
@pytest.mark.parametrize("kernel_type", TYPES)
def test_effective_kernels_reproduce_the_output(kernel_type: str, context_type: str) -> None:
    """y[e, h] = sum_m kappa_h[m] v_{n+m,e} (context "V"), and (A + I)^T of that with A[c, e] = sum_m G[e, m]
    v_{n+m,c} (context "V+R"), at positions in the middle and at the borders of the clip."""
    torch.manual_seed(0)
    layer = RelationalSelfAttention(
        in_channels=5,
        out_channels=6,
        num_heads=3,
        kernel_size=(3, 3, 5),
        kernel_type=kernel_type,
        context_type=context_type,
    )
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x = torch.randn(2, 5, 4, 5, 6)
    positions = torch.tensor([[0, 0, 0, 0], [1, 2, 3, 4], [1, 3, 4, 5], [0, 1, 2, 2]])
    with torch.no_grad():
        kernels = layer.effective_kernels(x, positions)
        y = layer(x)
    expected_kinds = {"V": {"basic"}, "R": {"relational"}, "V+R": {"basic", "relational"}}[kernel_type]
    assert set(kernels) == expected_kinds | {"combined"}
    assert all(k.shape == (4, 3, 3, 3, 5) for k in kernels.values())
    torch.testing.assert_close(kernels["combined"], sum(kernels[k] for k in expected_kinds))
    for n, (b, t, i, j) in enumerate(positions.tolist()):
        values = window_values(layer, x, b, t, i, j)  # (dv, kt, kh, kw)
        aggregated = torch.einsum("hm,cm->ch", kernels["combined"][n].double().flatten(1), values.flatten(1))
        if context_type == "V+R":
            g = layer.G.weight.detach().double().flatten(1)  # (dv, M)
            mixing = values.flatten(1) @ g.T + layer.I.detach().double()[0]  # (A + I)[c, e]
            aggregated = mixing.T @ aggregated
        got = y[b, :, t, i, j].double().view(layer.value_channels, layer.num_heads)  # channel e * nh + h
        assert got.abs().max() > 0.1
        torch.testing.assert_close(got, aggregated, rtol=1e-4, atol=1e-4)


def test_effective_kernels_refuse_bad_positions() -> None:
    layer = RelationalSelfAttention(in_channels=4, out_channels=4, num_heads=2, kernel_size=(3, 3, 3))
    x = torch.randn(1, 4, 3, 4, 4)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        layer.effective_kernels(x, torch.tensor([[0, 1, 1]]))
    with pytest.raises(ValueError, match="inside the input"):
        layer.effective_kernels(x, torch.tensor([[0, 3, 1, 1]]))


# --- the meaning test: a hand-set layer whose relational kernel is the query-key correlation -------------------------


def correlation_layer(kernel_size: tuple[int, int, int] = (3, 5, 5)) -> RelationalSelfAttention:
    """Two input channels (blob, background) used as query, key and value; H2 = I and H1[c] = I over the window
    (dd = M latent channels), so H_c = H1[c]^T H2 = I and the relational kernel is kappa^R[m] = q . k_{n+m}: the
    correlation of the query with every key of its window (dot-product attention without the softmax)."""
    window = int(np.prod(kernel_size))
    layer = RelationalSelfAttention(
        in_channels=2,
        out_channels=2,
        num_heads=1,
        kernel_size=kernel_size,
        kernel_type="R",
        context_type="V",
        latent_channels=window,
    )
    with torch.no_grad():
        layer.projection.weight.copy_(torch.eye(2).repeat(3, 1)[:, :, None, None, None])  # q = k = v = x
        identity = torch.eye(window).view(window, 1, *kernel_size)
        layer.H2.weight.copy_(identity)
        layer.H1.weight.copy_(identity.repeat(2, 1, 1, 1, 1))  # output c * dd + d of key channel c
    return layer


def moving_blob(direction: int, frames: int = 5, size: int = 16, speed: int = 2) -> torch.Tensor:
    """(1, 2, T, size, size): a Gaussian blob (channel 0; channel 1 = 1 - blob) moving ``speed`` pixels per frame
    to the right (``direction`` 1) or to the left (-1), centred in the middle frame."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    clip = []
    for t in range(frames):
        cx = size / 2 + direction * speed * (t - frames // 2)
        blob = torch.exp(-((xs - cx) ** 2 + (ys - size / 2) ** 2) / (2 * 1.5**2))
        clip.append(torch.stack([blob, 1 - blob]))
    return torch.stack(clip, dim=1)[None]


def centre_of_mass_x(tile: np.ndarray) -> float:
    """Horizontal centre of mass of the positive weights of a (kh, kw) tile, in cells from its centre."""
    weights = np.clip(tile, 0, None).sum(axis=0)
    offsets = np.arange(tile.shape[1]) - tile.shape[1] // 2
    return float((weights * offsets).sum() / weights.sum())


@pytest.mark.parametrize(("direction", "sign"), [(1, 1.0), (-1, -1.0)], ids=["left_to_right", "right_to_left"])
def test_relational_kernel_follows_the_motion(direction: int, sign: float) -> None:
    """At the next frame (temporal offset +1) the relational kernel's mass lies in the direction of motion, at the
    previous frame against it; the picture's mosaic shows offset +1 to the right of the query column."""
    layer = correlation_layer()
    clip = moving_blob(direction)
    frames = (clip[0, 0] * 255).to(torch.uint8)[..., None].expand(-1, -1, -1, 3).numpy()
    picture = kernel_pictures(nn.Sequential(layer).eval(), None, clip, frames, [(2, 8, 8)])[0]
    assert picture.cell == (2, 8, 8) and picture.scale == (1.0, 1.0, 1.0)
    kernel = picture.kernels["relational"][0]  # (kt, kh, kw) of the one head
    after, now, before = centre_of_mass_x(kernel[2]), centre_of_mass_x(kernel[1]), centre_of_mass_x(kernel[0])
    assert sign * after > 0.5 and sign * before < -0.5 and abs(now) < 1e-6
    peak = np.unravel_index(kernel[2].argmax(), kernel[2].shape)
    assert (peak[0] - 2, peak[1] - 2) == (0, 2 * direction), "the next frame's peak is where the blob went"
    mosaic = _kernel_mosaic(picture.kernels["relational"])  # what the figure draws: offsets -1, 0, +1 left to right
    tile = mosaic[:5, 2 * 6 : 2 * 6 + 5]
    np.testing.assert_array_equal(tile, kernel[2])


def test_auto_position_is_on_the_moving_object() -> None:
    clip = moving_blob(1, frames=5, size=16)
    energy = motion_energy(clip[0])
    t, y, x = np.unravel_index(int(energy.argmax()), energy.shape)
    assert abs(y - 8) <= 2, "largest motion energy on the blob's row"
    assert energy[:, :3].sum() < energy[:, 6:10].sum()


# --- the tool on a trained rsa_tiny ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    """rsa_tiny trained once (conftest.train_tiny_run), and a frame-wise TSN checkpoint of the same run (the model
    without its RSA layers, stmixer null)."""
    run = train_tiny_run(tmp_path_factory.mktemp("kernels"))
    checkpoint = torch.load(run["ckpt"], map_location="cpu", weights_only=True)
    checkpoint["config"]["model"]["net"]["stmixer"] = None
    checkpoint["state_dict"] = hydra.utils.instantiate(OmegaConf.create(checkpoint["config"]["model"])).state_dict()
    run["tsn_ckpt"] = run["tmp"] / "tsn.ckpt"
    torch.save(checkpoint, run["tsn_ckpt"])
    return run


def tool_config(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("visualize_kernels", overrides=overrides)


def run_tool(overrides: list[str]) -> list[Path]:
    from rsa_lightning.tools.visualize_kernels import visualize_kernels

    return visualize_kernels(tool_config(overrides))


def read_image(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_tool_writes_png_next_to_the_run(tiny_run) -> None:
    written = run_tool([f"ckpt_path={tiny_run['ckpt']}", "video=videos/val_00000"])  # a video id of the run's data
    assert len(written) == 1
    png = written[0]
    assert png.parent == tiny_run["tmp"] / "run" / "figures" / "kernels" and png.name.startswith("val_00000_layer1.0")
    image = read_image(png)
    assert image.shape[0] > 400 and image.shape[1] > 800
    reds = (image[..., 0] > 150) & (image[..., 2] < 100)
    blues = (image[..., 2] > 150) & (image[..., 0] < 100)
    assert reds.sum() > 100 and blues.sum() > 100, "a diverging colour scale with positive and negative weights"


def test_tool_position_layer_and_track_gif(tiny_run) -> None:
    video = tiny_run["data"] / "videos" / "val_00003.mp4"  # a file this time
    out = tiny_run["tmp"] / "pictures" / "k.png"
    written = run_tool(
        [
            f"ckpt_path={tiny_run['ckpt']}",
            f"video={video}",
            "layer=layer2.0.conv2",
            "position=[1,20,9]",
            "track=auto",
            f"out={out}",
        ]
    )
    assert written == [out, out.with_suffix(".gif")]
    with Image.open(out.with_suffix(".gif")) as gif:
        assert gif.n_frames == 4  # auto track: one query per frame of the 4-frame clip
        assert gif.size == Image.open(out).size


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["layer=layer9.0.conv2"], "layer=layer9.0.conv2 is not an RSA layer of the model; its RSA layers: layer1.0"),
        (["position=[0,40,3]"], "outside the clip"),
        (["position=[9,1,1]"], "outside the clip"),
        (["position=middle"], "is not a position"),
        (["track=[3,28,20]"], "e.g. track=[[0,20,10],[1,20,14]]"),
        (["out=kernels.jpg"], "out=kernels.jpg: the picture is written as PNG; give a file name ending in .png"),
        (["gif_frame_ms=0"], "gif_frame_ms=0: give how long each GIF frame is shown in milliseconds"),
        (["gif_frame_ms=fast"], "gif_frame_ms=fast"),
        (["device=cuda"] if not torch.cuda.is_available() else ["position=middle"], "is not a position|device=cuda"),
    ],
)
def test_tool_bad_input_is_a_user_error(tiny_run, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")) as raised:
        run_tool([f"ckpt_path={tiny_run['ckpt']}", "video=videos/val_00000", *overrides])
    assert classify(raised.value) == 2 and "\n" not in str(raised.value)


@pytest.mark.parametrize("bad", ["out=kernels.jpg", "gif_frame_ms=0", "position=middle", "track=[3,28,20]"])
def test_tool_checks_its_own_keys_before_loading_the_checkpoint(tmp_path, bad) -> None:
    """A typo in a key that needs no model is refused at once: the checkpoint (missing here) is never opened."""
    with pytest.raises(ConfigError, match="^" + re.escape(bad.split("=")[0]) + r"=") as raised:
        run_tool([f"ckpt_path={tmp_path / 'missing.ckpt'}", "video=videos/val_00000", bad])
    assert "missing.ckpt" not in str(raised.value)


def test_auto_position_refuses_a_clip_without_motion(tiny_run, tmp_path) -> None:
    """A still clip (every frame the same) has no motion energy: ``position=auto`` refuses to pick a corner and asks
    for a position; an explicit position still draws it."""
    still = write_video(tmp_path / "still.mp4", np.full((8, 32, 32, 3), 90, dtype=np.uint8))
    with pytest.raises(ConfigError, match=r"frames are all the same .*give a query position") as raised:
        run_tool([f"ckpt_path={tiny_run['ckpt']}", f"video={still}"])
    assert classify(raised.value) == 2 and "\n" not in str(raised.value)
    out = tmp_path / "still.png"
    assert run_tool([f"ckpt_path={tiny_run['ckpt']}", f"video={still}", "position=[1,16,16]", f"out={out}"]) == [out]


def test_tool_names_a_video_file_it_cannot_decode(tiny_run, tmp_path, capfd) -> None:
    """A file that is no video: one DataError naming the file, not the dataset's advice about exclusion lists, and
    none of the native decoders' own lines (FFmpeg's "moov atom not found") on stderr before it."""
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n")
    capfd.readouterr()
    with pytest.raises(DataError, match=r"^video=.*notes\.mp4 cannot be decoded \(") as raised:
        run_tool([f"ckpt_path={tiny_run['ckpt']}", f"video={bad}"])
    assert classify(raised.value) == 2 and "\n" not in str(raised.value) and "scan_videos" not in str(raised.value)
    assert capfd.readouterr().err == ""


def test_clip_title_names_the_class_and_the_prediction() -> None:
    """The figure's first line: video, true class (unless unlabelled), top-1 prediction with its probability."""
    from rsa_lightning.visualization.kernels import clip_title

    class Fixed(torch.nn.Module):
        def forward(self, clip: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[0.0, math.log(3.0), 0.0]]).expand(clip.shape[0], 3)  # softmax: 0.2, 0.6, 0.2

    clip = torch.zeros(1, 3, 2, 4, 4)
    names = ["left", "right", "up"]
    assert clip_title(Fixed(), clip, "val_7", 0, names, "after epoch 3") == (
        "val_7,  class: left,  predicted: right (60%),  after epoch 3"
    )
    assert clip_title(Fixed(), clip, "clip.mp4", -1, names) == "clip.mp4,  predicted: right (60%)"


def test_tool_takes_a_video_id_as_the_split_lists_write_it(tiny_run, tmp_path) -> None:
    """``videos/val_00000.mp4`` (the list's path) and ``videos/val_00000`` (the id) name the same video."""
    outs = [tmp_path / "with_extension.png", tmp_path / "id.png"]
    for video, out in zip(("videos/val_00000.mp4", "videos/val_00000"), outs):
        run_tool([f"ckpt_path={tiny_run['ckpt']}", f"video={video}", "position=[2,20,20]", f"out={out}"])
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_tool_cli_refuses_a_model_without_rsa_layers(tiny_run) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rsa_lightning.tools.visualize_kernels",
            f"ckpt_path={tiny_run['tsn_ckpt']}",
            "video=videos/val_00000",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "has no RSA layer" in errors[0] and "tsn.ckpt" in errors[0]


# --- the callback ---------------------------------------------------------------------------------------------------


def tiny_module_and_data(tiny_run, ckpt: Path):
    """The trained module of ``ckpt`` and a set-up datamodule of its data (the tiny generated clips)."""
    from rsa_lightning.evaluation.checkpoints import model_from_checkpoint, run_config

    module = model_from_checkpoint(ckpt)
    data_cfg = run_config(torch.load(ckpt, map_location="cpu", weights_only=True)).data
    datamodule = hydra.utils.instantiate(data_cfg)
    datamodule.setup("fit")
    return module, datamodule


def test_callback_renders_without_changing_training(tiny_run, tmp_path) -> None:
    module, datamodule = tiny_module_and_data(tiny_run, tiny_run["ckpt"])
    module.train()
    module.net.fc.eval()  # a module its owner keeps in eval mode stays so
    callback = KernelImages(every_n_epochs=1, num_clips=2, output_dir=tmp_path)
    callback.setup(None, module, "fit")
    rng = torch.get_rng_state()
    weights = {k: v.clone() for k, v in module.state_dict().items()}
    images = callback.render(module, datamodule, epoch=4)
    assert torch.equal(torch.get_rng_state(), rng), "no random numbers drawn"
    assert all(torch.equal(v, weights[k]) for k, v in module.state_dict().items()), "BatchNorm statistics unchanged"
    assert module.training and module.net.layer1.training and not module.net.fc.training
    assert all(p.grad is None for p in module.parameters())
    names = sorted(images)
    assert len(names) == 2
    for name in names:
        png = tmp_path / "figures" / "kernels" / f"epoch004_{name}.png"
        np.testing.assert_array_equal(read_image(png), images[name])
    again = callback.render(module, datamodule, epoch=5)  # same clips, same query positions
    assert sorted(again) == names
    assert read_image(tmp_path / "figures" / "kernels" / f"epoch005_{names[0]}.png").shape == images[names[0]].shape


def test_callback_costs_nothing_without_rsa_or_outputs(tiny_run) -> None:
    module, _ = tiny_module_and_data(tiny_run, tiny_run["tsn_ckpt"])
    callback = KernelImages(output_dir="/nonexistent")
    callback.setup(None, module, "fit")
    assert callback.render(module, None, epoch=0) == {}  # the datamodule is never touched

    class Trainer:
        is_global_zero, sanity_checking, current_epoch, max_epochs, loggers = True, False, 0, 3, []

    assert not callback.due(Trainer())
    rsa_module, _ = tiny_module_and_data(tiny_run, tiny_run["ckpt"])
    quiet = KernelImages(output_dir=None)
    quiet.setup(None, rsa_module, "fit")
    assert not quiet.due(Trainer()), "no image logger and no output dir: nothing to do"
    with pytest.raises(ConfigError, match="callbacks.kernel_images.layer: layer=nope is not an RSA layer"):
        KernelImages(layer="nope").setup(None, rsa_module, "fit")


def train_with_logger(tmp: Path, data: Path, logger: str) -> Path:
    from rsa_lightning.train import train

    run = tmp / "run"
    overrides = tiny_synthetic_overrides(data) + [
        "model=rsa_tiny",
        *TINY_TRAINING_WITH_PICTURES,
        f"logger={logger}",
        "callbacks.kernel_images.every_n_epochs=1",
        "callbacks.kernel_images.num_clips=1",
    ]
    train(compose_config("train", overrides, run))
    return run


def test_callback_images_in_tensorboard(tiny_run, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train_with_logger(tmp_path, tiny_run["data"], "tensorboard")
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = [t for t in events.Tags()["images"] if t.startswith("val/kernels_")]
    assert len(tags) == 1
    image = events.Images(tags[0])[0]
    assert image.step == 2 and image.width > 800  # after the 2 training steps of the epoch
    assert len(list((run / "figures" / "kernels").glob("epoch000_*.png"))) == 1


@pytest.mark.slow
def test_callback_images_in_wandb_offline_run(tiny_run, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run = train_with_logger(tmp_path, tiny_run["data"], "wandb")
    (offline,) = list((run / "wandb").glob("offline-run-*"))
    images = list((offline / "files" / "media" / "images").rglob("*.png"))
    assert any("kernels_" in p.name for p in images), images
