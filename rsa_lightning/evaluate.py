"""``evaluate(cfg, overrides)``: rebuild trained runs from their checkpoints, predict a split, fuse views, score, save.

Views (test protocols)
    ``protocol=efficient`` (1 clip x centre crop: the official protocol, the default) or ``protocol=accurate``
    (2 clips x 3 crops) sets ``data.num_clips`` x ``data.num_crops`` from ``protocols`` in ``conf/eval.yaml``. A
    ``data.num_clips`` or ``data.num_crops`` named on the command line wins over the protocol; the metrics then name
    the protocol whose views match, or ``custom``.

Fusion
    Prediction runs through :class:`Predictor`, a wrapper whose ``predict_step`` returns the trained model's *logits*
    for every view (``VideoClassifier.predict_step`` returns probabilities, and log-probabilities are not logits).
    ``fusion=prob`` (default): a video's scores are the mean of its views' softmax probabilities; ``fusion=logit``:
    the softmax of the mean of its views' logits. Either way the fused scores are class probabilities.

Ensembles
    ``ckpt_path=[a,b]`` evaluates every checkpoint on the same split with the same views; a video's ensemble scores
    are the mean of the models' fused probabilities (the paper's 8+16-frame result). Each model reads clips of its own
    run's ``data.num_frames`` unless ``num_frames=[8,16]`` (one value per checkpoint, ``null`` for the run's own; or
    one number for all) says otherwise. All models must have the same class names and score the same videos with the
    same labels; a video that any model could not decode is left out of all.

Exact distributed evaluation
    Under DDP each process predicts a share of the split's views. Every process gathers the per-view logits of all
    processes (``all_gather_object``), drops views seen twice by ``(video_id, view)`` (a padding
    ``DistributedSampler``, Lightning issue #4732, or no distributed sampler at all, only adds such duplicates;
    Lightning's own predict sampler does not pad), orders the videos as the split lists them and fuses each video's
    views in view order: the scores are those of a single-process run (bit for bit when every process computes with
    as many intra-op threads as the single process did: a CPU convolution's rounding depends on the thread count,
    and Lightning's DDP launcher gives each process cpu_count / processes threads unless OMP_NUM_THREADS is set).
    Every video must receive exactly clips x crops views (views 0 .. clips x crops - 1), else a ``ValueError`` names
    the videos; a video any of whose views failed to decode (a sample of another video stood in for it:
    ``replaced``) is not scored and is listed in ``skipped_videos``. Only global rank 0 writes files. Launch DDP with
    ``python eval.py trainer=ddp_cpu`` (or any ``strategy=ddp``): Lightning re-runs eval.py for the other ranks with
    the same ``hydra.run.dir``. ``ddp_spawn`` (and ``ddp_fork``) raise a ``ValueError``: their workers' predictions
    do not come back to the main process.

Metrics (``metrics_<split>.json``)
    ``acc1`` and ``acc5`` (micro: fraction of videos; ``accK`` with K classes when there are fewer than 5) and
    ``mean_class_acc`` (macro: the mean over classes of per-class recall, over the ``classes_in_split`` classes that
    have videos in the split; a class without videos is left out, not counted as 0 or 1), with ``num_videos``,
    ``views_per_video``, ``num_clips``, ``num_crops``, ``protocol``, ``fusion``, ``checkpoints``, ``num_frames`` (per
    checkpoint) and ``skipped_videos``. Unlabelled splits (label -1, e.g. SSv2 test): predictions only, no scores.

Files (in ``cfg.paths.output_dir``)
    ``predictions_<split>.csv``: video id, label, label name, then the ``top_k`` classes (id, name, score) best first;
    ``scores_<split>.pt``: ``torch.load``-able dict with ``video_ids``, ``labels``, ``scores`` (V, K) fused (ensemble)
    probabilities, ``model_scores`` (M, V, K) each checkpoint's fused probabilities, ``class_names`` and the settings;
    ``metrics_<split>.json``.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.strategies.launchers import _MultiProcessingLauncher
from torch import nn

from rsa_lightning.utils.config import merge_run_config, overridden_keys
from rsa_lightning.utils.distributed import gather_objects

log = logging.getLogger(__name__)

FUSIONS = ("prob", "logit")
VIEW_KEYS = ("num_clips", "num_crops")


# --------------------------------------------------------------------------------------------------------------------
# per-view outputs, de-duplication and fusion


@dataclass
class ViewOutputs:
    """Per-view outputs of one model on one split: row ``i`` is view ``views[i]`` of video ``video_ids[i]``.

    ``replaced[i]`` names the video whose sample ``i`` stands in for (that video failed to decode; empty otherwise).
    """

    video_ids: list[str]
    views: torch.Tensor  # (N,) int64
    labels: torch.Tensor  # (N,) int64
    logits: torch.Tensor  # (N, K) float32
    replaced: list[str]

    def __post_init__(self) -> None:
        sizes = {len(self.video_ids), len(self.views), len(self.labels), len(self.logits), len(self.replaced)}
        if len(sizes) != 1:
            raise ValueError(f"ViewOutputs fields differ in length: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.video_ids)

    def select(self, rows: Sequence[int]) -> ViewOutputs:
        index = torch.as_tensor(list(rows), dtype=torch.long)
        return ViewOutputs(
            video_ids=[self.video_ids[i] for i in rows],
            views=self.views[index],
            labels=self.labels[index],
            logits=self.logits[index],
            replaced=[self.replaced[i] for i in rows],
        )

    @classmethod
    def empty(cls) -> ViewOutputs:
        none = torch.zeros(0, dtype=torch.long)
        return cls(video_ids=[], views=none, labels=none, logits=torch.zeros(0, 0), replaced=[])

    @classmethod
    def cat(cls, parts: Sequence[ViewOutputs]) -> ViewOutputs:
        """The rows of ``parts`` one after the other (e.g. the outputs of every process, in rank order)."""
        parts = [p for p in parts if len(p)]  # a process may have received no sample
        if not parts:
            return cls.empty()
        return cls(
            video_ids=[v for p in parts for v in p.video_ids],
            views=torch.cat([p.views for p in parts]),
            labels=torch.cat([p.labels for p in parts]),
            logits=torch.cat([p.logits for p in parts]),
            replaced=[r for p in parts for r in p.replaced],
        )


@dataclass
class FusedScores:
    """One row per video: fused class probabilities ``scores`` (V, K); ``skipped``: videos left out (undecodable)."""

    video_ids: list[str]
    labels: torch.Tensor  # (V,) int64
    scores: torch.Tensor  # (V, K) float32
    skipped: list[str]
    duplicates: int = 0  # views seen twice and dropped

    def without(self, video_ids: Sequence[str]) -> FusedScores:
        """These scores minus the rows of ``video_ids`` (which then count as skipped)."""
        drop = set(video_ids)
        rows = [i for i, v in enumerate(self.video_ids) if v not in drop]
        index = torch.as_tensor(rows, dtype=torch.long)
        return FusedScores(
            video_ids=[self.video_ids[i] for i in rows],
            labels=self.labels[index],
            scores=self.scores[index],
            skipped=sorted(set(self.skipped) | drop),
            duplicates=self.duplicates,
        )


class Predictor(pl.LightningModule):
    """Runs a trained classifier (``model(video) -> (B, K) logits``) over a predict split, one row per view.

    ``predict_step`` returns ``video_id``, ``view``, ``label``, ``replaced`` and the view's ``logits``, all on the
    CPU, ready to be gathered across processes. (``VideoClassifier.predict_step`` returns probabilities, from which
    ``fusion=logit`` could not be computed.)

    ``split`` / ``num_clips`` / ``num_crops``: the views the predict split serves (``VideoDataModule`` builds its
    predict dataset with ``data.num_clips`` x ``data.num_crops`` views of whichever split it predicts).
    """

    def __init__(self, model: nn.Module, *, split: str, num_clips: int, num_crops: int) -> None:
        super().__init__()
        self.model = model
        self.split = split
        self.views = (num_clips, num_crops)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        logits = self.model(batch["video"])  # (B, K)
        n = len(batch["video_id"])
        return {
            "video_id": list(batch["video_id"]),
            "view": torch.as_tensor(batch.get("view", [0] * n), dtype=torch.long).cpu(),
            "label": torch.as_tensor(batch["label"], dtype=torch.long).cpu(),
            "replaced": list(batch.get("replaced", [""] * n)),
            "logits": logits.float().cpu(),
        }


def collect_views(batches: Sequence[dict]) -> ViewOutputs:
    """:class:`Predictor` batch outputs -> :class:`ViewOutputs`."""
    return ViewOutputs.cat(
        [
            ViewOutputs(
                video_ids=b["video_id"], views=b["view"], labels=b["label"], logits=b["logits"], replaced=b["replaced"]
            )
            for b in batches
        ]
    )


def drop_duplicate_views(outputs: ViewOutputs) -> tuple[ViewOutputs, int]:
    """Keep the first row of every ``(video_id, view)``; returns the rows kept and the number dropped.

    A padding ``DistributedSampler`` repeats samples to even out the processes' shares; a copy is the same view of the
    same video, so it must not count twice. Copies must agree on the label.
    """
    first: dict[tuple[str, int], int] = {}
    for i, key in enumerate(zip(outputs.video_ids, outputs.views.tolist())):
        if key not in first:
            first[key] = i
        elif outputs.labels[first[key]] != outputs.labels[i]:
            raise ValueError(
                f"view {key[1]} of video {key[0]} was predicted twice with different labels "
                f"({int(outputs.labels[first[key]])} and {int(outputs.labels[i])}): are two records using one id?"
            )
    return outputs.select(list(first.values())), len(outputs) - len(first)


def _examples(items: Sequence[Any], limit: int = 10) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def fuse_views(
    outputs: ViewOutputs, *, num_views: int, fusion: str = "prob", order: Optional[Sequence[str]] = None
) -> FusedScores:
    """Fuse every video's views into one row of class probabilities.

    1. Samples that stand in for an undecodable video (``replaced``) are dropped, and so is every other view of that
       video: it is reported in ``skipped``, not scored on fewer views.
    2. Duplicate ``(video_id, view)`` rows are dropped (:func:`drop_duplicate_views`).
    3. Every remaining video must have exactly the views ``0 .. num_views - 1``; with ``order`` (the split's video
       ids) every video of it that was not skipped must be present and no other; otherwise ``ValueError`` names them.
    4. ``fusion="prob"``: mean of the views' softmax; ``"logit"``: softmax of the views' mean logits. Views are
       averaged in view order and videos come in ``order`` (else in order of first appearance), so the result does not
       depend on how the views were spread over processes and batches.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    skipped = sorted({r for r in outputs.replaced if r})
    drop = set(skipped)
    kept = [i for i, (v, r) in enumerate(zip(outputs.video_ids, outputs.replaced)) if not r and v not in drop]
    outputs, duplicates = drop_duplicate_views(outputs.select(kept))
    rows: dict[str, list[int]] = {}
    for i, vid in enumerate(outputs.video_ids):
        rows.setdefault(vid, []).append(i)
    if order is None:
        video_ids = list(rows)
    else:
        video_ids = [v for v in dict.fromkeys(order) if v not in drop]
        missing = [v for v in video_ids if v not in rows]
        unexpected = sorted(set(rows) - set(video_ids))
        if missing:
            raise ValueError(
                f"{len(missing)} videos of the split received no views (lost between processes, or cut off by "
                f"trainer.limit_predict_batches / fast_dev_run?): {_examples(missing)}"
            )
        if unexpected:
            raise ValueError(f"{len(unexpected)} predicted videos are not in the split: {_examples(unexpected)}")
    if not video_ids:
        raise ValueError("no view was decoded: every sample of the split was replaced (see the warnings above)")
    view_of = outputs.views.tolist()
    wrong = []
    for vid in video_ids:
        views = sorted(view_of[i] for i in rows[vid])
        if views != list(range(num_views)):
            wrong.append(f"{vid} (views {views})")
    if wrong:
        raise ValueError(
            f"{len(wrong)} videos did not receive exactly the {num_views} views 0..{num_views - 1} "
            f"(data.num_clips x data.num_crops): {_examples(wrong)}"
        )
    fused, labels = [], []
    for vid in video_ids:
        idx = sorted(rows[vid], key=view_of.__getitem__)
        logits = outputs.logits[idx]  # (views, K)
        fused.append(logits.softmax(dim=-1).mean(dim=0) if fusion == "prob" else logits.mean(dim=0).softmax(dim=-1))
        labels.append(outputs.labels[idx[0]])
    return FusedScores(video_ids, torch.stack(labels), torch.stack(fused), skipped, duplicates)


