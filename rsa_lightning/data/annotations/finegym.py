"""FineGym (Shao et al., CVPR 2020) element-level classification, Gym99 / Gym288: the v1.1 ``<subaction_id> <label>``
lists, the categories file, and sub-action clips cut from the event videos (layout: :class:`GymAnnotations`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from rsa_lightning.data.annotations.common import (
    Annotations,
    VideoRecord,
    checked_records,
    is_int,
    names_by_id,
    numbered_lines,
    require_file,
)

_GYM_NUM_CLASSES = {"gym99": 99, "gym288": 288}
_GYM_CATEGORY = re.compile(r"^Clabel:\s*(\d+)\s*;\s*set:\s*(\d+)\s*;\s*Glabel:\s*(\d+)\s*;\s*(\S.*)$")


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
    variant's published count (99 / 288). Names may repeat: elements of different sets can share a name (Gym99
    classes 58 and 70 are both "(BB) salto backward tucked"); the id tells them apart. FineGym publishes no test
    split: ``"test"`` reads the val list.
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
            raise ValueError(f"variant must be one of {sorted(_GYM_NUM_CLASSES)}, got {variant!r}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None (derive), got {num_classes}")
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

    def _read_class_names(self) -> list[str]:
        if not self.categories_file.is_file():
            count = self._num_classes or _GYM_NUM_CLASSES[self.variant]
            return [f"class_{i}" for i in range(count)]
        pairs = []
        for line_no, line in numbered_lines(self.categories_file):
            match = _GYM_CATEGORY.match(line)
            if match is None:
                raise ValueError(
                    f"{self.categories_file}:{line_no}: expected 'Clabel: <id>; set: <id>; Glabel: <id>; <name>', "
                    f"got {line!r}"
                )
            pairs.append((match.group(4).strip(), int(match.group(1))))
        ordered = names_by_id(pairs, self.categories_file)
        if self._num_classes is not None and self._num_classes != len(ordered):
            raise ValueError(f"num_classes is {self._num_classes} but {self.categories_file} lists {len(ordered)}")
        return ordered

    def _records(self, split: str) -> list[VideoRecord]:
        source = require_file(self.split_files[split], f"FineGym {split} list")
        located = []
        for line_no, line in numbered_lines(source):
            where = f"{source}:{line_no}"
            parts = line.split()
            if len(parts) != 2 or not is_int(parts[1]):
                raise ValueError(f"{where}: expected '<subaction_id> <label>', got {line!r}")
            video_id, label = parts[0], int(parts[1])
            path = self.clips_dir / f"{video_id}{self.video_ext}"
            located.append((VideoRecord(path=path, label=label, video_id=video_id), where))
        return checked_records(located, split=split, source=source, num_classes=self.num_classes)
