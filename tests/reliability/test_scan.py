"""scan_videos verifies every backend against the reference decode where training reads, and says which reads a file.

The data set holds the kinds of :mod:`test_video_backends` (made with PyAV in the test) and files without video.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config
from test_video_backends import make_kinds, record, training_reads

from rsa_lightning.data.decoding import DecordBackend
from rsa_lightning.data.exclusions import read_exclusion_entries
from rsa_lightning.data.probing import read_decode_modes
from rsa_lightning.data.video_io import decode_all_frames
from rsa_lightning.tools.scan_videos import scan_from_config, verification_indices, verify_reader

READ_BY_DECORD_WITH_SEEKS = ("mp4_bframes", "mkv", "mov", "vfr", "ntsc_90khz", "gray", "rgba_png", "yuva_vp9")
READ_BY_DECORD_SEQUENTIALLY = ("avi_mpeg4", "avi_h264_bframes", "avi_h264")  # decord's seeks are wrong in them
LEFT_TO_PYAV = ("webm_live", "webm_1frame", "rotated_90", "rotated_270_mirrored")  # decord refuses them
LEFT_TO_PYAV += ("vp9_odd", "ffv1_10bit")  # decord converts them to RGB otherwise (odd height, 10-bit 4:2:0)
NO_VIDEO = ("audio_only", "zero_frames")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A one-split list data set of every kind, each video its own class-0 line."""
    root = tmp_path_factory.mktemp("scan_ds")
    files = make_kinds(root / "videos")
    (root / "annotations").mkdir()
    lines = [f"videos/{path.name} {i % 2}\n" for i, path in enumerate(files.values())]
    (root / "annotations" / "train.txt").write_text("".join(lines))
    (root / "annotations" / "val.txt").write_text(lines[0])
    (root / "annotations" / "classes.txt").write_text("a\nb\n")
    return root, files


def run_scan(root: Path, out: Path, *overrides: str):
    base = [f"data.root={root}", "data.num_classes=2", "splits=[train]", "workers=1", "seek_check_samples=4"]
    base += [f"exclusions_file={out / 'exclusions.txt'}", f"open_gop_file={out / 'open_gop.txt'}"]
    return scan_from_config(compose_config("scan", base + list(overrides), out / "run"))


def test_the_scan_says_which_backend_reads_each_file(dataset, tmp_path, capsys, monkeypatch):
    root, files = dataset
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps the summary at the terminal width
    result = run_scan(root, tmp_path)
    printed = capsys.readouterr().out
    assert f"decord must not seek in {files['avi_h264_bframes']}: sequential: wrong frames at" in printed
    assert f"decord must not seek in {files['webm_live']}: pyav: decord sequential:" in printed
    assert f"excluded train/videos/audio: {files['audio_only']}: no video stream" in printed
    reports = {kind: result.reports[str(path)] for kind, path in files.items()}
    for kind in READ_BY_DECORD_WITH_SEEKS + READ_BY_DECORD_SEQUENTIALLY + LEFT_TO_PYAV:
        report = reports[kind]
        assert report.ok, (kind, report.reason)
        assert report.readers["pyav"] == "exact" and report.readers["backend"] == "exact", kind
        assert report.num_frames == len(decode_all_frames(files[kind])), kind
    for kind in READ_BY_DECORD_WITH_SEEKS:
        assert reports[kind].readers["decord seek"] == "exact" and reports[kind].decord_mode is None, kind
    for kind in READ_BY_DECORD_SEQUENTIALLY:
        assert reports[kind].readers["decord seek"].startswith("wrong frames at"), kind
        assert reports[kind].readers["decord sequential"] == "exact", kind
        assert reports[kind].decord_mode == "sequential" and reports[kind].seek_wrong, kind
    # decord's wrong seeks include the last frames: the scan checks them
    n = reports["avi_h264_bframes"].num_frames
    assert {n - 2, n - 1} & set(reports["avi_h264_bframes"].seek_wrong)
    for kind in LEFT_TO_PYAV:
        assert reports[kind].decord_mode == "pyav", kind
    assert "broken metadata" in reports["webm_live"].readers["decord seek"]
    # files without video are excluded with the reason, nothing else is
    excluded = {Path(e.path).name: e.reason for e in read_exclusion_entries(tmp_path / "exclusions.txt")}
    assert set(excluded) == {files[kind].name for kind in NO_VIDEO}
    assert all("no video stream" in reason for reason in excluded.values())
    # the list: every file decord must not seek in, with its mode and reason
    modes = read_decode_modes(tmp_path / "open_gop.txt")
    expected = {str(files[k]): "sequential" for k in READ_BY_DECORD_SEQUENTIALLY}
    expected |= {str(files[k]): "pyav" for k in LEFT_TO_PYAV}
    assert modes == expected
    listed = (tmp_path / "open_gop.txt").read_text()
    assert f"{files['avi_h264_bframes']}\tsequential: wrong frames at" in listed
    assert f"{files['vp9_odd']}\tpyav: decord converts its yuv420p frames of odd height 47 to RGB otherwise" in listed