def ensemble(members: Sequence[FusedScores]) -> FusedScores:
    """Average the fused probabilities of several models of the same videos, classes and labels.

    A video skipped by any model is left out of all. Raises ``ValueError`` naming the videos the models disagree on.
    """
    if not members:
        raise ValueError("ensemble of no model")
    skipped = sorted(set().union(*(m.skipped for m in members)))
    members = [m.without(skipped) for m in members]
    first = members[0]
    for i, m in enumerate(members[1:], start=2):
        if m.video_ids != first.video_ids:
            only_first = sorted(set(first.video_ids) - set(m.video_ids))
            only_other = sorted(set(m.video_ids) - set(first.video_ids))
            detail = "; ".join(
                f"only model {j} has {_examples(only)}" for j, only in ((1, only_first), (i, only_other)) if only
            )
            raise ValueError(
                f"the models score different videos ({detail or 'the same ones in another order'}); "
                "evaluate them on the same split"
            )
        if m.scores.shape[1] != first.scores.shape[1]:
            raise ValueError(f"model 1 has {first.scores.shape[1]} classes but model {i} has {m.scores.shape[1]}")
        if not torch.equal(m.labels, first.labels):
            bad = [v for v, a, b in zip(first.video_ids, first.labels, m.labels) if a != b]
            raise ValueError(f"models 1 and {i} read different labels for {_examples(bad)}")
    scores = torch.stack([m.scores for m in members]).mean(dim=0)  # (V, K)
    return FusedScores(first.video_ids, first.labels, scores, skipped, sum(m.duplicates for m in members))


