"""``evaluate(cfg, overrides)``: checkpoint -> run config -> ``trainer.predict`` -> fuse -> ensemble -> metrics, files.

The views, fusion, metrics and files are those of :mod:`rsa_lightning.evaluation`, the same functions validation
and ``test_after_training`` use, so ``eval.py`` reports the numbers training logged for the same weights and views.

Views (test protocols)
    By default (``protocol=null``) a split is evaluated with the views the run evaluated it with: the test split with
    the run's ``data.num_clips`` x ``data.num_crops``, the validation split with one view (or those views when the run
    set ``data.multi_view_val``), so ``eval.py`` reproduces what training logged. ``protocol=efficient`` (1 clip x
    centre crop: the official protocol) or ``protocol=accurate`` (2 clips x 3 crops) sets the views from ``protocols``
    in ``conf/eval.yaml``. A ``data.num_clips`` or ``data.num_crops`` named on the command line wins over both; the
    metrics name the protocol whose views match, or ``custom``. An ensemble uses the first checkpoint's run views
    (a warning names a member whose run used others).

Fusion
    ``fusion=prob`` (default): a video's scores are the mean of its views' softmax probabilities; ``fusion=logit``:
    the softmax of the mean of its views' logits (:func:`rsa_lightning.evaluation.views.fuse_views`).

Ensembles
    ``ckpt_path=[a,b]`` evaluates every checkpoint on the same split with the same views; a video's ensemble scores
    are the mean of the models' fused probabilities (the paper's 8+16-frame result). Each model reads clips of its own
    run's ``data.num_frames`` unless ``num_frames=[8,16]`` (one value per checkpoint, ``null`` for the run's own; or
    one number for all) says otherwise. All models must have the same class names and score the same videos with the
    same labels; a video that any model could not decode is left out of all.

Configs and command line
    The model and data are built from the checkpoint's own config (:func:`rsa_lightning.utils.config.merge_run_config`);
    a key or group named on the command line replaces the run's: ``data.root=...``, ``data=ssv2``, and the nested
    groups ``data/backend=pyav`` or ``data/sampler=dense``. A backend that cannot read the split's entries (the frames
    backend on video files, a video backend on frame folders) is refused before any work. ``model=...`` must build the
    checkpoint's network: otherwise a ``CheckpointError`` names both models.

Class sets
    The checkpoint's class names must be the dataset's, in the same order (``class_map=strict``); otherwise the
    evaluation is refused before predicting, with the difference listed. ``class_map=by_name`` scores a dataset whose
    classes are a subset of the checkpoint's (any order): each view's logits are restricted to the dataset's classes,
    in the dataset's order, before fusion, i.e. the model's classifier keeps only those rows; the scores, predictions
    and metrics are then over the dataset's classes. A dataset without class names (``class_<i>`` placeholders) or a
    checkpoint without them is compared by class count only.

Exact distributed evaluation
    Under DDP each process predicts a share of the split's views; every process gathers all views, drops padding
    duplicates by ``(video_id, view)`` and fuses each video's views in view order (:mod:`rsa_lightning.evaluation.
    views`): the scores are those of a single-process run (bit for bit when every process computes with as many
    intra-op threads as the single process did: a CPU convolution's rounding depends on the thread count, and
    Lightning's DDP launcher gives each process cpu_count / processes threads unless OMP_NUM_THREADS is set).
    Every video must receive exactly clips x crops views, else a ``ValueError`` names the videos; a video any of whose
    views failed to decode is not scored and is listed in ``skipped_videos``. Only global rank 0 writes files.
    Launch DDP with ``python eval.py trainer=ddp_cpu`` (or any ``strategy=ddp``); ``ddp_spawn`` (and ``ddp_fork``)
    raise a ``ValueError``: their workers' predictions do not come back to the main process.

Metrics (``metrics_<split>.json``; definitions in :mod:`rsa_lightning.evaluation.metrics`)
    ``acc1``, ``acc5`` (more than 5 classes), ``mean_class_acc`` (the official RSA / mmaction2 definition: per-class
    recall over the classes among the labels or the predictions), ``num_videos``, ``classes_in_split``,
    ``classes_scored``, with ``views_per_video``, ``num_clips``, ``num_crops``, ``protocol``, ``fusion``,
    ``checkpoints``, ``num_frames`` (per checkpoint) and ``skipped_videos``. Unlabelled splits (label -1, e.g. SSv2
    test): predictions only, no scores.

Files (in ``cfg.paths.output_dir``)
    ``predictions_<split>.csv``: video id, label, label name, then the ``top_k`` classes (id, name, score) best first;
    ``scores_<split>.pt``: ``torch.load``-able dict with ``video_ids``, ``labels``, ``scores`` (V, K) fused (ensemble)
    probabilities, ``model_scores`` (M, V, K) each checkpoint's fused probabilities, ``class_names`` and the settings;
    ``metrics_<split>.json``; for a labelled split with finite scores ``confusion_<split>.csv`` / ``.pt`` (the (K, K)
    matrix, rows true, columns predicted) and, unless ``plots=false``, its plots next to it:
    ``confusion_<split>_matrix.png``, ``..._direction.png``, ``..._per_class.png``, ``..._top_confusions.png`` and
    ``..._top_confusions.csv`` (:mod:`rsa_lightning.visualization.evaluation_plots`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.strategies.launchers import _MultiProcessingLauncher

from rsa_lightning.config_checks import check_eval_config
from rsa_lightning.data.datamodule import check_backend_reads
from rsa_lightning.errors import CheckpointError, ConfigError, MissingFileError
from rsa_lightning.evaluation import writers
from rsa_lightning.evaluation.checkpoints import load_checkpoint, model_from_config, model_overrides, run_config
from rsa_lightning.evaluation.metrics import score_videos
from rsa_lightning.evaluation.views import (
    FUSIONS,
    FusedScores,
    ViewOutputs,
    ensemble,
    examples,
    fuse_views,
    gather_views,
)
from rsa_lightning.utils.config import is_launched_as_rank_zero, merge_run_config, overridden_keys
from rsa_lightning.utils.distributed import is_distributed

log = logging.getLogger(__name__)

VIEW_KEYS = ("num_clips", "num_crops")
SPLITS = ("train", "val", "test")
CLASS_MAPS = ("strict", "by_name")
LISTED = 3


def checkpoint_paths(ckpt_path: Any) -> list[str]:
    """``ckpt_path=a`` or ``ckpt_path=[a,b]`` -> the list of checkpoint paths, each checked to exist."""
    paths = [str(p) for p in ckpt_path] if isinstance(ckpt_path, (ListConfig, list, tuple)) else [str(ckpt_path)]
    if not paths:
        raise ConfigError("ckpt_path=[] names no checkpoint")
    for path in paths:
        if not Path(path).exists():
            raise MissingFileError(f"ckpt_path={path} does not exist: pass a .ckpt file from <run dir>/checkpoints/")
    return paths


def run_views(run_cfg: DictConfig, split: str) -> tuple[int, int]:
    """``(num_clips, num_crops)`` the run evaluated ``split`` with: its test views for "test" (and for "val" with
    ``data.multi_view_val``), else one view (``VideoDataModule.build_dataset``)."""
    data = run_cfg.data
    if split == "test" or (split == "val" and data.get("multi_view_val", False)):
        return int(data.get("num_clips", 1)), int(data.get("num_crops", 1))
    return 1, 1


def resolve_views(
    cfg: DictConfig, overrides: Sequence[str] = (), default: tuple[int, int] = (1, 1)
) -> tuple[int, int, str]:
    """``(num_clips, num_crops, protocol name)`` of the evaluation.

    ``cfg.protocol`` names an entry of ``cfg.protocols`` (``{num_clips, num_crops}``), or is None for ``default`` (the
    run's own views, :func:`run_views`); ``data.num_clips`` or ``data.num_crops`` named in ``overrides`` replace
    them. The name returned is that of the protocol whose views match (``cfg.protocol`` first), else ``"custom"``.
    """
    protocols = cfg.get("protocols") or {}
    name = cfg.get("protocol")
    if name is not None and name not in protocols:
        raise ConfigError(f"protocol={name} is not one of {list(protocols)} (the protocols of conf/eval.yaml)")
    views = dict(zip(VIEW_KEYS, default)) if name is None else {key: int(protocols[name][key]) for key in VIEW_KEYS}
    for key in overridden_keys(overrides):
        if key in ("data.num_clips", "data.num_crops"):
            views[key.split(".")[1]] = int(OmegaConf.select(cfg, key))
    clips, crops = views["num_clips"], views["num_crops"]
    candidates = ([name] if name else []) + [n for n in protocols if n != name]
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


def check_same_classes(first: Sequence[str], other: Sequence[str], first_path: str, other_path: str) -> None:
    """An ensemble's models must have the same class names, in the same order."""
    if list(other) != list(first):
        differ = [f"{j}: {a!r} vs {b!r}" for j, (a, b) in enumerate(zip(first, other)) if a != b]
        raise CheckpointError(
            f"{other_path} has other classes than {first_path} ({len(other)} vs {len(first)} names; "
            f"{examples(differ, 5)}): an ensemble needs models of the same classes"
        )


def _quoted(names: Sequence[str]) -> str:
    return examples([repr(n) for n in names], LISTED)


def is_unnamed(names: Sequence[str]) -> bool:
    """True for no names, or the ``class_<i>`` placeholders of a list dataset without a class-name file."""
    return list(names) == [f"class_{i}" for i in range(len(names))]


def class_columns(
    model_names: Sequence[str],
    num_outputs: int,
    data_names: Sequence[str],
    *,
    class_map: str = "strict",
    path: str = "the checkpoint",
    dataset: str = "the dataset",
) -> Optional[list[int]]:
    """The checkpoint's output column of every dataset class, or None when they are the same classes (same ids).

    ``class_map="strict"``: the names must be equal, in order, else ``CheckpointError`` listing the difference (counts,
    a few names only in either, or the same names in another order). ``"by_name"``: every dataset class must be among
    the checkpoint's; returns their columns in the dataset's order. Without names on either side
    (:func:`is_unnamed`) only the counts are compared (``num_outputs``: the model's number of classes).
    """
    if class_map not in CLASS_MAPS:
        raise ConfigError(f"class_map={class_map} is not one of {CLASS_MAPS}")
    model_names, data_names = list(model_names), list(data_names)
    named = not is_unnamed(model_names) and not is_unnamed(data_names)
    if class_map == "by_name":
        if not named:
            which = "the checkpoint stores" if is_unnamed(model_names) else f"{dataset} has"
            raise ConfigError(
                f"class_map=by_name: {which} no class names to match (give the dataset's class-name file, e.g. "
                "data.annotations.class_names_file=..., or convert the checkpoint with --class-names)"
            )
        columns = {name: j for j, name in enumerate(model_names)}
        missing = [n for n in data_names if n not in columns]
        if missing:
            raise CheckpointError(
                f"class_map=by_name: {len(missing)} of the {len(data_names)} classes of {dataset} are not among the "
                f"{len(model_names)} classes of {path} ({_quoted(missing)}): the model cannot score them; evaluate "
                "on a dataset of its classes"
            )
        if len(set(model_names)) < len(model_names):
            raise CheckpointError(f"class_map=by_name: {path} lists a class name twice: names cannot be matched")
        mapped = [columns[n] for n in data_names]
        return None if mapped == list(range(num_outputs)) else mapped
    if not named:
        if num_outputs == len(data_names):
            log.warning(
                "%s or %s names no classes: assuming the dataset's class ids are the model's (%d classes)",
                path,
                dataset,
                num_outputs,
            )
            return None
        raise CheckpointError(
            f"{path} has {num_outputs} classes but {dataset} has {len(data_names)}: evaluate on the dataset it was "
            "trained on"
        )
    if model_names == data_names:
        return None
    only_model = [n for n in model_names if n not in set(data_names)]
    only_data = [n for n in data_names if n not in set(model_names)]
    if not only_model and not only_data and len(model_names) == len(data_names):
        j = next(i for i, (a, b) in enumerate(zip(model_names, data_names)) if a != b)
        difference = (
            f"the same {len(model_names)} names in another order (class {j} is {model_names[j]!r} in the checkpoint, "
            f"{data_names[j]!r} in the dataset)"
        )
    else:
        difference = f"{len(model_names)} classes in the checkpoint, {len(data_names)} in the dataset"
        if only_model:
            difference += f"; {len(only_model)} only in the checkpoint ({_quoted(only_model)})"
        if only_data:
            difference += f"; {len(only_data)} only in the dataset ({_quoted(only_data)})"
    fix = (
        "class_map=by_name scores the dataset's classes only, matched by name"
        if not only_data
        else "class_map=by_name cannot help: the model has no output for the classes only in the dataset"
    )
    raise CheckpointError(
        f"{path} was trained on other classes than {dataset}: {difference}. Evaluate on the dataset it was trained on "
        f"(data.root=..., data=...), or: {fix}"
    )


def dataset_class_names(data_cfg: DictConfig) -> list[str]:
    """The class names of the dataset ``data_cfg`` describes, from its annotations alone (a generated dataset is made
    first, by the first process of a run), whatever ``data.num_classes`` says (:func:`class_columns` compares)."""
    data_cfg = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True))
    root = Path(data_cfg.root)
    if data_cfg.get("prepare") is not None and is_launched_as_rank_zero(os.environ):
        hydra.utils.instantiate(data_cfg.prepare)(root=root)
    annotations = data_cfg.annotations
    if annotations.get("num_classes") is not None and annotations.get("class_names_file") is not None:
        annotations.num_classes = None  # the file's count, compared with the checkpoint's by class_columns
    return list(hydra.utils.instantiate(annotations)(root=root).class_names())


