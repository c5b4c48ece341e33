"""Annotation readers: one small class per published dataset layout, each returning :class:`VideoRecord` lists.

Every dataset class answers the same questions::

    ann = SSv2Annotations(root="/data/ssv2")
    ann.class_names()       # list[str]; index = class id
    ann.num_classes         # len(ann.class_names())
    ann.splits              # the splits this copy has: a subset of ("train", "val", "test")
    ann.records("train")    # list[VideoRecord]: absolute paths, unique video ids, labels in [0, K)

Constructors are keyword-only: ``root`` plus every file and folder, with the dataset's layout below ``root`` as
defaults (a relative path is taken below ``root``, an absolute one as is). Argument values are checked in the
constructor; files are read when asked for (class names once, then cached), so a config instantiates without I/O.

Errors name the file and the line (JSON files: the entry index): a missing file, a malformed line, an unknown
template or class name, a label outside ``[0, K)``, a video id listed twice (both places), an empty split, a split the
dataset does not have (with the ones it has). Only a ``test`` split may hold ``UNLABELLED`` videos (predict-only).

Classes: :class:`SSv2Annotations`, :class:`SSv1Annotations`, :class:`Diving48Annotations`, :class:`GymAnnotations`,
:class:`KineticsAnnotations` and the generic :class:`ListAnnotations` (``<path> <label>`` video lists and the
official RSA / TSM ``<frame_folder> <num_frames> <label>`` frame lists).
"""

from __future__ import annotations

import csv
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


# ---------------------------------------------------------------------------------------------------------------------
# Plain list files (kept for the DataModule) and shared helpers
# ---------------------------------------------------------------------------------------------------------------------


def _is_int(text: str) -> bool:
    return re.fullmatch(r"-?[0-9]+", text) is not None


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
    lines = list(_lines(list_file, comments=True))
    if list_format == "auto":
        frames = bool(lines) and all(_looks_like_frames(line) for _, line in lines)
        list_format = "frames" if frames else "video"
    located = []
    for line_no, line in lines:
        where = f"{list_file}:{line_no}"
        if list_format == "frames":
            parts = line.rsplit(maxsplit=2)
            if len(parts) != 3 or not _is_int(parts[1]) or not _is_int(parts[2]):
                raise ValueError(f"{where}: expected '<frame_folder> <num_frames> <integer label>', got {line!r}")
            rel, num_frames, label = parts[0], int(parts[1]), int(parts[2])
            if num_frames < 1:
                raise ValueError(f"{where}: num_frames must be >= 1, got {num_frames}")
            record = VideoRecord(
                path=_resolve(root, rel),
                label=label,
                video_id=_list_video_id(rel, strip_suffix=False),
                num_frames=num_frames,
            )
        else:
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not _is_int(parts[1]):
                raise ValueError(f"{where}: expected '<path> <integer label>', got {line!r}")
            rel, label = parts[0], int(parts[1])
            record = VideoRecord(path=_resolve(root, rel), label=label, video_id=_list_video_id(rel, strip_suffix=True))
        located.append((record, where))
    return located


def _looks_like_frames(line: str) -> bool:
    parts = line.rsplit(maxsplit=2)
    return len(parts) == 3 and _is_int(parts[1]) and _is_int(parts[2])


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


