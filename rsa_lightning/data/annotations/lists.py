"""Generic list files: ``<path> <label>`` video lists and the official RSA / TSM ``<frame_folder> <num_frames> <label>``
frame lists (:class:`ListAnnotations`, one list per split, or :func:`read_video_list` for one list), and class-name
files with one name per line (:func:`read_class_names`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rsa_lightning.data.annotations.common import (
    Annotations,
    VideoRecord,
    checked_records,
    is_int,
    numbered_lines,
    resolve_path,
)


def _list_video_id(rel: str, *, strip_suffix: bool) -> str:
    """Id of a list entry: its path relative to root (without extension for video files); the name if absolute."""
    path = Path(rel)
    if path.is_absolute():
        return path.stem if strip_suffix else path.name
    return str(path.with_suffix("")) if strip_suffix else str(path)


def _parse_list_file(list_file: Path, root: Path, list_format: str) -> list[tuple[VideoRecord, str]]:
    """Parse a list file into ``(record, "file:line")`` pairs.

    ``list_format``: ``"video"`` (``<path> <label>``), ``"frames"`` (``<frame_folder> <num_frames> <label>``) or
    ``"auto"`` (frames when every entry ends in two integers, else video). Paths may contain spaces (fields are split
    from the right). Blank lines and lines starting with ``#`` are skipped.
    """
    if not list_file.is_file():
        raise FileNotFoundError(f"annotation list {list_file} does not exist: check data.root and the *_list keys")
    lines = list(numbered_lines(list_file, comments=True))
    if list_format == "auto":
        frames = bool(lines) and all(_looks_like_frames(line) for _, line in lines)
        list_format = "frames" if frames else "video"
    located = []
    for line_no, line in lines:
        where = f"{list_file}:{line_no}"
        if list_format == "frames":
            parts = line.rsplit(maxsplit=2)
            if len(parts) != 3 or not is_int(parts[1]) or not is_int(parts[2]):
                raise ValueError(f"{where}: expected '<frame_folder> <num_frames> <integer label>', got {line!r}")
            rel, num_frames, label = parts[0], int(parts[1]), int(parts[2])
            if num_frames < 1:
                raise ValueError(f"{where}: num_frames must be >= 1, got {num_frames}")
            record = VideoRecord(
                path=resolve_path(root, rel),
                label=label,
                video_id=_list_video_id(rel, strip_suffix=False),
                num_frames=num_frames,
            )
        else:
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not is_int(parts[1]):
                raise ValueError(f"{where}: expected '<path> <integer label>', got {line!r}")
            rel, label = parts[0], int(parts[1])
            record = VideoRecord(
                path=resolve_path(root, rel), label=label, video_id=_list_video_id(rel, strip_suffix=True)
            )
        located.append((record, where))
    return located


def _looks_like_frames(line: str) -> bool:
    parts = line.rsplit(maxsplit=2)
    return len(parts) == 3 and is_int(parts[1]) and is_int(parts[2])


def read_video_list(list_file: Path | str, root: Path | str) -> list[VideoRecord]:
    """Read a ``<path> <label>`` list file (one video per line; paths relative to ``root`` or absolute).

    The video id is the path relative to ``root`` without its extension (``videos/train_00001.mp4`` ->
    ``videos/train_00001``), so ids stay unique when clips share a file name in different folders.
    """
    list_file = Path(list_file)
    records = [record for record, _ in _parse_list_file(list_file, Path(root), "video")]
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


class ListAnnotations(Annotations):
    """Generic list files, one per split, in either of two formats (paths relative to ``root`` or absolute):

    * ``"video"``: ``<path> <label>`` (video files; the format of :func:`read_video_list`);
    * ``"frames"``: ``<frame_folder> <num_frames> <label>``, the lists of the official RSA code and TSM (frame
      folders; records get ``num_frames``).

    ``list_format="auto"`` decides per file: frames when every entry ends in two integers, otherwise video. Fields
    are split from the right, so paths may contain spaces. Blank lines and ``#`` comments are skipped. Video ids are
    the paths relative to ``root`` (video files without their extension).

    Classes: one name per line in ``class_names_file``; without it, ``class_<i>`` for ``num_classes`` classes (one of
    the two is required; given both, they must agree). ``test_list`` None: no test split. Labels of a test list may
    be -1 (UNLABELLED).
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
        if list_format not in ("auto", "video", "frames"):
            raise ValueError(f"list_format must be 'auto', 'video' or 'frames', got {list_format!r}")
        if class_names_file is None and num_classes is None:
            raise ValueError("ListAnnotations needs class_names_file or num_classes")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
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

    def _read_class_names(self) -> list[str]:
        if self.class_names_file is None:
            return [f"class_{i}" for i in range(self._num_classes or 0)]
        names = read_class_names(self.class_names_file)
        if self._num_classes is not None and self._num_classes != len(names):
            raise ValueError(f"num_classes is {self._num_classes} but {self.class_names_file} lists {len(names)}")
        return names

    def _records(self, split: str) -> list[VideoRecord]:
        source = self.lists[split]
        located = _parse_list_file(source, self.root, self.list_format)
        return checked_records(located, split=split, source=source, num_classes=self.num_classes)