# --------------------------------------------------------------------------------------------------------------------
# metrics and files


def topk_predictions(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) scores -> the top-``min(k, K)`` scores and class ids per row, best first."""
    return probs.topk(min(k, probs.shape[1]), dim=1)


def accuracy_at(probs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores (micro average over videos)."""
    _, ids = topk_predictions(probs, k)
    return (ids == labels[:, None]).any(dim=1).float().mean().item()


def mean_class_accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the classes present in ``labels`` of the fraction of their videos predicted right (top-1 recall).

    Classes without videos in the split are left out (their recall is undefined), unlike a torchmetrics macro
    accuracy over all ``K`` classes.
    """
    _, ids = topk_predictions(probs, 1)
    correct = (ids[:, 0] == labels).float()
    recalls = torch.stack([correct[labels == c].mean() for c in labels.unique()])
    return recalls.mean().item()


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``acc1``, ``acc5`` (``accK`` for fewer than 5 classes), ``mean_class_acc`` and ``classes_in_split``."""
    top = min(5, probs.shape[1])
    return {
        "acc1": accuracy_at(probs, labels, 1),
        f"acc{top}": accuracy_at(probs, labels, top),
        "mean_class_acc": mean_class_accuracy(probs, labels),
        "classes_in_split": int(labels.unique().numel()),
    }


