"""Exact distributed evaluation: ``eval.py trainer=ddp_cpu`` (2 processes, gloo) writes the files of one process.

The split has an odd number of videos (7) and 2 clips x 3 crops, so the views of most videos are spread over both
processes. The DDP run is launched like a user would (``python eval.py ...``): Lightning then re-runs eval.py for
rank 1, which must use the run folder of rank 0 and write nothing into it.

Both runs use one intra-op thread per process: a CPU convolution's float result depends on the number of threads
(Lightning's DDP launcher gives each process cpu_count / processes of them), and this test is about which views are
counted and fused, not about the arithmetic of another thread count.
"""

from __future__ import annotations

import json
import os
import sys

import hydra
import torch
from conftest import NO_PICTURES, ROOT, Background, compose_config, tiny_synthetic_overrides

from rsa_lightning.data.exclusions import write_exclusions
from rsa_lightning.evaluate import evaluate
from rsa_lightning.train import train
from rsa_lightning.utils.config import RANK_ENV, RUN_NAME_ENV


def launcher_free_environment() -> dict[str, str]:
    """This process's environment without any launcher's variables (pytest may itself run inside a SLURM job)."""
    launcher = {*RANK_ENV, RUN_NAME_ENV, "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PL_GLOBAL_SEED"}
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in launcher}


def test_ddp_eval_equals_single_process_eval(tmp_path):
    # a tiny model trained for two steps on the generated data (10 classes x 1 validation video)
    train_overrides = tiny_synthetic_overrides(tmp_path / "synthetic") + [
        "model=rsa_tiny",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "callbacks.model_summary.max_depth=0",
        *NO_PICTURES,
    ]
    cfg = compose_config("train", train_overrides, tmp_path / "run")
    train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    # an odd-sized split: 3 of the 10 validation videos left out by an exclusion list
    records = hydra.utils.instantiate(cfg.data).records("val")
    excluded = [r.video_id for r in records[2:8:2]]
    exclusions = write_exclusions(tmp_path / "exclusions.txt", [("val", v, "", "test") for v in excluded])
    overrides = [
        f"ckpt_path={ckpt}",
        "protocol=accurate",
        f"+data.exclusions_file={exclusions}",  # not a key of the synthetic data config
        "trainer.enable_progress_bar=false",
    ]

    # two processes, launched as a user would; started first, they run while this process evaluates alone
    logs = tmp_path / "logs"
    ddp_eval = Background(
        [sys.executable, str(ROOT / "eval.py"), *overrides, "trainer=ddp_cpu", f"paths.log_dir={logs}"],
        env={**launcher_free_environment(), "OMP_NUM_THREADS": "1"},
    )

    # one process, in this one
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single_overrides = [*overrides, "trainer.accelerator=cpu"]
        metrics = evaluate(compose_config("eval", single_overrides, tmp_path / "single"), overrides=single_overrides)
    finally:
        torch.set_num_threads(threads)
    assert metrics["num_videos"] == 7 and metrics["views_per_video"] == 6 and not metrics["skipped_videos"]

    result = ddp_eval.finish(timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((logs / "eval" / "runs").iterdir())
    assert len(runs) == 1, f"one run folder for all ranks, got {runs}"
    run = runs[0]
    # both ranks gathered all views; rank 1 logs to stdout only and writes nothing into the run folder
    assert result.stdout.count("val: 42 views predicted (21 in this process)") == 2, result.stdout[-3000:]
    plots = [f"confusion_val_{name}.png" for name in ("direction", "matrix", "per_class", "top_confusions")]
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [
            ".hydra",
            "confusion_val.csv",
            "confusion_val.pt",
            *plots,
            "confusion_val_top_confusions.csv",
            "eval.log",
            "metrics_val.json",
            "predictions_val.csv",
            "scores_val.pt",
        ]
    )  # written once, by rank 0
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]

    single, ddp = tmp_path / "single", run
    assert (ddp / "predictions_val.csv").read_bytes() == (single / "predictions_val.csv").read_bytes()
    assert (ddp / "metrics_val.json").read_bytes() == (single / "metrics_val.json").read_bytes()
    assert (ddp / "confusion_val.csv").read_bytes() == (single / "confusion_val.csv").read_bytes()
    ddp_scores, single_scores = torch.load(ddp / "scores_val.pt"), torch.load(single / "scores_val.pt")
    assert ddp_scores["video_ids"] == single_scores["video_ids"]
    assert not set(excluded) & set(ddp_scores["video_ids"])
    assert torch.equal(ddp_scores["scores"], single_scores["scores"])
    assert json.loads((ddp / "metrics_val.json").read_text())["num_videos"] == 7
