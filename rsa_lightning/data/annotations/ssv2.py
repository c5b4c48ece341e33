"""Something-Something V2 (Goyal et al., ICCV 2017) as published by Qualcomm AI Research (formerly 20BN): webm
videos and the JSON files labels / train / validation / test (layout: :class:`SSv2Annotations`)."""

from __future__ import annotations

from pathlib import Path

from rsa_lightning.data.annotations.common import (
    UNLABELLED,
    Annotations,
    VideoRecord,
    checked_records,
    json_field,
    load_json,
    load_json_list,
    names_by_id,
)
from rsa_lightning.errors import DataError


class SSv2Annotations(Annotations):
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
        data = load_json(self.labels_file, "SSv2 labels file", root=self.root, key="labels_file")
        if not isinstance(data, dict):
            raise DataError(
                f"{self.labels_file}: expected a JSON object template -> id, got {type(data).__name__}: is it "
                "something-something-v2-labels.json?"
            )
        ids = {}
        for template, class_id in data.items():
            if isinstance(class_id, bool) or not str(class_id).isdigit():
                raise DataError(f"{self.labels_file}: id of {template!r} must be a number, got {class_id!r}")
            ids[template] = int(class_id)
        return ids

    def _read_class_names(self) -> list[str]:
        return names_by_id(self._template_ids().items(), self.labels_file)

    def _class_source(self) -> str:
        return str(self.labels_file)

    def _records(self, split: str) -> list[VideoRecord]:
        source = self.split_files[split]
        key = {"train": "train_file", "val": "val_file", "test": "test_file"}[split]
        entries = load_json_list(source, f"SSv2 {split} annotation file", root=self.root, key=key)
        template_ids = {name: i for i, name in enumerate(self.class_names())}
        located = []
        for index, entry in enumerate(entries):
            where = f"{source}: entry {index}"
            raw_id = json_field(entry, "id", where)
            video_id = str(raw_id).strip()
            if isinstance(raw_id, (bool, list, dict)) or raw_id is None or not video_id:
                raise DataError(f"{where}: 'id' must be a video number, got {raw_id!r}")
            if split == "test":
                label = UNLABELLED
            else:
                template = json_field(entry, "template", where)
                if not isinstance(template, str):
                    raise DataError(
                        f"{where} (id {video_id}): 'template' must be a string such as 'Holding [something]', got "
                        f"{template!r}"
                    )
                name = template.replace("[", "").replace("]", "")
                if name not in template_ids:
                    raise DataError(
                        f"{where} (id {video_id}): template {template!r} (brackets removed: {name!r}) is not a class "
                        f"of {self.labels_file}: use the labels file of the same release"
                    )
                label = template_ids[name]
            path = self.videos_dir / f"{video_id}{self.video_ext}"
            located.append((VideoRecord(path=path, label=label, video_id=video_id), where))
        return checked_records(located, split=split, source=source, num_classes=self.num_classes)