def write_predictions(
    path: Path,
    video_ids: Sequence[str],
    labels: torch.Tensor,
    probs: torch.Tensor,
    class_names: Sequence[str],
    k: int,
) -> None:
    """One row per video: id, label, label name, then the top-k classes (id, name, score), best first."""
    scores, ids = topk_predictions(probs, k)
    name = (lambda i: class_names[i] if i >= 0 else "") if class_names else (lambda i: "")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        header = ["video_id", "label", "label_name"]
        for r in range(1, ids.shape[1] + 1):
            header += [f"pred_{r}", f"pred_{r}_name", f"score_{r}"]
        writer.writerow(header)
        for i, vid in enumerate(video_ids):
            row = [vid, int(labels[i]), name(int(labels[i]))]
            for c, s in zip(ids[i].tolist(), scores[i].tolist()):
                row += [c, name(c), f"{s:.6f}"]
            writer.writerow(row)


# --------------------------------------------------------------------------------------------------------------------
# configuration


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by ``train.py`` (it must hold ``state_dict`` and the run's ``config``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path} does not exist: pass a .ckpt file from <run dir>/checkpoints/")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    missing = [k for k in ("state_dict", "config") if k not in checkpoint]
    if missing:
        raise ValueError(
            f"{path} has no {' or '.join(missing)}: it was not written by rsa_lightning's train.py, so the model "
            "cannot be rebuilt from it"
        )
    return checkpoint


def checkpoint_paths(ckpt_path: Any) -> list[str]:
    """``ckpt_path=a`` or ``ckpt_path=[a,b]`` -> the list of checkpoint paths, each checked to exist."""
    paths = [str(p) for p in ckpt_path] if isinstance(ckpt_path, (ListConfig, list, tuple)) else [str(ckpt_path)]
    if not paths:
        raise ValueError("ckpt_path=[] names no checkpoint")
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"ckpt_path={path} does not exist: pass a .ckpt file from <run dir>/checkpoints/")
    return paths


