"""Evaluation plots (confusion matrix, direction pairs, per-class accuracy, top confusions) and the training-clip grid:
the functions on hand-made matrices and the 174 SSv2 classes, and the files and TensorBoard images of a real tiny
training run and of eval.py."""

from __future__ import annotations

import csv
from pathlib import Path

import hydra
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY_TRAINING_WITH_PICTURES, compose_config, tiny_synthetic_overrides
from PIL import Image

from rsa_lightning.callbacks import EvalPlots
from rsa_lightning.data.resumable import SampleKey
from rsa_lightning.data.synthetic import MOTIONS
from rsa_lightning.data.transforms import TrainTransform, hflip
from rsa_lightning.evaluate import evaluate
from rsa_lightning.evaluation.metrics import mean_class_accuracy, per_class_accuracy
from rsa_lightning.train import train
from rsa_lightning.visualization.clips import clip_grid_figure, denormalize
from rsa_lightning.visualization.evaluation_plots import (
    confusion_matrix_figure,
    direction_figure,
    direction_partners,
    partner_errors,
    per_class_figure,
    top_confusions,
    top_confusions_figure,
    write_evaluation_plots,
)
from rsa_lightning.visualization.figures import figure_to_array

SSV2_NAMES = Path("/work/shared/reference/ssv2_class_names.txt")
SYNTHETIC_NAMES = list(MOTIONS.values())
PLOTS = ("matrix", "direction", "per_class", "top_confusions")
MAX_PIXELS = 1600  # every figure is at most 16 inches a side at 100 dpi


def ssv2_names() -> list[str]:
    if not SSV2_NAMES.is_file():
        pytest.skip(f"{SSV2_NAMES} (the SSv2 class names) is not on this machine")
    return SSV2_NAMES.read_text().splitlines()


def image_of(path: Path) -> np.ndarray:
    """The PNG at ``path`` as an (H, W, 3) array; fails unless it is a complete, valid image."""
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def assert_drawn(image: np.ndarray) -> None:
    """Not blank: a picture has more than one colour, and is bounded in size."""
    assert image.ndim == 3 and image.shape[2] == 3
    assert 100 <= image.shape[0] <= MAX_PIXELS and 100 <= image.shape[1] <= MAX_PIXELS, image.shape
    colours = image.astype(np.int32) @ np.array([65536, 256, 1], dtype=np.int32)  # (H, W) packed RGB
    assert len(np.unique(colours)) > 10


def random_confusion(k: int, per_class: int, accuracy: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(k).repeat_interleave(per_class)
    predictions = labels.clone()
    wrong = torch.rand(len(labels), generator=g) > accuracy
    predictions[wrong] = torch.randint(k, (int(wrong.sum()),), generator=g)
    confusion = torch.zeros(k, k, dtype=torch.long)
    return confusion.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)


# ---------------------------------------------------------------------------------------------------------------------
# direction partners


def test_direction_partners_of_the_synthetic_classes_are_the_five_time_reversal_pairs():
    partners = direction_partners(SYNTHETIC_NAMES)
    assert partners == {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4, 6: 7, 7: 6, 8: 9, 9: 8}
    # any order of the names: pairs follow the names, not the ids
    shuffled = SYNTHETIC_NAMES[::-1]
    named = {shuffled[a]: shuffled[b] for a, b in direction_partners(shuffled).items()}
    assert named["Turning something clockwise"] == "Turning something counterclockwise"
    assert named["Moving something closer to the camera"] == "Moving something away from the camera"
    assert len(named) == 10


def test_direction_partners_of_ssv2_find_the_left_right_mirrors():
    names = ssv2_names()
    partners = direction_partners(names)
    pairs = {(names[a], names[b]) for a, b in partners.items() if a < b}
    assert ("Pushing something from left to right", "Pushing something from right to left") in pairs
    assert ("Pulling something from left to right", "Pulling something from right to left") in pairs
    assert (
        "Turning the camera left while filming something",
        "Turning the camera right while filming something",
    ) in pairs
    assert ("Moving something down", "Moving something up") in pairs  # a time-reversal pair of the generator's names
    assert all(partners[partners[a]] == a and partners[a] != a for a in partners)
    # no false mirror: "Pulling something ... right out of ..." has no left counterpart
    assert not any("right out" in names[a] for a in partners)
    assert len(pairs) == 5


