"""Top-k classes of any video file with a trained model (the single-video demo of mmaction2 / PySlowFast)::

    python -m rsa_lightning.tools.predict ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt video=clip.mp4
    python -m rsa_lightning.tools.predict ckpt_path=... video=/data/clips num_clips=2 num_crops=3 output=preds.csv

Options in ``conf/predict.yaml``. A video is read and scored exactly as ``eval.py`` scores it inside a dataset
(:func:`rsa_lightning.predict_scores`), with the run's decoder and sampler unless the command line names another,
as in ``eval.py``: ``data/backend=pyav``, ``data/sampler=dense``. Prints one block per video; a video that cannot be
decoded is reported and the others are still scored (and written to ``output``); the exit code is then 1. Bad input
(a missing or unusable checkpoint, no video) ends with one ``error:`` line and exit code 2
(:mod:`rsa_lightning.errors`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig

from rsa_lightning.errors import handle_errors, run_hydra_main
from rsa_lightning.evaluation import writers
from rsa_lightning.inference import load_model, predict_scores, top_classes
from rsa_lightning.utils.config import task_overrides

log = logging.getLogger(__name__)


def format_predictions(video_id: str, names: list[str], scores: list[float]) -> str:
    """``video_id`` then one line per class: rank, probability in percent, class name."""
    lines = [video_id] + [f"  {r}. {100 * s:6.2f}%  {n}" for r, (n, s) in enumerate(zip(names, scores), start=1)]
    return "\n".join(lines)


def predict(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, list[tuple[str, float]]]:
    """Run ``conf/predict.yaml``'s job: ``{video id: [(class name, probability), ...]}`` best first. ``overrides``:
    the command line, whose ``data`` groups and keys replace the run's (``data/backend=pyav``)."""
    videos = list(cfg.video) if isinstance(cfg.video, ListConfig) else str(cfg.video)
    model = load_model(
        cfg.ckpt_path,
        num_frames=cfg.get("num_frames"),
        device=cfg.get("device", "cpu"),
        composed=cfg,
        overrides=overrides,
    )
    fused = predict_scores(
        model,
        videos,
        num_clips=int(cfg.num_clips),
        num_crops=int(cfg.num_crops),
        fusion=cfg.fusion,
        batch_size=int(cfg.batch_size),
    )
    results = top_classes(fused, model.class_names, int(cfg.top_k))
    for vid, top in results.items():
        if top:
            print(format_predictions(vid, [n for n, _ in top], [s for _, s in top]))  # the tool's output
        else:
            print(f"{vid}\n  could not be decoded (see the warning above): not scored")
    if cfg.get("output"):
        path = Path(cfg.output)
        writers.write_predictions(path, fused.video_ids, fused.labels, fused.scores, model.class_names, int(cfg.top_k))
        log.info("predictions written to %s", path)
    return results


@hydra.main(version_base="1.3", config_path="../../conf", config_name="predict")
@handle_errors  # bad input: one message and exit code 2 (rsa_lightning.errors)
def main(cfg: DictConfig) -> None:
    results = predict(cfg, overrides=task_overrides())
    failed = [vid for vid, top in results.items() if not top]
    if failed:  # as extract_frames / reencode_videos: the others are done, the exit code says not all
        shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        print(
            f"{len(failed)} of {len(results)} videos could not be decoded and are not scored: {shown}", file=sys.stderr
        )
        sys.exit(1)


if __name__ == "__main__":
    run_hydra_main(main)