def resolve_views(cfg: DictConfig, overrides: Sequence[str] = ()) -> tuple[int, int, str]:
    """``(num_clips, num_crops, protocol name)`` of the evaluation.

    ``cfg.protocol`` names an entry of ``cfg.protocols`` (``{num_clips, num_crops}``); ``data.num_clips`` or
    ``data.num_crops`` named in ``overrides`` replace the protocol's value. The name returned is that of the protocol
    whose views match (``cfg.protocol`` first), else ``"custom"``.
    """
    protocols = cfg.get("protocols") or {}
    name = cfg.get("protocol")
    if name not in protocols:
        raise ValueError(f"protocol={name} is not one of {list(protocols)} (the protocols of conf/eval.yaml)")
    views = {key: int(protocols[name][key]) for key in VIEW_KEYS}
    for key in overridden_keys(overrides):
        if key in ("data.num_clips", "data.num_crops"):
            views[key.split(".")[1]] = int(OmegaConf.select(cfg, key))
    clips, crops = views["num_clips"], views["num_crops"]
    candidates = [name] + [n for n in protocols if n != name]
    matching = (n for n in candidates if (int(protocols[n].num_clips), int(protocols[n].num_crops)) == (clips, crops))
    return clips, crops, next(matching, "custom")


def frames_per_model(cfg: DictConfig, overrides: Sequence[str], num_models: int) -> list[Optional[int]]:
    """``num_frames`` of ``cfg`` as one value per checkpoint (None: the run's own, or ``data.num_frames=`` if named)."""
    value = cfg.get("num_frames")
    if value is None:
        return [None] * num_models
    if "data.num_frames" in overridden_keys(overrides):
        raise ValueError("give the clip length as num_frames=... or as data.num_frames=..., not both")
    values = list(value) if isinstance(value, (ListConfig, list, tuple)) else [value] * num_models
    if len(values) != num_models:
        raise ValueError(
            f"num_frames={list(values)} has {len(values)} values for {num_models} checkpoints: give one per "
            "checkpoint (null: the run's own) or a single number for all"
        )
    return [None if v is None else int(v) for v in values]


