"""Re-encode videos as closed-GOP H.264 mp4, which decord decodes exactly with fast seeks.

    python -m rsa_lightning.tools.reencode_videos SRC DST [--workers 4] [--crf 18] [--gop 16] [--bframes 2]
        [--keep-extension]

``SRC`` is a folder (searched recursively; files under ``DST`` left out), a video file or a list file, as for
``rsa_lightning.tools.extract_frames``; pass the scan's open-GOP list (``open_gop.txt``) to re-encode only the files
decord mis-seeks in. ``<SRC>/a/b.webm`` becomes ``<DST>/a/b.mp4``: the video id (path without extension) is
unchanged, the annotation lists need the new suffix.

One output per video, never shared, never an input: two inputs that would write one file (``test.mp4`` and ``test.avi``
side by side) are refused before any work, naming both and the fix (``--keep-extension``: ``<DST>/a/test.mp4.mp4``,
``<DST>/a/test.avi.mp4``, whose video ids are ``a/test.mp4`` and ``a/test.avi``, as those of the originals in a list;
the other outputs keep their names), and so is an output that would overwrite an input (``DST`` = ``SRC``). Every output
records its source (path and size) in the mp4's ``comment`` tag: a later run skips an existing output only for that
source and reports any other video (or a changed file) that maps to it, so one video's content never stands under
another's name.

The frames encoded are the frames the decoding backends return (the reference decode of
:func:`rsa_lightning.data.video_io.iter_frames`: every frame in presentation order, RGB, oriented as shown, so the
output is upright and needs no display matrix). They are encoded with libx264 ``open-gop=0`` (every keyframe an IDR
frame: no frame references across a keyframe), a keyframe at least every ``--gop`` frames, ``--bframes`` B-frames and
constant quality ``--crf``, at the source's average frame rate with one timestamp per frame (the frame count is kept;
variable frame rate becomes constant). The size is kept: yuv420p, or yuv444p (H.264 High 4:4:4, which FFmpeg,
decord and PyAV decode) when a side is odd, as 4:2:0 needs even sizes. Audio is dropped. An output is written under
a temporary name and renamed when complete.

A video that cannot be re-encoded (missing, zero-byte, not a video, audio only, no decodable frame, a decode error)
is a failure of that video alone, listed with its reason after the others are done. Exit code: 0 when every video is
done or was already done, 1 when some failed, 2 for bad arguments, a missing ``SRC``, an unwritable ``DST`` or two
inputs sharing an output.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

from rsa_lightning.errors import ConfigError, DataError, run_cli
from rsa_lightning.tools.extract_frames import (
    VIDEO_EXTENSIONS,
    ToolArgumentParser,
    VideoFailure,
    VideoJob,
    add_input_arguments,
    check_outputs,
    first_line,
    list_videos,
    other_source,
    prepare_output,
    report_results,
    run_jobs,
    source_facts,
    video_frames,
)

OUTPUT_SUFFIX = ".mp4"
SOURCE_TAG = "comment"  # the mp4 metadata tag holding "source=<path> bytes=<size>"
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


@dataclass
class EncodeOptions:
    crf: int = 18
    gop: int = 16
    bframes: int = 2
    preset: str = "medium"

    def __post_init__(self) -> None:
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"--crf must be in [0, 51] (x264's scale, lower is better), got {self.crf}")
        if self.gop < 1:
            raise ConfigError(f"--gop must be >= 1 frame, got {self.gop}")
        if not 0 <= self.bframes <= 16:
            raise ConfigError(f"--bframes must be in [0, 16], got {self.bframes}")
        if self.preset not in X264_PRESETS:
            raise ConfigError(f"--preset must be one of {', '.join(X264_PRESETS)}, got {self.preset!r}")


def recorded_source(path: Path) -> dict[str, str]:
    """The source facts an output of this tool recorded (empty for another mp4 or an older output)."""
    import av

    try:
        with av.open(str(path)) as container:
            tag = container.metadata.get(SOURCE_TAG, "")
    except Exception:  # not readable: not ours, treated as an older output
        return {}
    if not tag.startswith("source="):
        return {}
    source, _, size = tag.removeprefix("source=").rpartition(" bytes=")
    return {"source": source, "bytes": size} if source else {"source": size}


def frame_rate(path: Path) -> Fraction:
    """The average frame rate of the first video stream of ``path`` (its guess without one; 30 without either)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or 30
    return Fraction(rate).limit_denominator(100000)


