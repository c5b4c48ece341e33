"""Exclusion lists: the videos left out of training and evaluation, one per line, with the reason.

``rsa_lightning.tools.scan_videos`` writes the list (:func:`write_exclusions`) after checking every file; the
DataModule leaves its videos out (:func:`read_exclusions`); people may edit it by hand. The format is UTF-8 text,
one ``<split>\\t<video_id>\\t<path>\\t<reason>`` per line, ``#`` starting a comment line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from rsa_lightning.errors import DataError, MissingFileError

EXCLUSIONS_HEADER = (
    "# Videos left out of training and evaluation, one per line: <split>\\t<video_id>\\t<path>\\t<reason>\n"
    "# ('#' starts a comment). Written by rsa_lightning.tools.scan_videos; edit by hand freely.\n"
)


@dataclass(frozen=True)
class Exclusion:
    """One line of an exclusion list."""

    split: str
    video_id: str
    path: str
    reason: str


def _field(value: object) -> str:
    return " ".join(str(value).split())  # no tabs or newlines inside a field


def write_exclusions(path: Union[str, Path], entries: Iterable[Union[Exclusion, tuple[str, str, str, str]]]) -> Path:
    """Write ``entries`` (``Exclusion`` or ``(split, video_id, path, reason)``) as an exclusion list at ``path``.

    Format: UTF-8 text, one ``<split>\\t<video_id>\\t<path>\\t<reason>`` per line, lines starting with ``#`` are
    comments; tabs and line breaks inside a field are replaced by spaces. The file is replaced atomically.
    """
    path = Path(path)
    lines = [EXCLUSIONS_HEADER]
    for entry in entries:
        entry = entry if isinstance(entry, Exclusion) else Exclusion(*entry)
        if not _field(entry.video_id):
            raise ValueError(f"exclusion entry without video id: {entry}")
        lines.append("\t".join(_field(v) for v in (entry.split, entry.video_id, entry.path, entry.reason)) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(path)
    return path


def read_exclusion_entries(path: Union[str, Path]) -> list[Exclusion]:
    """All entries of the exclusion list at ``path`` (see :func:`write_exclusions` for the format)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"exclusion list {path} does not exist (rsa_lightning.tools.scan_videos writes one; data.exclusions_file)"
        )
    entries = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[1].strip():
            hint = " (the fields must be separated by tabs, not spaces)" if len(line.split()) > 1 else ""
            raise DataError(
                f"{path}:{line_no}: expected '<split>\\t<video_id>\\t<path>\\t<reason>', got {line!r}{hint}"
            )
        fields = [f.strip() for f in fields] + [""] * (4 - len(fields))
        entries.append(Exclusion(fields[0], fields[1], fields[2], "\t".join(fields[3:]).strip()))
    return entries


def read_exclusions(path: Union[str, Path], split: Optional[str] = None) -> set[str]:
    """Video ids listed in the exclusion list at ``path``; with ``split``, only that split's."""
    return {e.video_id for e in read_exclusion_entries(path) if split is None or e.split == split}