def test_decord_with_the_scan_list_reads_every_file_exactly(dataset, tmp_path):
    root, files = dataset
    run_scan(root, tmp_path)
    # the list alone (no probe) decides how each file is read
    backend = DecordBackend(open_gop_files=tmp_path / "open_gop.txt", detect_open_gop=False)
    for kind in READ_BY_DECORD_WITH_SEEKS + READ_BY_DECORD_SEQUENTIALLY + LEFT_TO_PYAV:
        reference = decode_all_frames(files[kind])
        for wanted in training_reads(len(reference), seed=1):
            frames, _ = backend.read(record(files[kind]), lambda n, wanted=wanted: wanted)
            assert np.array_equal(frames, reference[wanted]), (kind, wanted)


def test_the_scan_excludes_files_the_configured_backend_reads_wrong(dataset, tmp_path):
    root, files = dataset
    # decord forced to seek everywhere: the AVI files would train on wrong frames
    result = run_scan(root, tmp_path / "seek", "data.backend.seek_mode=seek")
    excluded = {Path(e.path).name: e.reason for e in result.exclusions}
    for kind in READ_BY_DECORD_SEQUENTIALLY:
        assert "does not read it exactly: wrong frames at" in excluded[files[kind].name], kind
        assert "data/backend=pyav" in excluded[files[kind].name]
    assert set(excluded) == {files[k].name for k in READ_BY_DECORD_SEQUENTIALLY + NO_VIDEO}
    # PyAV reads every video file exactly
    result = run_scan(root, tmp_path / "pyav", "data/backend=pyav")
    assert {Path(e.path).name for e in result.exclusions} == {files[k].name for k in NO_VIDEO}


def test_verification_reads_the_last_frames_and_catches_a_wrong_one():
    groups = verification_indices(30, samples=4)
    assert any(g.tolist() == [29] for g in groups) and any(g.tolist() == [27, 28, 29] for g in groups)
    assert sum(len(g) for g in groups) == 3 + 1 + 3 + 4
    reference = {i: np.full((4, 4, 3), i, np.uint8) for i in np.unique(np.concatenate(groups)).tolist()}

    def read_last_as_previous(choose):  # a decoder that returns frame n - 2 for the last frame
        indices = choose(30)
        return np.stack([np.full((4, 4, 3), i - (i == 29), np.uint8) for i in indices]), indices

    def read_exactly(choose):
        indices = choose(30)
        return np.stack([reference[i] for i in indices.tolist()]), indices

    verdict, wrong = verify_reader(read_last_as_previous, groups, 30, reference)
    assert verdict.startswith("wrong frames at [29]") and wrong == [29]
    assert verify_reader(read_exactly, groups, 30, reference) == ("exact", [])
    verdict, _ = verify_reader(lambda choose: read_exactly(lambda n: choose(29)), groups, 30, reference)
    assert verdict == "counts 29 frames, the reference decode 30"


def test_a_file_cut_short_is_excluded_as_truncated(tmp_path):
    """An mp4 whose header (faststart: the sample table first) lists 48 frames, of which the cut file holds 9: both
    backends read the 9 as if they were the video; the scan compares with the header and excludes it."""
    import av

    from rsa_lightning.data.decoding import PyAVBackend
    from rsa_lightning.tools.scan_videos import check_file

    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(48):
            frame = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    for backend in (DecordBackend(), PyAVBackend()):
        report = check_file(record(cut), backend=backend)
        assert not report.ok and "truncated" in report.reason and report.listed_frames > report.num_frames, report
        assert check_file(record(whole), backend=backend).ok
    gc.collect()
