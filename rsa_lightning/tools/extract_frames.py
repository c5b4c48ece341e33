"""Extract every frame of a set of videos into image folders (the layout :class:`FrameFolderBackend` reads).

    python -m rsa_lightning.tools.extract_frames SRC DST [--workers 4] [--quality 90] [--short-side 256]
        [--template {:05d}.jpg] [--keep-extension]

``SRC`` is a folder (searched recursively for ``--extensions``), one video file, or a text file listing one video a
line (``<path>``, ``<path> <label>`` or ``<path>\\t<notes>``; paths relative to ``--root``, default the list's folder,
so annotation lists and the scan's ``open_gop.txt`` work as they are). Video ``<SRC>/a/b.webm`` becomes
``<DST>/a/b/00001.jpg, 00002.jpg, ...``: the folder is the video id of
:func:`rsa_lightning.data.annotations.read_video_list`, frames are numbered from 1.

One output per video, never shared. Two inputs that would write one folder (``test.mp4`` and ``test.avi`` side by
side; two absolute paths of a list with one file name) are refused before any work, naming both and the fix:
``--keep-extension`` keeps the extension in the names of the inputs that differ only by it (``<DST>/a/test.mp4/``,
``<DST>/a/test.avi/``; the others keep their usual names), the rule of the video ids of
:func:`~rsa_lightning.data.annotations.read_video_list`. A video listed twice is extracted once. A finished folder
holds a ``.done`` marker naming its source (path and size): a later run skips it only for that source, and reports a
different video (or a changed file) that maps to it instead of mixing frames; a folder without the marker (an
interrupted extraction) is redone.

The frames are the frames the decoding backends return, the reference decode of
:func:`rsa_lightning.data.video_io.iter_frames`: every frame of the first video stream in presentation order (PyAV,
sequential: exact on any GOP structure, timestamp layout and container metadata), RGB, oriented as a player shows
them (display matrix applied); ``--short-side`` then resizes with area interpolation. ``--template`` ending in
``.jpg`` / ``.jpeg`` writes JPEG at ``--quality`` (simplejpeg when installed, else PIL; same libjpeg quality scale),
``.png`` lossless PNG.

A video that cannot be extracted (missing, zero-byte, not a video, audio only, no decodable frame, a decode error)
is a failure of that video alone, listed with its reason after the others are done. Exit code: 0 when every video is
done or was already done, 1 when some failed (the summary says how many), 2 for bad arguments, a missing ``SRC``,
an unwritable ``DST`` or two inputs sharing an output (one line, see :mod:`rsa_lightning.errors`).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from rsa_lightning.data.video_io import VideoDecodeError, iter_frames
from rsa_lightning.errors import ConfigError, DataError, MissingFileError, UserError, run_cli
from rsa_lightning.tools.scan_videos import progress_map

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
DONE_MARKER = ".done"
IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


class ToolArgumentParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 2 under :func:`rsa_lightning.errors.run_cli`
    (argparse prints its usage block first), with a pointer to ``--help``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{message} (see {self.prog} --help)")


# --------------------------------------------------------------------------------------------------------------------
# inputs and their outputs


@dataclass(frozen=True)
class VideoJob:
    """One input video and the output it owns.

    ``name``: the output's path relative to ``DST`` without a suffix (the video id: the input's path relative to the
    root without extension; the file name without extension for an absolute path outside the root); ``source``: the
    input as the user named it (path relative to the root, with extension; absolute outside the root), recorded in
    the output.
    """

    path: Path
    name: str
    source: str

    def with_extension(self) -> VideoJob:
        """This job with the input's extension kept in the output name (``a/test`` -> ``a/test.mp4``)."""
        return VideoJob(self.path, self.name + self.path.suffix, self.source)


def _job(path: Path, root: Path) -> VideoJob:
    try:
        relative = path.relative_to(root)
    except ValueError:  # an absolute path of a list file, outside root
        return VideoJob(path, path.stem, str(path))
    return VideoJob(path, relative.with_suffix("").as_posix(), relative.as_posix())


def keep_extensions_where_shared(jobs: Sequence[VideoJob]) -> list[VideoJob]:
    """The jobs with the extension kept in the names that several inputs share (``test.mp4``, ``test.avi``)."""
    counts = Counter(job.name for job in jobs)
    return [job.with_extension() if counts[job.name] > 1 else job for job in jobs]


