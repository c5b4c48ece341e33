"""FineGym (Shao et al., CVPR 2020) element-level classification, Gym99 / Gym288: the v1.1 ``<subaction_id> <label>``
lists, the categories file, and sub-action clips cut from the event videos (layout: :class:`GymAnnotations`)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Optional

from rsa_lightning.data.annotations.common import (
    Annotations,
    VideoRecord,
    check_unique_names,
    checked_records,
    is_int,
    names_by_id,
    numbered_lines,
    separator_hint,
)
from rsa_lightning.errors import ConfigError, DataError

_GYM_NUM_CLASSES = {"gym99": 99, "gym288": 288}
_GYM_CATEGORY = re.compile(r"^Clabel:\s*(\d+)\s*;\s*set:\s*(\d+)\s*;\s*Glabel:\s*(\d+)\s*;\s*(\S.*)$")


def is_gym_categories(line: str) -> bool:
    """Whether ``line`` reads like a line of a FineGym categories file (``Clabel: 0; set: 1; Glabel: 1; <name>``)."""
    return line.lstrip().startswith("Clabel:")


def read_gym_categories(path: Path) -> list[str]:
    """Class names of a FineGym categories file (the release's ``gym99_categories.txt``, mmaction2's
    ``label_map_gym99.txt``), in ``Clabel`` order.

    A name is the text after ``Glabel: n;``. The published names repeat across sets (Gym99 classes 58 and 70 are both
    "(BB) salto backward tucked", in sets 33 and 35), but class names must be unique (they name the model's outputs),
    so every name that occurs more than once gets its set appended: ``"(BB) salto backward tucked [set 33]"`` and
    ``"... [set 35]"``; names that occur once are kept as published. Names still equal after that are refused.
    """
    rows = []
    for line_no, line in numbered_lines(path):
        match = _GYM_CATEGORY.match(line)
        if match is None:
            raise DataError(f"{path}:{line_no}: expected 'Clabel: <id>; set: <id>; Glabel: <id>; <name>', got {line!r}")
        rows.append((int(match.group(1)), int(match.group(2)), match.group(4).strip(), line_no))
    counts = Counter(name for _, _, name, _ in rows)
    named = [
        (f"{name} [set {set_id}]" if counts[name] > 1 else name, class_id, line_no)
        for class_id, set_id, name, line_no in rows
    ]
    check_unique_names(((name, f"line {line_no}") for name, _, line_no in named), path)
    return names_by_id(((name, class_id) for name, class_id, _ in named), path)


class GymAnnotations(Annotations):
    """FineGym element-level classification (Shao et al., CVPR 2020): Gym99 or Gym288, v1.1 splits.

    Layout below ``root`` (``{v}`` = ``variant``; list and category names as in the FineGym release)::

        subactions/<subaction_id>.mp4                     clips cut from the events (e.g. mmaction2's trim scripts)
        annotations/{v}_train_element_v1.1.txt            "<subaction_id> <label>" per line
        annotations/{v}_val_element.txt                   the same
        annotations/{v}_categories.txt                    "Clabel: 0; set: 1; Glabel: 1; (VT) round-off, ..." per line

    A subaction id reads ``<youtube_id>_E_<event start>_<event end>_A_<start>_<end>``. ``None`` file arguments derive
    the names above from ``variant``. Class names come from the categories file when it exists (the text after
    ``Glabel: n;``, class id = ``Clabel``); otherwise they are ``class_<i>`` for ``num_classes`` classes, by default the
    variant's published count (99 / 288). Published names that repeat (elements of different sets: Gym99 classes 58
    and 70 are both "(BB) salto backward tucked") get their set appended (:func:`read_gym_categories`). FineGym
    publishes no test split: ``"test"`` reads the val list.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        variant: str = "gym99",
        clips_dir: str = "subactions",
        video_ext: str = ".mp4",
        train_file: Optional[str] = None,
        val_file: Optional[str] = None,
        categories_file: Optional[str] = None,
        num_classes: Optional[int] = None,
    ) -> None:
        super().__init__(root)
        if variant not in _GYM_NUM_CLASSES:
            raise ConfigError(f"data.annotations.variant must be one of {sorted(_GYM_NUM_CLASSES)}, got {variant!r}")
        if num_classes is not None and num_classes < 2:
            raise ConfigError(f"data.annotations.num_classes must be >= 2 or None (derive), got {num_classes}")
        self.variant = variant
        self.clips_dir = self._path(clips_dir)
        self.video_ext = video_ext
        val = self._path(val_file or f"annotations/{variant}_val_element.txt")
        self.split_files = {
            "train": self._path(train_file or f"annotations/{variant}_train_element_v1.1.txt"),
            "val": val,
            "test": val,
        }
        self.categories_file = self._path(categories_file or f"annotations/{variant}_categories.txt")
        self._num_classes = num_classes

    def _class_source(self) -> str:
        return str(self.categories_file) if self.categories_file.is_file() else "data.annotations.num_classes"

    def _read_class_names(self) -> list[str]:
        if not self.categories_file.is_file():
            count = self._num_classes or _GYM_NUM_CLASSES[self.variant]
            return [f"class_{i}" for i in range(count)]
        ordered = read_gym_categories(self.categories_file)
        if self._num_classes is not None and self._num_classes != len(ordered):
            raise DataError(
                f"data.annotations.num_classes is {self._num_classes} but {self.categories_file} lists "
                f"{len(ordered)}: remove the setting or use the categories file of the variant"
            )
        return ordered

    def _records(self, split: str) -> list[VideoRecord]:
        key = "val_file" if split == "test" else f"{split}_file"
        source = self._require(self.split_files[split], f"FineGym {split} list", key)
        located = []
        for line_no, line in numbered_lines(source):
            where = f"{source}:{line_no}"
            parts = line.split()
            if len(parts) != 2 or not is_int(parts[1]):
                raise DataError(f"{where}: expected '<subaction_id> <label>', got {line!r}{separator_hint(line, ' ')}")
            video_id, label = parts[0], int(parts[1])
            path = self.clips_dir / f"{video_id}{self.video_ext}"
            located.append((VideoRecord(path=path, label=label, video_id=video_id), where))
        return checked_records(located, split=split, source=source, num_classes=self.num_classes)
