"""Per-view outputs, exact de-duplication across processes, and fusion of a video's views.

Every evaluation in rsa_lightning (validation during training, ``test_after_training``, ``eval.py``, the ``predict``
tool) produces one row per *view* (a temporal clip x spatial crop of a video: ``data.num_clips`` x
``data.num_crops`` views, view ``clip * num_crops + crop``) and fuses them by video with :func:`fuse_views`.

Exact under DDP
    Each process sees a share of the views. :func:`gather_views` gives every process the rows of all processes
    (``all_gather_object``); :func:`fuse_views` then drops views seen twice by ``(video_id, view)`` identity (a
    padding ``DistributedSampler`` repeats samples to even out the shares, Lightning issue #4732), orders the videos
    and fuses each video's views in view order, so the result equals a single-process run's and every video counts
    once. Every process computes the same result (and fails the same way).

Fusion (``fusion=prob|logit``)
    ``prob`` (default; TSN/TSM/the official RSA test script average the views' softmax scores): a video's scores are
    the mean of its views' softmax probabilities; ``logit``: the softmax of the mean of its views' logits. Either way
    the fused scores are class probabilities (V, K).

Undecodable videos
    A sample that stands in for a video that failed to decode carries that video's id in ``replaced``
    (:class:`rsa_lightning.data.dataset.VideoDataset`); the stand-in is dropped and so is every other view of the
    failed video: it is listed in ``skipped``, never scored on fewer views.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from rsa_lightning.utils.distributed import gather_objects

log = logging.getLogger(__name__)

FUSIONS = ("prob", "logit")


@dataclass
class ViewOutputs:
    """Per-view outputs of one model on one split: row ``i`` is view ``views[i]`` of video ``video_ids[i]``.

    Fields: ``video_ids`` (N,) str; ``views`` (N,) int64; ``labels`` (N,) int64 (-1: unlabelled); ``logits`` (N, K)
    float32 on the CPU; ``replaced`` (N,) str, the id of the video sample ``i`` stands in for (empty otherwise).
    """

    video_ids: list[str]
    views: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
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


def batch_views(batch: dict, logits: torch.Tensor, *, fallback_id: Optional[str] = None) -> ViewOutputs:
    """The :class:`ViewOutputs` rows of one evaluated batch: ``batch`` as the data loaders yield it (``video_id``,
    ``view``, ``label``, ``replaced``; see :class:`rsa_lightning.data.dataset.VideoDataset`) and its (B, K) logits.

    A batch without ``video_id`` (a user's own data module) gets ids ``<fallback_id>/<i>``; such ids cannot be
    recognised across processes, so padding duplicates of a distributed sampler would then count twice.
    """
    n = len(logits)
    if "video_id" in batch:
        ids = [str(v) for v in batch["video_id"]]
    elif fallback_id is not None:
        ids = [f"{fallback_id}/{i}" for i in range(n)]
    else:
        raise KeyError("the batch has no 'video_id': evaluation needs one id per sample")
    return ViewOutputs(
        video_ids=ids,
        views=torch.as_tensor(batch.get("view", [0] * n), dtype=torch.long).cpu(),
        labels=torch.as_tensor(batch["label"], dtype=torch.long).cpu(),
        logits=logits.detach().float().cpu(),
        replaced=[str(r) for r in batch.get("replaced", [""] * n)],
    )


@dataclass
class ViewCollector:
    """Accumulates the per-view rows of one evaluation epoch in one process (kept on the CPU)."""

    parts: list[ViewOutputs] = field(default_factory=list)

    def add(self, outputs: ViewOutputs) -> None:
        self.parts.append(outputs)

    def local(self) -> ViewOutputs:
        return ViewOutputs.cat(self.parts)

    def reset(self) -> None:
        self.parts.clear()


def gather_views(local: ViewOutputs) -> ViewOutputs:
    """The rows of every process, in rank order, on every process (``local`` itself outside DDP)."""
    return ViewOutputs.cat(gather_objects(local))


@dataclass
class FusedScores:
    """One row per video: fused class probabilities ``scores`` (V, K) float32, ``labels`` (V,) int64.

    ``skipped``: videos left out because one of their views failed to decode; ``duplicates``: views seen twice and
    dropped; ``views``: the de-duplicated per-view rows the scores were fused from (e.g. for the loss).
    """

    video_ids: list[str]
    labels: torch.Tensor
    scores: torch.Tensor
    skipped: list[str]
    duplicates: int = 0
    views: Optional[ViewOutputs] = None

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


def drop_duplicate_views(outputs: ViewOutputs) -> tuple[ViewOutputs, int]:
    """Keep the first row of every ``(video_id, view)``; returns the rows kept and the number dropped.

    A padding ``DistributedSampler`` repeats samples to even out the processes' shares; a copy is the same view of the
    same video, so it must not count twice. Copies must agree on the label (``ValueError`` otherwise).
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


def examples(items: Sequence[Any], limit: int = 10) -> str:
    """``a, b, c, ... (N more)``: the first ``limit`` items of a list for an error message."""
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def fuse_views(
    outputs: ViewOutputs,
    *,
    num_views: Optional[int],
    fusion: str = "prob",
    order: Optional[Sequence[str]] = None,
) -> FusedScores:
    """Fuse every video's views into one row of class probabilities.

    1. Samples that stand in for an undecodable video (``replaced``) are dropped, and so is every other view of that
       video: it is reported in ``skipped``, not scored on fewer views.
    2. Duplicate ``(video_id, view)`` rows are dropped (:func:`drop_duplicate_views`).
    3. With ``num_views``, every remaining video must have exactly the views ``0 .. num_views - 1``; with ``order``
       (the split's video ids) every video of it that was not skipped must be present and no other. ``ValueError``
       names the videos otherwise. (``num_views=None``, ``order=None``: a partial pass, e.g. the sanity check or
       ``limit_val_batches``, fuses whatever views arrived.)
    4. ``fusion="prob"``: mean of the views' softmax; ``"logit"``: softmax of the views' mean logits. Views are
       averaged in view order and videos come in ``order`` (else sorted by id), so the result does not depend on how
       the views were spread over processes and batches.
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
        video_ids = sorted(rows)
    else:
        video_ids = [v for v in dict.fromkeys(order) if v not in drop]
        missing = [v for v in video_ids if v not in rows]
        unexpected = sorted(set(rows) - set(video_ids))
        if missing:
            raise ValueError(
                f"{len(missing)} videos of the split received no views (lost between processes, or cut off by "
                f"trainer.limit_*_batches / fast_dev_run?): {examples(missing)}"
            )
        if unexpected:
            raise ValueError(f"{len(unexpected)} predicted videos are not in the split: {examples(unexpected)}")
    if not video_ids:
        raise ValueError("no view was decoded: every sample of the split was replaced (see the warnings above)")
    view_of = outputs.views.tolist()
    if num_views is not None:
        wrong = []
        for vid in video_ids:
            views = sorted(view_of[i] for i in rows[vid])
            if views != list(range(num_views)):
                wrong.append(f"{vid} (views {views})")
        if wrong:
            raise ValueError(
                f"{len(wrong)} videos did not receive exactly the {num_views} views 0..{num_views - 1} "
                f"(data.num_clips x data.num_crops): {examples(wrong)}"
            )
    fused, labels, used = [], [], []
    for vid in video_ids:
        idx = sorted(rows[vid], key=view_of.__getitem__)
        logits = outputs.logits[idx]  # (views, K)
        fused.append(logits.softmax(dim=-1).mean(dim=0) if fusion == "prob" else logits.mean(dim=0).softmax(dim=-1))
        labels.append(outputs.labels[idx[0]])
        used += idx
    return FusedScores(
        video_ids, torch.stack(labels), torch.stack(fused), skipped, duplicates, views=outputs.select(used)
    )


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
                f"only model {j} has {examples(only)}" for j, only in ((1, only_first), (i, only_other)) if only
            )
            raise ValueError(
                f"the models score different videos ({detail or 'the same ones in another order'}); "
                "evaluate them on the same split"
            )
        if m.scores.shape[1] != first.scores.shape[1]:
            raise ValueError(f"model 1 has {first.scores.shape[1]} classes but model {i} has {m.scores.shape[1]}")
        if not torch.equal(m.labels, first.labels):
            bad = [v for v, a, b in zip(first.video_ids, first.labels, m.labels) if a != b]
            raise ValueError(f"models 1 and {i} read different labels for {examples(bad)}")
    scores = torch.stack([m.scores for m in members]).mean(dim=0)  # (V, K)
    return FusedScores(first.video_ids, first.labels, scores, skipped, sum(m.duplicates for m in members))
