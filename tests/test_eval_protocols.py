"""eval.py's protocols, view fusion, view-count checks, de-duplication across processes, metrics and ensembles."""

from __future__ import annotations

import csv
import json
import math

import hydra
import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_config, tiny_synthetic_overrides
from torch.utils.data.distributed import DistributedSampler

from rsa_lightning.evaluate import evaluate, frames_per_model, resolve_views
from rsa_lightning.evaluation.metrics import classification_metrics, confusion_matrix, mean_class_accuracy
from rsa_lightning.evaluation.views import FusedScores, ViewOutputs, drop_duplicate_views, ensemble, fuse_views
from rsa_lightning.utils.config import resolved_container


def views_table(video_ids, num_views, num_classes=5, seed=0, labels=None) -> ViewOutputs:
    """Every view of every video, in dataset order (index = video * num_views + view), with random logits."""
    g = torch.Generator().manual_seed(seed)
    n = len(video_ids) * num_views
    labels = labels or [i % num_classes for i in range(len(video_ids))]
    return ViewOutputs(
        video_ids=[v for v in video_ids for _ in range(num_views)],
        views=torch.arange(num_views).repeat(len(video_ids)),
        labels=torch.tensor([lab for lab in labels for _ in range(num_views)]),
        logits=torch.randn(n, num_classes, generator=g) * 3,
        replaced=[""] * n,
    )


# ---------------------------------------------------------------------------------------------------------------------
# protocols and clip lengths (the composed eval config, no checkpoint)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], (1, 1, "efficient")),
        (["protocol=accurate"], (2, 3, "accurate")),
        (["protocol=accurate", "data.num_clips=1"], (1, 3, "custom")),  # an explicit data.num_clips wins
        (["data.num_clips=2", "data.num_crops=3"], (2, 3, "accurate")),  # named after the views it has
        (["protocol=efficient", "data.num_crops=3"], (1, 3, "custom")),
    ],
)
def test_protocol_sets_the_views_unless_given_explicitly(overrides, expected, tmp_path):
    cfg = compose_config("eval", ["ckpt_path=x.ckpt", *overrides], tmp_path)
    assert resolve_views(cfg, overrides) == expected


def test_unknown_protocol_names_the_choices(tmp_path):
    cfg = compose_config("eval", ["ckpt_path=x.ckpt", "protocol=fast"], tmp_path)
    with pytest.raises(ValueError, match=r"protocol=fast is not one of \['efficient', 'accurate'\]"):
        resolve_views(cfg, ["protocol=fast"])


def test_frames_per_model(tmp_path):
    def frames(overrides, n):
        return frames_per_model(compose_config("eval", ["ckpt_path=x", *overrides], tmp_path), overrides, n)

    assert frames([], 2) == [None, None]  # each checkpoint's own data.num_frames
    assert frames(["num_frames=[8,16]"], 2) == [8, 16]
    assert frames(["num_frames=[null,16]"], 2) == [None, 16]
    assert frames(["num_frames=8"], 2) == [8, 8]
    with pytest.raises(ValueError, match="3 values for 2 checkpoints"):
        frames(["num_frames=[8,16,32]"], 2)
    with pytest.raises(ValueError, match="not both"):
        frames(["num_frames=[8,16]", "data.num_frames=8"], 2)


# ---------------------------------------------------------------------------------------------------------------------
# fusion
# ---------------------------------------------------------------------------------------------------------------------


def test_prob_and_logit_fusion_follow_their_definitions_and_can_disagree():
    # one confident view for class 1 against two moderate views for class 0
    logits = torch.tensor([[0.0, 10.0], [3.0, 0.0], [3.0, 0.0]])
    outputs = ViewOutputs(["v"] * 3, torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0]), logits, [""] * 3)
    prob = fuse_views(outputs, num_views=3, fusion="prob").scores[0]
    logit = fuse_views(outputs, num_views=3, fusion="logit").scores[0]
    p0 = (1 / (1 + math.exp(10)) + 2 * math.exp(3) / (math.exp(3) + 1)) / 3  # mean of the views' softmax
    assert prob.tolist() == pytest.approx([p0, 1 - p0], abs=1e-6)
    q0 = 1 / (1 + math.exp(10 / 3 - 2))  # softmax of the mean logits [2, 10/3]
    assert logit.tolist() == pytest.approx([q0, 1 - q0], abs=1e-6)
    assert prob.argmax() == 0 and logit.argmax() == 1
    with pytest.raises(ValueError, match="fusion must be one of"):
        fuse_views(outputs, num_views=3, fusion="max")


