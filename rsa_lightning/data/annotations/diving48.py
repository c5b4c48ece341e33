"""Diving48 V2 (Li et al., ECCV 2018) as published: the clips of ``Diving48_rgb.tar.gz``, the V2 train / test JSON
files and the vocabulary JSON (layout: :class:`Diving48Annotations`)."""

from __future__ import annotations

from pathlib import Path

from rsa_lightning.data.annotations.common import (
    Annotations,
    VideoRecord,
    check_unique_names,
    checked_records,
    json_field,
    json_int,
    load_json_list,
)
from rsa_lightning.errors import DataError


class Diving48Annotations(Annotations):
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
        vocab = load_json_list(self.vocab_file, "Diving48 vocabulary file", root=self.root, key="vocab_file")
        for index, entry in enumerate(vocab):
            if isinstance(entry, str):
                names.append((entry, f"entry {index}"))
            elif isinstance(entry, list) and entry and all(isinstance(part, str) for part in entry):
                names.append((self.name_separator.join(entry), f"entry {index}"))
            else:
                raise DataError(f"{self.vocab_file}: entry {index}: expected a list of strings, got {entry!r}")
        return check_unique_names(names, self.vocab_file)

    def _class_source(self) -> str:
        return str(self.vocab_file)

    def _records(self, split: str) -> list[VideoRecord]:
        source = self.split_files[split]
        key = "train_file" if split == "train" else "test_file"
        entries = load_json_list(source, f"Diving48 {split} annotation file", root=self.root, key=key)
        located = []
        for index, entry in enumerate(entries):
            where = f"{source}: entry {index}"
            video_id = json_field(entry, "vid_name", where)
            if not isinstance(video_id, str) or not video_id.strip():
                raise DataError(f"{where}: 'vid_name' must be a non-empty string, got {video_id!r}")
            label = json_int(entry, "label", where)
            start = json_int(entry, "start_frame", where) if "start_frame" in entry else None
            end = json_int(entry, "end_frame", where) if "end_frame" in entry else None
            if (start is not None and start < 0) or (start is not None and end is not None and end <= start):
                raise DataError(f"{where} ({video_id}): frames [{start}, {end}) are not a valid range")
            path = self.videos_dir / f"{video_id}{self.video_ext}"
            record = VideoRecord(path=path, label=label, video_id=video_id, start_frame=start, end_frame=end)
            located.append((record, where))
        return checked_records(located, split=split, source=source, num_classes=self.num_classes)
