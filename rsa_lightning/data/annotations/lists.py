"""Generic list files: ``<path> <label>`` video lists, the official RSA / TSM ``<frame_folder> <num_frames> <label>``
frame lists and mmaction2's ``<frame_folder> <start_frame> <num_frames> <label>`` offset lists
(:class:`ListAnnotations`, one list per split, or :func:`read_video_list` for one list), and class-name files with one
name per line (:func:`read_class_names`).

A line is its path followed by whitespace-separated integers; which integer is what depends on the list format, and
the path may itself contain spaces. So a line that several formats could read differently is refused rather than
guessed: a path never ends in a space and a number (``imgs 2`` is what an offset line ``imgs 2 5 127`` or a multi-label
line ``imgs 5 3 5`` becomes when read with one number too few), ``list_format="auto"`` accepts only files whose lines
all end in one number (videos) or all in two (frames, unless the paths look like video files: a multi-label video
line ``test.mp4 0 3`` reads the same), and the message names the format the line looks like and the setting that
declares it. Multi-label lines (several labels per video) are refused in every format: rsa_lightning trains
single-label classifiers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rsa_lightning.data.annotations.common import (
    Annotations,
    VideoRecord,
    check_class_count,
    check_unique_names,
    checked_records,
    is_int,
    numbered_lines,
    require_file,
    resolve_path,
    separator_hint,
)
from rsa_lightning.data.annotations.finegym import is_gym_categories, read_gym_categories
from rsa_lightning.errors import ConfigError, DataError

# list_format -> the fields after the path, in order (the last one is always the label)
LIST_FORMATS: dict[str, tuple[str, ...]] = {
    "video": ("label",),
    "frames": ("num_frames", "label"),
    "frames_offset": ("start_frame", "num_frames", "label"),
}
VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts")


def _layout(list_format: str) -> str:
    """``'<path> <label>'``-style description of a format's line."""
    path = "<path>" if list_format == "video" else "<frame_folder>"
    return "'" + " ".join([path] + [f"<{field}>" for field in LIST_FORMATS[list_format]]) + "'"


@dataclass(frozen=True)
class _Line:
    """One entry of a list file: its path text, the integers after it, and ``file:line``."""

    rel: str
    numbers: tuple[int, ...]
    where: str
    text: str


def _trailing_integers(line: str) -> int:
    """How many whitespace-separated integers end ``line`` (the first field is never counted: it is the path)."""
    fields = line.split()
    count = 0
    while count < len(fields) - 1 and is_int(fields[-1 - count]):
        count += 1
    return count


def _looks_like_video(rel: str) -> bool:
    return rel.lower().endswith(VIDEO_SUFFIXES)


def _guess(count: int, rel: str) -> str:
    """What a line whose path ``rel`` is followed by ``count`` integers looks like, and how to declare it."""
    declare = "set data.annotations.list_format={}"
    multi = "several labels per video (mmaction2's multi-label lists) are not supported: keep one label per line"
    if count == 1:
        return f"it looks like a video list {_layout('video')}: {declare.format('video')}"
    if count == 2:
        if _looks_like_video(rel):
            frames = declare.format("frames")
            return f"it looks like a video with two labels: {multi}; if these are frame folders, {frames}"
        return f"it looks like a frame list {_layout('frames')}: {declare.format('frames')}"
    if count == 3:
        return (
            f"it looks like mmaction2's frame list with a start offset {_layout('frames_offset')}: "
            f"{declare.format('frames_offset')}; if the numbers after the first are labels, {multi}"
        )
    return f"{multi}"


def _split_line(line: str, list_format: str, where: str) -> _Line:
    """Split one line by ``list_format``; :class:`DataError` when it does not fit or is ambiguous."""
    fields = LIST_FORMATS[list_format]
    count = _trailing_integers(line)
    parts = line.rsplit(maxsplit=len(fields))
    if count < len(fields) or len(parts) != len(fields) + 1:
        raise DataError(
            f"{where}: expected {_layout(list_format)} (integers after the path), got {line!r}"
            f"{separator_hint(line, ' ')}"
        )
    rel = parts[0]
    if count > len(fields):
        raise DataError(
            f"{where}: {count} numbers end {line!r} but list_format={list_format} reads {len(fields)} "
            f"({_layout(list_format)}), which would make the path {rel!r}; "
            f"{_guess(count, line.rsplit(maxsplit=count)[0])}"
        )
    return _Line(rel=rel, numbers=tuple(int(p) for p in parts[1:]), where=where, text=line)


