"""Extract every frame of a set of videos into JPEG folders (the layout :class:`FrameFolderBackend` reads).

    python -m rsa_lightning.tools.extract_frames SRC DST [--workers 4] [--quality 90] [--short-side 256]

``SRC`` is a folder (searched recursively for ``--extensions``) or a text file listing one video a line (``<path>``,
``<path> <label>`` or ``<path>\\t<notes>``; paths relative to ``--root``, default the list's folder, so annotation
lists and the scan's ``open_gop.txt`` work as they are). Video ``<SRC>/a/b.webm`` becomes ``<DST>/a/b/00001.jpg,
00002.jpg, ...``: the folder is the video id of :func:`rsa_lightning.data.annotations.read_video_list`, frames are
numbered from 1.

Resumable: a finished folder holds a ``.done`` marker (its content is the frame count) and is skipped; a folder
without it (an interrupted extraction) is emptied and redone. Frames are decoded sequentially with PyAV (exact on
any GOP structure); ``--short-side`` resizes with area interpolation; JPEGs are written with simplejpeg when it is
installed, else PIL (same libjpeg quality scale).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from rsa_lightning.tools.scan_videos import progress_map

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
DONE_MARKER = ".done"


def report_results(results: dict[str, str], verb: str, dst: Path) -> int:
    """Print what a batch job did (``results``: name -> "done" / "skipped" / "failed: why"); exit code 1 on failures."""
    failed = {name: status for name, status in results.items() if status.startswith("failed")}
    counts = {s: sum(v == s for v in results.values()) for s in ("done", "skipped")}
    print(f"{counts['done']} {verb}, {counts['skipped']} already done, {len(failed)} failed -> {dst}")
    for name, status in sorted(failed.items()):
        print(f"  {name}: {status}")
    return 1 if failed else 0


def list_videos(
    src: Path, extensions: Sequence[str] = VIDEO_EXTENSIONS, root: Optional[Path] = None
) -> list[tuple[Path, str]]:
    """``(video path, relative name without extension)`` for a folder (recursive) or a list file."""
    src = Path(src)
    if src.is_dir():
        suffixes = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
        videos = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        return [(p, str(p.relative_to(src).with_suffix(""))) for p in videos]
    if not src.is_file():
        raise FileNotFoundError(f"{src} is neither a folder of videos nor a list file")
    root = Path(root) if root is not None else src.parent
    videos = []
    for line in src.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "\t" in line:  # '<path>\t<notes>' (the scan's lists)
            entry = line.split("\t")[0]
        else:  # '<path>' or '<path> <label>' (annotation lists; the path may contain spaces)
            parts = line.rsplit(maxsplit=1)
            entry = parts[0] if len(parts) == 2 and parts[1].lstrip("-").isdigit() else line
        path = Path(entry) if Path(entry).is_absolute() else root / entry
        try:
            name = str(path.relative_to(root).with_suffix(""))
        except ValueError:  # an absolute path outside root
            name = path.stem
        videos.append((path, name))
    return videos


def short_side_size(width: int, height: int, short_side: Optional[int]) -> tuple[int, int]:
    """(width, height) with the shorter side ``short_side`` (aspect kept, rounded), or unchanged for None."""
    if not short_side or min(width, height) == short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def _jpeg_encoder(quality: int):
    try:
        import simplejpeg

        return lambda rgb: simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=quality, colorspace="RGB")
    except ImportError:
        import io

        from PIL import Image

        def encode_pil(rgb: np.ndarray) -> bytes:
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
            return buffer.getvalue()

        return encode_pil


@dataclass
class ExtractOptions:
    quality: int = 90
    short_side: Optional[int] = None
    filename_template: str = "{:05d}.jpg"
    first_index: int = 1


def extract_video(video: Path, out_dir: Path, options: ExtractOptions) -> str:
    """Write the frames of ``video`` into ``out_dir``; returns ``"done"``, ``"skipped"`` or ``"failed: <why>"``."""
    import av

    if (out_dir / DONE_MARKER).is_file():
        return "skipped"
    if out_dir.exists():
        shutil.rmtree(out_dir)  # an interrupted extraction
    out_dir.mkdir(parents=True)
    encode = _jpeg_encoder(options.quality)
    count = 0
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                width, height = short_side_size(frame.width, frame.height, options.short_side)
                if (width, height) != (frame.width, frame.height):  # scale first: one pass into RGB is darker
                    frame = frame.reformat(width=width, height=height, interpolation="AREA")
                rgb = frame.to_ndarray(format="rgb24")
                name = options.filename_template.format(options.first_index + count)
                (out_dir / name).write_bytes(encode(rgb))
                count += 1
        if count == 0:
            raise ValueError("no frames")
    except Exception as err:
        shutil.rmtree(out_dir, ignore_errors=True)
        first_line = (str(err).strip().splitlines() or [""])[0]
        return f"failed: {type(err).__name__}: {first_line}"
    (out_dir / DONE_MARKER).write_text(f"{count}\n")
    return "done"


_options: dict = {}


def _init(dst: Path, options: ExtractOptions) -> None:
    _options.update(dst=dst, options=options)


def _extract_one(item: tuple[Path, str]) -> tuple[str, str]:
    video, name = item
    return name, extract_video(video, _options["dst"] / name, _options["options"])


def extract_frames(
    src: Path,
    dst: Path,
    *,
    workers: int = 2,
    options: Optional[ExtractOptions] = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    root: Optional[Path] = None,
) -> dict[str, str]:
    """Extract every video of ``src`` into ``dst``; returns ``{name: "done" | "skipped" | "failed: ..."}``."""
    videos = list_videos(Path(src), extensions, root)
    options = options or ExtractOptions()
    results = progress_map(_extract_one, videos, workers, "extracting frames", _init, (Path(dst), options))
    return dict(results)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="folder of videos, or a list file (one video path a line)")
    parser.add_argument("dst", type=Path, help="output root: <dst>/<video id>/00001.jpg ...")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality 1-100")
    parser.add_argument("--short-side", type=int, default=None, help="resize so the shorter side has this size")
    parser.add_argument("--template", default="{:05d}.jpg", help="frame file name pattern")
    parser.add_argument("--first-index", type=int, default=1, help="number of the first frame file")
    parser.add_argument("--root", type=Path, default=None, help="root of relative paths in a list file")
    parser.add_argument("--extensions", default=",".join(VIDEO_EXTENSIONS), help="video suffixes in a folder")
    args = parser.parse_args(argv)
    if not 1 <= args.quality <= 100:
        parser.error("--quality must be in [1, 100]")
    options = ExtractOptions(args.quality, args.short_side, args.template, args.first_index)
    results = extract_frames(
        args.src, args.dst, workers=args.workers, options=options, extensions=args.extensions.split(","), root=args.root
    )
    return report_results(results, "extracted", args.dst)


if __name__ == "__main__":
    sys.exit(main())