@pytest.mark.parametrize("fusion", ["prob", "logit"])
def test_fusion_does_not_depend_on_the_order_the_views_arrive_in(fusion):
    ids = [f"vid{i}" for i in range(5)]
    table = views_table(ids, num_views=6)
    reference = fuse_views(table, num_views=6, fusion=fusion, order=ids)
    shuffled = table.select(torch.randperm(len(table), generator=torch.Generator().manual_seed(1)).tolist())
    fused = fuse_views(shuffled, num_views=6, fusion=fusion, order=ids)
    assert fused.video_ids == ids
    assert torch.equal(fused.scores, reference.scores)  # bit for bit: the same sums in the same order
    assert torch.equal(fused.labels, torch.tensor([0, 1, 2, 3, 4]))
    assert torch.allclose(fused.scores.sum(dim=1), torch.ones(5))
    # without the split's order, videos come sorted by id (the same order however the views were spread)
    assert fuse_views(shuffled, num_views=6, fusion=fusion).video_ids == sorted(ids)


# ---------------------------------------------------------------------------------------------------------------------
# view counts, skipped videos, duplicates
# ---------------------------------------------------------------------------------------------------------------------


def test_a_video_with_missing_or_extra_views_is_an_error_naming_it():
    ids = ["a", "b", "c"]
    table = views_table(ids, num_views=6)
    missing = table.select([i for i in range(len(table)) if i != 8])  # view 2 of "b"
    with pytest.raises(
        ValueError, match=r"1 videos did not receive exactly the 6 views 0\.\.5.*b \(views \[0, 1, 3, 4, 5\]\)"
    ):
        fuse_views(missing, num_views=6, order=ids)
    with pytest.raises(ValueError, match=r"3 videos did not receive exactly the 4 views"):
        fuse_views(table, num_views=4, order=ids)  # 6 views each where 4 were expected


def test_a_video_of_the_split_without_views_or_one_outside_it_is_an_error():
    table = views_table(["a", "b", "c"], num_views=2)
    without_c = table.select(list(range(4)))
    with pytest.raises(ValueError, match=r"1 videos of the split received no views .*: c"):
        fuse_views(without_c, num_views=2, order=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"1 predicted videos are not in the split: c"):
        fuse_views(table, num_views=2, order=["a", "b"])


def test_a_video_with_a_replaced_view_is_skipped_not_scored_on_fewer_views():
    table = views_table(["a", "b", "c"], num_views=2)
    # view 1 of "b" failed to decode: the next video's ("c") view 1 stood in for it
    table.video_ids[3], table.replaced[3] = "c", "b"
    fused = fuse_views(table, num_views=2, order=["a", "b", "c"])
    assert fused.video_ids == ["a", "c"] and fused.skipped == ["b"]
    reference = fuse_views(views_table(["a", "b", "c"], num_views=2), num_views=2)
    assert torch.equal(fused.scores, reference.scores[[0, 2]])  # the stand-in never joins "c"'s views


@pytest.mark.parametrize("num_views, num_replicas", [(1, 2), (1, 4), (6, 4), (6, 5)])
def test_padding_duplicates_of_a_distributed_sampler_are_counted_once(num_views, num_replicas):
    """Simulate the gathered outputs of ``num_replicas`` processes fed by torch's padding DistributedSampler
    (Lightning issue #4732) on a split of 7 videos: the fused result equals the single-process one exactly."""
    ids = [f"vid{i}" for i in range(7)]
    table = views_table(ids, num_views=num_views)
    shares = [
        list(DistributedSampler(range(len(table)), num_replicas=num_replicas, rank=r, shuffle=False))
        for r in range(num_replicas)
    ]
    padding = sum(map(len, shares)) - len(table)
    assert padding > 0, "the case must contain duplicates"
    gathered = ViewOutputs.cat([table.select(share) for share in shares])
    single = fuse_views(table, num_views=num_views, order=ids)
    fused = fuse_views(gathered, num_views=num_views, order=ids)
    assert fused.duplicates == padding and single.duplicates == 0
    assert fused.video_ids == ids and torch.equal(fused.scores, single.scores)
    assert torch.equal(fused.labels, single.labels)