def _add_h264_stream(target: Any, rate: Fraction, width: int, height: int, options: EncodeOptions) -> Any:
    """The closed-GOP H.264 stream of the module docstring, at ``width`` x ``height``."""
    stream = target.add_stream("libx264", rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"  # 4:2:0 needs even sizes
    stream.options = {
        "crf": str(options.crf),
        "preset": options.preset,
        "g": str(options.gop),
        "bf": str(options.bframes),
        "x264-params": f"open-gop=0:keyint={options.gop}",
    }
    return stream


def reencode_video(job: VideoJob, dst: Path, options: EncodeOptions) -> str:
    """Re-encode ``job`` as closed-GOP H.264 at ``dst``; returns ``"done"``, ``"skipped"`` or ``"failed: <why>"``."""
    import av

    if dst.is_file():
        conflict = other_source(recorded_source(dst), job, dst)
        return f"failed: {conflict}" if conflict else "skipped"
    tmp = dst.with_name(f".{dst.name}.partial{OUTPUT_SUFFIX}")
    with contextlib.closing(video_frames(job.path)) as frames:
        try:
            first = next(frames, None)  # a file that is no video fails here, before anything is written
        except VideoFailure as err:
            return f"failed: {err}"
        if first is None:
            return "failed: no video frame (a video stream without frames)"
        facts = source_facts(job)
        count = 0
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            with av.open(str(tmp), mode="w", format="mp4") as target:
                target.metadata[SOURCE_TAG] = f"source={facts['source']} bytes={facts['bytes']}"
                rate = frame_rate(job.path)
                height, width = first.shape[:2]  # as shown (oriented): the output needs no display matrix
                out = _add_h264_stream(target, rate, width, height, options)
                for rgb in itertools.chain([first], frames):
                    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=out.pix_fmt)
                    frame.pts, frame.time_base = count, 1 / rate  # one tick per frame: constant frame rate
                    count += 1
                    for packet in out.encode(frame):
                        target.mux(packet)
                for packet in out.encode():
                    target.mux(packet)
        except Exception as err:  # the video's own failure (VideoFailure) or writing the output (OSError)
            tmp.unlink(missing_ok=True)
            reason = str(err) if isinstance(err, VideoFailure) else first_line(err)
            return f"failed: {reason}" + (f" (after {count} frames; nothing written)" if count else "")
    os.replace(tmp, dst)
    return "done"


_options: dict = {}


def _init(dst: Path, options: EncodeOptions) -> None:
    _options.update(dst=dst, options=options)


def _reencode_one(job: VideoJob) -> tuple[str, str]:
    return job.name, reencode_video(job, _options["dst"] / f"{job.name}{OUTPUT_SUFFIX}", _options["options"])


def reencode_videos(
    src: Path,
    dst: Path,
    *,
    workers: int = 2,
    options: Optional[EncodeOptions] = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    root: Optional[Path] = None,
    keep_extension: bool = False,
) -> dict[str, str]:
    """Re-encode every video of ``src`` into ``dst``; returns ``{name: "done" | "skipped" | "failed: ..."}``.

    Raises a :class:`~rsa_lightning.errors.UserError` before any work when ``src`` does not exist or holds no video,
    ``dst`` is not writable, two inputs would share an output, or an output would overwrite an input.
    """
    src, dst = Path(src), Path(dst)
    jobs = list_videos(src, extensions, root, keep_extension=keep_extension, exclude=dst)
    if not jobs:
        raise DataError(f"no video in {src} (suffixes {', '.join(extensions)}): check SRC, or pass --extensions")
    check_outputs(jobs, dst, OUTPUT_SUFFIX)
    prepare_output(dst)
    options = options or EncodeOptions()
    return run_jobs(_reencode_one, jobs, workers, "re-encoding videos", _init, (dst, options))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ToolArgumentParser(
        prog="python -m rsa_lightning.tools.reencode_videos", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("src", type=Path, help="folder of videos, or a list file (one video path a line)")
    parser.add_argument("dst", type=Path, help="output root: <dst>/<relative path>.mp4")
    parser.add_argument("--crf", type=int, default=18, help="x264 constant quality (lower: better, larger)")
    parser.add_argument("--gop", type=int, default=16, help="maximum frames between keyframes")
    parser.add_argument("--bframes", type=int, default=2)
    parser.add_argument("--preset", default="medium", help="x264 speed preset (ultrafast ... veryslow)")
    add_input_arguments(parser)
    args: argparse.Namespace = parser.parse_args(argv)
    options = EncodeOptions(args.crf, args.gop, args.bframes, args.preset)
    results = reencode_videos(
        args.src,
        args.dst,
        workers=args.workers,
        options=options,
        extensions=args.extensions.split(","),
        root=args.root,
        keep_extension=args.keep_extension,
    )
    return report_results(results, "re-encoded", args.dst)


if __name__ == "__main__":
    sys.exit(run_cli(main))