def _resolve(root: Path, path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    return path


def _lines(path: Path, *, comments: bool = False) -> Iterator[tuple[int, str]]:
    """Non-blank stripped lines with their 1-based numbers (optionally skipping ``#`` comments)."""
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if line and not (comments and line.startswith("#")):
            yield line_no, line


def _load_json(path: Path, what: str) -> Any:
    _require(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _json_list(path: Path, what: str) -> list:
    data = _load_json(path, what)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    return data


def _json_field(entry: Any, key: str, where: str) -> Any:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object, got {entry!r}")
    if key not in entry:
        raise ValueError(f"{where}: missing {key!r} (keys: {sorted(entry)})")
    return entry[key]


def _json_int(entry: Any, key: str, where: str) -> int:
    value = _json_field(entry, key, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: {key!r} must be an integer, got {value!r}")
    return value


def _dense_ids(pairs: Iterable[tuple[str, int]], source: Path) -> list[str]:
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


def _unique_names(names: list[str], source: Path) -> list[str]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{source}: class {name!r} is listed twice")
        seen.add(name)
    return names


def _finish(located: list[tuple[VideoRecord, str]], *, split: str, source: Path, num_classes: int) -> list[VideoRecord]:
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


class _Annotations:
    """Shared interface: ``class_names()`` (cached), ``num_classes``, ``splits``, ``records(split)``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self._class_names: Optional[list[str]] = None

    def _path(self, path: str | Path) -> Path:
        return _resolve(self.root, path)

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


# ---------------------------------------------------------------------------------------------------------------------
# Something-Something
# ---------------------------------------------------------------------------------------------------------------------


class SSv2Annotations(_Annotations):
    """Something-Something V2 (Goyal et al., ICCV 2017): 174 classes, webm videos.

    Layout below ``root`` (the published archives unpack the videos into ``20bn-something-something-v2/``: rename it
    to ``videos/`` or set ``videos_dir``)::

        videos/<id>.webm
        annotations/something-something-v2-labels.json      {"Approaching something with your camera": "0", ...}
        annotations/something-something-v2-train.json       [{"id": "78687", "label": "holding potato next to ...",
                                                               "template": "Holding [something] next to [something]",
                                                               "placeholders": ["potato", ...]}, ...]
        annotations/something-something-v2-validation.json  the same ("val" split)
        annotations/something-something-v2-test.json        [{"id": "1420"}, ...]: no labels, records are UNLABELLED

    A video's class is its ``template`` with ``[`` and ``]`` removed, looked up in labels.json; the class id is the
    number labels.json gives it (the order of the official RSA / TSM checkpoints). ``label`` (the template filled
    with object names) is not used.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        videos_dir: str = "videos",
        video_ext: str = ".webm",
        labels_file: str = "annotations/something-something-v2-labels.json",
        train_file: str = "annotations/something-something-v2-train.json",
        val_file: str = "annotations/something-something-v2-validation.json",
        test_file: str = "annotations/something-something-v2-test.json",
    ) -> None:
        super().__init__(root)
        self.videos_dir = self._path(videos_dir)
        self.video_ext = video_ext
        self.labels_file = self._path(labels_file)
        self.split_files = {"train": self._path(train_file), "val": self._path(val_file), "test": self._path(test_file)}

    def _template_ids(self) -> dict[str, int]:
        data = _load_json(self.labels_file, "SSv2 labels file")
        if not isinstance(data, dict):
            raise ValueError(f"{self.labels_file}: expected a JSON object template -> id, got {type(data).__name__}")
        ids = {}
        for template, class_id in data.items():
            if not str(class_id).isdigit():
                raise ValueError(f"{self.labels_file}: id of {template!r} must be a number, got {class_id!r}")
            ids[template] = int(class_id)
        return ids

    def _read_class_names(self) -> list[str]:
        return _dense_ids(self._template_ids().items(), self.labels_file)

    def _records(self, split: str) -> list[VideoRecord]:
        source = self.split_files[split]
        entries = _json_list(source, f"SSv2 {split} annotation file")
        template_ids = {name: i for i, name in enumerate(self.class_names())}
        located = []
        for index, entry in enumerate(entries):
            where = f"{source}: entry {index}"
            video_id = str(_json_field(entry, "id", where)).strip()
            if split == "test":
                label = UNLABELLED
            else:
                template = _json_field(entry, "template", where)
                name = str(template).replace("[", "").replace("]", "")
                if name not in template_ids:
                    raise ValueError(
                        f"{where} (id {video_id}): template {template!r} (brackets removed: {name!r}) is not a class "
                        f"of {self.labels_file}"
                    )
                label = template_ids[name]
            path = self.videos_dir / f"{video_id}{self.video_ext}"
            located.append((VideoRecord(path=path, label=label, video_id=video_id), where))
        return _finish(located, split=split, source=source, num_classes=self.num_classes)


class SSv1Annotations(_Annotations):
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
            raise ValueError(f"class_order must be 'sorted' or 'file', got {class_order!r}")
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
        _require(self.labels_file, "SSv1 labels file")
        names = _unique_names([line for _, line in _lines(self.labels_file)], self.labels_file)
        return sorted(names) if self.class_order == "sorted" else names

    def _records(self, split: str) -> list[VideoRecord]:
        source = _require(self.split_files[split], f"SSv1 {split} annotation file")
        class_ids = {name: i for i, name in enumerate(self.class_names())}
        located = []
        for line_no, line in _lines(source):
            where = f"{source}:{line_no}"
            video_id, sep, name = (part.strip() for part in line.partition(";"))
            if not video_id or (sep and not name) or (not sep and split != "test"):
                raise ValueError(f"{where}: expected '<id>;<class name>', got {line!r}")
            if not sep:
                label = UNLABELLED
            elif name in class_ids:
                label = class_ids[name]
            else:
                raise ValueError(f"{where}: class {name!r} is not in {self.labels_file}")
            located.append((VideoRecord(path=self.frames_dir / video_id, label=label, video_id=video_id), where))
        return _finish(located, split=split, source=source, num_classes=self.num_classes)


# ---------------------------------------------------------------------------------------------------------------------
# Diving48, FineGym, Kinetics
# ---------------------------------------------------------------------------------------------------------------------


class Diving48Annotations(_Annotations):
    """Diving48 V2 (Li et al., ECCV 2018): 48 dive classes, trimmed mp4 clips.

    Layout below ``root`` (the published ``Diving48_rgb.tar.gz`` unpacks the clips into ``rgb/``; mmaction2 renames it
    to ``videos/``, which is the default here, or set ``videos_dir``)::

        videos/<vid_name>.mp4
        annotations/Diving48_V2_train.json  [{"vid_name": "-mmq0PT-u8k_00155", "label": 26, "start_frame": 0,
                                              "end_frame": 89}, ...]
        annotations/Diving48_V2_test.json   the same
        annotations/Diving48_vocab.json     [["Back", "15som", "05Twis", "FREE"], ...]: line i = class i

    A class name is the parts of its vocabulary entry joined by ``name_separator`` (default a space:
    ``"Back 15som 05Twis FREE"``; ``"+"`` gives the names of mmaction2's and our reference lists).

    Diving48 has no separate validation set: ``"val"`` and ``"test"`` both read the test json (as in the papers).

    Frames: the V2 jsons give, for the already trimmed clips, ``start_frame`` 0 and ``end_frame`` = the clip's frame
    count, so the pair is read as the half-open range ``[start_frame, end_frame)`` (the reading of list generators
    that write ``end_frame`` as the frame count) and stored as is in the record. A decoder finding fewer frames
    should clamp to the file.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        videos_dir: str = "videos",
        video_ext: str = ".mp4",
        vocab_file: str = "annotations/Diving48_vocab.json",
        train_file: str = "annotations/Diving48_V2_train.json",
        test_file: str = "annotations/Diving48_V2_test.json",
        name_separator: str = " ",
    ) -> None:
        super().__init__(root)
        self.videos_dir = self._path(videos_dir)
        self.video_ext = video_ext
        self.vocab_file = self._path(vocab_file)
        test = self._path(test_file)
        self.split_files = {"train": self._path(train_file), "val": test, "test": test}
        self.name_separator = name_separator

    def _read_class_names(self) -> list[str]:
        names = []
        for index, entry in enumerate(_json_list(self.vocab_file, "Diving48 vocabulary file")):
            if isinstance(entry, str):
                names.append(entry)
            elif isinstance(entry, list) and entry and all(isinstance(part, str) for part in entry):
                names.append(self.name_separator.join(entry))
            else:
                raise ValueError(f"{self.vocab_file}: entry {index}: expected a list of strings, got {entry!r}")
        return _unique_names(names, self.vocab_file)

    def _records(self, split: str) -> list[VideoRecord]:
        source = self.split_files[split]
        entries = _json_list(source, f"Diving48 {split} annotation file")
        located = []
        for index, entry in enumerate(entries):
            where = f"{source}: entry {index}"
            video_id = _json_field(entry, "vid_name", where)
            if not isinstance(video_id, str) or not video_id.strip():
                raise ValueError(f"{where}: 'vid_name' must be a non-empty string, got {video_id!r}")
            label = _json_int(entry, "label", where)
            start = _json_int(entry, "start_frame", where) if "start_frame" in entry else None
            end = _json_int(entry, "end_frame", where) if "end_frame" in entry else None
            if (start is not None and start < 0) or (start is not None and end is not None and end <= start):
                raise ValueError(f"{where} ({video_id}): frames [{start}, {end}) are not a valid range")
            path = self.videos_dir / f"{video_id}{self.video_ext}"
            record = VideoRecord(path=path, label=label, video_id=video_id, start_frame=start, end_frame=end)
            located.append((record, where))
        return _finish(located, split=split, source=source, num_classes=self.num_classes)


_GYM_NUM_CLASSES = {"gym99": 99, "gym288": 288}
_GYM_CATEGORY = re.compile(r"^Clabel:\s*(\d+)\s*;\s*set:\s*(\d+)\s*;\s*Glabel:\s*(\d+)\s*;\s*(\S.*)$")


class GymAnnotations(_Annotations):
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
        for line_no, line in _lines(self.categories_file):
            match = _GYM_CATEGORY.match(line)
            if match is None:
                raise ValueError(
                    f"{self.categories_file}:{line_no}: expected 'Clabel: <id>; set: <id>; Glabel: <id>; <name>', "
                    f"got {line!r}"
                )
            pairs.append((match.group(4).strip(), int(match.group(1))))
        ordered = _dense_ids(pairs, self.categories_file)
        if self._num_classes is not None and self._num_classes != len(ordered):
            raise ValueError(f"num_classes is {self._num_classes} but {self.categories_file} lists {len(ordered)}")
        return ordered

    def _records(self, split: str) -> list[VideoRecord]:
        source = _require(self.split_files[split], f"FineGym {split} list")
        located = []
        for line_no, line in _lines(source):
            where = f"{source}:{line_no}"
            parts = line.split()
            if len(parts) != 2 or not _is_int(parts[1]):
                raise ValueError(f"{where}: expected '<subaction_id> <label>', got {line!r}")
            video_id, label = parts[0], int(parts[1])
            path = self.clips_dir / f"{video_id}{self.video_ext}"
            located.append((VideoRecord(path=path, label=label, video_id=video_id), where))
        return _finish(located, split=split, source=source, num_classes=self.num_classes)


class KineticsAnnotations(_Annotations):
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
        if version is not None and version < 1:
            raise ValueError(f"version (the class count) must be >= 1 or None, got {version}")
        try:
            filename_template.format(youtube_id="abc", time_start=1, time_end=11, label="abseiling", split="train")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"filename_template {filename_template!r} is not a format over youtube_id, time_start, time_end, "
                f"label, split: {err!r}"
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
        source = _require(self.split_files[split], f"Kinetics {split} csv")
        with source.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            required = {"youtube_id", "time_start", "time_end"} | ({"label"} if split != "test" else set())
            missing = required - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{source}:1: header {reader.fieldnames} lacks the columns {sorted(missing)}")
            for row in reader:
                where = f"{source}:{reader.line_num}"
                if None in row:
                    raise ValueError(f"{where}: more fields than the header {reader.fieldnames}")
                yield where, row

    def _read_class_names(self) -> list[str]:
        names = sorted({row["label"].strip() for _, row in self._rows("train")})
        if self.version is not None and len(names) != self.version:
            raise ValueError(
                f"{self.split_files['train']} has {len(names)} classes but version={self.version}: use the csvs of "
                "that release, or version=None for a subset"
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
                    raise ValueError(f"{where}: {key} must be a whole number of seconds, got {text!r}")
                times.append(int(value))
            if not youtube_id:
                raise ValueError(f"{where}: empty youtube_id")
            name = (row.get("label") or "").strip()
            if name:
                if name not in class_ids:
                    raise ValueError(f"{where}: class {name!r} is not a class of {self.split_files['train']}")
                label = class_ids[name]
            elif split == "test":
                label = UNLABELLED
            else:
                raise ValueError(f"{where}: empty label")
            filename = self.filename_template.format(
                youtube_id=youtube_id, time_start=times[0], time_end=times[1], label=name, split=split
            )
            folder = self.video_dirs[split] / name if self.label_folders and name and split != "test" else None
            path = (folder or self.video_dirs[split]) / filename
            located.append((VideoRecord(path=path, label=label, video_id=Path(filename).stem), where))
        return _finish(located, split=split, source=self.split_files[split], num_classes=self.num_classes)


# ---------------------------------------------------------------------------------------------------------------------
# Generic list files
# ---------------------------------------------------------------------------------------------------------------------


class ListAnnotations(_Annotations):
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
        return " (set test_list)" if split == "test" else ""

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
        return _finish(located, split=split, source=source, num_classes=self.num_classes)
