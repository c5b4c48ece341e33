"""Reliability of the video tools (extract_frames, reencode_videos, convert_official): two videos never share an
output, a file that is no video is one reported failure, the frames written are the frames the backends decode, and
every user error is one line with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import lock_probe
import numpy as np
import pytest
import torch
from conftest import ROOT
from test_official import official_layout, save_official, tiny_net
from test_video_backends import write_audio_only

from rsa_lightning.data.annotations import VideoRecord
from rsa_lightning.data.decoding import DecordBackend, FrameFolderBackend, PyAVBackend
from rsa_lightning.data.probing import detect_open_gop
from rsa_lightning.data.video_io import decode_all_frames
from rsa_lightning.errors import UserError, run_cli
from rsa_lightning.tools import convert_official, extract_frames, reencode_videos
from rsa_lightning.tools.extract_frames import DONE_MARKER, ExtractOptions
from rsa_lightning.tools.reencode_videos import EncodeOptions
from rsa_lightning.tools.scan_videos import progress_map
from rsa_lightning.utils.processes import worker_context

PNG = ExtractOptions(filename_template="{:05d}.png")  # lossless: the pixels must be the decoded pixels
FAST = EncodeOptions(crf=4, gop=8, bframes=2, preset="ultrafast")


# --------------------------------------------------------------------------------------------------------------------
# small videos whose every frame differs per pixel from every other one


def block_frame(i: int, height: int = 32, width: int = 32, seed: int = 0) -> np.ndarray:
    """Frame ``i``: 8 x 8 blocks of random colours seeded by (seed, i), (H, W, 3) uint8."""
    rng = np.random.default_rng([seed, i])
    blocks = rng.integers(0, 256, (-(-height // 8), -(-width // 8), 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)[:height, :width]


def write_clip(
    path: Path,
    num_frames: int,
    *,
    codec: str = "libx264",
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
    pix_fmt: str = "yuv420p",
    options: dict | None = None,
    container_options: dict | None = None,
    rotation: int | None = None,
) -> Path:
    """``num_frames`` :func:`block_frame` frames of ``size`` (height, width) at 12 fps, muxed by ``path``'s suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=12)
        stream.height, stream.width = size
        stream.pix_fmt = pix_fmt
        stream.options = options if options is not None else {"crf": "4", "bf": "2", "g": "8"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(block_frame(i, *size, seed=seed), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def raw_sequential_frames(path: Path) -> np.ndarray:
    """Every frame decoded in order by PyAV (no seek, no orientation): an independent reference."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


VP9 = {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"}
LIVE = {"live": "1"}  # the matroska muxer as a live recorder: no Duration, no Cues


@pytest.fixture(scope="module")
def kinds(tmp_path_factory) -> dict[str, Path]:
    """One small file of each kind the tools must read like the backends."""
    root = tmp_path_factory.mktemp("kinds")
    clips = {
        "h264_bframes.mp4": write_clip(root / "h264_bframes.mp4", 20),
        "h264_bframes.avi": write_clip(root / "h264_bframes.avi", 18, seed=1),  # decode-order timestamps
        "mpeg4_bframes.avi": write_clip(
            root / "mpeg4_bframes.avi", 14, codec="mpeg4", seed=2, options={"bf": "2", "qscale": "2", "g": "6"}
        ),
        "vp9_live.webm": write_clip(
            root / "vp9_live.webm", 10, codec="libvpx-vp9", seed=3, options=VP9, container_options=LIVE
        ),
        "one_frame.webm": write_clip(root / "one_frame.webm", 1, codec="libvpx-vp9", seed=4, options=VP9),
        "odd_size.mkv": write_clip(
            root / "odd_size.mkv", 7, codec="ffv1", size=(17, 33), seed=5, pix_fmt="yuv444p", options={}
        ),
        "rotated.mp4": write_clip(root / "rotated.mp4", 6, size=(32, 48), seed=6, rotation=90),
    }
    with av.open(str(clips["vp9_live.webm"])) as container:
        assert container.duration is None  # really written as live
    return clips


def output_names(src: Path) -> dict[str, str]:
    """File name -> output name under ``--keep-extension`` (``h264_bframes.mp4`` and ``.avi`` keep theirs)."""
    return {job.path.name: job.name for job in extract_frames.list_videos(src, keep_extension=True)}


def backend_frames(backend, path: Path) -> np.ndarray:
    frames, _ = backend.read(VideoRecord(path=path, label=0, video_id=path.stem), lambda n: np.arange(n))
    return frames


# --------------------------------------------------------------------------------------------------------------------
# two videos, one output


def test_videos_differing_only_by_extension_are_refused_before_any_work(tmp_path):
    src = tmp_path / "videos"
    write_clip(src / "a" / "test.mp4", 6)
    write_clip(src / "a" / "test.avi", 9, seed=1)
    write_clip(src / "other.mp4", 4)
    for tool, output in ((extract_frames.extract_frames, "a/test"), (reencode_videos.reencode_videos, "a/test.mp4")):
        dst = tmp_path / f"out_{tool.__name__}"
        with pytest.raises(UserError) as caught:
            tool(src, dst, workers=2)
        message = str(caught.value)
        assert str(src / "a" / "test.mp4") in message and str(src / "a" / "test.avi") in message
        assert str(dst / output) in message and "--keep-extension" in message
        assert not dst.exists()  # nothing done, not even other.mp4


def test_absolute_list_paths_with_one_file_name_are_refused(tmp_path):
    first = write_clip(tmp_path / "x" / "clip.mp4", 3)
    second = write_clip(tmp_path / "y" / "clip.mp4", 3, seed=1)
    listed = tmp_path / "lists" / "videos.txt"
    listed.parent.mkdir()
    listed.write_text(f"{first} 0\n{second} 1\n{first} 0\n")  # outside the list's folder: named by file name
    with pytest.raises(UserError, match=r"x/clip\.mp4 and .*y/clip\.mp4 would both be written to .*pass --root"):
        extract_frames.extract_frames(listed, tmp_path / "frames", workers=1)
    # with a common root they keep their relative paths; a video listed twice is done once
    status = extract_frames.extract_frames(listed, tmp_path / "frames", workers=2, root=tmp_path)
    assert status == {"x/clip": "done", "y/clip": "done"}
    # one video file as SRC
    assert extract_frames.extract_frames(first, tmp_path / "one", workers=1) == {"clip": "done"}
    assert len(list((tmp_path / "one" / "clip").glob("*.jpg"))) == 3


def test_keep_extension_gives_each_video_its_own_folder_with_two_workers(tmp_path):
    src = tmp_path / "videos"
    mp4 = write_clip(src / "test.mp4", 6)
    avi = write_clip(src / "test.avi", 9, seed=1)
    write_clip(src / "other.mp4", 2)
    dst = tmp_path / "frames"
    status = extract_frames.extract_frames(src, dst, workers=2, options=PNG, keep_extension=True)
    assert status == {"other": "done", "test.avi": "done", "test.mp4": "done"}  # the ids of read_video_list
    backend = FrameFolderBackend(filename_template="{:05d}.png")
    for video in (mp4, avi):
        frames = backend_frames(backend, dst / video.name)
        np.testing.assert_array_equal(frames, raw_sequential_frames(video))
    assert extract_frames.read_marker(dst / "test.avi" / DONE_MARKER)["source"] == "test.avi"


def test_worker_pools_start_clean_of_locks_held_by_other_threads():
    """A lock held by another thread of the parent (a decoder's, PyTorch's, logging's) when the pool starts stays
    held forever in a forked worker (seen: extract_frames and the generator hung in the test session). The tools'
    and the generator's pools start their workers from a clean process instead."""
    lock_probe.HELD.acquire()  # held, as another thread would hold it at the moment the pool starts
    try:
        taken = progress_map(lock_probe.acquire_within, [2.0, 2.0], 2, "probe")
    finally:
        lock_probe.HELD.release()
    assert taken == [True, True]
    assert worker_context().get_start_method() != "fork"


def test_reencode_keeps_each_video_under_its_own_name(tmp_path):
    src = tmp_path / "videos"
    mp4 = write_clip(src / "test.mp4", 6)
    avi = write_clip(src / "test.avi", 9, seed=1)
    dst = tmp_path / "out"
    status = reencode_videos.reencode_videos(src, dst, workers=2, options=FAST, keep_extension=True)
    assert status == {"test.avi": "done", "test.mp4": "done"}
    for video in (mp4, avi):
        out = decode_all_frames(dst / f"{video.name}.mp4")
        ref = raw_sequential_frames(video)
        assert out.shape == ref.shape  # 6 and 9 frames: one video's content never under the other's name
        assert np.abs(out.astype(int) - ref).mean() < 4
        assert reencode_videos.recorded_source(dst / f"{video.name}.mp4")["source"] == video.name


def test_a_later_run_never_takes_another_videos_output_for_its_own(tmp_path, capsys):
    src = tmp_path / "videos"
    write_clip(src / "test.mp4", 6)
    write_clip(src / "test.avi", 9, seed=1)
    (tmp_path / "mp4.txt").write_text("videos/test.mp4 0\n")
    (tmp_path / "avi.txt").write_text("videos/test.avi 0\n")
    frames, videos = tmp_path / "frames", tmp_path / "reencoded"
    assert extract_frames.main([str(tmp_path / "mp4.txt"), str(frames), "--workers", "1"]) == 0
    assert (
        reencode_videos.main([str(tmp_path / "mp4.txt"), str(videos), "--workers", "1", "--preset", "ultrafast"]) == 0
    )
    before = (videos / "videos" / "test.mp4").read_bytes()
    capsys.readouterr()

    assert extract_frames.main([str(tmp_path / "avi.txt"), str(frames), "--workers", "1"]) == 1
    assert reencode_videos.main([str(tmp_path / "avi.txt"), str(videos), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "0 extracted, 0 already done, 1 failed" in out and "0 re-encoded, 0 already done, 1 failed" in out
    assert out.count("holds videos/test.mp4, not videos/test.avi") == 2
    assert len(list((frames / "videos" / "test").glob("*.jpg"))) == 6
    assert (videos / "videos" / "test.mp4").read_bytes() == before

    # the same name, but the file changed since: reported too, not skipped
    write_clip(src / "test.mp4", 8, seed=2)
    status = extract_frames.extract_frames(tmp_path / "mp4.txt", frames, workers=1)
    assert status["videos/test"].startswith("failed:") and "delete it to redo it" in status["videos/test"]


def test_reencode_never_overwrites_an_input(tmp_path):
    src = tmp_path / "videos"
    write_clip(src / "a.mp4", 4)
    before = (src / "a.mp4").read_bytes()
    with pytest.raises(UserError, match=r"the output of .*a\.mp4 would overwrite the input .*: choose a DST outside"):
        reencode_videos.reencode_videos(src, src, workers=1, options=FAST)
    assert (src / "a.mp4").read_bytes() == before
    # DST inside SRC: its outputs are never taken for inputs on the next run
    dst = src / "reencoded"
    assert reencode_videos.reencode_videos(src, dst, workers=1, options=FAST) == {"a": "done"}
    assert reencode_videos.reencode_videos(src, dst, workers=1, options=FAST) == {"a": "skipped"}


def test_an_interrupted_folder_is_redone_without_touching_nested_folders(tmp_path):
    """``a.mp4`` -> ``frames/a/``, ``a/b.mp4`` -> ``frames/a/b/``: redoing ``a`` must not delete ``a/b``'s frames."""
    src = tmp_path / "videos"
    write_clip(src / "a.mp4", 5)
    write_clip(src / "a" / "b.mp4", 3, seed=1)
    dst = tmp_path / "frames"
    assert extract_frames.extract_frames(src, dst, workers=2) == {"a": "done", "a/b": "done"}
    (dst / "a" / DONE_MARKER).unlink()
    (dst / "a" / "00005.jpg").unlink()
    assert extract_frames.extract_frames(src, dst, workers=2) == {"a": "done", "a/b": "skipped"}
    assert len(list((dst / "a").glob("*.jpg"))) == 5 and len(list((dst / "a" / "b").glob("*.jpg"))) == 3


# --------------------------------------------------------------------------------------------------------------------
# files that are no video


def broken_inputs(src: Path) -> dict[str, str]:
    """Good and bad files under ``src``; returns name -> the reason each bad one must be reported with."""
    write_clip(src / "good.mp4", 5)
    write_clip(src / "second.webm", 3, codec="libvpx-vp9", options=VP9)
    write_audio_only(src / "audio_only.mp4")
    (src / "zero.mp4").write_bytes(b"")
    (src / "text.avi").write_text("this is not a video\n" * 50)
    good = (src / "good.mp4").read_bytes()
    (src / "truncated.mp4").write_bytes(good[: len(good) // 3])
    return {
        "audio_only": "no video stream",
        "zero": "zero-byte",
        "text": "decoding failed before the first frame",
        "truncated": "",  # whatever FFmpeg says of it, as a failure of this file
    }


@pytest.mark.parametrize("tool", ["extract_frames", "reencode_videos"])
def test_files_that_are_no_video_are_reported_and_the_others_done(tmp_path, capsys, tool):
    src, dst = tmp_path / "videos", tmp_path / "out"
    src.mkdir()
    reasons = broken_inputs(src)
    module = {"extract_frames": extract_frames, "reencode_videos": reencode_videos}[tool]
    extra = ["--preset", "ultrafast"] if tool == "reencode_videos" else []
    assert module.main([str(src), str(dst), "--workers", "2", *extra]) == 1
    out = capsys.readouterr().out
    verb = "extracted" if tool == "extract_frames" else "re-encoded"
    assert f"2 {verb}, 0 already done, 4 failed -> {dst}" in out
    for name, reason in reasons.items():
        line = next(line for line in out.splitlines() if line.strip().startswith(f"{name}: failed:"))
        assert reason in line, line
    assert "Traceback" not in out and "IndexError" not in out
    suffix = "" if tool == "extract_frames" else ".mp4"
    assert sorted(p.name for p in dst.iterdir()) == [f"good{suffix}", f"second{suffix}"]  # no partial output left


# --------------------------------------------------------------------------------------------------------------------
# the frames written are the frames the backends decode


def test_extracted_frames_are_the_decoded_frames(kinds, tmp_path):
    dst = tmp_path / "frames"
    src = next(iter(kinds.values())).parent
    status = extract_frames.extract_frames(src, dst, workers=2, options=PNG, keep_extension=True)
    assert set(status.values()) == {"done"} and len(status) == len(kinds)
    frames_backend = FrameFolderBackend(filename_template="{:05d}.png")
    names = output_names(src)
    assert names["h264_bframes.avi"] == "h264_bframes.avi" and names["rotated.mp4"] == "rotated"
    for name, path in kinds.items():
        extracted = backend_frames(frames_backend, dst / names[name])
        reference = decode_all_frames(path)
        np.testing.assert_array_equal(extracted, reference, err_msg=name)  # count, size, orientation, pixels
        for backend in (PyAVBackend(), DecordBackend()):
            np.testing.assert_array_equal(backend_frames(backend, path), extracted, err_msg=f"{name} {backend!r}")
        if name != "rotated.mp4":
            np.testing.assert_array_equal(extracted, raw_sequential_frames(path), err_msg=name)
    # 90 degrees: the stored 48 x 32 frames are shown (and written) 32 x 48
    assert backend_frames(frames_backend, dst / "rotated").shape == (6, 48, 32, 3)
    assert backend_frames(frames_backend, dst / "odd_size").shape == (7, 17, 33, 3)


def test_extracted_jpegs_match_the_decoded_frames_up_to_compression(kinds, tmp_path):
    path = kinds["h264_bframes.avi"]
    dst = tmp_path / "frames"
    assert extract_frames.extract_frames(path.parent, dst, workers=1, extensions=[".avi"])
    extracted = backend_frames(FrameFolderBackend(), dst / path.stem)
    reference = decode_all_frames(path)
    assert extracted.shape == reference.shape
    errors = np.abs(extracted.astype(int)[:, None] - reference.astype(int)[None]).mean(axis=(2, 3, 4))  # (N, N)
    assert errors.argmin(axis=1).tolist() == list(range(len(reference)))  # each frame is closest to its own
    assert errors.diagonal().max() < 6


def test_reencoded_videos_have_the_decoded_frames(kinds, tmp_path):
    dst = tmp_path / "out"
    src = next(iter(kinds.values())).parent
    status = reencode_videos.reencode_videos(src, dst, workers=2, options=FAST, keep_extension=True)
    assert set(status.values()) == {"done"} and len(status) == len(kinds)
    names = output_names(src)
    for name, path in kinds.items():
        out = dst / f"{names[name]}.mp4"
        reference = decode_all_frames(path)
        decoded = decode_all_frames(out)
        assert decoded.shape == reference.shape, name  # frame count, size (odd too) and orientation kept
        errors = np.abs(decoded.astype(int)[:, None] - reference.astype(int)[None]).mean(axis=(2, 3, 4))
        assert errors.argmin(axis=1).tolist() == list(range(len(reference))), name
        assert errors.diagonal().max() < 6, name
        assert not detect_open_gop(out)
        for backend in (DecordBackend(seek_mode="seek"), PyAVBackend()):  # closed GOP: decord's seeks are exact
            np.testing.assert_array_equal(backend_frames(backend, out), decoded, err_msg=f"{name} {backend!r}")
    with av.open(str(dst / "rotated.mp4")) as container:  # upright: no display matrix left to apply
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (32, 48)


# --------------------------------------------------------------------------------------------------------------------
# user errors: one line, exit code 2


def run_tool(main, argv: list[str], capsys) -> tuple[int, str]:
    code = run_cli(lambda: main(argv))
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("tool", [extract_frames, reencode_videos], ids=["extract_frames", "reencode_videos"])
def test_tool_user_errors_are_one_line_and_exit_code_2(tool, tmp_path, capsys):
    src = tmp_path / "videos"
    write_clip(src / "a.mp4", 3)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cases = {
        "missing SRC": ([str(tmp_path / "nope"), str(tmp_path / "out")], "does not exist"),
        "empty SRC": ([str(tmp_path / "empty"), str(tmp_path / "out")], "no video in"),
        "binary SRC": ([str(tmp_path / "blob.bin"), str(tmp_path / "out")], "is not a text list of videos"),
        "unwritable DST": ([str(src), str(blocker / "out")], "choose a writable DST"),
        "bad number": ([str(src), str(tmp_path / "out"), "--workers", "x"], "invalid int value"),
        "unknown option": ([str(src), str(tmp_path / "out"), "--qualty", "3"], "unrecognized arguments"),
    }
    (tmp_path / "empty").mkdir()
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    if tool is extract_frames:
        cases["bad quality"] = ([str(src), str(tmp_path / "out"), "--quality", "0"], "--quality must be in [1, 100]")
        cases["bad template"] = ([str(src), str(tmp_path / "out"), "--template", "{:05d}.bmp"], "must end in one of")
    else:
        cases["bad preset"] = ([str(src), str(tmp_path / "out"), "--preset", "fastest"], "--preset must be one of")
    for case, (argv, expected) in cases.items():
        code, err = run_tool(tool.main, argv, capsys)
        assert code == 2, case
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, (case, err)
    assert not (tmp_path / "out").exists()


def test_the_command_line_exits_2_with_one_line(tmp_path):
    src = tmp_path / "videos"
    write_clip(src / "test.mp4", 3)
    write_clip(src / "test.avi", 3)
    command = [sys.executable, "-m", "rsa_lightning.tools.extract_frames", str(src), str(tmp_path / "frames")]
    env = {**os.environ, "PROJECT_ROOT": str(ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "--keep-extension" in done.stderr and "Traceback" not in done.stderr


def official_like_file(path: Path, content: object) -> Path:
    torch.save(content, path)
    return path


def test_convert_official_errors_name_the_file_and_the_fix(tmp_path, capsys):
    lightning = official_like_file(
        tmp_path / "last.ckpt", {"pytorch-lightning_version": "2.4.0", "state_dict": {"net.fc.bias": torch.zeros(3)}}
    )
    converted = official_like_file(tmp_path / "converted.ckpt", {"state_dict": {"net.fc.bias": torch.zeros(3)}})
    whole = official_like_file(tmp_path / "whole.pth.tar", {"state_dict": {"module.new_fc.bias": torch.zeros(3)}})
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    listed = official_like_file(tmp_path / "list.pth", [1, 2, 3])
    official = save_official(tmp_path / "rsa.pth.tar", official_layout(tiny_net(num_classes=10)))
    (tmp_path / "empty.pth.tar").write_bytes(b"")
    out = str(tmp_path / "out.ckpt")
    cases = {
        "missing": ([str(tmp_path / "nope.pth.tar"), out], "nope.pth.tar does not exist: give the path of a released"),
        "empty": ([str(tmp_path / "empty.pth.tar"), out], "empty.pth.tar is empty (0 bytes): download"),
        "truncated": ([str(truncated), out], "truncated.pth.tar is truncated"),
        "lightning": (
            [str(lightning), out],
            f"it needs no conversion, evaluate it with python eval.py ckpt_path={lightning}",
        ),
        "converted": ([str(converted), out], "converted.ckpt is already an rsa_lightning checkpoint"),
        "not a checkpoint": ([str(listed), out], "list.pth is neither an official checkpoint"),
        "DST a folder": ([str(whole), str(tmp_path)], "is a folder: give the file to write"),
        "bad argument": ([str(whole), out, "--num-frames", "many"], "invalid int value: 'many'"),
        "no data.root": ([str(official), out, "--data", "list", "data.num_classes=10"], "add data.root=/path/to"),
        "unknown key": ([str(official), out, "--data", "synthetic", "data.nokey=1"], "use +data.nokey=1"),
    }
    for case, (argv, expected) in cases.items():
        code, err = run_tool(convert_official.main, argv, capsys)
        assert code == 2, (case, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, (case, err)
    assert not Path(out).exists()
    # and the same official file converts, written whole under its name
    assert run_tool(convert_official.main, [str(official), out, "--data", "synthetic"], capsys)[0] == 0
    assert sorted(p.name for p in Path(out).parent.glob("out.*")) == ["out.ckpt", "out.yaml"]
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.slow  # 25 s a tool: a fork server importing the tools in a process of its own
@pytest.mark.parametrize("tool", ["reencode_videos", "extract_frames"])
def test_a_tool_run_as_a_program_starts_its_workers_without_runpy_warnings(tmp_path, tool):
    """``python -m rsa_lightning.tools.<tool>`` with a worker pool: the fork server imported the tool under its name
    (itself, or through a tool importing it), each worker then ran it as ``__mp_main__``, and runpy warned "found
    in sys.modules" once per worker."""
    for i in range(2):
        write_clip(tmp_path / "src" / f"v{i}.mp4", 3, seed=i)
    result = subprocess.run(
        [sys.executable, "-m", f"rsa_lightning.tools.{tool}", str(tmp_path / "src"), str(tmp_path / "dst")]
        + ["--workers", "2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 re-encoded" in result.stdout + result.stderr or "2 extracted" in result.stdout + result.stderr
    assert "RuntimeWarning" not in result.stderr