def test_unpadded_interleaved_shares_with_an_empty_process_are_fused_exactly():
    """Lightning's predict sampler: rank r gets indices r, r + world, ...; with more processes than samples some
    get nothing."""
    ids = ["a", "b", "c"]
    table = views_table(ids, num_views=1)
    shares = [list(range(r, len(table), 4)) for r in range(4)]  # [[0], [1], [2], []]
    gathered = ViewOutputs.cat([table.select(s) for s in shares])
    assert torch.equal(fuse_views(gathered, num_views=1, order=ids).scores, fuse_views(table, num_views=1).scores)


def test_duplicates_must_agree_on_the_label():
    table = views_table(["a", "b"], num_views=1)
    copy = table.select([0])
    copy.labels[0] = 4
    kept, dropped = drop_duplicate_views(ViewOutputs.cat([table, table]))
    assert dropped == 2 and kept.video_ids == ["a", "b"]
    with pytest.raises(ValueError, match="view 0 of video a was predicted twice with different labels"):
        drop_duplicate_views(ViewOutputs.cat([table, copy]))


# ---------------------------------------------------------------------------------------------------------------------
# metrics, ensembles of fused scores
# ---------------------------------------------------------------------------------------------------------------------


def test_mean_class_accuracy_averages_the_recall_of_the_scored_classes():
    # 4 classes, class 3 has no video and is never predicted; class 0: 3 of 4 right, class 1: 0 of 1, class 2: 1 of 1
    labels = torch.tensor([0, 0, 0, 0, 1, 2])
    predicted = torch.tensor([0, 0, 0, 2, 0, 2])
    probs = torch.nn.functional.one_hot(predicted, 4).float() * 0.7 + 0.075
    assert mean_class_accuracy(confusion_matrix(predicted, labels, 4)) == pytest.approx((3 / 4 + 0 + 1) / 3)
    metrics = classification_metrics(probs, labels)
    assert metrics["acc1"] == pytest.approx(4 / 6)  # micro: per video
    assert metrics["classes_in_split"] == 3 and "acc5" not in metrics  # 4 classes: top-5 would be 1 by construction


def test_ensemble_averages_fused_probabilities_and_checks_videos_and_labels():
    a = fuse_views(views_table(["x", "y", "z"], num_views=2, seed=0), num_views=2)
    b = fuse_views(views_table(["x", "y", "z"], num_views=2, seed=1), num_views=2)
    both = ensemble([a, b])
    assert torch.allclose(both.scores, (a.scores + b.scores) / 2)
    assert ensemble([a]).scores.equal(a.scores)
    # a video one model skipped is left out of all
    b_skipped = FusedScores(b.video_ids[:2], b.labels[:2], b.scores[:2], ["z"])
    assert ensemble([a, b_skipped]).video_ids == ["x", "y"] and ensemble([a, b_skipped]).skipped == ["z"]
    other = fuse_views(views_table(["x", "y", "w"], num_views=2), num_views=2)
    with pytest.raises(ValueError, match=r"different videos \(only model 1 has z; only model 2 has w\)"):
        ensemble([a, other])
    relabelled = fuse_views(views_table(["x", "y", "z"], num_views=2, labels=[0, 1, 4]), num_views=2)
    with pytest.raises(ValueError, match="models 1 and 2 read different labels for z"):
        ensemble([a, relabelled])