def predict_split(
    trainer: pl.Trainer,
    run_cfg: DictConfig,
    checkpoint: dict[str, Any],
    *,
    fusion: str,
    datamodule: Optional[pl.LightningDataModule] = None,
    columns: Optional[Sequence[int]] = None,
    path: str = "the checkpoint",
    changed_by: tuple[str, ...] = (),
) -> tuple[FusedScores, list[str]]:
    """Predict ``run_cfg.data.predict_split`` with every view and fuse it: the fused scores (the same on every
    process) and the class names. ``columns``: the model's outputs to keep, in order (``class_map=by_name``: the
    dataset's classes; the class names are then the dataset's)."""
    if datamodule is None:
        datamodule = hydra.utils.instantiate(run_cfg.data)
    model = model_from_config(run_cfg.model, checkpoint, path=path, changed_by=changed_by)
    batches = trainer.predict(model=model, datamodule=datamodule, return_predictions=True)
    local = ViewOutputs.cat(batches or [])
    outputs = gather_views(local)
    if columns is not None and len(outputs):
        outputs = dataclasses.replace(outputs, logits=outputs.logits[:, list(columns)])
    if trainer.world_size > 1 and not is_distributed():
        raise RuntimeError(
            f"{trainer.world_size} processes predicted, but this one has no process group to gather their views "
            "from; use strategy=ddp (e.g. trainer=ddp_cpu), launched by `python eval.py ...`"
        )
    split = run_cfg.data.predict_split
    log.info("%s: %d views predicted (%d in this process)", split, len(outputs), len(local))
    dataset = datamodule.datasets.get("predict") if hasattr(datamodule, "datasets") else None
    order = [r.video_id for r in dataset.records] if hasattr(dataset, "records") else None
    num_views = int(run_cfg.data.num_clips) * int(run_cfg.data.num_crops)
    fused = fuse_views(outputs, num_views=num_views, fusion=fusion, order=order)
    if fused.duplicates:
        log.info("dropped %d duplicate views (padding of a distributed sampler)", fused.duplicates)
    if columns is not None:
        return fused, list(datamodule.class_names)
    class_names = list(checkpoint.get("class_names") or getattr(datamodule, "class_names", []))
    return fused, class_names


