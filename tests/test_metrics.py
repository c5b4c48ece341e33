"""The metric definitions (rsa_lightning.evaluation.metrics) and VideoClassifier's use of them: top-1 / top-5 (micro)
and mean class accuracy per split, the checkpoint monitor, and the confusion matrix written at the end of validation
and test."""

from __future__ import annotations

import csv
import functools
import logging
import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from rsa_lightning.evaluation.metrics import (
    classification_metrics,
    confusion_matrix,
    mean_class_accuracy,
    per_class_accuracy,
    score_videos,
    topk_accuracy,
)
from rsa_lightning.evaluation.writers import write_confusion
from rsa_lightning.modules import VideoClassifier

NUM_CLASSES = 7


def logits_for(predictions: list[list[int]], num_classes: int) -> torch.Tensor:
    """Logits (N, num_classes) whose ranking puts ``predictions[i]`` first, second, ... for sample i."""
    logits = torch.zeros(len(predictions), num_classes)
    for i, ranked in enumerate(predictions):
        for rank, c in enumerate(ranked):
            logits[i, c] = 10.0 - rank
    return logits


def test_mean_class_accuracy_follows_the_official_and_mmaction2_definition():
    """mmaction2's own unit-test values (tests/evaluation/metrics: labels [2, 2, 2, 3], predictions [2, 2, 2, 4]):
    classes 2, 3 and 4 are scored (labels or predictions); class 4 has no videos but was predicted: it counts 0."""
    labels, predicted = torch.tensor([2, 2, 2, 3]), torch.tensor([2, 2, 2, 4])
    confusion = confusion_matrix(predicted, labels, 6)
    assert mean_class_accuracy(confusion) == pytest.approx(1 / 3)  # (1 + 0 + 0) / 3; "classes with videos" gives 0.5
    scores = torch.nn.functional.one_hot(predicted, 6).float()
    metrics = classification_metrics(scores, labels)
    assert metrics["mean_class_acc"] == pytest.approx(1 / 3) and metrics["acc1"] == pytest.approx(3 / 4)
    assert (metrics["classes_in_split"], metrics["classes_scored"]) == (2, 3)
    # torchmetrics' macro accuracy is the same definition
    assert MulticlassAccuracy(num_classes=6, average="macro")(scores, labels).item() == pytest.approx(1 / 3)


def test_accuracy_metrics_micro_and_mean_class():
    # class 0: 4 videos, 3 right; class 1: 1 video, wrong (second guess right); class 2: 1 video, right
    labels = torch.tensor([0, 0, 0, 0, 1, 2])
    ranked = [[0], [0], [0], [3, 4, 5, 6, 0], [0, 1], [2]]
    values = classification_metrics(logits_for(ranked, NUM_CLASSES), labels)
    assert {"acc1", "acc5", "mean_class_acc"} <= set(values)
    assert values["acc1"] == pytest.approx(4 / 6)  # micro: over videos
    assert values["acc5"] == pytest.approx(6 / 6)
    # classes 4-6 have no videos and are never predicted first: left out of the mean; class 3 has no videos but was
    # predicted once: it counts as 0
    assert values["mean_class_acc"] == pytest.approx((3 / 4 + 0 / 1 + 1 / 1 + 0) / 4)
    labels[3] = 3  # that video is of class 3 now (and right): the plain mean of the per-class accuracies
    values = classification_metrics(logits_for(ranked, NUM_CLASSES), labels)
    assert values["mean_class_acc"] == pytest.approx((3 / 3 + 0 / 1 + 1 / 1 + 1 / 1) / 4)
    assert values["acc1"] == pytest.approx(5 / 6)
    assert "acc5" not in classification_metrics(torch.randn(3, 5), torch.tensor([0, 1, 2]))  # 5 classes: no top-5


def test_topk_ties_are_broken_as_torch_topk_breaks_them():
    scores = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    labels = scores.topk(1, dim=1).indices[:, 0]  # whatever torch.topk picks counts as right
    assert topk_accuracy(scores, labels, 1) == 1.0
    with pytest.raises(ValueError, match="top-4 accuracy needs"):
        topk_accuracy(scores, labels, 4)


def test_unlabelled_and_mixed_splits():
    assert score_videos(torch.randn(3, 4), torch.tensor([-1, -1, -1])) == ({}, None)
    with pytest.raises(ValueError, match="1 of 3 videos have no label"):
        score_videos(torch.randn(3, 4), torch.tensor([0, -1, 2]))


def test_per_class_accuracy_and_confusion_csv(tmp_path):
    confusion = torch.tensor([[3, 1, 0], [1, 0, 0], [0, 0, 0]])  # rows: true class, columns: predicted
    accuracy = per_class_accuracy(confusion)
    assert accuracy[:2].tolist() == [0.75, 0.0] and math.isnan(accuracy[2])
    path = tmp_path / "sub" / "m.csv"
    write_confusion(path, confusion, ["a", "b, c", "d"])
    rows = list(csv.reader(path.read_text().splitlines()))
    assert rows[0] == ["true \\ predicted", "a", "b, c", "d"]
    assert rows[2] == ["b, c", "1", "0", "0"] and len(rows) == 4
    assert torch.equal(torch.load(path.with_suffix(".pt"))["confusion"], confusion)


