"""One evaluation path: validation during training, ``test_after_training``, ``eval.py`` and the predict tool give the
same numbers, exact under DDP, with one definition of every metric (rsa_lightning.evaluation).

Processes compute with one intra-op thread each (as in test_ddp_eval.py): a CPU convolution's float result depends on
the thread count, and these tests are about which videos are counted and how they are fused.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import NO_PICTURES, ROOT, Background, compose_config, tiny_synthetic_overrides

import rsa_lightning
from rsa_lightning.data.exclusions import write_exclusions
from rsa_lightning.data.video_io import VideoDecodeError
from rsa_lightning.evaluate import evaluate
from rsa_lightning.evaluation.checkpoints import model_from_checkpoint
from rsa_lightning.evaluation.metrics import confusion_matrix, mean_class_accuracy
from rsa_lightning.modules import VideoClassifier
from rsa_lightning.train import train
from rsa_lightning.utils.config import RANK_ENV, RUN_NAME_ENV

TINY_TRAINING = [
    "model=rsa_tiny",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
    "callbacks.model_summary.max_depth=0",
    *NO_PICTURES,
]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any launcher's variables (pytest may itself run inside a SLURM job)."""
    launcher = {*RANK_ENV, RUN_NAME_ENV, "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PL_GLOBAL_SEED"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in launcher}
    return {**env, **extra}


class one_thread:
    """``torch.set_num_threads(1)`` inside the block (the DDP processes run with OMP_NUM_THREADS=1)."""

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.threads)


def read_csv_log(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def validate(checkpoint: Path, overrides: list[str], tmp: Path) -> dict[str, float]:
    """One process validating the checkpoint's weights on the split of ``overrides`` (the train config)."""
    import hydra

    cfg = compose_config("train", overrides, tmp)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = model_from_checkpoint(checkpoint)
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, default_root_dir=tmp, enable_progress_bar=False, enable_model_summary=False
    )
    with one_thread():
        (metrics,) = trainer.validate(model, datamodule=datamodule, verbose=False)
    return {**metrics, "confusion": torch.load(tmp / "confusion" / "val_epoch000.pt")["confusion"]}


# ---------------------------------------------------------------------------------------------------------------------
# DDP training: every validation video counted once