def _detect_format(lines: list[tuple[int, str]], list_file: Path) -> str:
    """The format of a list file for ``list_format="auto"``: every line must end in one number (``"video"``) or
    every line in two (``"frames"``, unless a path looks like a video file); anything else is refused."""
    first_count: Optional[tuple[int, int]] = None  # (count, line number)
    for line_no, line in lines:
        count = _trailing_integers(line)
        where = f"{list_file}:{line_no}"
        if count == 0:
            raise DataError(
                f"{where}: expected '<path> <label>' or '<frame_folder> <num_frames> <label>', got {line!r}"
                f"{separator_hint(line, ' ')}"
            )
        rel = line.rsplit(maxsplit=count)[0]
        if count > 2 or (count == 2 and _looks_like_video(rel)):
            raise DataError(f"{where}: cannot tell the list format of {line!r}: {_guess(count, rel)}")
        if first_count is None:
            first_count = (count, line_no)
        elif count != first_count[0]:
            raise DataError(
                f"{where}: {count} number{'s end' if count > 1 else ' ends'} this line but {first_count[0]} "
                f"end{'s' if first_count[0] == 1 else ''} line {first_count[1]}: one list holds one format "
                f"({_layout('video')} or {_layout('frames')}); "
                "several labels per video are not supported; set data.annotations.list_format to say which"
            )
    return "frames" if first_count is not None and first_count[0] == 2 else "video"


def _video_ids(entries: list[_Line], list_format: str) -> list[str]:
    """Ids of a list's entries: the path relative to root (the file name for an absolute path), without its
    extension for video files; entries that would share an id but differ (``test.mp4`` and ``test.avi``; one frame
    folder at two start frames) keep what tells them apart: the extension (then the full path), or ``#<start_frame>``.
    Entries with the same path (and start frame) keep one id and are reported as listed twice."""

    def base(entry: _Line) -> str:
        path = Path(entry.rel)
        if list_format != "video":
            return path.name if path.is_absolute() else str(path)
        return path.stem if path.is_absolute() else str(path.with_suffix(""))

    def distinct(entry: _Line) -> str:
        if list_format == "frames_offset":
            return f"{base(entry)}#{entry.numbers[0]}"
        path = Path(entry.rel)
        return path.name if path.is_absolute() else str(path)

    ids = [base(entry) for entry in entries]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, video_id in enumerate(ids):
        groups[video_id].append(i)
    for members in groups.values():
        clips = {(entries[i].rel, entries[i].numbers[0] if list_format == "frames_offset" else 0) for i in members}
        if len(clips) < 2:
            continue  # one and the same entry listed more than once: checked_records names both lines
        for i in members:
            ids[i] = distinct(entries[i])
        if len({ids[i] for i in members}) < len({entries[i].rel for i in members}):
            for i in members:  # two absolute paths with one file name: the whole path
                ids[i] = entries[i].rel
    return ids


def _parse_list_file(list_file: Path, root: Path, list_format: str) -> list[tuple[VideoRecord, str]]:
    """Parse a list file into ``(record, "file:line")`` pairs.

    ``list_format``: one of :data:`LIST_FORMATS` or ``"auto"`` (see :func:`_detect_format`). Paths may contain
    spaces (fields are split from the right) but never end in a space and a number. Blank lines and lines starting
    with ``#`` are skipped.
    """
    lines = list(numbered_lines(list_file, comments=True))
    if list_format == "auto":
        list_format = _detect_format(lines, list_file)
    entries = [_split_line(line, list_format, f"{list_file}:{line_no}") for line_no, line in lines]
    located = []
    for entry, video_id in zip(entries, _video_ids(entries, list_format)):
        start: Optional[int] = None
        num_frames: Optional[int] = None
        if list_format == "frames_offset":
            start, num_frames, label = entry.numbers
        elif list_format == "frames":
            num_frames, label = entry.numbers
        else:
            (label,) = entry.numbers
        if num_frames is not None and num_frames < 1:
            raise DataError(f"{entry.where}: num_frames must be >= 1, got {num_frames} in {entry.text!r}")
        if start is not None and start < 0:
            raise DataError(f"{entry.where}: start_frame must be >= 0, got {start} in {entry.text!r}")
        record = VideoRecord(
            path=resolve_path(root, entry.rel),
            label=label,
            video_id=video_id,
            num_frames=num_frames,
            start_frame=start,
        )
        located.append((record, entry.where))
    return located