def test_partner_errors_counts_errors_that_go_to_the_partner():
    confusion = torch.tensor([[5, 3, 1, 0], [2, 6, 0, 0], [0, 0, 4, 0], [1, 0, 2, 7]])
    to_partner, errors = partner_errors(confusion, {0: 1, 1: 0})
    assert (to_partner, errors) == (3 + 2, 4 + 2)


# ---------------------------------------------------------------------------------------------------------------------
# top confusions and the numbers shown


def test_top_confusions_of_a_hand_made_matrix():
    names = ["a", "b", "c"]
    confusion = torch.tensor([[10, 4, 1], [0, 3, 0], [2, 4, 2]])  # rows true, columns predicted
    rows = top_confusions(confusion, names, k=3)
    assert [(r.true_name, r.predicted_name, r.count) for r in rows] == [("c", "b", 4), ("a", "b", 4), ("c", "a", 2)]
    # equal counts: the larger share of the true class first (4 of 8 videos of c, 4 of 15 of a)
    assert rows[0].share == pytest.approx(4 / 8) and rows[1].share == pytest.approx(4 / 15)
    assert len(top_confusions(confusion, names, k=10)) == 4  # only non-zero off-diagonal cells
    assert top_confusions(torch.diag(torch.tensor([3, 2, 1])), names) == []


def test_written_plots_and_top_confusions_csv(tmp_path):
    names = SYNTHETIC_NAMES
    confusion = random_confusion(10, 30, 0.8)
    confusion[6, 6] -= 8
    confusion[6, 7] += 8  # clockwise -> counterclockwise: the top confusion
    written = write_evaluation_plots(tmp_path / "val_epoch003.csv", confusion, names)
    assert set(written) == set(PLOTS)
    for name in PLOTS:
        path = tmp_path / f"val_epoch003_{name}.png"
        assert written[name].path == path
        image = image_of(path)
        assert_drawn(image)
        assert np.array_equal(image, written[name].image)  # the logged picture is the file's
    rows = list(csv.DictReader((tmp_path / "val_epoch003_top_confusions.csv").open()))
    expected = top_confusions(confusion, names)
    assert len(rows) == len(expected) == 20
    assert rows[0]["true_name"] == "Turning something clockwise"
    assert rows[0]["predicted_name"] == "Turning something counterclockwise"
    assert int(rows[0]["count"]) == int(confusion[6, 7])
    assert float(rows[0]["share_of_true"]) == pytest.approx(int(confusion[6, 7]) / int(confusion[6].sum()), abs=1e-4)


def test_per_class_chart_uses_the_metrics_definitions(monkeypatch):
    """The bars and the mean line are the numbers of rsa_lightning.evaluation.metrics (one number, one definition)."""
    import rsa_lightning.visualization.evaluation_plots as plots

    calls = []
    monkeypatch.setattr(plots, "per_class_accuracy", lambda c: calls.append("per_class") or per_class_accuracy(c))
    monkeypatch.setattr(plots, "mean_class_accuracy", lambda c: calls.append("mean") or mean_class_accuracy(c))
    confusion = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 0, 2]])  # class 1 has no video: no bar
    figure = per_class_figure(confusion, ["a", "b", "c"])
    assert calls == ["per_class", "mean"]
    ax = figure.axes[0]
    assert sorted(round(p.get_width(), 6) for p in ax.patches) == [0.5, 0.75]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["c [2]", "a [0]"]  # lowest first
    (mean_line,) = ax.get_lines()
    assert mean_line.get_xdata()[0] == pytest.approx(mean_class_accuracy(confusion))