def test_ddp_training_validates_each_video_once_and_equals_one_process(tmp_path):
    data = tiny_synthetic_overrides(tmp_path / "synthetic") + ["data.batch_size=2"]
    # an odd-sized validation split: 3 of the 10 videos left out, 7 left for 2 processes with batch 2
    cfg = compose_config("train", data, tmp_path / "compose")
    import hydra

    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    records = datamodule.records("val")
    excluded = [r.video_id for r in records[1:9:3]]
    exclusions = write_exclusions(tmp_path / "exclusions.txt", [("val", v, "", "test") for v in excluded])
    data.append(f"+data.exclusions_file={exclusions}")

    run = tmp_path / "ddp_run"
    overrides = [
        *data,
        # as a user runs it: progress bar and sanity check on (rank 0's progress bar reads the epoch's metrics early,
        # which once deadlocked a collective in the module's epoch-end hook)
        "model=rsa_tiny",
        "trainer=ddp_cpu",
        "callbacks.model_summary.max_depth=0",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "callbacks.model_checkpoint.save_top_k=-1",  # every epoch's weights, to validate them again below
        f"hydra.run.dir={run}",
    ]
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env(OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr

    logged = [row for row in read_csv_log(run / "csv" / "metrics.csv") if row.get("val/acc1")]
    assert [int(row["epoch"]) for row in logged] == [0, 1]
    single_overrides = [o for o in data if not o.startswith("hydra.")]
    scores = {}
    for row in logged:
        epoch = int(row["epoch"])
        (checkpoint,) = (run / "checkpoints").glob(f"best_epoch_{epoch:03d}.ckpt")
        single = validate(checkpoint, single_overrides, tmp_path / f"single{epoch}")
        confusion = torch.load(run / "confusion" / f"val_epoch{epoch:03d}.pt")["confusion"]
        assert int(confusion.sum()) == 7, "every validation video counted exactly once"
        assert torch.equal(confusion, single["confusion"])
        for name in ("val/acc1", "val/acc5", "val/mean_class_acc"):
            assert float(row[name]) == pytest.approx(single[name], abs=1e-7), (epoch, name)
        for name in ("val/acc1", "val/acc5"):  # fractions of 7 videos
            assert float(row[name]) * 7 == pytest.approx(round(float(row[name]) * 7), abs=1e-5), name
        assert float(row["val/loss"]) == pytest.approx(single["val/loss"], rel=1e-5)
        scores[epoch] = single["val/acc1"]

    # the best checkpoint the DDP run recorded is the best of the exact per-epoch validations
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    (state,) = [s for k, s in last["callbacks"].items() if "'monitor': 'val/acc1'" in k]
    assert float(state["best_model_score"]) == pytest.approx(max(scores.values()), abs=1e-7)
    best_epoch = int(Path(state["best_model_path"]).stem.rsplit("_", 1)[1])
    assert scores[best_epoch] == max(scores.values())


# ---------------------------------------------------------------------------------------------------------------------
# training, test_after_training, eval.py and the predict tool on one tiny run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """rsa_tiny trained for 2 x 3 steps on the tiny synthetic data, with a labelled test split (the val videos) tested
    after training with 2 clips x 3 crops."""
    tmp = tmp_path_factory.mktemp("exact")
    data = tiny_synthetic_overrides(tmp / "synthetic") + ["+data.annotations.test_list=annotations/val.txt"]
    overrides = [
        *data,
        *TINY_TRAINING,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "data.num_clips=2",
        "data.num_crops=3",
        "test_after_training=true",
    ]
    pl.seed_everything(0)
    with one_thread():
        metrics = train(compose_config("train", overrides, tmp / "run"))
    net = torch.load(tmp / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]["net.fc.weight"]
    return {"tmp": tmp, "dir": tmp / "run", "metrics": metrics, "data": data, "overrides": overrides, "fc": net}


def run_eval(checkpoint: Path, out: Path, *overrides: str) -> dict:
    overrides = [f"ckpt_path={checkpoint}", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", *overrides]
    with one_thread():
        return evaluate(compose_config("eval", overrides, out), overrides=overrides)


def test_test_after_training_equals_eval_on_the_best_checkpoint(run):
    metrics = run["metrics"]
    best = Path(metrics["best_checkpoint"])
    out = run["tmp"] / "eval_test"
    evaluated = run_eval(best, out, "split=test", "protocol=accurate")
    assert evaluated["views_per_video"] == 6 and evaluated["num_videos"] == 10
    for name in ("acc1", "acc5", "mean_class_acc"):
        assert metrics[f"test/{name}"] == pytest.approx(evaluated[name], abs=1e-7), name
    # the same files, from the same functions
    written = json.loads((run["dir"] / "metrics_test.json").read_text())
    for name in ("acc1", "acc5", "mean_class_acc", "num_videos", "classes_scored"):
        assert written[name] == evaluated[name], name
    assert (run["dir"] / "predictions_test.csv").read_text() == (out / "predictions_test.csv").read_text()
    assert torch.equal(
        torch.load(run["dir"] / "scores_test.pt")["scores"], torch.load(out / "scores_test.pt")["scores"]
    )
    assert written["checkpoints"] == [str(best)] and (written["num_clips"], written["num_crops"]) == (2, 3)
    # without a protocol, eval.py uses the views the run tested with
    default = run_eval(best, run["tmp"] / "eval_test_default", "split=test")
    assert default["views_per_video"] == 6 and default["acc1"] == evaluated["acc1"]
    assert run_eval(best, run["tmp"] / "eval_val_default")["views_per_video"] == 1  # validation: one view


def relabelled_val_list(predictions: list[dict[str, str]], paths: dict[str, str], num_classes: int):
    """A val list of the same videos whose labels make the model right on some videos and make one predicted class
    absent from the labels: videos predicted as ``a`` (the first video's prediction) get a never-predicted label,
    the others their predicted class. ``paths``: video id -> path in the list. Returns the list text and labels."""
    predicted = [int(r["pred_1"]) for r in predictions]
    a = predicted[0]
    assert len(set(predicted)) >= 2, f"the tiny model predicts one class for every video: {predicted}"
    never = next(c for c in range(num_classes) if c not in predicted)
    labels = [never if p == a else p for p in predicted]
    lines = [f"{paths[r['video_id']]} {label}" for r, label in zip(predictions, labels)]
    return "\n".join(lines) + "\n", labels


def test_mean_class_accuracy_is_one_number_in_training_eval_and_files(run):
    """A split lacking classes, with a predicted class that has no videos: training logs, eval.py returns and the
    metrics file holds the official value (recall averaged over labels-or-predictions classes), computed by hand."""
    tmp = run["tmp"]
    first = run_eval(run["dir"] / "checkpoints" / "last.ckpt", tmp / "eval_first")
    rows = list(csv.DictReader(Path(first["predictions_file"]).read_text().splitlines()))
    import hydra

    datamodule = hydra.utils.instantiate(compose_config("train", run["data"], tmp / "compose").data)
    root = datamodule.root.resolve()
    paths = {r.video_id: Path(r.path).resolve().relative_to(root).as_posix() for r in datamodule.records("val")}
    text, labels = relabelled_val_list(rows, paths, 10)
    val_list = tmp / "relabelled_val.txt"
    val_list.write_text(text)

    # by hand, from the predictions: classes among labels or predictions; recall, 0 for a class without videos
    predicted = [int(r["pred_1"]) for r in rows]
    classes = sorted(set(labels) | set(predicted))
    recall = []
    for c in classes:
        videos = [p for p, y in zip(predicted, labels) if y == c]
        recall.append(sum(p == c for p in videos) / len(videos) if videos else 0.0)
    by_hand = sum(recall) / len(recall)
    with_videos_only = [r for c, r in zip(classes, recall) if c in labels]
    assert by_hand != pytest.approx(sum(with_videos_only) / len(with_videos_only)), "the case must tell them apart"
    assert set(predicted) - set(labels), "a predicted class without videos"

    # training again with the same seed gives the same weights; its validation now reads the relabelled list
    overrides = [o for o in run["overrides"] if o != "test_after_training=true"] + [
        f"data.annotations.val_list={val_list}"
    ]
    pl.seed_everything(0)
    with one_thread():
        trained = train(compose_config("train", overrides, tmp / "run2"))
    state = torch.load(tmp / "run2" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert torch.equal(state["net.fc.weight"], run["fc"]), "same seed, same weights"
    evaluated = run_eval(tmp / "run2" / "checkpoints" / "last.ckpt", tmp / "eval_relabelled")
    written = json.loads((tmp / "eval_relabelled" / "metrics_val.json").read_text())
    assert trained["val/mean_class_acc"] == pytest.approx(by_hand, abs=1e-6)
    assert evaluated["mean_class_acc"] == pytest.approx(by_hand, abs=1e-12)
    assert written["mean_class_acc"] == evaluated["mean_class_acc"]
    assert written["classes_scored"] == len(classes) and written["classes_in_split"] == len(set(labels))
    confusion = confusion_matrix(torch.tensor(predicted), torch.tensor(labels), 10)
    assert mean_class_accuracy(confusion) == pytest.approx(by_hand, abs=1e-12)


def test_predict_tool_and_load_model_give_the_eval_prediction(run):
    tmp = run["tmp"]
    checkpoint = run["dir"] / "checkpoints" / "last.ckpt"
    root = tmp / "synthetic"
    # the command-line tool on the first generated validation mp4, started first: it runs while this process
    # evaluates, and is checked at the end
    listed = (root / "annotations" / "val.txt").read_text().split()[0]  # the video's path below the data root
    video, video_id = root / listed, listed.rsplit(".", 1)[0]  # list ids: the path without its suffix
    tool = Background(
        [sys.executable, "-m", "rsa_lightning.tools.predict", f"ckpt_path={checkpoint}", f"video={video}"],
        cwd=ROOT,
        env=clean_env(OMP_NUM_THREADS="1"),
    )
    evaluated = run_eval(checkpoint, tmp / "eval_predict")
    rows = {r["video_id"]: r for r in csv.DictReader(Path(evaluated["predictions_file"]).read_text().splitlines())}
    eval_scores = torch.load(evaluated["scores_file"])

    # the Python API, on a folder of the split's videos
    model = rsa_lightning.load_model(checkpoint)
    assert not model.net.training and model.num_frames == 4 and model.crop_size == 32 and len(model.class_names) == 10
    val_videos = [root / f"{video_id}.mp4" for video_id in rows]
    with one_thread():
        fused = rsa_lightning.predict_scores(model, val_videos)
    assert fused.video_ids == [str(v) for v in val_videos]
    order = [eval_scores["video_ids"].index(video_id) for video_id in rows]
    assert torch.allclose(fused.scores, eval_scores["scores"][order], atol=1e-6)

    # the command-line tool's prediction is the eval prediction
    assert video in val_videos
    result = tool.finish(timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    lines = lines[lines.index(str(video)) :]
    assert len(lines) == 6, result.stdout
    top1 = lines[1].split("%", 1)[1].strip()
    assert top1 == rows[video_id]["pred_1_name"]
    assert float(lines[1].split("%")[0].split()[-1]) == pytest.approx(100 * float(rows[video_id]["score_1"]), abs=0.01)


def test_load_from_checkpoint_rebuilds_the_trained_classifier(run):
    checkpoint = run["dir"] / "checkpoints" / "last.ckpt"
    model = VideoClassifier.load_from_checkpoint(checkpoint)
    assert isinstance(model, VideoClassifier) and not model.training
    assert len(model.class_names) == 10
    assert torch.equal(model.net.fc.weight, run["fc"])
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        VideoClassifier.load_from_checkpoint(run["tmp"] / "missing.ckpt")


def test_a_checkpoint_without_config_or_damaged_names_the_file(tmp_path):
    official = tmp_path / "resnet_rgb_model_best.pth.tar"
    torch.save({"state_dict": {"module.base_model.conv1.weight": torch.zeros(1)}}, official)
    with pytest.raises(ValueError, match="convert_official"):
        rsa_lightning.load_model(official)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(b"PK\x03\x04 not a whole zip")
    with pytest.raises(ValueError, match="truncated.ckpt could not be read"):
        rsa_lightning.load_model(truncated)


def test_a_checkpoint_of_the_earlier_config_layout_still_evaluates(run, tmp_path):
    """Checkpoints written before the schedule became a partial, the sampler received num_frames from the DataModule
    and the dataset named a checkpoint monitor: their stored config is upgraded when loaded."""
    checkpoint = run["dir"] / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=False)
    model, data = state["config"]["model"], state["config"]["data"]
    scheduler = model.pop("scheduler")
    model.update(
        warmup_epochs=scheduler["warmup_epochs"],
        warmup_start_factor=scheduler["start_factor"],
        min_lr_factor=scheduler["end_factor"],
        schedule_interval=model.pop("scheduler_interval"),
        headline_metric="acc1",
    )
    model["optimizer"]["weight_decay"] = model.pop("weight_decay")
    model["net"]["_target_"] = "rsa_lightning.models.ResNet"
    data["headline_metric"] = data.pop("monitor").split("/")[1]
    data["sampler"]["num_segments"] = data["num_frames"]
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    assert run_eval(old, tmp_path / "old")["acc1"] == run_eval(checkpoint, tmp_path / "new")["acc1"]
    assert isinstance(VideoClassifier.load_from_checkpoint(old), VideoClassifier)


def test_predict_reports_a_video_that_cannot_be_decoded(run, tmp_path):
    checkpoint = run["dir"] / "checkpoints" / "last.ckpt"
    model = rsa_lightning.load_model(checkpoint)
    good = next((run["tmp"] / "synthetic" / "videos").glob("val_*.mp4"))
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "a_good.mp4").write_bytes(good.read_bytes())
    (folder / "b_broken.mp4").write_text("not a video")
    # the command-line tool on the folder, started first (it runs while this process predicts, checked at the end):
    # the good video scored and written, exit code 1 naming the other
    out = tmp_path / "preds.csv"
    tool = Background(
        [sys.executable, "-m", "rsa_lightning.tools.predict", f"ckpt_path={checkpoint}", f"video={folder}"]
        + [f"output={out}", f"hydra.run.dir={tmp_path / 'predict'}"],
        cwd=ROOT,
        env=clean_env(OMP_NUM_THREADS="1"),
    )
    with one_thread():
        both = rsa_lightning.predict_videos(model, folder)
        alone = rsa_lightning.predict_videos(model, folder / "a_good.mp4")
    good_id = str(folder / "a_good.mp4")
    assert both[str(folder / "b_broken.mp4")] == []
    assert both[good_id] == alone[good_id] and len(alone[good_id]) == 5
    with pytest.raises(VideoDecodeError, match="no video could be decoded: .*b_broken.mp4"):
        rsa_lightning.predict_scores(model, folder / "b_broken.mp4")
    result = tool.finish(timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 of 2 videos could not be decoded and are not scored: " in result.stderr
    assert "Traceback" not in result.stderr
    assert "a_good.mp4" in out.read_text()


def test_eval_refuses_another_model_and_an_unknown_split(run, tmp_path):
    checkpoint = run["dir"] / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match="holds another model than model=tsn_tiny builds: .* leave out model=tsn_tiny"):
        run_eval(checkpoint, tmp_path / "a", "model=tsn_tiny")
    with pytest.raises(ValueError, match=r"split=tset is not one of \('train', 'val', 'test'\)"):
        run_eval(checkpoint, tmp_path / "b", "split=tset")
