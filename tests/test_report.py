"""The run report (rsa_lightning/tools/report.py): a markdown table whose numbers are those of the runs' files, a
curves PNG, sweeps expanded into their jobs, broken runs reported, and a non-run path refused with one line.

One rsa_tiny run is trained (2 tiny epochs, in this process) and its ``result.json`` written as train.py writes it;
a second run is a copy with edited files (model tsn_tiny, other numbers, ``train/clips_per_s`` logged), so the two
rows differ in every column the report reads. A real sweep of train.py and eval.py as subprocesses is ``slow``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY_TRAINING, compose_config, tiny_synthetic_overrides

from rsa_lightning.errors import USER_ERROR_EXIT, run_cli
from rsa_lightning.tools.report import CURVES_FILE, REPORT_FILE, main

CLIPS_PER_S = (12.0, 20.0)  # epochs 0 and 1 of the edited copy: median 16.0


def tiny_overrides(data_root: Path, model: str) -> list[str]:
    return [
        *tiny_synthetic_overrides(data_root),
        f"model={model}",
        *TINY_TRAINING,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=1",
    ]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or ()), list(reader)


def write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def edit_json(path: Path, **changes) -> dict:
    data = json.loads(path.read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = data
        for parent in parents:
            node = node[parent]
        node[key] = value
    path.write_text(json.dumps(data))
    return data


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """``rsa``: a trained run folder with ``result.json``; ``tsn``: its copy edited to another model and numbers."""
    from rsa_lightning.train import train, write_result

    tmp = tmp_path_factory.mktemp("report")
    overrides = tiny_overrides(tmp / "synthetic", "rsa_tiny")
    cfg = compose_config("train", overrides, tmp / "rsa")
    start = time.time()
    metrics = train(cfg)
    result = tmp / "rsa" / "result.json"
    write_result(result, status="completed", cfg=cfg, overrides=overrides, start=start, metrics=metrics)

    tsn = tmp / "tsn"
    shutil.copytree(tmp / "rsa", tsn)
    edit_json(
        tsn / "result.json",
        overrides=[o.replace("model=rsa_tiny", "model=tsn_tiny") for o in overrides],
        time_min=3.25,
        best_epoch=0,
    )
    edit_json(tsn / "run_info.json", params__total=1_234_567, cost__gmacs_per_view=0.5)
    columns, rows = read_csv(tsn / "csv" / "metrics.csv")
    val_rows = [r for r in rows if r["val/acc1"]]
    train_rows = [r for r in rows if r["train/loss_epoch"]]
    assert len(val_rows) == len(train_rows) == 2, "two epochs of training and validation expected"
    for row, (acc1, acc5, mean_class) in zip(val_rows, ((0.875, 1.0, 0.8), (0.625, 0.75, 0.5))):
        row.update({"val/acc1": str(acc1), "val/acc5": str(acc5), "val/mean_class_acc": str(mean_class)})
    # train/clips_per_s per epoch; epoch 1 is logged twice (a resumed epoch): its later row counts
    train_rows[0]["train/clips_per_s"], train_rows[1]["train/clips_per_s"] = str(CLIPS_PER_S[0]), "999"
    rows.insert(rows.index(train_rows[1]) + 1, dict(train_rows[1], **{"train/clips_per_s": str(CLIPS_PER_S[1])}))
    write_csv(tsn / "csv" / "metrics.csv", [*columns, "train/clips_per_s"], rows)
    return {"rsa": tmp / "rsa", "tsn": tsn}


def parse_table(markdown: str) -> list[dict[str, str]]:
    """The first markdown table of ``markdown`` as one dict per row (keys: the header cells)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert set(lines[1].replace("|", "").split()) <= {"---", "---:"}, "second line must be the alignment row"
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def expected_row(run_dir: Path) -> dict[str, float | str]:
    """The numbers the report must show for a run, read straight from its files."""
    _, rows = read_csv(run_dir / "csv" / "metrics.csv")
    val = {int(r["epoch"]): r for r in rows if r["val/acc1"]}
    last = max(val)
    result = json.loads((run_dir / "result.json").read_text())
    info = json.loads((run_dir / "run_info.json").read_text())
    best = result["best_epoch"]
    rates = {int(r["epoch"]): float(r["train/clips_per_s"]) for r in rows if r.get("train/clips_per_s")}
    return {
        "evaluated": f"val, epoch {last + 1}/2 (last)",  # counted from 1 of trainer.max_epochs=2
        "top-1 (%)": 100 * float(val[last]["val/acc1"]),
        "top-5 (%)": 100 * float(val[last]["val/acc5"]),
        "mean class (%)": 100 * float(val[last]["val/mean_class_acc"]),
        "best": 100 * float(val[best]["val/acc1"]),
        "best epoch": best,
        "params (M)": info["params"]["total"] / 1e6,
        "GMACs/view": info["cost"]["gmacs_per_view"],
        "frames": info["data"]["num_frames"],
        "wall-clock (min)": result["time_min"],
        "clips/s": statistics.median(rates.values()) if rates else None,
    }