# ---------------------------------------------------------------------------------------------------------------------
# evaluate() on checkpoints: protocols, fusion, ensembles with their own clip lengths
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint as train.py writes it (resolved config, weights, class names) of an untrained rsa_tiny at
    4 frames on the tiny synthetic data (10 classes x 1 val video)."""
    tmp = tmp_path_factory.mktemp("protocols")
    cfg = compose_config("train", tiny_synthetic_overrides(tmp / "synthetic") + ["model=rsa_tiny"], tmp / "run")
    pl.seed_everything(0)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    weights = hydra.utils.instantiate(cfg.model).state_dict()
    weights["net.fc.weight"] *= 2000  # logits far from uniform: fusion and ensembling choices then show in the scores
    state = {
        "state_dict": weights,
        "config": resolved_container(cfg),
        "class_names": datamodule.load_class_names(),
    }
    path = tmp / "model.ckpt"
    torch.save(state, path)
    return path


def run_eval(tmp_path, name, *overrides):
    overrides = [*overrides, "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]
    out = tmp_path / name
    metrics = evaluate(compose_config("eval", overrides, out), overrides=overrides)
    return metrics, torch.load(out / "scores_val.pt"), out


def test_protocol_and_fusion_reach_the_predictions(checkpoint, tmp_path):
    prob, prob_scores, out = run_eval(tmp_path, "prob", f"ckpt_path={checkpoint}", "protocol=accurate")
    logit, logit_scores, _ = run_eval(tmp_path, "logit", f"ckpt_path={checkpoint}", "protocol=accurate", "fusion=logit")
    efficient, efficient_scores, _ = run_eval(tmp_path, "efficient", f"ckpt_path={checkpoint}")
    assert json.loads((out / "metrics_val.json").read_text()) == {
        k: v for k, v in prob.items() if k not in ("predictions_file", "scores_file")
    }
    assert (prob["num_clips"], prob["num_crops"], prob["views_per_video"], prob["protocol"]) == (2, 3, 6, "accurate")
    assert (efficient["views_per_video"], efficient["protocol"]) == (1, "efficient")
    assert prob["fusion"] == "prob" and logit["fusion"] == "logit" and prob["num_frames"] == [4]
    assert prob["num_videos"] == 10 and {"acc1", "acc5", "mean_class_acc", "classes_scored"} <= set(prob)
    # three different computations of the same videos
    assert not torch.allclose(prob_scores["scores"], logit_scores["scores"], rtol=0, atol=1e-3)
    assert not torch.allclose(prob_scores["scores"], efficient_scores["scores"], rtol=0, atol=1e-3)
    assert prob_scores["scores"].shape == (10, 10) and len(prob_scores["class_names"]) == 10
    rows = list(csv.DictReader((out / "predictions_val.csv").read_text().splitlines()))
    assert [r["video_id"] for r in rows] == prob_scores["video_ids"]
    for row, scores in zip(rows, prob_scores["scores"]):
        assert float(row["score_1"]) == pytest.approx(float(scores.max()), abs=1e-6)
        assert row["pred_1_name"] == prob_scores["class_names"][int(row["pred_1"])]


def test_ensemble_averages_models_at_their_own_frame_counts(checkpoint, tmp_path):
    ckpt8 = tmp_path / "model8.ckpt"  # the same weights, run at 8 frames
    state = torch.load(checkpoint, weights_only=False)
    state["config"]["data"]["num_frames"] = 8  # the DataModule hands it to the sampler
    torch.save(state, ckpt8)
    _, at4, _ = run_eval(tmp_path, "at4", f"ckpt_path={checkpoint}")
    _, at8, _ = run_eval(tmp_path, "at8", f"ckpt_path={checkpoint}", "num_frames=8")
    metrics, both, _ = run_eval(tmp_path, "both", f"ckpt_path=[{checkpoint},{ckpt8}]")
    assert not torch.allclose(at4["scores"], at8["scores"]), "num_frames=8 must change the clips"
    assert metrics["num_frames"] == [4, 8] and metrics["checkpoints"] == [str(checkpoint), str(ckpt8)]
    assert torch.equal(both["model_scores"][0], at4["scores"]) and torch.equal(both["model_scores"][1], at8["scores"])
    assert torch.equal(both["scores"], torch.stack([at4["scores"], at8["scores"]]).mean(dim=0))
    # per-model frame counts given on the command line: the first model at 8 too
    metrics, same, _ = run_eval(tmp_path, "both8", f"ckpt_path=[{checkpoint},{ckpt8}]", "num_frames=[8,null]")
    assert metrics["num_frames"] == [8, 8] and torch.equal(same["model_scores"][0], at8["scores"])


def test_ensemble_members_must_share_classes_and_videos(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=False)
    renamed = dict(state, class_names=["other"] + state["class_names"][1:])
    torch.save(renamed, tmp_path / "renamed.ckpt")
    with pytest.raises(
        ValueError, match=r"renamed.ckpt has other classes .*0: 'Moving something from left to right' vs 'other'"
    ):
        run_eval(tmp_path, "e1", f"ckpt_path=[{checkpoint},{tmp_path / 'renamed.ckpt'}]")
    datamodule = hydra.utils.instantiate(state["config"]["data"])
    first = datamodule.records("val")[0].video_id
    (tmp_path / "excluded.txt").write_text(f"val\t{first}\tx\ttest\n")
    fewer = dict(state, config={**state["config"], "data": {**state["config"]["data"]}})
    fewer["config"]["data"]["exclusions_file"] = str(tmp_path / "excluded.txt")
    torch.save(fewer, tmp_path / "fewer.ckpt")
    with pytest.raises(ValueError, match=f"different videos \\(only model 1 has {first}\\)"):
        run_eval(tmp_path, "e2", f"ckpt_path=[{checkpoint},{tmp_path / 'fewer.ckpt'}]")