def set_num_frames(data: DictConfig, num_frames: int, saved: Optional[int]) -> None:
    """Clip length ``num_frames`` in a run's data config whose stored clip length is ``saved``.

    A checkpoint stores its config resolved, so the sampler's ``num_segments`` / ``num_frames`` (interpolated from
    ``data.num_frames`` in ``conf/data/sampler/``) no longer follow ``data.num_frames``: sampler keys equal to
    ``saved`` are set too.
    """
    data.num_frames = num_frames
    sampler = data.get("sampler")
    if isinstance(sampler, DictConfig):
        for key in ("num_segments", "num_frames"):
            if key in sampler and sampler[key] == saved:
                sampler[key] = num_frames


# --------------------------------------------------------------------------------------------------------------------
# evaluation


def check_same_classes(first: Sequence[str], other: Sequence[str], first_path: str, other_path: str) -> None:
    """An ensemble's models must have the same class names, in the same order."""
    if list(other) != list(first):
        differ = [f"{j}: {a!r} vs {b!r}" for j, (a, b) in enumerate(zip(first, other)) if a != b]
        raise ValueError(
            f"{other_path} has other classes than {first_path} ({len(other)} vs {len(first)} names; "
            f"{_examples(differ, 5)}): an ensemble needs models of the same classes"
        )


def predict_views(
    trainer: pl.Trainer, run_cfg: DictConfig, checkpoint: dict[str, Any], split: str
) -> tuple[ViewOutputs, Optional[list[str]], list[str]]:
    """Predict ``split`` with the checkpoint's model; returns the views of *all* processes, the split's video ids in
    list order (None when the data module does not expose them) and the class names."""
    datamodule: pl.LightningDataModule = hydra.utils.instantiate(run_cfg.data)
    model: pl.LightningModule = hydra.utils.instantiate(run_cfg.model)
    model.load_state_dict(checkpoint["state_dict"])
    model.on_load_checkpoint(checkpoint)
    predictor = Predictor(model, split=split, num_clips=run_cfg.data.num_clips, num_crops=run_cfg.data.num_crops)
    batches = trainer.predict(model=predictor, datamodule=datamodule, return_predictions=True)
    local = collect_views(batches or [])
    parts = gather_objects(local)
    if trainer.world_size > 1 and len(parts) == 1:
        raise RuntimeError(
            f"{trainer.world_size} processes predicted, but this one has no process group to gather their views "
            "from; use strategy=ddp (e.g. trainer=ddp_cpu), launched by `python eval.py ...`"
        )
    log.info(
        "%s: %d views predicted by %d process(es): %s", split, sum(map(len, parts)), len(parts), [len(p) for p in parts]
    )
    dataset = getattr(datamodule, "datasets", {}).get(split)
    order = [r.video_id for r in dataset.records] if hasattr(dataset, "records") else None
    class_names = list(checkpoint.get("class_names") or getattr(datamodule, "class_names", []))
    return ViewOutputs.cat(parts), order, class_names


