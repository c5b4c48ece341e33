"""What every annotation reader shares: :class:`VideoRecord`, ``UNLABELLED``, the :class:`Annotations` base class,
and the helpers that read annotation files and check a parsed split, with errors that name the file and the line."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

UNLABELLED = -1
SPLITS = ("train", "val", "test")


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


def is_int(text: str) -> bool:
    return re.fullmatch(r"-?[0-9]+", text) is not None


def resolve_path(root: Path, path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    return path


def numbered_lines(path: Path, *, comments: bool = False) -> Iterator[tuple[int, str]]:
    """Non-blank stripped lines with their 1-based numbers (optionally skipping ``#`` comments)."""
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if line and not (comments and line.startswith("#")):
            yield line_no, line


def load_json(path: Path, what: str) -> Any:
    require_file(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def load_json_list(path: Path, what: str) -> list:
    data = load_json(path, what)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    return data


def json_field(entry: Any, key: str, where: str) -> Any:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object, got {entry!r}")
    if key not in entry:
        raise ValueError(f"{where}: missing {key!r} (keys: {sorted(entry)})")
    return entry[key]


def json_int(entry: Any, key: str, where: str) -> int:
    value = json_field(entry, key, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: {key!r} must be an integer, got {value!r}")
    return value


def names_by_id(pairs: Iterable[tuple[str, int]], source: Path) -> list[str]:
    """Names ordered by their ids, which must be exactly 0 .. K-1 (each once)."""
    by_id: dict[int, str] = {}
    for name, class_id in pairs:
        if class_id in by_id:
            raise ValueError(f"{source}: class id {class_id} is given to both {by_id[class_id]!r} and {name!r}")
        by_id[class_id] = name
    expected = set(range(len(by_id)))
    if set(by_id) != expected:
        missing = sorted(expected - set(by_id))[:5]
        extra = sorted(set(by_id) - expected)[:5]
        raise ValueError(
            f"{source}: class ids must be 0 .. {len(by_id) - 1} (each once); missing {missing}, out of range {extra}"
        )
    return [by_id[i] for i in range(len(by_id))]


def check_unique_names(names: list[str], source: Path) -> list[str]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{source}: class {name!r} is listed twice")
        seen.add(name)
    return names


def checked_records(
    located: list[tuple[VideoRecord, str]], *, split: str, source: Path, num_classes: int
) -> list[VideoRecord]:
    """Check a parsed split (non-empty, unique ids, labels in range) and return its records."""
    if not located:
        raise ValueError(f"{source}: the {split} split has no videos")
    seen: dict[str, str] = {}
    for record, where in located:
        if record.video_id in seen:
            raise ValueError(
                f"video id {record.video_id!r} is listed twice in the {split} split: "
                f"{seen[record.video_id]} and {where}"
            )
        seen[record.video_id] = where
        if record.label == UNLABELLED and split == "test":
            continue
        if not 0 <= record.label < num_classes:
            hint = " (-1 = unlabelled is allowed only in a test split)" if record.label == UNLABELLED else ""
            raise ValueError(
                f"{where}: label {record.label} of {record.video_id!r} is outside [0, {num_classes}){hint}"
            )
    return [record for record, _ in located]


class Annotations:
    """Shared interface: ``class_names()`` (cached), ``num_classes``, ``splits``, ``records(split)``.

    A publisher's class implements ``_read_class_names()`` and ``_records(split)`` (ending in
    :func:`checked_records`), and overrides ``splits`` / ``_missing_split_hint`` when a copy may lack a split.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self._class_names: Optional[list[str]] = None

    def _path(self, path: str | Path) -> Path:
        return resolve_path(self.root, path)

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS

    def class_names(self) -> list[str]:
        """Class names in id order (line ``i`` = class ``i``)."""
        if self._class_names is None:
            self._class_names = self._read_class_names()
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names())

    def records(self, split: str) -> list[VideoRecord]:
        """The videos of ``split`` (one of :attr:`splits`), in file order."""
        if split not in self.splits:
            raise ValueError(
                f"{type(self).__name__} has no {split!r} split; available: {', '.join(self.splits)}"
                f"{self._missing_split_hint(split)}"
            )
        return self._records(split)

    def _missing_split_hint(self, split: str) -> str:
        return ""

    def _read_class_names(self) -> list[str]:
        raise NotImplementedError

    def _records(self, split: str) -> list[VideoRecord]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r})"
