"""Something-Something V1 (Goyal et al., ICCV 2017) as published: JPEG frame folders and the ``;``-separated csv
files labels / train / validation / test (layout: :class:`SSv1Annotations`)."""

from __future__ import annotations

from pathlib import Path

from rsa_lightning.data.annotations.common import (
    SPLITS,
    UNLABELLED,
    Annotations,
    VideoRecord,
    check_unique_names,
    checked_records,
    numbered_lines,
    separator_hint,
)
from rsa_lightning.errors import ConfigError, DataError


class SSv1Annotations(Annotations):
    """Something-Something V1 (Goyal et al., ICCV 2017): 174 classes, published as JPEG frame folders.

    Layout below ``root`` (the published archive unpacks the frames into ``20bn-something-something-v1/``: rename it
    to ``frames/`` or set ``frames_dir``)::

        frames/<id>/00001.jpg ...                           records' path = the folder, video_id = <id>
        annotations/something-something-v1-labels.csv      one class name per line
        annotations/something-something-v1-train.csv       <id>;<class name> per line
        annotations/something-something-v1-validation.csv  the same ("val" split)
        annotations/something-something-v1-test.csv        <id> per line (UNLABELLED); optional

    ``class_order``: ``"sorted"`` (default) numbers the classes in alphabetical order of their names, the convention of
    the official RSA checkpoints and TSM; ``"file"`` keeps the order of the labels csv (mmaction2). The published data
    has no labelled test split: ``records("test")`` reads the test csv when it exists (ids only: UNLABELLED; an
    ``<id>;<class name>`` line is labelled), otherwise raises. ``num_frames`` is left to the frame reader.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        frames_dir: str = "frames",
        labels_file: str = "annotations/something-something-v1-labels.csv",
        train_file: str = "annotations/something-something-v1-train.csv",
        val_file: str = "annotations/something-something-v1-validation.csv",
        test_file: str = "annotations/something-something-v1-test.csv",
        class_order: str = "sorted",
    ) -> None:
        super().__init__(root)
        if class_order not in ("sorted", "file"):
            raise ConfigError(f"data.annotations.class_order must be 'sorted' or 'file', got {class_order!r}")
        self.frames_dir = self._path(frames_dir)
        self.labels_file = self._path(labels_file)
        self.split_files = {"train": self._path(train_file), "val": self._path(val_file), "test": self._path(test_file)}
        self.class_order = class_order

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS if self.split_files["test"].is_file() else ("train", "val")

    def _missing_split_hint(self, split: str) -> str:
        if split == "test":
            return (
                f" (SSv1 publishes no test labels; put the test ids in {self.split_files['test']} to predict on them)"
            )
        return ""

    def _read_class_names(self) -> list[str]:
        self._require(self.labels_file, "SSv1 labels file", "labels_file")
        located = [(line, f"line {line_no}") for line_no, line in numbered_lines(self.labels_file)]
        names = check_unique_names(located, self.labels_file)
        return sorted(names) if self.class_order == "sorted" else names

    def _class_source(self) -> str:
        return str(self.labels_file)

    def _records(self, split: str) -> list[VideoRecord]:
        source = self._require(self.split_files[split], f"SSv1 {split} annotation file", f"{split}_file")
        class_ids = {name: i for i, name in enumerate(self.class_names())}
        located = []
        for line_no, line in numbered_lines(source):
            where = f"{source}:{line_no}"
            video_id, sep, name = (part.strip() for part in line.partition(";"))
            if not video_id or (sep and not name) or (not sep and split != "test") or len(video_id.split()) > 1:
                expected = "'<id>;<class name>'" + (" or '<id>'" if split == "test" else "")
                hint = separator_hint(line, ";") or (" (ids have no spaces: the fields are separated by ';')")
                raise DataError(f"{where}: expected {expected}, got {line!r}{hint}")
            if not sep:
                label = UNLABELLED
            elif name in class_ids:
                label = class_ids[name]
            else:
                raise DataError(
                    f"{where}: class {name!r} is not in {self.labels_file}: check that both files are of one release"
                )
            located.append((VideoRecord(path=self.frames_dir / video_id, label=label, video_id=video_id), where))
        return checked_records(located, split=split, source=source, num_classes=self.num_classes)
