"""Re-encode videos as closed-GOP H.264 mp4, which decord decodes exactly with fast seeks.

    python -m rsa_lightning.tools.reencode_videos SRC DST [--workers 4] [--crf 18] [--gop 16] [--bframes 2]

``SRC`` is a folder (searched recursively) or a list file, as for ``rsa_lightning.tools.extract_frames``; pass the
scan's open-GOP list (``open_gop.txt``) to re-encode only the files decord mis-seeks in. ``<SRC>/a/b.webm`` becomes
``<DST>/a/b.mp4``: the video id (path without extension) is unchanged, the annotation lists need the new suffix.

Every frame is decoded (PyAV, in order, so exact) and encoded with libx264 ``open-gop=0`` (every keyframe an IDR
frame: no frame references across a keyframe), a keyframe at least every ``--gop`` frames, ``--bframes`` B-frames
and constant quality ``--crf``, at the source's average frame rate with one timestamp per frame (the frame count is
kept; variable frame rate becomes constant). Audio is dropped; odd widths or heights lose their last pixel column or
row (yuv420p needs even sizes). Resumable: an output is written under a temporary name and renamed when complete,
existing outputs are skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional

from rsa_lightning.tools.extract_frames import VIDEO_EXTENSIONS, list_videos, report_results
from rsa_lightning.tools.scan_videos import progress_map


@dataclass
class EncodeOptions:
    crf: int = 18
    gop: int = 16
    bframes: int = 2
    preset: str = "medium"


def reencode_video(src: Path, dst: Path, options: EncodeOptions) -> str:
    """Re-encode ``src`` as closed-GOP H.264 at ``dst``; returns ``"done"``, ``"skipped"`` or ``"failed: <why>"``."""
    import av

    if dst.is_file():
        return "skipped"
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    count = 0
    try:
        with av.open(str(src)) as source:
            in_stream = source.streams.video[0]
            rate = Fraction(in_stream.average_rate or in_stream.guessed_rate or 30).limit_denominator(100000)
            with av.open(str(tmp), mode="w", format="mp4") as target:
                out = target.add_stream("libx264", rate=rate)
                width, height = in_stream.codec_context.width // 2 * 2, in_stream.codec_context.height // 2 * 2
                out.width, out.height, out.pix_fmt = width, height, "yuv420p"
                out.options = {
                    "crf": str(options.crf),
                    "preset": options.preset,
                    "g": str(options.gop),
                    "bf": str(options.bframes),
                    "x264-params": f"open-gop=0:keyint={options.gop}",
                }
                for frame in source.decode(in_stream):
                    if (frame.width, frame.height) != (width, height) or frame.format.name != "yuv420p":
                        frame = frame.reformat(width=width, height=height, format="yuv420p")
                    frame.pts, frame.time_base = count, 1 / rate  # one tick per frame: constant frame rate
                    count += 1
                    for packet in out.encode(frame):
                        target.mux(packet)
                for packet in out.encode():
                    target.mux(packet)
        if count == 0:
            raise ValueError("no frames")
    except Exception as err:
        tmp.unlink(missing_ok=True)
        first_line = (str(err).strip().splitlines() or [""])[0]
        return f"failed: {type(err).__name__}: {first_line}"
    os.replace(tmp, dst)
    return "done"


_options: dict = {}


def _init(dst: Path, options: EncodeOptions) -> None:
    _options.update(dst=dst, options=options)


def _reencode_one(item: tuple[Path, str]) -> tuple[str, str]:
    video, name = item
    return name, reencode_video(video, _options["dst"] / f"{name}.mp4", _options["options"])


def reencode_videos(
    src: Path,
    dst: Path,
    *,
    workers: int = 2,
    options: Optional[EncodeOptions] = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    root: Optional[Path] = None,
) -> dict[str, str]:
    """Re-encode every video of ``src`` into ``dst``; returns ``{name: "done" | "skipped" | "failed: ..."}``."""
    videos = list_videos(Path(src), extensions, root)
    results = progress_map(
        _reencode_one, videos, workers, "re-encoding videos", _init, (Path(dst), options or EncodeOptions())
    )
    return dict(results)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="folder of videos, or a list file (one video path a line)")
    parser.add_argument("dst", type=Path, help="output root: <dst>/<relative path>.mp4")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--crf", type=int, default=18, help="x264 constant quality (lower: better, larger)")
    parser.add_argument("--gop", type=int, default=16, help="maximum frames between keyframes")
    parser.add_argument("--bframes", type=int, default=2)
    parser.add_argument("--preset", default="medium", help="x264 speed preset (ultrafast ... veryslow)")
    parser.add_argument("--root", type=Path, default=None, help="root of relative paths in a list file")
    parser.add_argument("--extensions", default=",".join(VIDEO_EXTENSIONS), help="video suffixes in a folder")
    args = parser.parse_args(argv)
    options = EncodeOptions(args.crf, args.gop, args.bframes, args.preset)
    results = reencode_videos(
        args.src, args.dst, workers=args.workers, options=options, extensions=args.extensions.split(","), root=args.root
    )
    return report_results(results, "re-encoded", args.dst)


if __name__ == "__main__":
    sys.exit(main())
