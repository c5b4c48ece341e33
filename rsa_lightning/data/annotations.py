"""Annotation readers: one small parser per file format, returning :class:`VideoRecord` lists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


UNLABELLED = -1


@dataclass(frozen=True)
class VideoRecord:
    """One video of a split.

    Attributes:
        path: absolute path of the video file, or of the folder of frames (frame backends).
        label: class id in [0, num_classes), or ``UNLABELLED`` (-1) for splits published without labels.
        video_id: unique within a split (the id the publisher uses, e.g. the SSv2 number).
        num_frames: frame count when the annotation states it (frame-folder lists); None: ask the decoder.
        start_frame / end_frame: the clip is frames [start_frame, end_frame) of the file (e.g. Diving48
            annotations); None: from the first / to the last frame.
    """

    path: Path
    label: int
    video_id: str
    num_frames: Optional[int] = None
    start_frame: Optional[int] = None
    end_frame: Optional[int] = None


def read_video_list(list_file: Path | str, root: Path | str) -> list[VideoRecord]:
    """Read a ``<path> <label>`` list file (one video per line; paths relative to ``root`` or absolute).

    The video id is the path relative to ``root`` without its extension (``videos/train_00001.mp4`` ->
    ``videos/train_00001``), so ids stay unique when clips share a file name in different folders.
    """
    list_file, root = Path(list_file), Path(root)
    if not list_file.is_file():
        raise FileNotFoundError(f"annotation list {list_file} does not exist: check data.root and the *_list keys")
    records = []
    for line_no, line in enumerate(list_file.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{list_file}:{line_no}: expected '<path> <integer label>', got {line!r}")
        rel, label = parts[0], int(parts[1])
        path = Path(rel) if Path(rel).is_absolute() else root / rel
        video_id = str(Path(rel).with_suffix("")) if not Path(rel).is_absolute() else Path(rel).stem
        records.append(VideoRecord(path=path, label=label, video_id=video_id))
    if not records:
        raise ValueError(f"annotation list {list_file} has no entries")
    return records


def read_class_names(path: Path | str) -> list[str]:
    """Read one class name per line; line ``i`` is class ``i``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class-name file {path} does not exist: check data.root and data.class_names_file")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"class-name file {path} lists a class twice")
    return names