def evaluate(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` (one checkpoint or a list: an ensemble) on ``cfg.split``; see the module docstring.

    Writes predictions, scores and metrics into ``cfg.paths.output_dir`` (global rank 0 only) and returns the metrics
    plus ``predictions_file`` and ``scores_file`` (on every rank).
    """
    paths = checkpoint_paths(cfg.ckpt_path)
    fusion = cfg.get("fusion", "prob")
    if fusion not in FUSIONS:
        raise ValueError(f"fusion={fusion} is not one of {FUSIONS}")
    num_clips, num_crops, protocol = resolve_views(cfg, overrides)
    frames = frames_per_model(cfg, overrides, len(paths))
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], enable_model_summary=False)
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        raise ValueError(
            "trainer.strategy=ddp_spawn (or another strategy that starts worker processes: ddp_fork, "
            "ddp_notebook) is not supported by eval.py: the workers' predictions do not come back to this process. "
            "Use strategy=ddp (e.g. trainer=ddp_cpu)"
        )

    members: list[FusedScores] = []
    class_names: list[str] = []
    used_frames: list[int] = []
    for i, (path, num_frames) in enumerate(zip(paths, frames)):
        checkpoint = load_checkpoint(path)
        run_cfg = merge_run_config(checkpoint["config"], cfg, overrides)
        run_cfg.data.predict_split = cfg.split
        run_cfg.data.num_clips, run_cfg.data.num_crops = num_clips, num_crops
        saved = checkpoint["config"]["data"].get("num_frames")
        num_frames = run_cfg.data.get("num_frames") if num_frames is None else num_frames
        if num_frames != saved:
            set_num_frames(run_cfg.data, num_frames, saved)
        log.info(
            "model %d/%d: %s, %s frames, %d clips x %d crops", i + 1, len(paths), path, num_frames, num_clips, num_crops
        )
        if i > 0 and checkpoint.get("class_names"):  # known before predicting: fail before the work
            check_same_classes(class_names, list(checkpoint["class_names"]), paths[0], path)
        outputs, order, names = predict_views(trainer, run_cfg, checkpoint, cfg.split)
        fused = fuse_views(outputs, num_views=num_clips * num_crops, fusion=fusion, order=order)
        if fused.duplicates:
            log.info("dropped %d duplicate views (padding of a distributed sampler)", fused.duplicates)
        if i == 0:
            class_names = names
        check_same_classes(class_names, names, paths[0], path)
        members.append(fused)
        used_frames.append(int(num_frames))
        del checkpoint
    result = ensemble(members)
    if result.skipped:
        log.warning("%d videos could not be decoded and are not scored: %s", len(result.skipped), result.skipped)

    metrics: dict[str, Any] = {
        "split": cfg.split,
        "num_videos": len(result.video_ids),
        "views_per_video": num_clips * num_crops,
        "num_clips": num_clips,
        "num_crops": num_crops,
        "protocol": protocol,
        "fusion": fusion,
        "checkpoints": paths,
        "num_frames": used_frames,
        "skipped_videos": result.skipped,
    }
    labelled = result.labels >= 0
    if labelled.all():
        metrics.update(classification_metrics(result.scores, result.labels))
    elif labelled.any():
        raise ValueError(f"the {cfg.split} split mixes labelled and unlabelled videos; cannot score it")
    else:
        log.info("the %s split has no labels: predictions only", cfg.split)

    output_dir = Path(cfg.paths.output_dir)
    files = {
        "predictions_file": output_dir / f"predictions_{cfg.split}.csv",
        "scores_file": output_dir / f"scores_{cfg.split}.pt",
    }
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        k = int(cfg.get("top_k", 5))
        write_predictions(files["predictions_file"], result.video_ids, result.labels, result.scores, class_names, k)
        scores = {
            "video_ids": result.video_ids,
            "labels": result.labels,
            "scores": result.scores,
            "model_scores": torch.stack([m.without(result.skipped).scores for m in members]),  # (M, V, K)
            "class_names": class_names,
            **{key: metrics[key] for key in ("split", "protocol", "num_clips", "num_crops", "fusion", "checkpoints")},
            "num_frames": used_frames,
        }
        torch.save(scores, files["scores_file"])
        (output_dir / f"metrics_{cfg.split}.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return {**metrics, **{key: str(path) for key, path in files.items()}}