def list_videos(
    src: Path,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    root: Optional[Path] = None,
    *,
    keep_extension: bool = False,
    exclude: Optional[Path] = None,
) -> list[VideoJob]:
    """The videos of a folder (recursive; files under ``exclude``, e.g. the output folder, left out), of a list file,
    or one video file (named after its file name), in order, each once."""
    src = Path(src)
    suffixes = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions if e}
    if src.is_dir():
        jobs = [_job(p, src) for p in _folder_videos(src, suffixes, exclude)]
    elif not src.exists():
        raise MissingFileError(f"SRC {src} does not exist: give a folder of videos or a list file (one video a line)")
    elif not src.is_file():
        raise DataError(f"SRC {src} is neither a folder of videos nor a list file")
    elif src.suffix.lower() in suffixes:
        jobs = [_job(src, src.parent)]
    else:
        try:
            text = src.read_text()
        except UnicodeDecodeError as err:
            raise DataError(
                f"SRC {src} is not a text list of videos (byte {err.start} is not UTF-8): give a folder, a list "
                "file, or a video file with one of --extensions"
            ) from err
        jobs = list(_read_list(text, Path(root) if root is not None else src.parent))
    return keep_extensions_where_shared(jobs) if keep_extension else jobs


def _folder_videos(src: Path, suffixes: set[str], exclude: Optional[Path]) -> list[Path]:
    """The files of ``src`` (recursive, sorted) with one of ``suffixes``, except those under ``exclude``."""
    excluded = exclude.resolve() if exclude is not None else None
    if excluded == src.resolve():  # DST = SRC: every output is an input, refused by check_outputs
        excluded = None
    return sorted(
        p
        for p in src.rglob("*")
        if p.suffix.lower() in suffixes
        and p.is_file()
        and (excluded is None or not p.resolve().is_relative_to(excluded))
    )


def _read_list(text: str, root: Path) -> Iterator[VideoJob]:
    """The videos of a list file's ``text`` (paths relative to ``root``), each once."""
    seen = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "\t" in line:  # '<path>\t<notes>' (the scan's lists)
            entry = line.split("\t")[0]
        else:  # '<path>' or '<path> <label>' (annotation lists; the path may contain spaces)
            parts = line.rsplit(maxsplit=1)
            entry = parts[0] if len(parts) == 2 and parts[1].lstrip("-").isdigit() else line
        path = Path(entry) if Path(entry).is_absolute() else root / entry
        if os.path.normpath(path) not in seen:  # a video of the train and the val list
            seen.add(os.path.normpath(path))
            yield _job(path, root)


def check_outputs(jobs: Sequence[VideoJob], dst: Path, suffix: str = "") -> None:
    """Refuse (before any work) inputs that would share an output ``<dst>/<name><suffix>``, or an output that is an
    input, naming both files and the fix."""
    owner: dict[str, VideoJob] = {}
    inputs = {os.path.normcase(os.path.abspath(job.path)): job for job in jobs}
    for job in jobs:
        output = dst / f"{job.name}{suffix}"
        other = owner.setdefault(job.name, job)
        if other is not job:
            if _same_stem(other.source, job.source):
                fix = "pass --keep-extension (the names of such inputs keep their extension), or rename one"
            elif Path(other.source).is_absolute() or Path(job.source).is_absolute():
                fix = "pass --root a folder holding both (outputs keep their relative paths), or rename one"
            else:
                fix = "rename one of them"
            raise DataError(f"{other.path} and {job.path} would both be written to {output}: {fix}")
        overwritten = inputs.get(os.path.normcase(os.path.abspath(output)))
        if overwritten is not None:
            raise DataError(
                f"the output of {job.path} would overwrite the input {overwritten.path}: choose a DST outside SRC"
            )


def _same_stem(first: str, second: str) -> bool:
    return Path(first).with_suffix("") == Path(second).with_suffix("")