def evaluate(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` (one checkpoint or a list: an ensemble) on ``cfg.split``; see the module docstring.

    Writes predictions, scores and metrics into ``cfg.paths.output_dir`` (global rank 0 only) and returns the metrics
    plus ``predictions_file`` and ``scores_file`` (on every rank).
    """
    check_eval_config(cfg)  # before any heavy work: ckpt_path set, a trainer this machine can run
    paths = checkpoint_paths(cfg.ckpt_path)
    fusion = cfg.get("fusion", "prob")
    if fusion not in FUSIONS:
        raise ConfigError(f"fusion={fusion} is not one of {FUSIONS}")
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split} is not one of {SPLITS}")
    class_map = cfg.get("class_map") or "strict"
    if class_map not in CLASS_MAPS:
        raise ConfigError(f"class_map={class_map} is not one of {CLASS_MAPS} (see conf/eval.yaml)")
    changed_by = model_overrides(overrides)
    first = load_checkpoint(paths[0])
    default_views = run_views(run_config(first), cfg.split)
    num_clips, num_crops, protocol = resolve_views(cfg, overrides, default_views)
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
    readers: dict[str, list[str]] = {"backend": [], "sampler": []}  # per checkpoint, as num_frames
    for i, (path, num_frames) in enumerate(zip(paths, frames)):
        checkpoint = first if i == 0 else load_checkpoint(path)
        own_views = run_views(run_config(checkpoint), cfg.split)
        if cfg.get("protocol") is None and own_views != default_views:
            log.warning(
                "%s evaluated the %s split with %d x %d views, the first checkpoint with %d x %d: every model uses "
                "the first one's (give protocol=... or data.num_clips / data.num_crops to choose)",
                path,
                cfg.split,
                *own_views,
                *default_views,
            )
        run_cfg = merge_run_config(run_config(checkpoint), cfg, overrides)
        run_cfg.data.predict_split = cfg.split
        run_cfg.data.num_clips, run_cfg.data.num_crops = num_clips, num_crops
        if num_frames is not None:
            run_cfg.data.num_frames = num_frames  # the DataModule hands it to the sampler
        num_frames = int(run_cfg.data.num_frames)
        log.info(
            "model %d/%d: %s, %d frames, %d clips x %d crops", i + 1, len(paths), path, num_frames, num_clips, num_crops
        )
        if i > 0 and checkpoint.get("class_names") and class_map == "strict":  # fail before the work
            check_same_classes(class_names, list(checkpoint["class_names"]), paths[0], path)
        # known before predicting: the dataset's classes against the checkpoint's, the backend against the files
        data_names = dataset_class_names(run_cfg.data)
        num_outputs = int(OmegaConf.select(run_cfg, "model.num_classes", default=None) or run_cfg.data.num_classes)
        columns = class_columns(
            list(checkpoint.get("class_names") or []),
            num_outputs,
            data_names,
            class_map=class_map,
            path=path,
            dataset=f"the dataset at data.root={run_cfg.data.root}",
        )
        if columns is not None:
            log.info(
                "class_map=by_name: the %d classes of the dataset are scored with outputs %s of the model's %d",
                len(columns),
                examples([str(c) for c in columns], 10),
                num_outputs,
            )
            run_cfg.data.num_classes = len(data_names)
            if OmegaConf.select(run_cfg, "data.annotations.num_classes") is not None:
                run_cfg.data.annotations.num_classes = len(data_names)
        datamodule = hydra.utils.instantiate(run_cfg.data)
        check_backend_reads(datamodule, cfg.split)
        fused, names = predict_split(
            trainer,
            run_cfg,
            checkpoint,
            fusion=fusion,
            datamodule=datamodule,
            columns=columns,
            path=path,
            changed_by=changed_by,
        )
        if i == 0:
            class_names = names
        check_same_classes(class_names, names, paths[0], path)
        members.append(fused)
        used_frames.append(num_frames)
        for key, used in readers.items():  # which decoder and sampler read the videos (data/backend=, data/sampler=)
            used.append(str(OmegaConf.select(run_cfg, f"data.{key}._target_", default=None)).rsplit(".", 1)[-1])
        del checkpoint
        first = None
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
        "backend": readers["backend"],
        "sampler": readers["sampler"],
        "skipped_videos": result.skipped,
    }
    scores, confusion = score_videos(result.scores, result.labels)
    if not scores:
        log.info("the %s split has no labels: predictions only", cfg.split)
    metrics.update(scores)

    files = writers.split_files(Path(cfg.paths.output_dir), cfg.split)
    if trainer.is_global_zero:
        model_scores = torch.stack([m.without(result.skipped).scores for m in members])  # (M, V, K)
        writers.write_split_results(
            Path(cfg.paths.output_dir),
            cfg.split,
            result,
            class_names,
            metrics,
            top_k=int(cfg.get("top_k", 5)),
            model_scores=model_scores,
        )
        if confusion is not None and not metrics.get("nonfinite_videos"):  # no ranking of NaN scores: no matrix
            writers.write_confusion(files["confusion_file"], confusion, class_names)
            if cfg.plots:
                from rsa_lightning.visualization.evaluation_plots import write_evaluation_plots

                write_evaluation_plots(files["confusion_file"], confusion, class_names)
    return {**metrics, **{key: str(files[key]) for key in ("predictions_file", "scores_file")}}