def test_plots_of_174_ssv2_classes_are_readable_and_bounded():
    names = ssv2_names()
    confusion = random_confusion(174, 20, 0.6)
    pushing = names.index("Pushing something from left to right")
    confusion[pushing, pushing] -= 9
    confusion[pushing, pushing + 1] += 9
    matrix = confusion_matrix_figure(confusion, names, max_classes=30)
    title = " ".join(t.get_text() for t in matrix.texts)
    assert "the 30 of 174 classes in the most confusions" in title
    assert len(matrix.axes[0].get_yticklabels()) == 30
    shown = [t.get_text() for t in matrix.axes[0].get_yticklabels()]
    assert any(label.startswith("Pushing something from left to right") for label in shown)
    assert all(len(label) <= 56 + 6 for label in shown)  # long names shortened ("... [id]")
    direction = direction_figure(confusion, names)
    assert len(direction.axes[0].get_yticklabels()) == 10  # 5 pairs
    assert "to the partner" in " ".join(t.get_text() for t in direction.texts)
    per_class = per_class_figure(confusion, names, shown=20)
    assert len(per_class.axes[0].get_yticklabels()) == 41  # the lowest 20, a gap, the highest 20
    table = top_confusions_figure(top_confusions(confusion, names, 20), num_classes=174)
    assert "Pushing something from left to right" in " ".join(t.get_text() for t in table.texts)
    for figure in (direction, per_class, table):
        assert max(figure.get_size_inches() * figure.dpi) <= MAX_PIXELS
    assert_drawn(figure_to_array(matrix))


def test_empty_matrix_writes_no_plots(tmp_path):
    assert write_evaluation_plots(tmp_path / "val.csv", torch.zeros(10, 10, dtype=torch.long), SYNTHETIC_NAMES) == {}
    assert not list(tmp_path.iterdir())
    assert direction_figure(torch.eye(3, dtype=torch.long), ["a", "b", "c"]) is None  # no partner: no figure


def test_eval_plots_option_checks():
    with pytest.raises(ValueError, match="every_n_epochs must be >= 1"):
        EvalPlots(every_n_epochs=0)


# ---------------------------------------------------------------------------------------------------------------------
# the clip grid


def test_denormalize_inverts_the_normalisation():
    from rsa_lightning.data.transforms import normalize

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    video = torch.randint(0, 256, (2, 3, 4, 8, 8), dtype=torch.uint8)
    normalised = normalize(video, torch.tensor(mean), torch.tensor(std))
    assert np.array_equal(denormalize(normalised, mean, std), video.permute(0, 2, 3, 4, 1).numpy())


def test_clip_grid_titles_name_class_and_flip():
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    video = torch.randn(3, 3, 8, 32, 32)
    figure = clip_grid_figure(
        video, [6, 0, 1], SYNTHETIC_NAMES, mean=mean, std=std, flipped=[True, False, False], max_clips=2, max_frames=4
    )
    texts = [t.get_text() for t in figure.texts]
    assert "Turning something clockwise [6] - flipped" in texts
    assert "Moving something from left to right [0] - not flipped" in texts
    assert len(figure.axes) == 2 * 4  # 2 clips x 4 of the 8 frames
    assert_drawn(figure_to_array(figure))


# ---------------------------------------------------------------------------------------------------------------------
# a real tiny training run and eval.py


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """rsa_tiny, one short epoch on the tiny synthetic data, TensorBoard logger, the default callbacks."""
    tmp = tmp_path_factory.mktemp("plots")
    overrides = tiny_synthetic_overrides(tmp / "synthetic") + [
        "model=rsa_tiny",
        "logger=tensorboard",
        *TINY_TRAINING_WITH_PICTURES,
    ]
    train(compose_config("train", overrides, tmp / "run"))
    return {"tmp": tmp, "run": tmp / "run", "data": tmp / "synthetic", "overrides": overrides}


def test_training_writes_plots_next_to_the_confusion_csv(tiny_run):
    confusion_dir = tiny_run["run"] / "confusion"
    assert (confusion_dir / "val_epoch000.csv").is_file()
    for name in PLOTS:
        assert_drawn(image_of(confusion_dir / f"val_epoch000_{name}.png"))
    assert (confusion_dir / "val_epoch000_top_confusions.csv").is_file()
    clips = image_of(tiny_run["run"] / "figures" / "train_clips.png")
    assert clips.shape[0] >= 200 and clips.shape[1] <= MAX_PIXELS
    assert not list(confusion_dir.glob("*sanity*")) and len(list(confusion_dir.glob("*_matrix.png"))) == 1