def check_row(row: dict[str, str], run_dir: Path) -> None:
    want = expected_row(run_dir)
    assert row["evaluated"] == want["evaluated"]
    for key in ("top-1 (%)", "top-5 (%)", "mean class (%)"):
        assert float(row[key]) == pytest.approx(want[key], abs=0.005), key
    best, epoch = row["best val top-1 (%)"].split(" ", 1)
    assert float(best) == pytest.approx(want["best"], abs=0.005) and epoch == f"(epoch {want['best epoch'] + 1})"
    assert float(row["params (M)"]) == pytest.approx(want["params (M)"], rel=5e-3)
    assert float(row["GMACs/view"]) == pytest.approx(want["GMACs/view"], rel=5e-3)
    assert int(row["frames"]) == want["frames"]
    assert row["views"] == "1x1"  # validation during training: one centre view
    assert float(row["wall-clock (min)"]) == pytest.approx(want["wall-clock (min)"], abs=0.05)
    if want["clips/s"] is None:
        assert row["clips/s"] == "n/a"
    else:
        assert float(row["clips/s"]) == pytest.approx(want["clips/s"], rel=5e-3)


def test_table_of_two_runs_has_their_files_numbers(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(runs["rsa"]), str(runs["tsn"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    written = (out / REPORT_FILE).read_text()
    assert printed == written
    rows = parse_table(written)
    assert [r["model"] for r in rows] == ["rsa_tiny", "tsn_tiny"]
    assert "run" not in rows[0]  # the labels are the model names: no separate column
    for row, name in zip(rows, ("rsa", "tsn")):
        check_row(row, runs[name])
    assert rows[1]["clips/s"] == "16.0"  # epoch 1's later row
    assert rows[1]["top-1 (%)"] == "62.50" and rows[1]["best val top-1 (%)"] == "87.50 (epoch 1)"
    assert f"`rsa_tiny`: `{runs['rsa'].resolve()}`" in written and f"`tsn_tiny`: `{runs['tsn'].resolve()}`" in written
    assert "Overrides of every training run: `data.root=" in written and "model=" not in written.split("Runs:")[0]


def test_curves_png_is_a_valid_image_with_every_run(runs, tmp_path):
    from PIL import Image

    main([str(runs["rsa"]), str(runs["tsn"]), "--out", str(tmp_path)])
    with Image.open(tmp_path / CURVES_FILE) as image:
        assert image.format == "PNG"
        image.load()
        pixels = set(image.convert("RGB").getdata())
    assert image.width >= 800 and image.height >= 300
    # one colour per run (matplotlib's tab10: blue, then orange), drawn as curves and legend markers
    assert (31, 119, 180) in pixels and (255, 127, 14) in pixels


def test_sweep_folder_is_expanded_into_its_jobs_and_gets_the_report(runs, tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "multiruns" / "2026-12-01_10-00-00"
    shutil.copytree(runs["tsn"], sweep / "2")
    shutil.copytree(runs["rsa"], sweep / "10")  # job 10 after job 2 (by number, not by name)
    (sweep / "5").mkdir()  # a job that failed before writing anything: a row that says so, not dropped
    (sweep / ".submitit").mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    monkeypatch.chdir(tmp_path)
    assert main([str(sweep)]) == 0
    rows = parse_table(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["tsn_tiny", "n/a", "rsa_tiny"]
    check_row(rows[0], sweep / "2")
    assert rows[1]["notes"].startswith("empty folder: the job ended before writing any file")
    check_row(rows[2], sweep / "10")
    assert (sweep / REPORT_FILE).is_file() and (sweep / CURVES_FILE).is_file()  # default --out: the sweep folder
    assert not (tmp_path / REPORT_FILE).exists()


def test_sort_top1_orders_runs_by_their_first_rows_top1(runs, tmp_path, capsys):
    worst = tmp_path / "worst"
    shutil.copytree(runs["tsn"], worst)
    columns, rows = read_csv(worst / "csv" / "metrics.csv")
    for row in rows:
        if row["val/acc1"]:
            row["val/acc1"] = "0.0"
    write_csv(worst / "csv" / "metrics.csv", columns, rows)
    main([str(worst), str(runs["rsa"]), str(runs["tsn"]), "--sort", "top1", "--out", str(tmp_path)])
    table = parse_table(capsys.readouterr().out)
    top1 = [float(r["top-1 (%)"]) for r in table]
    assert top1 == sorted(top1, reverse=True)
    assert len(table) == 3 and table[-1]["top-1 (%)"] == "0.00"


def log_only_run(folder: Path, task: str, override: str, log: str, config: str = "") -> Path:
    """A run folder as a job that ended early leaves it: Hydra's config (``task_name`` and ``config``) and
    overrides, and the job log ``<task>.log``, nothing else."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(f"task_name: {task}\n{config}")
    (folder / ".hydra" / "overrides.yaml").write_text(f"- {override}\n")
    (folder / f"{task}.log").write_text(log)
    return folder


def test_broken_and_unfinished_runs_are_reported_not_fatal(runs, tmp_path, capsys):
    failed = tmp_path / "failed"
    shutil.copytree(runs["rsa"], failed)
    (failed / "csv" / "metrics.csv").unlink()
    (failed / "run_info.json").unlink()
    error = "RunFault: out of memory in the forward pass\nsecond line"
    edit_json(failed / "result.json", status="failed", error=error)
    killed = log_only_run(  # died early: Hydra's files and a log, nothing else
        tmp_path / "killed",
        "train",
        "model=tsn_tiny",
        "[2026-12-01 10:00:00,000][rsa_lightning.train][INFO] - data: ...\n"
        "[2026-12-01 10:01:30,000][rsa_lightning.train][INFO] - model: ...\n",
        config="data:\n  num_frames: 8\n",
    )
    garbled = tmp_path / "garbled"
    shutil.copytree(runs["rsa"], garbled)
    (garbled / "result.json").write_text("{not json")
    (garbled / "run_info.json").write_text("[1, 2]")

    assert main([str(runs["rsa"]), str(failed), str(killed), str(garbled), "--out", str(tmp_path)]) == 0
    rows = parse_table(capsys.readouterr().out)
    assert len(rows) == 4
    check_row(rows[0], runs["rsa"])
    assert rows[0]["notes"] == ""
    assert "failed: RunFault: out of memory in the forward pass" in rows[1]["notes"]
    assert "second line" not in rows[1]["notes"]
    assert "no csv/metrics.csv" in rows[1]["notes"] and "no run_info.json" in rows[1]["notes"]
    assert rows[1]["top-1 (%)"] == rows[1]["params (M)"] == "n/a"
    time_min = json.loads((failed / "result.json").read_text())["time_min"]
    assert float(rows[1]["wall-clock (min)"]) == pytest.approx(time_min, abs=0.05)
    assert rows[2]["model"] == "tsn_tiny" and rows[2]["frames"] == "8"
    assert "no result.json: running or killed" in rows[2]["notes"]
    assert rows[2]["wall-clock (min)"] == "1.5" and "wall-clock from train.log" in rows[2]["notes"]
    assert "unreadable result.json" in rows[3]["notes"] and "no run_info.json" in rows[3]["notes"]
    assert float(rows[3]["top-1 (%)"]) == pytest.approx(expected_row(runs["rsa"])["top-1 (%)"], abs=0.005)


def test_a_refused_evaluation_says_why(runs, tmp_path, capsys):
    """An ``eval.py`` refused at start-up leaves its config and log only: the row says ``failed: <the error>``."""
    refused = log_only_run(
        tmp_path / "refused",
        "eval",
        "protocol=bogus",
        "[2026-12-01 10:00:00,000][rsa_lightning.errors][ERROR] - error: protocol=bogus is not one of "
        "['efficient', 'accurate']\nTraceback (most recent call last):\n  File ...\n",
    )
    assert main([str(refused), "--out", str(tmp_path)]) == 0
    (row,) = parse_table(capsys.readouterr().out)
    assert row["notes"].startswith("failed: protocol=bogus is not one of ['efficient', 'accurate']")
    assert "no metrics_" not in row["notes"] and "Traceback" not in row["notes"]


def test_evaluation_files_give_rows_with_their_views(runs, tmp_path, capsys):
    from rsa_lightning.evaluation.writers import write_metrics

    checkpoint = runs["rsa"] / "checkpoints" / "last.ckpt"
    evaluation = {
        "num_videos": 10,
        "num_clips": 2,
        "num_crops": 3,
        "protocol": "accurate",
        "fusion": "prob",
        "checkpoints": [str(checkpoint)],
        "num_frames": [4],
        "acc1": 0.5,
        "acc5": 0.75,
        "mean_class_acc": 0.4,
    }
    eval_dir = tmp_path / "eval_run"
    (eval_dir / ".hydra").mkdir(parents=True)
    (eval_dir / ".hydra" / "config.yaml").write_text(f"task_name: eval\nckpt_path: {checkpoint}\n")
    write_metrics(eval_dir / "metrics_val.json", {"split": "val", **evaluation})
    tested = tmp_path / "tested"  # test_after_training: metrics_test.json in the training run's folder
    shutil.copytree(runs["rsa"], tested)
    write_metrics(tested / "metrics_test.json", {"split": "test", **evaluation, "acc1": 0.25})

    assert main([str(tested), str(eval_dir), "--out", str(tmp_path)]) == 0
    rows = parse_table(capsys.readouterr().out)
    assert [r["evaluated"].split(",")[0] for r in rows] == ["val", "test", "val"]
    check_row(rows[0], tested)
    info = json.loads((runs["rsa"] / "run_info.json").read_text())
    for row, acc1 in ((rows[1], "25.00"), (rows[2], "50.00")):
        assert row["evaluated"].endswith("last.ckpt, accurate")
        assert (row["views"], row["frames"], row["top-1 (%)"]) == ("2x3", "4", acc1)
        assert (row["top-5 (%)"], row["mean class (%)"]) == ("75.00", "40.00")
        assert row["model"] == "rsa_tiny"  # the eval folder's from the checkpoint's training run
        assert float(row["params (M)"]) == pytest.approx(info["params"]["total"] / 1e6, rel=5e-3)
    assert rows[2]["run"] == "rsa_tiny (eval)" and rows[2]["wall-clock (min)"] == "n/a"


@pytest.mark.parametrize("kind", ["missing", "empty folder", "file", "sweep of empty jobs"])
def test_a_path_that_is_no_run_is_one_line_and_exit_2(runs, tmp_path, capsys, kind):
    path = tmp_path / "nothing"
    if kind == "empty folder":
        path.mkdir()
    elif kind == "file":
        path.write_text("x")
    elif kind == "sweep of empty jobs":
        (path / "0").mkdir(parents=True)
        (path / "1").mkdir()
    assert run_cli(lambda: main([str(runs["rsa"]), str(path), "--out", str(tmp_path)])) == USER_ERROR_EXIT
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]
    if kind == "sweep of empty jobs":  # not "nor a sweep folder (numbered job folders)", which it has
        assert "has numbered job folders, but none holds a run's files yet" in lines[0]
    assert captured.out == "" and not (tmp_path / REPORT_FILE).exists()


def test_an_out_path_that_is_a_file_is_one_line_and_exit_2(runs, tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    assert run_cli(lambda: main([str(runs["rsa"]), "--out", str(out)])) == USER_ERROR_EXIT
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0] and out.read_text() == "mine"


def test_labels_must_match_the_runs(runs, tmp_path, capsys):
    assert run_cli(lambda: main([str(runs["rsa"]), "--label", "a", "--label", "b"])) == USER_ERROR_EXIT
    assert "--label" in capsys.readouterr().err
    main([str(runs["rsa"]), str(runs["tsn"]), "--label", "RSA", "--label", "TSN", "--out", str(tmp_path)])
    rows = parse_table(capsys.readouterr().out)
    assert [(r["run"], r["model"]) for r in rows] == [("RSA", "rsa_tiny"), ("TSN", "tsn_tiny")]


@pytest.mark.slow
def test_report_of_a_real_sweep_and_evaluation(tmp_path):
    """train.py -m over two models, eval.py on one checkpoint, then the report tool, all as a user runs them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    data = tmp_path / "synthetic"
    args = tiny_overrides(data, "rsa_tiny,tsn_tiny")
    subprocess.run(
        [sys.executable, "train.py", "-m", f"paths.log_dir={tmp_path / 'logs'}", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    subprocess.run(
        [
            sys.executable,
            "eval.py",
            f"ckpt_path={sweep / '0' / 'checkpoints' / 'last.ckpt'}",
            f"paths.log_dir={tmp_path / 'logs'}",
            "trainer.accelerator=cpu",
            "data.num_workers=0",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    (eval_dir,) = (tmp_path / "logs" / "eval" / "runs").iterdir()
    done = subprocess.run(
        [sys.executable, "-m", "rsa_lightning.tools.report", str(sweep), str(eval_dir), "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = parse_table(done.stdout)
    assert [r["model"] for r in rows] == ["rsa_tiny", "tsn_tiny", "rsa_tiny"]
    for row, job in zip(rows, ("0", "1")):
        check_row(row, sweep / job)
        # the last validation epoch of metrics.csv is the final val/acc1 train.py reported
        final = json.loads((sweep / job / "result.json").read_text())["metrics"]["val/acc1"]
        assert float(row["top-1 (%)"]) == pytest.approx(100 * final, abs=0.005)
    evaluated = json.loads((eval_dir / "metrics_val.json").read_text())
    assert float(rows[2]["top-1 (%)"]) == pytest.approx(100 * evaluated["acc1"], abs=0.005)
    assert (tmp_path / CURVES_FILE).is_file()
