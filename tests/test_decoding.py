"""Decoding backends: exact frames, clip bounds, frame folders, open-GOP detection and safe decoding, broken files."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import types
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from conftest import decoded_frame_index, frame_brightness, write_brightness_video

from rsa_lightning.data.annotations import VideoRecord
from rsa_lightning.data.decoding import (
    DecordBackend,
    FrameFolderBackend,
    PyAVBackend,
    TorchCodecBackend,
    clip_length,
    load_torchcodec,
)
from rsa_lightning.data.probing import check_seek_accuracy, detect_open_gop
from rsa_lightning.data.video_io import VideoDecodeError
from rsa_lightning.errors import ConfigError

# x264 settings of the open-GOP clip: a keyframe every 8 frames, 3 B-frames always (b-adapt=0), and open-gop=1, so
# every keyframe after the first is a non-IDR I-frame followed (in decode order) by 3 leading B-frames that show
# before it and reference the previous GOP. scenecut=0: every pattern frame would otherwise be a scene cut.
OPEN_GOP_X264 = "open-gop=1:keyint=8:min-keyint=8:bframes=3:b-adapt=0:scenecut=0"
CLOSED_GOP_X264 = "open-gop=0:keyint=8:min-keyint=8:bframes=3:b-adapt=0:scenecut=0"


def pattern_frame(i: int, size: int = 64, block: int = 8) -> np.ndarray:
    """Frame ``i`` of a pattern video: 8 x 8 blocks of random colours seeded by ``i``, so every frame differs per
    pixel from every other one (a wrong frame cannot pass a per-pixel comparison)."""
    rng = np.random.default_rng(1000 + i)
    blocks = rng.integers(0, 256, (size // block, size // block, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, block, axis=0), block, axis=1)


def write_pattern_video(path: Path, num_frames: int, x264_params: str, codec: str = "libx264") -> Path:
    """A pattern video; H.264 near-lossless (crf 4) with ``x264_params``, or VP9 webm for ``codec="libvpx-vp9"``."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=12)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "4", "x264-params": x264_params}
        else:
            stream.options = {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        for i in range(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pattern_frame(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def sequential_frames(path: Path) -> np.ndarray:
    """Every frame of ``path`` decoded in order by PyAV (no seek): the reference."""
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def wrong_frames(frames: np.ndarray, reference: np.ndarray, indices: np.ndarray) -> list[int]:
    """The indices whose decoded frame differs in any pixel from the reference."""
    diff = np.abs(frames.astype(np.int16) - reference[indices].astype(np.int16)).reshape(len(indices), -1).max(1)
    return [int(i) for i, d in zip(indices, diff) if d > 0]


def record(path: Path, **kwargs) -> VideoRecord:
    return VideoRecord(path=Path(path), label=0, video_id=Path(path).stem, **kwargs)


def torchcodec_missing() -> Optional[str]:
    """Why :class:`TorchCodecBackend` cannot be built here (its short install message), or None."""
    try:
        load_torchcodec()
    except ConfigError as err:
        return str(err)
    return None


# tests (and parameters) of TorchCodecBackend are skipped, with the install hint, where torchcodec cannot load
needs_torchcodec = pytest.mark.skipif(torchcodec_missing() is not None, reason=torchcodec_missing() or "")


def video_backends(*names: str) -> list:
    """Backend factories as test parameters (built in the test: TorchCodecBackend may be missing), all or ``names``."""
    factories = {
        "decord-seek": partial(DecordBackend, seek_mode="seek"),
        "decord-sequential": partial(DecordBackend, seek_mode="sequential"),
        "decord": DecordBackend,
        "pyav": PyAVBackend,
        "torchcodec": TorchCodecBackend,
    }
    return [
        pytest.param(make, id=name, marks=[needs_torchcodec] if name == "torchcodec" else [])
        for name, make in factories.items()
        if not names or name in names
    ]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {
        "brightness": write_brightness_video(root / "brightness.mp4", 20),
        "open": write_pattern_video(root / "open.mp4", 48, OPEN_GOP_X264),
        "closed": write_pattern_video(root / "closed.mp4", 48, CLOSED_GOP_X264),
        "webm": write_pattern_video(root / "vp9.webm", 30, "", codec="libvpx-vp9"),
    }


@pytest.mark.parametrize("make_backend", video_backends())
def test_backends_return_exactly_the_chosen_frames(clips, make_backend):
    backend = make_backend()
    seen = []
    chosen = np.array([0, 7, 3, 3, 19, 12])  # unsorted, with a repeat: returned in this order

    def choose(n):
        seen.append(n)
        return chosen

    frames, indices = backend.read(record(clips["brightness"]), choose)
    assert seen == [20]
    assert frames.shape == (6, 32, 32, 3) and frames.dtype == np.uint8
    assert indices.tolist() == chosen.tolist()
    assert [decoded_frame_index(f) for f in frames] == chosen.tolist()


@pytest.mark.parametrize("make_backend", video_backends())
def test_start_and_end_frame_bound_the_clip(clips, make_backend):
    backend = make_backend()
    seen = []

    def choose(n):
        seen.append(n)
        return np.array([0, n - 1])

    frames, indices = backend.read(record(clips["brightness"], start_frame=5, end_frame=15), choose)
    assert seen == [10] and indices.tolist() == [0, 9]
    assert [decoded_frame_index(f) for f in frames] == [5, 14]
    # an end beyond the file is cut to the frames it has; num_frames (the annotation's count) sets the length
    _, indices = backend.read(record(clips["brightness"], start_frame=12, end_frame=40), choose)
    assert seen[-1] == 8
    frames, _ = backend.read(record(clips["brightness"], start_frame=2, num_frames=6), choose)
    assert seen[-1] == 6 and [decoded_frame_index(f) for f in frames] == [2, 7]
    with pytest.raises(VideoDecodeError, match="brightness.mp4: the clip"):
        backend.read(record(clips["brightness"], start_frame=20), choose)


def test_clip_length_rules():
    r = record(Path("x.mp4"))
    assert clip_length(r, 30) == 30
    assert clip_length(record(Path("x"), start_frame=10), 30) == 20
    assert clip_length(record(Path("x"), start_frame=10, end_frame=25, num_frames=8), 30) == 8
    assert clip_length(record(Path("x"), num_frames=50), 30) == 30
    with pytest.raises(VideoDecodeError):
        clip_length(record(Path("x"), start_frame=5, end_frame=5), 30)


def test_a_sampler_bug_is_not_a_decode_error(clips):
    with pytest.raises(ValueError, match="indices"):
        DecordBackend().read(record(clips["brightness"]), lambda n: np.array([n]))


@pytest.mark.parametrize("name", ["closed", "webm"])
def test_pyav_equals_decord_per_pixel_where_decord_seeks_exactly(clips, name):
    reference = sequential_frames(clips[name])
    chosen = np.array([1, 5, 8, 9, 16, 23, 29])
    decord_frames, _ = DecordBackend(seek_mode="seek").read(record(clips[name]), lambda n: chosen)
    pyav_frames, _ = PyAVBackend().read(record(clips[name]), lambda n: chosen)
    np.testing.assert_array_equal(decord_frames, pyav_frames)
    assert wrong_frames(pyav_frames, reference, chosen) == []
    assert not detect_open_gop(clips[name])
    assert check_seek_accuracy(clips[name], num_samples=24).accurate


def test_open_gop_is_detected_and_the_seek_check_flags_it(clips):
    assert detect_open_gop(clips["open"])
    check = check_seek_accuracy(clips["open"], num_samples=24)
    assert check.num_frames == 48 and len(check.checked) == 24
    assert not check.accurate and set(check.wrong) <= set(check.checked)
    assert check.max_abs_diff > 50  # whole other frames, not rounding


def test_open_gop_safe_modes_return_the_sequential_frames(clips, tmp_path):
    path = clips["open"]
    reference = sequential_frames(path)
    assert len(reference) == 48
    # the encode is near-lossless: the reference frames are the patterns, so comparing with it is meaningful
    assert all(np.abs(reference[i].astype(int) - pattern_frame(i)).mean() < 12 for i in range(48))
    rng = np.random.default_rng(0)
    samples = [np.sort(rng.choice(48, 8, replace=False)) for _ in range(12)]
    seek = DecordBackend(seek_mode="seek")
    seek_wrong = [wrong_frames(seek.read(record(path), lambda n, s=s: s)[0], reference, s) for s in samples]
    assert sum(map(len, seek_wrong)) > 0, "decord seeks exactly in open-GOP files now: revisit the sequential fallback"
    listed = tmp_path / "open_gop.txt"
    listed.write_text(f"# scan output\n{path}\t3 sampled frames wrong after seeking\n")
    safe = [
        DecordBackend(seek_mode="auto"),  # detected
        DecordBackend(seek_mode="auto", open_gop_files=listed, detect_open_gop=False),  # listed by the scan
        DecordBackend(seek_mode="sequential"),
        PyAVBackend(),
    ]
    assert safe[0].sequential_for(path) and safe[1].sequential_for(path)
    for backend in safe:
        for s in samples:
            frames, _ = backend.read(record(path), lambda n, s=s: s)
            assert wrong_frames(frames, reference, s) == [], backend


def test_frame_folders(tmp_path):
    from PIL import Image

    folder = tmp_path / "frames" / "42"
    folder.mkdir(parents=True)
    for i in range(12):  # 00001.jpg ... 00012.jpg hold frames 0 ... 11
        Image.fromarray(np.full((24, 32, 3), frame_brightness(i), np.uint8)).save(folder / f"{i + 1:05d}.jpg")
    (folder / "notes.txt").write_text("not a frame")
    backend = FrameFolderBackend()
    seen = []

    def choose(n):
        seen.append(n)
        return np.array([0, 4, 11])

    frames, indices = backend.read(record(folder), choose)
    assert seen == [12] and frames.shape == (3, 24, 32, 3)
    assert [decoded_frame_index(f) for f in frames] == [0, 4, 11]
    frames, _ = backend.read(record(folder, start_frame=3, end_frame=10), lambda n: np.array([0, n - 1]))
    assert [decoded_frame_index(f) for f in frames] == [3, 9]
    # the annotation's count is trusted without listing the folder; a frame it promises but lacks is an error
    seen.clear()
    backend.read(record(folder, num_frames=20), lambda n: seen.append(n) or np.array([0]))
    assert seen == [20]
    with pytest.raises(VideoDecodeError, match="00015.jpg"):
        backend.read(record(folder, num_frames=20), lambda n: np.array([14]))
    with pytest.raises(VideoDecodeError, match="does not exist"):
        backend.read(record(tmp_path / "frames" / "missing"), choose)
    # PIL and simplejpeg (when installed) decode identically; the backend pickles into DataLoader workers
    pil, _ = FrameFolderBackend(decoder="pil").read(record(folder), choose)
    np.testing.assert_array_equal(pil, backend.read(record(folder), choose)[0])
    clone = pickle.loads(pickle.dumps(backend))
    np.testing.assert_array_equal(clone.read(record(folder), choose)[0], pil)
    zero_based = FrameFolderBackend(filename_template="img_{:04d}.jpg", first_index=0)
    (folder / "img_0000.jpg").write_bytes((folder / "00001.jpg").read_bytes())
    assert zero_based.count_frames(folder) == 1


def broken_files(root: Path) -> dict[str, Path]:
    """Missing, zero-byte, garbage, truncated (moov atom lost) and empty (no frame) video files."""
    import av

    root.mkdir(parents=True, exist_ok=True)
    good = write_brightness_video(root / "good.mp4", 16)
    (root / "zero.mp4").write_bytes(b"")
    (root / "garbage.mp4").write_bytes(b"not a video at all" * 50)
    (root / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size * 6 // 10])
    container = av.open(str(root / "empty.mkv"), mode="w")
    stream = container.add_stream("libx264", rate=12)
    stream.width = stream.height = 32
    stream.pix_fmt = "yuv420p"
    container.start_encoding()
    container.close()
    return {
        "missing": root / "missing.mp4",
        "zero": root / "zero.mp4",
        "garbage": root / "garbage.mp4",
        "truncated": root / "truncated.mp4",
        "empty": root / "empty.mkv",
    }


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, Path]:
    return broken_files(tmp_path_factory.mktemp("broken"))


@pytest.mark.parametrize("kind", ["missing", "zero", "garbage", "truncated", "empty"])
@pytest.mark.parametrize("make_backend", video_backends("decord", "pyav", "torchcodec"))
def test_broken_files_raise_a_decode_error_naming_the_file(broken, make_backend, kind):
    with pytest.raises(VideoDecodeError, match=broken[kind].name) as raised:
        make_backend().read(record(broken[kind]), lambda n: np.array([0, n - 1]))
    assert ".cpp:" not in str(raised.value)  # no C++ source location of the decoder in the message


@pytest.mark.parametrize("make_backend", video_backends("decord-seek", "pyav", "torchcodec"))
def test_container_count_is_trusted_only_when_the_last_frame_decodes(tmp_path, make_backend):
    import av

    backend = make_backend()

    # faststart mp4 (index first) whose tail is zeroed: the container lists 24 frames, fewer decode
    path = tmp_path / "damaged.mp4"
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "4", "g": "4"}
        for i in range(24):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pattern_frame(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = bytearray(path.read_bytes())
    data[len(data) * 6 // 10 :] = bytes(len(data) - len(data) * 6 // 10)
    path.write_bytes(bytes(data))
    seen = []

    def choose(n):
        seen.append(n)
        return np.array([0, n // 2, n - 1])

    decoded, indices = backend.read(record(path), choose)
    assert seen[0] == 24 and len(seen) == 2 and 0 < seen[1] < 24
    for frame, i in zip(decoded, indices):
        assert np.abs(frame.astype(int) - pattern_frame(i)).mean() < 12


# --------------------------------------------------------------------------------------------------------------------
# torchcodec


@needs_torchcodec
def test_torchcodec_seeks_exactly_in_open_gop_mp4_but_the_backend_leaves_seek_risks_to_pyav(clips):
    from torchcodec.decoders import VideoDecoder

    # measured: torchcodec's exact mode is exact at every frame of the open-GOP clip (each read a fresh decoder)
    reference = sequential_frames(clips["open"])
    for i in range(len(reference)):
        decoder = VideoDecoder(str(clips["open"]), seek_mode="exact", dimension_order="NHWC")
        np.testing.assert_array_equal(decoder.get_frames_at([i]).data.numpy()[0], reference[i], err_msg=f"frame {i}")
    # the probe cannot tell this file from an AVI with open GOPs (where torchcodec is wrong): PyAV reads it
    assert TorchCodecBackend().mode_for(clips["open"]) == "pyav"
    assert TorchCodecBackend().mode_for(clips["closed"]) == "seek"


@needs_torchcodec
def test_torchcodec_refusals_fall_back_to_pyav_logged_once(clips, monkeypatch, caplog):
    from torchcodec.decoders import VideoDecoder

    def refusing_decode(self, indices):
        raise RuntimeError("SingleStreamDecoder, /src/SingleStreamDecoder.cpp:1, Invalid data found")

    monkeypatch.setattr(VideoDecoder, "get_frames_at", refusing_decode)
    draws = iter([np.array([3, 7]), np.array([0, 1])])  # a sampler asked twice would return other frames
    with caplog.at_level(logging.WARNING, logger="rsa_lightning.data.decoding"):
        frames, indices = TorchCodecBackend().read(record(clips["webm"]), lambda n: next(draws))
        TorchCodecBackend().read(record(clips["webm"]), lambda n: np.array([0]))
    assert indices.tolist() == [3, 7]
    np.testing.assert_array_equal(frames, sequential_frames(clips["webm"])[[3, 7]])
    logged = [r.getMessage() for r in caplog.records if "torchcodec cannot read it" in r.getMessage()]
    assert len(logged) == 1 and "vp9.webm" in logged[0] and "Invalid data found" in logged[0], logged
    assert ".cpp" not in logged[0]
    with pytest.raises(VideoDecodeError, match="vp9.webm: RuntimeError: Invalid data found"):
        TorchCodecBackend(fallback=False).read(record(clips["webm"]), lambda n: np.array([0]))


class _UnloadableTorchcodec(types.ModuleType):
    """A ``torchcodec.decoders`` whose libraries do not load (as without FFmpeg's shared libraries)."""

    def __getattr__(self, name: str):
        raise RuntimeError("Could not load libtorchcodec. Likely causes:\n  1. FFmpeg is not properly installed")


@pytest.mark.parametrize("unloadable", [None, _UnloadableTorchcodec("torchcodec.decoders")], ids=["missing", "broken"])
def test_an_unloadable_torchcodec_gives_one_short_error(monkeypatch, unloadable):
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", unloadable)
    with pytest.raises(ConfigError) as raised:
        TorchCodecBackend()
    message = str(raised.value)
    assert "make install" in message and "pip install torchcodec==0.13.0" in message and "FFmpeg" in message
    assert "\n" not in message and len(message) < 700
    if unloadable is None:
        assert message.startswith("data/backend=torchcodec: torchcodec cannot be loaded (")
    else:  # the likely causes summarised, not cut off after "Likely causes:"
        assert message.startswith("data/backend=torchcodec: torchcodec is installed but its native library does not")
        assert f"another torch than this {torch.__version__}" in message and "FFmpeg 4-8 shared libraries" in message
        assert "Could not load libtorchcodec" in message


def test_the_package_imports_and_runs_without_torchcodec(tmp_path):
    # torchcodec is imported only when its backend is built: the other backends work without it
    video = write_brightness_video(tmp_path / "b.mp4", 4)
    script = (
        "import sys; sys.modules['torchcodec'] = None\n"
        "import numpy as np\n"
        "from rsa_lightning.data.annotations import VideoRecord\n"
        "from rsa_lightning.data.decoding import DecordBackend, TorchCodecBackend\n"
        f"DecordBackend().read(VideoRecord(path={str(video)!r}, label=0, video_id='b'), lambda n: np.array([0]))\n"
        "TorchCodecBackend()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    # the decord read ran; the backend's construction is what fails, with the short message
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and last.startswith("rsa_lightning.errors.ConfigError: data/backend=torchcodec"), (
        result.stderr
    )


@pytest.mark.parametrize("backend", [DecordBackend, TorchCodecBackend], ids=["decord", "torchcodec"])
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_threads": "two"}, "data.backend.num_threads must be an integer >= 0, got 'two'"),
        ({"num_threads": -1}, "data.backend.num_threads must be an integer >= 0, got -1"),
        ({"fallback": "maybe"}, "data.backend.fallback must be true or false, got 'maybe'"),
    ],
)
def test_backend_options_name_the_key(backend, kwargs, match):
    # checked before torchcodec is loaded: the answer does not depend on it being installed
    with pytest.raises(ValueError, match=match):
        backend(**kwargs)