def test_images_reach_tensorboard(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tiny_run["run"] / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = set(events.Tags()["images"])
    assert {"val/confusion", "val/direction", "val/per_class", "val/top_confusions", "train/clips"} <= tags
    (clips,) = events.Images("train/clips")
    assert clips.step == 0 and clips.width > 100 and clips.height > 100
    (matrix,) = events.Images("val/confusion")
    assert matrix.step == 2  # trainer.global_step after the 2 training batches
    png = image_of(tiny_run["run"] / "confusion" / "val_epoch000_matrix.png")
    assert (matrix.height, matrix.width) == png.shape[:2]


def test_eval_writes_the_plots_next_to_the_predictions(tiny_run):
    out = tiny_run["tmp"] / "eval"
    overrides = [f"ckpt_path={tiny_run['run'] / 'checkpoints' / 'last.ckpt'}", "trainer.accelerator=cpu"]
    evaluate(compose_config("eval", overrides, out), overrides=overrides)
    assert (out / "predictions_val.csv").is_file() and (out / "confusion_val.csv").is_file()
    for name in PLOTS:
        assert_drawn(image_of(out / f"confusion_val_{name}.png"))
    saved = torch.load(out / "confusion_val.pt", weights_only=False)
    assert int(saved["confusion"].sum()) == 10  # 10 classes x 1 validation video


def test_nan_scores_write_no_plots_and_do_not_fail(tiny_run, tmp_path):
    """A model with NaN scores: the module writes no confusion matrix, so the callback draws nothing."""

    class NaNNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(10))

        def forward(self, video):
            return torch.full((len(video), 10), float("nan")) + self.bias

    cfg = compose_config("train", tiny_run["overrides"], tmp_path / "run")
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    model.net = NaNNet()
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[EvalPlots()],
        default_root_dir=tmp_path / "run",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(model, datamodule=datamodule)
    assert model.confusions == {}
    assert not list((tmp_path / "run").rglob("*.png"))


def test_dataset_records_the_flip_it_applied(tiny_run):
    """The batch's "flipped" field says whether the clip was mirrored: the same sample with flip="off" is the mirror
    image of a flipped one (both policies draw the same random numbers)."""
    cfg = compose_config("train", tiny_run["overrides"] + ["data.train_transform.flip=always"], tiny_run["tmp"] / "x")
    flipping = hydra.utils.instantiate(cfg.data)
    flipping.setup("fit")
    cfg.data.train_transform.flip = "off"
    plain = hydra.utils.instantiate(cfg.data)
    plain.setup("fit")
    seen = set()
    for seed in range(12):
        a, b = flipping.datasets["train"][SampleKey(seed % 4, seed)], plain.datasets["train"][SampleKey(seed % 4, seed)]
        assert not b["flipped"]
        assert torch.equal(a["video"], hflip(b["video"]) if a["flipped"] else b["video"])
        seen.add(a["flipped"])
    assert seen == {True, False}
    assert plain.datasets["val"][0]["flipped"] is False


def test_transform_with_params_matches_the_call():
    transform = TrainTransform(resize=32, crop_size=24, flip="always")
    clip = torch.randint(0, 256, (3, 4, 32, 40), dtype=torch.uint8)
    for seed in range(6):
        video, label = transform(clip, label=3, generator=torch.Generator().manual_seed(seed))
        again, params = transform.with_params(clip, label=3, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(video, again) and params.label == label


def test_clip_grid_does_not_change_training(tiny_run, tmp_path):
    """The same run without the clip grid ends with bit-identical weights."""
    train(compose_config("train", [*tiny_run["overrides"], "~callbacks.clip_grid"], tmp_path / "without"))
    assert not (tmp_path / "without" / "figures" / "train_clips.png").exists()
    assert (tiny_run["run"] / "figures" / "train_clips.png").is_file()
    weights = [
        torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
        for run in (tmp_path / "without", tiny_run["run"])
    ]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
