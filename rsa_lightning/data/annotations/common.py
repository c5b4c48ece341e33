"""What every annotation reader shares: :class:`VideoRecord`, ``UNLABELLED``, the :class:`Annotations` base class,
and the helpers that read annotation files and check a parsed split, with errors that name the file and the line."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from rsa_lightning.errors import DataError, MissingFileError

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


def require_file(path: Path, what: str, *, root: Optional[Path] = None, key: Optional[str] = None) -> Path:
    """``path`` if it is a file; else :class:`MissingFileError` saying which setting to check (``data.root`` when
    ``root`` does not exist, the config key ``key`` of ``data.annotations`` otherwise)."""
    if path.is_file():
        return path
    if root is not None and not root.is_dir():
        raise MissingFileError(
            f"data.root {root} does not exist (the {what} {path} is below it): set data.root=<the dataset folder>"
        )
    setting = f"data.root and data.annotations.{key}" if key else "data.root"
    kind = "is a folder, not a file" if path.is_dir() else "does not exist"
    raise MissingFileError(f"{what} {path} {kind}: check {setting}")


_SEPARATORS = {",": "comma", "\t": "tab", ";": "semicolon", " ": "space"}


def separator_hint(line: str, expected: str) -> str:
    """`` (the line looks comma-separated; ...)`` when ``line`` has none of the ``expected`` separator (``","``,
    ``";"``, ``"\\t"``, or ``" "`` for any whitespace) but another one; else ``""``."""
    if expected == " ":
        present = [sep for sep in (",", ";") if sep in line] if len(line.split()) < 2 else []
    else:
        present = [sep for sep in _SEPARATORS if sep != expected and sep in line] if expected not in line else []
    if not present:
        return ""
    wanted = "spaces (or tabs)" if expected == " " else f"{_SEPARATORS[expected]}s"
    return f" (the line looks {_SEPARATORS[present[0]]}-separated; this file separates its fields with {wanted})"


def numbered_lines(path: Path, *, comments: bool = False) -> Iterator[tuple[int, str]]:
    """Non-blank stripped lines with their 1-based numbers (optionally skipping ``#`` comments)."""
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        line = line.strip()
        if line and not (comments and line.startswith("#")):
            yield line_no, line


def read_text(path: Path) -> str:
    """The UTF-8 text of an annotation file (a byte-order mark is dropped); :class:`DataError` for binary files."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); is it the right file? Annotation files are "
            "UTF-8 text"
        ) from err


def load_json(path: Path, what: str, *, root: Optional[Path] = None, key: Optional[str] = None) -> Any:
    require_file(path, what, root=root, key=key)
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg}); fix the file or download it again"
        ) from err


def load_json_list(path: Path, what: str, *, root: Optional[Path] = None, key: Optional[str] = None) -> list:
    data = load_json(path, what, root=root, key=key)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of entries, got {type(data).__name__}: is it the {what}?")
    return data


def json_field(entry: Any, key: str, where: str) -> Any:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object, got {entry!r}")
    if key not in entry:
        raise DataError(f"{where}: missing {key!r} (keys: {sorted(entry)})")
    return entry[key]


def json_int(entry: Any, key: str, where: str) -> int:
    value = json_field(entry, key, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where}: {key!r} must be an integer, got {value!r}")
    return value


def names_by_id(pairs: Iterable[tuple[str, int]], source: Path) -> list[str]:
    """Names ordered by their ids, which must be exactly 0 .. K-1 (each once)."""
    by_id: dict[int, str] = {}
    for name, class_id in pairs:
        if class_id in by_id:
            raise DataError(f"{source}: class id {class_id} is given to both {by_id[class_id]!r} and {name!r}")
        by_id[class_id] = name
    expected = set(range(len(by_id)))
    if set(by_id) != expected:
        missing = sorted(expected - set(by_id))[:5]
        extra = sorted(set(by_id) - expected)[:5]
        raise DataError(
            f"{source}: class ids must be 0 .. {len(by_id) - 1} (each once); missing {missing}, out of range {extra}"
        )
    return [by_id[i] for i in range(len(by_id))]


def check_unique_names(located: Iterable[tuple[str, str]], source: Path) -> list[str]:
    """The names of ``(name, where)`` pairs (``where``: ``"line 3"``, ``"entry 2"``); :class:`DataError` naming the
    class and both places when a name repeats: a class name names one output of the model (checkpoints are matched
    to data sets by name), so two classes cannot share one."""
    seen: dict[str, str] = {}
    names = []
    for name, where in located:
        if name in seen:
            raise DataError(
                f"{source}: class {name!r} is listed twice ({seen[name]} and {where}); class names must be unique "
                "(they name the model's outputs): rename one of them"
            )
        seen[name] = where
        names.append(name)
    return names


MIN_CLASSES = 2


def check_class_count(names: list[str], source: Path | str) -> list[str]:
    """``names`` if there are at least two (a classifier of one class learns nothing and its metrics fail)."""
    if len(names) < MIN_CLASSES:
        listed = f": {names[0]!r}" if names else ""
        raise DataError(
            f"{source}: {len(names)} class{'' if len(names) == 1 else 'es'}{listed}; a classifier needs at least "
            f"{MIN_CLASSES}: give every class of the data set"
        )
    return names


def checked_records(
    located: list[tuple[VideoRecord, str]], *, split: str, source: Path, num_classes: int
) -> list[VideoRecord]:
    """Check a parsed split (non-empty, unique ids, labels in range) and return its records."""
    if not located:
        raise DataError(f"{source}: the {split} split has no videos: fill the file or point the config at another")
    seen: dict[str, str] = {}
    for record, where in located:
        if record.video_id in seen:
            raise DataError(
                f"video id {record.video_id!r} is listed twice in the {split} split: "
                f"{seen[record.video_id]} and {where}; remove one of the two lines"
            )
        seen[record.video_id] = where
        if record.label == UNLABELLED and split == "test":
            continue
        if not 0 <= record.label < num_classes:
            hint = (
                " (-1 = unlabelled is allowed only in a test split)"
                if record.label == UNLABELLED
                else f": labels are class ids 0 .. {num_classes - 1}; check the label and the class list"
            )
            raise DataError(f"{where}: label {record.label} of {record.video_id!r} is outside [0, {num_classes}){hint}")
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
        """Class names in id order (line ``i`` = class ``i``); at least two (:func:`check_class_count`)."""
        if self._class_names is None:
            self._class_names = check_class_count(self._read_class_names(), self._class_source())
        return list(self._class_names)

    def _class_source(self) -> str:
        """Where the class names come from (a file, or a config key), for error messages."""
        return str(self.root)

    def _require(self, path: Path, what: str, key: str) -> Path:
        """``path`` if it is a file, else :class:`MissingFileError` naming data.root or data.annotations.<key>."""
        return require_file(path, what, root=self.root, key=key)

    @property
    def num_classes(self) -> int:
        return len(self.class_names())

    def records(self, split: str) -> list[VideoRecord]:
        """The videos of ``split`` (one of :attr:`splits`), in file order."""
        if split not in self.splits:
            raise DataError(
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