def read_video_list(list_file: Path | str, root: Path | str) -> list[VideoRecord]:
    """Read a ``<path> <label>`` list file (one video per line; paths relative to ``root`` or absolute).

    The video id is the path relative to ``root`` without its extension (``videos/train_00001.mp4`` ->
    ``videos/train_00001``), so ids stay unique when clips share a file name in different folders; two files that
    differ only by extension keep it (``test.mp4``, ``test.avi``).
    """
    list_file = require_file(Path(list_file), "annotation list")
    records = [record for record, _ in _parse_list_file(list_file, Path(root), "video")]
    if not records:
        raise DataError(f"annotation list {list_file} has no entries")
    return records


def read_class_names(path: Path | str) -> list[str]:
    """Read one class name per line; line ``i`` is class ``i``. A name listed twice is refused, naming it and both
    lines. A FineGym categories file (``Clabel: 0; set: 1; Glabel: 1; <name>`` lines, such as mmaction2's
    ``label_map_gym99.txt``) is read as :func:`~rsa_lightning.data.annotations.finegym.read_gym_categories` does."""
    path = require_file(Path(path), "class-name file", key="class_names_file")
    lines = list(numbered_lines(path))
    if lines and is_gym_categories(lines[0][1]):
        return read_gym_categories(path)
    return check_unique_names(((line, f"line {line_no}") for line_no, line in lines), path)


class ListAnnotations(Annotations):
    """Generic list files, one per split, in one of three formats (paths relative to ``root`` or absolute):

    * ``"video"``: ``<path> <label>`` (video files; the format of :func:`read_video_list`);
    * ``"frames"``: ``<frame_folder> <num_frames> <label>``, the lists of the official RSA code and TSM (frame
      folders; records get ``num_frames``);
    * ``"frames_offset"``: ``<frame_folder> <start_frame> <num_frames> <label>``, mmaction2's lists of clips of
      long frame folders (``with_offset``): the clip is frames ``[start_frame, start_frame + num_frames)`` of the
      folder (0-based, after the backend's ``first_index``).

    ``list_format="auto"`` decides per file between "video" and "frames" and refuses what it cannot tell apart (see
    the module docstring); "frames_offset" is always declared. Fields are separated by spaces or tabs and split from
    the right, so paths may contain spaces. Blank lines and ``#`` comments are skipped. Video ids are the paths
    relative to ``root`` (video files without their extension, unless two files differ only by it).

    Classes: one name per line in ``class_names_file``; without it, ``class_<i>`` for ``num_classes`` classes (one of
    the two is required; given both, they must agree; at least two classes). ``test_list`` None: no test split.
    Labels of a test list may be -1 (UNLABELLED).
    """

    def __init__(
        self,
        *,
        root: str | Path,
        train_list: str = "annotations/train.txt",
        val_list: str = "annotations/val.txt",
        test_list: Optional[str] = None,
        class_names_file: Optional[str] = None,
        num_classes: Optional[int] = None,
        list_format: str = "auto",
    ) -> None:
        super().__init__(root)
        formats = ("auto", *LIST_FORMATS)
        if list_format not in formats:
            raise ConfigError(f"data.annotations.list_format must be one of {formats}, got {list_format!r}")
        if class_names_file is None and num_classes is None:
            raise ConfigError(
                "ListAnnotations needs class_names_file or num_classes: set data.annotations.class_names_file=<file>"
                " or data.num_classes"
            )
        if class_names_file is None and num_classes is not None and num_classes < 2:
            raise ConfigError(f"data.num_classes must be >= 2 (a classifier needs two classes), got {num_classes}")
        self.lists = {"train": self._path(train_list), "val": self._path(val_list)}
        if test_list is not None:
            self.lists["test"] = self._path(test_list)
        self.class_names_file = self._path(class_names_file) if class_names_file is not None else None
        self._num_classes = num_classes
        self.list_format = list_format

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.lists)

    def _missing_split_hint(self, split: str) -> str:
        return " (give it a test_list, e.g. +data.annotations.test_list=<list file>)" if split == "test" else ""

    def _class_source(self) -> str:
        return str(self.class_names_file) if self.class_names_file is not None else "data.num_classes"

    def _read_class_names(self) -> list[str]:
        if self.class_names_file is None:
            return [f"class_{i}" for i in range(self._num_classes or 0)]
        self._require(self.class_names_file, "class-name file", "class_names_file")
        names = check_class_count(read_class_names(self.class_names_file), self.class_names_file)
        if self._num_classes is not None and self._num_classes != len(names):
            raise DataError(
                f"data.num_classes is {self._num_classes} but {self.class_names_file} lists {len(names)}: "
                "make them agree"
            )
        return names

    def _records(self, split: str) -> list[VideoRecord]:
        source = self._require(self.lists[split], "annotation list", f"{split}_list")
        located = _parse_list_file(source, self.root, self.list_format)
        return checked_records(located, split=split, source=source, num_classes=self.num_classes)
