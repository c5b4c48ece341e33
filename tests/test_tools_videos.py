"""The video tools on small generated data sets: scan_videos, extract_frames, reencode_videos."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, Background, compose_config, decoded_frame_index, write_brightness_video
from test_decoding import OPEN_GOP_X264, pattern_frame, sequential_frames, write_pattern_video

from rsa_lightning.data.annotations import VideoRecord
from rsa_lightning.data.decoding import FrameFolderBackend
from rsa_lightning.data.exclusions import read_exclusion_entries
from rsa_lightning.data.probing import check_seek_accuracy, detect_open_gop
from rsa_lightning.tools.extract_frames import DONE_MARKER, ExtractOptions, extract_frames
from rsa_lightning.tools.extract_frames import main as extract_main
from rsa_lightning.tools.reencode_videos import EncodeOptions, reencode_videos
from rsa_lightning.tools.scan_videos import scan_from_config


def make_list_dataset(root: Path) -> Path:
    """A 3-class list data set with good, broken and open-GOP videos; ``garbage`` is in both splits."""
    videos = root / "videos"
    write_brightness_video(videos / "good0.mp4", 12)
    write_brightness_video(videos / "good1.mp4", 9)
    write_pattern_video(videos / "open.mp4", 32, OPEN_GOP_X264)
    (videos / "garbage.mp4").write_bytes(b"not a video" * 100)
    (videos / "zero.mp4").write_bytes(b"")
    good = (videos / "good0.mp4").read_bytes()
    (videos / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "annotations").mkdir(parents=True)
    train = ["good0.mp4 0", "garbage.mp4 1", "zero.mp4 2", "open.mp4 0", "truncated.mp4 1"]
    val = ["good1.mp4 1", "missing.mp4 2", "garbage.mp4 1"]
    for split, lines in (("train", train), ("val", val)):
        (root / "annotations" / f"{split}.txt").write_text("".join(f"videos/{line}\n" for line in lines))
    (root / "annotations" / "classes.txt").write_text("a\nb\nc\n")
    return root


EXPECTED_EXCLUSIONS = {
    ("train", "videos/garbage"),
    ("train", "videos/zero"),
    ("train", "videos/truncated"),
    ("val", "videos/missing"),
    ("val", "videos/garbage"),
}


@pytest.fixture(scope="module", autouse=True)
def scan_command_line(tmp_path_factory) -> Iterator[tuple[Path, Path, Background]]:
    """``python -m rsa_lightning.tools.scan_videos`` on its own copy of the data set, started when this module
    starts: it runs while the other tests do, and test_scan_command_line checks it. Returns the data set, the
    exclusion list it is told to write and the process (stopped at the end when that test did not run)."""
    tmp_path = tmp_path_factory.mktemp("scan_command_line")
    root = make_list_dataset(tmp_path / "ds")
    out = tmp_path / "lists" / "excluded.txt"
    command = [
        sys.executable,
        "-m",
        "rsa_lightning.tools.scan_videos",
        f"data.root={root}",
        "data.num_classes=3",
        "splits=[train,val]",
        "workers=1",
        f"exclusions_file={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = Background(command, cwd=tmp_path, env={**os.environ, "PROJECT_ROOT": str(ROOT)})
    yield root, out, proc
    proc.stop()


def test_scan_writes_the_exclusion_and_open_gop_lists(tmp_path):
    root = make_list_dataset(tmp_path / "ds")
    overrides = [f"data.root={root}", "data.num_classes=3", "splits=[train,val]", "workers=2", "seek_check_samples=8"]
    cfg = compose_config("scan", overrides, tmp_path / "run")
    result = scan_from_config(cfg)
    entries = read_exclusion_entries(root / "exclusions.txt")
    assert {(e.split, e.video_id) for e in entries} == EXPECTED_EXCLUSIONS
    reasons = {(e.split, e.video_id): e.reason for e in entries}
    assert "zero-byte" in reasons[("train", "videos/zero")] and "does not exist" in reasons[("val", "videos/missing")]
    assert all(e.path.endswith(e.video_id.split("/")[1] + ".mp4") for e in entries)
    assert result.open_gop == [str(root / "videos" / "open.mp4")]
    assert result.reports[str(root / "videos" / "open.mp4")].seek_wrong  # confirmed per pixel
    assert result.reports[str(root / "videos" / "good0.mp4")].num_frames == 12
    listed = [line for line in (root / "open_gop.txt").read_text().splitlines() if not line.startswith("#")]
    assert [line.split("\t")[0] for line in listed] == [str(root / "videos" / "open.mp4")]
    # a re-scan checks the excluded videos again (the DataModule alone would leave them out)
    rescan = scan_from_config(compose_config("scan", overrides + ["seek_check_samples=0"], tmp_path / "run2"))
    assert {(e.split, e.video_id) for e in rescan.exclusions} == EXPECTED_EXCLUSIONS


def test_scan_command_line(scan_command_line):
    root, out, proc = scan_command_line
    done = proc.finish(timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {(e.split, e.video_id) for e in read_exclusion_entries(out)} == EXPECTED_EXCLUSIONS
    assert "excluded val/videos/missing" in done.stdout and (root / "open_gop.txt").is_file()


def test_extract_frames_writes_numbered_jpegs_and_resumes(tmp_path):
    src, dst = tmp_path / "videos", tmp_path / "frames"
    write_brightness_video(src / "a" / "v0.mp4", 10, size=32)
    write_brightness_video(src / "b" / "v1.mp4", 6, size=32)
    (src / "b" / "broken.mp4").write_bytes(b"junk" * 100)
    status = extract_frames(src, dst, workers=2, options=ExtractOptions(quality=95, short_side=16))
    assert status["a/v0"] == "done" and status["b/v1"] == "done" and status["b/broken"].startswith("failed")
    assert not (dst / "b" / "broken").exists()
    names = {p.name for p in (dst / "a" / "v0").iterdir()}
    assert names == {f"{i:05d}.jpg" for i in range(1, 11)} | {DONE_MARKER}
    assert (dst / "a" / "v0" / DONE_MARKER).read_text().splitlines()[:2] == ["10", "source=a/v0.mp4"]
    backend = FrameFolderBackend()
    frames, _ = backend.read(VideoRecord(dst / "a" / "v0", 0, "a/v0"), lambda n: np.arange(n))
    assert frames.shape == (10, 16, 16, 3)
    assert [decoded_frame_index(f) for f in frames] == list(range(10))
    video = sequential_frames(src / "a" / "v0.mp4")
    assert np.abs(frames.mean(axis=(1, 2, 3)) - video.mean(axis=(1, 2, 3))).max() < 1.5

    # an interrupted folder (no marker, a frame missing) is redone; a finished one is left alone
    kept = dst / "a" / "v0" / "00001.jpg"
    mtime = kept.stat().st_mtime_ns
    (dst / "b" / "v1" / DONE_MARKER).unlink()
    (dst / "b" / "v1" / "00006.jpg").unlink()
    assert extract_main([str(src), str(dst), "--workers", "1", "--short-side", "16"]) == 1  # broken.mp4 fails
    assert kept.stat().st_mtime_ns == mtime
    assert (dst / "b" / "v1" / "00006.jpg").is_file() and (dst / "b" / "v1" / DONE_MARKER).is_file()
    status = extract_frames(src, dst, workers=1)
    assert status["a/v0"] == status["b/v1"] == "skipped"


def test_reencode_makes_open_gop_videos_closed_and_resumes(tmp_path):
    src = tmp_path / "src"
    path = write_pattern_video(src / "clips" / "open.mp4", 32, OPEN_GOP_X264)
    assert detect_open_gop(path)
    listed = tmp_path / "open_gop.txt"  # the scan's list format: absolute paths, notes after a tab
    listed.write_text(f"# open-GOP videos\n{path}\t5 sampled frames wrong after seeking\n")
    dst = tmp_path / "dst"
    options = EncodeOptions(crf=4, gop=8, bframes=3, preset="ultrafast")
    assert reencode_videos(listed, dst, workers=1, options=options, root=src) == {"clips/open": "done"}
    out = dst / "clips" / "open.mp4"
    assert not detect_open_gop(out)
    assert check_seek_accuracy(out, num_samples=16).accurate
    frames = sequential_frames(out)
    assert len(frames) == 32
    assert all(np.abs(frames[i].astype(int) - pattern_frame(i)).mean() < 12 for i in range(32))
    assert reencode_videos(listed, dst, workers=1, options=options, root=src) == {"clips/open": "skipped"}
    assert [p.name for p in out.parent.iterdir()] == ["open.mp4"]  # no partial file left