def prepare_output(dst: Path) -> None:
    """Create ``dst`` and check that it is writable; a one-line :class:`UserError` otherwise."""
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the output folder {dst}: {err.strerror or err}; choose a writable DST") from err
    if not os.access(dst, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into the output folder {dst}: permission denied; choose a writable DST")


def source_facts(job: VideoJob) -> dict[str, str]:
    """What an output records of its input, and compares on a later run: the input's name and size."""
    return {"source": job.source, "bytes": str(job.path.stat().st_size)}


def other_source(recorded: dict[str, str], job: VideoJob, output: Path) -> Optional[str]:
    """Why ``output`` (which recorded ``recorded``) is not the output of ``job`` now, or None when it is (or when
    it recorded nothing: an output of an older version of the tool)."""
    if "source" not in recorded:
        return None
    if recorded["source"] != job.source:
        fix = "pass --keep-extension, or choose another DST" if _same_stem(recorded["source"], job.source) else ""
        return f"{output} holds {recorded['source']}, not {job.source}: {fix or 'choose another DST'}, or delete it"
    if "bytes" in recorded and job.path.is_file() and recorded["bytes"] != str(job.path.stat().st_size):
        return (
            f"{output} was made from {job.source} of {recorded['bytes']} bytes, the file now has "
            f"{job.path.stat().st_size}: delete it to redo it"
        )
    return None


# --------------------------------------------------------------------------------------------------------------------
# decoding


class VideoFailure(Exception):
    """A video this tool cannot process; the message is the reason (without the file, which the report names)."""


def first_line(err: BaseException) -> str:
    """``Type: message`` cut to its first line."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:300]}" if lines else type(err).__name__


def video_frames(path: Path) -> Iterator[np.ndarray]:
    """The frames of ``path`` exactly as the decoding backends return them: uint8 (H, W, 3) RGB, every frame in
    presentation order, oriented as shown (the reference decode, :func:`rsa_lightning.data.video_io.iter_frames`).
    Raises :class:`VideoFailure` with the reason (missing, zero-byte, not a video, no video stream, a decode error)."""
    try:
        yield from iter_frames(path)
    except VideoDecodeError as err:
        reason = str(err).removeprefix(f"{path}: ")
        raise VideoFailure(reason) from err


def short_side_size(width: int, height: int, short_side: Optional[int]) -> tuple[int, int]:
    """(width, height) with the shorter side ``short_side`` (aspect kept, rounded), or unchanged for None."""
    if not short_side or min(width, height) == short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def resize_short_side(rgb: np.ndarray, short_side: Optional[int]) -> np.ndarray:
    """``rgb`` (H, W, 3) resized with area interpolation (FFmpeg's) to the shorter side ``short_side``."""
    height, width = rgb.shape[:2]
    size = short_side_size(width, height, short_side)
    if size == (width, height):
        return rgb
    import av

    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return frame.reformat(width=size[0], height=size[1], interpolation="AREA").to_ndarray(format="rgb24")


def _image_encoder(image_format: str, quality: int):
    if image_format == "JPEG":
        try:
            import simplejpeg

            return lambda rgb: simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=quality, colorspace="RGB")
        except ImportError:
            pass
    import io

    from PIL import Image

    def encode_pil(rgb: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        if image_format == "JPEG":
            Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
        else:
            Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)  # lossless at any level
        return buffer.getvalue()

    return encode_pil


@dataclass
class ExtractOptions:
    quality: int = 90
    short_side: Optional[int] = None
    filename_template: str = "{:05d}.jpg"
    first_index: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be in [1, 100], got {self.quality}")
        if self.short_side is not None and self.short_side < 1:
            raise ConfigError(f"--short-side must be a positive number of pixels, got {self.short_side}")
        try:
            self.filename_template.format(self.first_index)
        except (IndexError, KeyError, ValueError) as err:
            raise ConfigError(
                f"--template {self.filename_template!r} must format one integer, e.g. '{{:05d}}.jpg' ({err})"
            ) from err
        if self.image_format is None:
            raise ConfigError(
                f"--template {self.filename_template!r} must end in one of {sorted(IMAGE_FORMATS)} (the image format)"
            )

    @property
    def image_format(self) -> Optional[str]:
        return IMAGE_FORMATS.get(Path(self.filename_template).suffix.lower())


# --------------------------------------------------------------------------------------------------------------------
# extraction


def read_marker(marker: Path) -> dict[str, str]:
    """A ``.done`` marker: the frame count on its first line, then ``key=value`` lines (source, bytes)."""
    lines = marker.read_text().splitlines()
    facts = {"frames": lines[0].strip()} if lines else {}
    facts.update(line.split("=", 1) for line in lines[1:] if "=" in line)
    return facts


def _clear_frames(out_dir: Path) -> None:
    """Remove the files of ``out_dir`` (frames, marker), never its subfolders (other videos' folders may nest)."""
    for entry in os.scandir(out_dir):
        if entry.is_file(follow_symlinks=False) or entry.is_symlink():
            os.unlink(entry.path)


def extract_video(job: VideoJob, out_dir: Path, options: ExtractOptions) -> str:
    """Write the frames of ``job`` into ``out_dir``; returns ``"done"``, ``"skipped"`` or ``"failed: <why>"``."""
    marker = out_dir / DONE_MARKER
    if marker.is_file():
        conflict = other_source(read_marker(marker), job, out_dir)
        return f"failed: {conflict}" if conflict else "skipped"
    with contextlib.closing(video_frames(job.path)) as frames:
        try:
            first = next(frames, None)  # a file that is no video fails here, before its folder is made
        except VideoFailure as err:
            return f"failed: {err}"
        if first is None:
            return "failed: no video frame (a video stream without frames)"
        facts = source_facts(job)
        encode = _image_encoder(options.image_format or "JPEG", options.quality)
        count = 0
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            _clear_frames(out_dir)  # an interrupted extraction
            for rgb in itertools.chain([first], frames):
                name = options.filename_template.format(options.first_index + count)
                (out_dir / name).write_bytes(encode(resize_short_side(rgb, options.short_side)))
                count += 1
            marker.write_text("".join(f"{line}\n" for line in [count, *(f"{k}={v}" for k, v in facts.items())]))
        except Exception as err:  # the video's own failure (VideoFailure) or writing its frames (OSError)
            with contextlib.suppress(OSError):
                _clear_frames(out_dir)
                out_dir.rmdir()  # unless other videos' folders nest in it
            reason = str(err) if isinstance(err, VideoFailure) else first_line(err)
            removed = f" (the {count} frames written are removed)" if count else ""
            return f"failed: {reason}{removed}"
    return "done"


_options: dict = {}


def _init(dst: Path, options: ExtractOptions) -> None:
    _options.update(dst=dst, options=options)


def _extract_one(job: VideoJob) -> tuple[str, str]:
    return job.name, extract_video(job, _options["dst"] / job.name, _options["options"])


def extract_frames(
    src: Path,
    dst: Path,
    *,
    workers: int = 2,
    options: Optional[ExtractOptions] = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    root: Optional[Path] = None,
    keep_extension: bool = False,
) -> dict[str, str]:
    """Extract every video of ``src`` into ``dst``; returns ``{name: "done" | "skipped" | "failed: ..."}``.

    Raises a :class:`UserError` before any work when ``src`` does not exist or holds no video, ``dst`` is not
    writable, or two inputs would share an output.
    """
    src, dst = Path(src), Path(dst)
    jobs = list_videos(src, extensions, root, keep_extension=keep_extension, exclude=dst)
    if not jobs:
        raise DataError(f"no video in {src} (suffixes {', '.join(extensions)}): check SRC, or pass --extensions")
    check_outputs(jobs, dst)
    prepare_output(dst)
    options = options or ExtractOptions()
    return run_jobs(_extract_one, jobs, workers, "extracting frames", _init, (dst, options))


def run_jobs(
    fn, jobs: Sequence[VideoJob], workers: int, description: str, initializer, initargs: tuple
) -> dict[str, str]:
    """``{name: status}`` of ``fn`` over ``jobs`` in ``workers`` processes (see
    :func:`~rsa_lightning.tools.scan_videos.progress_map` and :mod:`rsa_lightning.utils.processes`), in the order of
    ``jobs`` whatever the workers' timing."""
    return dict(progress_map(fn, list(jobs), workers, description, initializer, initargs))


def report_results(results: dict[str, str], verb: str, dst: Path) -> int:
    """Print what a batch job did (``results``: name -> "done" / "skipped" / "failed: why"); exit code 1 on failures."""
    failed = {name: status for name, status in results.items() if status.startswith("failed")}
    counts = {s: sum(v == s for v in results.values()) for s in ("done", "skipped")}
    print(f"{counts['done']} {verb}, {counts['skipped']} already done, {len(failed)} failed -> {dst}")
    for name, status in sorted(failed.items()):
        print(f"  {name}: {status}")
    return 1 if failed else 0


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that choose the input videos and name the outputs, shared with ``reencode_videos``."""
    parser.add_argument("--workers", type=int, default=2, help="processes (1: inline)")
    parser.add_argument("--root", type=Path, default=None, help="root of relative paths in a list file")
    parser.add_argument("--extensions", default=",".join(VIDEO_EXTENSIONS), help="video suffixes in a folder")
    parser.add_argument(
        "--keep-extension",
        action="store_true",
        help="keep the extension in the names of inputs that differ only by it (a/test.mp4/, a/test.avi/)",
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ToolArgumentParser(
        prog="python -m rsa_lightning.tools.extract_frames", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("src", type=Path, help="folder of videos, or a list file (one video path a line)")
    parser.add_argument("dst", type=Path, help="output root: <dst>/<video id>/00001.jpg ...")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality 1-100")
    parser.add_argument("--short-side", type=int, default=None, help="resize so the shorter side has this size")
    parser.add_argument("--template", default="{:05d}.jpg", help="frame file name pattern (.jpg, .jpeg or .png)")
    parser.add_argument("--first-index", type=int, default=1, help="number of the first frame file")
    add_input_arguments(parser)
    args = parser.parse_args(argv)
    options = ExtractOptions(args.quality, args.short_side, args.template, args.first_index)
    results = extract_frames(
        args.src,
        args.dst,
        workers=args.workers,
        options=options,
        extensions=args.extensions.split(","),
        root=args.root,
        keep_extension=args.keep_extension,
    )
    return report_results(results, "extracted", args.dst)


if __name__ == "__main__":
    sys.exit(run_cli(main))
