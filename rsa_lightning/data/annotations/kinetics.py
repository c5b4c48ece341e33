"""Kinetics-400 / 600 / 700 (Kay et al., 2017): the csv files of the official release (train / validate / test) and
clips named as the ActivityNet downloader and the CVDF mirror write them (layout: :class:`KineticsAnnotations`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from rsa_lightning.data.annotations.common import (
    SPLITS,
    UNLABELLED,
    Annotations,
    VideoRecord,
    checked_records,
    read_text,
    separator_hint,
)
from rsa_lightning.errors import ConfigError, DataError


class KineticsAnnotations(Annotations):
    """Kinetics-400 / 600 / 700 (Kay et al., 2017) from the published csv files.

    Layout below ``root`` (the csvs of the official release; clip names as written by the ActivityNet downloader and
    the CVDF mirror: ``<youtube_id>_<start:06d>_<end:06d>.mp4``)::

        annotations/train.csv      label,youtube_id,time_start,time_end,split
        annotations/validate.csv   the same ("val" split)
        annotations/test.csv       optional; without a ``label`` column the records are UNLABELLED
        videos/train/<clip>        (label_folders=True: videos/train/<label>/<clip>, the downloader's layout)
        videos/val/<clip>
        videos/test/<clip>         (always flat: the downloader puts unlabelled clips in one folder)

    Class ids: the train csv's label names sorted alphabetically (the usual convention; mmaction2's label map is the
    same order). ``version``: the expected class count (400, 600, 700), checked against the train csv so that csvs of
    different releases are not mixed; None accepts any count (subsets such as Mini-Kinetics). ``filename_template``
    is a ``str.format`` template over ``youtube_id``, ``time_start``, ``time_end`` (integers), ``label`` and ``split``;
    the video id is the clip name without extension.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        version: Optional[int] = 400,
        train_file: str = "annotations/train.csv",
        val_file: str = "annotations/validate.csv",
        test_file: str = "annotations/test.csv",
        train_videos: str = "videos/train",
        val_videos: str = "videos/val",
        test_videos: str = "videos/test",
        filename_template: str = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4",
        label_folders: bool = False,
    ) -> None:
        super().__init__(root)
        if version is not None and version < 2:
            raise ConfigError(f"data.annotations.version (the class count) must be >= 2 or None, got {version}")
        try:
            filename_template.format(youtube_id="abc", time_start=1, time_end=11, label="abseiling", split="train")
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(
                f"data.annotations.filename_template {filename_template!r} is not a format over youtube_id, "
                f"time_start, time_end, label, split: {err!r}"
            ) from err
        self.version = version
        self.split_files = {"train": self._path(train_file), "val": self._path(val_file), "test": self._path(test_file)}
        self.video_dirs = {
            "train": self._path(train_videos),
            "val": self._path(val_videos),
            "test": self._path(test_videos),
        }
        self.filename_template = filename_template
        self.label_folders = label_folders

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS if self.split_files["test"].is_file() else ("train", "val")

    def _missing_split_hint(self, split: str) -> str:
        return f" (no test csv at {self.split_files['test']})" if split == "test" else ""

    def _rows(self, split: str) -> Iterator[tuple[str, dict[str, str]]]:
        key = {"train": "train_file", "val": "val_file", "test": "test_file"}[split]
        source = self._require(self.split_files[split], f"Kinetics {split} csv", key)
        text = read_text(source)
        reader = csv.DictReader(io.StringIO(text, newline=""))
        required = {"youtube_id", "time_start", "time_end"} | ({"label"} if split != "test" else set())
        missing = required - set(reader.fieldnames or ())
        if missing:
            header = text.splitlines()[0] if text.strip() else ""
            raise DataError(
                f"{source}:1: header {reader.fieldnames} lacks the columns {sorted(missing)}"
                f"{separator_hint(header, ',')}"
            )
        for row in reader:
            where = f"{source}:{reader.line_num}"
            if None in row:
                raise DataError(f"{where}: more fields than the header {reader.fieldnames}")
            yield where, row

    def _class_source(self) -> str:
        return str(self.split_files["train"])

    def _read_class_names(self) -> list[str]:
        names = sorted({row["label"].strip() for _, row in self._rows("train")})
        if self.version is not None and len(names) != self.version:
            raise DataError(
                f"{self.split_files['train']} has {len(names)} classes but version={self.version}: use the csvs of "
                "that release, or data.annotations.version=null for a subset"
            )
        return names

    def _records(self, split: str) -> list[VideoRecord]:
        class_ids = {name: i for i, name in enumerate(self.class_names())}
        located = []
        for where, row in self._rows(split):
            youtube_id = (row["youtube_id"] or "").strip()
            times = []
            for key in ("time_start", "time_end"):
                text = (row[key] or "").strip()
                try:
                    value = float(text)
                except ValueError:
                    value = float("nan")
                if not value.is_integer() or value < 0:
                    raise DataError(f"{where}: {key} must be a whole number of seconds, got {text!r}")
                times.append(int(value))
            if not youtube_id:
                raise DataError(f"{where}: empty youtube_id")
            name = (row.get("label") or "").strip()
            if name:
                if name not in class_ids:
                    raise DataError(f"{where}: class {name!r} is not a class of {self.split_files['train']}")
                label = class_ids[name]
            elif split == "test":
                label = UNLABELLED
            else:
                raise DataError(f"{where}: empty label")
            filename = self.filename_template.format(
                youtube_id=youtube_id, time_start=times[0], time_end=times[1], label=name, split=split
            )
            folder = self.video_dirs[split] / name if self.label_folders and name and split != "test" else None
            path = (folder or self.video_dirs[split]) / filename
            located.append((VideoRecord(path=path, label=label, video_id=Path(filename).stem), where))
        return checked_records(located, split=split, source=self.split_files[split], num_classes=self.num_classes)