class RandomClips(pl.LightningDataModule):
    """Fixed random clips (3, 2, 4, 4) with labels 0..NUM_CLASSES-1; val has unbalanced classes."""

    def __init__(self, batch_size: int = 4) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.class_names = [f"class {i}" for i in range(NUM_CLASSES)]
        g = torch.Generator().manual_seed(0)
        self.splits = {}
        for split, labels in (("train", list(range(NUM_CLASSES)) * 2), ("val", [0, 0, 0, 1, 2, 3, 4, 5, 6, 6, 6])):
            video = torch.randn(len(labels), 3, 2, 4, 4, generator=g)
            self.splits[split] = [{"video": v, "label": torch.tensor(y)} for v, y in zip(video, labels)]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


def tiny_classifier(**kwargs) -> VideoClassifier:
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, NUM_CLASSES))
    optimizer = functools.partial(torch.optim.SGD, lr=0.1)
    return VideoClassifier(net=net, num_classes=NUM_CLASSES, optimizer=optimizer, weight_decay=1e-4, **kwargs)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    pl.seed_everything(0)
    model = tiny_classifier()
    datamodule = RandomClips()
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", monitor="val/mean_class_acc", mode="max")
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        default_root_dir=root,
        logger=False,
        callbacks=[checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
    )
    trainer.fit(model, datamodule=datamodule)
    return {"root": root, "model": model, "datamodule": datamodule, "trainer": trainer, "checkpoint": checkpoint}


def expected_confusion(model: VideoClassifier, datamodule: RandomClips) -> torch.Tensor:
    confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    model.eval()
    with torch.no_grad():
        for sample in datamodule.splits["val"]:
            predicted = model(sample["video"][None]).argmax(dim=1).item()
            confusion[sample["label"], predicted] += 1
    return confusion


def test_every_split_logs_top1_top5_and_mean_class_accuracy(fitted):
    metrics = fitted["trainer"].callback_metrics
    for split in ("train", "val"):
        for name in ("acc1", "acc5", "mean_class_acc"):
            assert 0.0 <= float(metrics[f"{split}/{name}"]) <= 1.0, f"{split}/{name}"
    confusion = expected_confusion(fitted["model"], fitted["datamodule"])
    accuracy = per_class_accuracy(confusion)
    assert float(metrics["val/acc1"]) == pytest.approx(confusion.diagonal().sum().item() / confusion.sum().item())
    assert float(metrics["val/mean_class_acc"]) == pytest.approx(accuracy.mean().item())  # every class has videos


def test_the_monitored_metric_drives_checkpointing(fitted):
    metrics, checkpoint = fitted["trainer"].callback_metrics, fitted["checkpoint"]
    assert float(metrics["val/acc1"]) != float(metrics["val/mean_class_acc"])  # unbalanced val: they differ here
    assert checkpoint.best_model_score is not None and checkpoint.best_model_path
    assert float(checkpoint.best_model_score) >= float(metrics["val/mean_class_acc"])


def test_validation_writes_the_confusion_matrix(fitted):
    root, model, datamodule = fitted["root"], fitted["model"], fitted["datamodule"]
    written = sorted(p.name for p in (root / "confusion").iterdir())
    assert written == ["val_epoch000.csv", "val_epoch000.pt", "val_epoch001.csv", "val_epoch001.pt"]
    rows = list(csv.reader((root / "confusion" / "val_epoch001.csv").read_text().splitlines()))
    assert rows[0][1:] == datamodule.class_names and [r[0] for r in rows[1:]] == datamodule.class_names
    from_csv = torch.tensor([[int(v) for v in r[1:]] for r in rows[1:]])
    assert torch.equal(from_csv, expected_confusion(model, datamodule))  # the last epoch's model, the full split
    saved = torch.load(root / "confusion" / "val_epoch001.pt")
    assert torch.equal(saved["confusion"], from_csv) and saved["class_names"] == datamodule.class_names


def test_test_split_metrics_and_confusion(fitted, caplog):
    trainer, model = fitted["trainer"], fitted["model"]
    with caplog.at_level(logging.INFO, logger="rsa_lightning.evaluation.writers"):
        (results,) = trainer.test(model, datamodule=fitted["datamodule"], verbose=False)
    assert {"test/acc1", "test/acc5", "test/mean_class_acc", "test/loss"} <= set(results)
    path = fitted["root"] / "confusion" / f"test_epoch{trainer.current_epoch:03d}.csv"
    assert path.is_file()
    summary = [r.getMessage() for r in caplog.records if "per-class top-1 accuracy" in r.getMessage()]
    assert len(summary) == 1 and "over 7/7 classes with videos" in summary[0] and str(path) in summary[0]


def test_constructor_errors():
    with pytest.raises(ValueError, match="set model.weight_decay instead"):
        VideoClassifier(
            net=nn.Linear(2, 5), num_classes=5, optimizer=functools.partial(torch.optim.SGD, weight_decay=1)
        )
    with pytest.raises(ValueError, match="fusion must be one of"):
        tiny_classifier(fusion="max")
    with pytest.raises(ValueError, match="scheduler_interval"):
        tiny_classifier(scheduler_interval="batch")
