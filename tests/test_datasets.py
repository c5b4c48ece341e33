"""Every dataset config on a miniature copy of its published layout, with real (tiny) videos, end to end.

Each ``conf/data/<name>.yaml`` gets a copy of the layout its header documents, built in a temporary folder: the
annotation files in the published formats (with the real class names where /work/shared/reference has them) and a
handful of real videos whose frame ``i`` is uniformly grey at :func:`conftest.frame_brightness` ``(i)``: SSv2 as
VP9 webm, SSv1 as JPEG frame folders, Diving48 / FineGym / Kinetics as H.264 mp4. The tests go through the composed
Hydra config (``data=<name> data.root=<copy>``) and check ids, labels, class names, which frames the clips of the
train / val / test views hold (decoded back from their brightness), and a few real training steps of ``rsa_tiny``.
Broken files (corrupt, truncated, zero-byte, missing) and the exclusion list are checked through ``train()`` too.

Frames are 32 x 56 (about the 16:9 of the real videos): decord cannot read frames 16, 24, 48 or 72 pixels wide
(a copy-size check fails), so the 48 of a 32 x 48 miniature is avoided.
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import hydra
import numpy as np
import pytest
import torch
from conftest import TINY_TRAINING, compose_config, decoded_frame_index, frame_brightness, write_video

from rsa_lightning.data.annotations import UNLABELLED
from rsa_lightning.data.exclusions import write_exclusions
from rsa_lightning.data.sampling import segment_centre_indices, segment_view_indices
from rsa_lightning.evaluate import evaluate
from rsa_lightning.train import train

REFERENCE = Path("/work/shared/reference")
HEIGHT, WIDTH = 32, 56
NUM_FRAMES = 4  # data.num_frames of every test: T segments
SKIPPED_MONITOR = "rsa_lightning.callbacks.SkippedSamplesMonitor"


# ---------------------------------------------------------------------------------------------------------------------
# Writing the miniatures
# ---------------------------------------------------------------------------------------------------------------------


def reference_names(name: str) -> list[str]:
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"reference class names {path} not available")
    return [line for line in path.read_text().splitlines() if line.strip()]


def kinetics400_names() -> list[str]:
    """The 400 Kinetics-400 class names as the published csvs spell them, from the list decord ships.

    decord writes them as ``passing_American_football_-in_game-``; the csvs say ``passing American football (in
    game)``. The file is parsed, not imported (its package imports the rest of decord's dataset helpers).
    """
    spec = importlib.util.find_spec("decord")
    path = Path(spec.origin).parent / "data" / "kinetics" / "kinetics400_action.py" if spec and spec.origin else None
    if path is None or not path.is_file():
        pytest.skip("no Kinetics-400 class list available (decord's kinetics400_action.py)")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "attr", None) == "classes":
            names = ast.literal_eval(node.value)
            return [re.sub(r"-([^-]+)-", r"(\1)", name).replace("_", " ") for name in names]
    pytest.skip(f"{path} holds no class list")


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_json(path: Path, data) -> Path:
    return write_text(path, json.dumps(data, indent=1))


def brightness_frames(num_frames: int) -> np.ndarray:
    """uint8 (T, H, W, 3): frame ``i`` uniformly grey at ``frame_brightness(i)`` (distinct for i < 32)."""
    assert num_frames <= 32, "frame_brightness repeats after 32 frames"
    levels = np.array([frame_brightness(i) for i in range(num_frames)], dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, HEIGHT, WIDTH, 3)).copy()


def write_mp4(path: Path, num_frames: int, fps: int = 30) -> Path:
    return write_video(path, brightness_frames(num_frames), fps=fps)


def write_mp4_with_audio(path: Path, num_frames: int, fps: int = 30) -> Path:
    """H.264 mp4 whose first stream is AAC audio, as the YouTube downloads of Kinetics are."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        audio = container.add_stream("aac", rate=44100)
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = WIDTH, HEIGHT
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "4", "g": "8", "bf": "2", "open-gop": "0"}
        for frame in brightness_frames(num_frames):
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        silence = av.AudioFrame.from_ndarray(
            np.zeros((1, 44100 * num_frames // fps), np.float32), format="fltp", layout="mono"
        )
        silence.sample_rate = 44100
        for packet in [*audio.encode(silence), *audio.encode()]:
            container.mux(packet)
    return path


def write_webm(path: Path, num_frames: int) -> Path:
    """VP9 webm at 12 fps like the SSv2 release (keyframe every 8 frames, so that decoders seek)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libvpx-vp9", rate=12)
        stream.width, stream.height = WIDTH, HEIGHT
        stream.pix_fmt = "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "4", "b:v": "0", "g": "8"}
        for frame in brightness_frames(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_jpeg_folder(folder: Path, num_frames: int) -> Path:
    """``folder/00001.jpg ...`` as in the SSv1 release (and the official RSA / TSM frame lists)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(brightness_frames(num_frames)):
        Image.fromarray(frame).save(folder / f"{i + 1:05d}.jpg", quality=95)
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# What each miniature holds
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Video:
    """One video of a split as the data should come out: id, label, and which file frames make up its clip."""

    video_id: str
    label: int
    length: int  # frames of the clip, the ``n`` the sampler sees
    start: int = 0  # file frame of clip frame 0 (Diving48 start_frame)


@dataclass
class Miniature:
    config: str  # conf/data/<config>.yaml
    root: Path
    splits: dict[str, list[Video]]
    num_classes: int
    known_classes: dict[int, str]  # a few class ids with their names
    flip: str
    mirror: dict[int, int] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)  # overrides the config needs (data=list: num_classes, ...)
    frame_folders: bool = False  # videos are folders of JPEG frames

    def overrides(self, *more: str) -> list[str]:
        return [
            f"data={self.config}",
            f"data.root={self.root}",
            f"data.num_frames={NUM_FRAMES}",
            "data.batch_size=2",
            "data.num_workers=0",
            "data.crop_size=32",
            f"data.train_transform.resize=[{HEIGHT},{WIDTH}]",
            f"data.eval_transform.resize=[{HEIGHT},{WIDTH}]",
            *self.extra,
            *more,
        ]


def subaction(youtube_id: str, event: tuple[int, int], action: tuple[int, int]) -> str:
    """A FineGym clip name: ``<youtube_id>_E_<event start>_<event end>_A_<start>_<end>``."""
    return f"{youtube_id}_E_{event[0]:06d}_{event[1]:06d}_A_{action[0]:04d}_{action[1]:04d}"


def bracketed(name: str) -> str:
    """The SSv2 ``template`` of a class name: its placeholders in brackets."""
    return re.sub(r"\b([Ss]omething)\b", r"[\1]", name)


def build_ssv2(root: Path) -> Miniature:
    names = reference_names("ssv2_class_names.txt")
    splits = {
        "train": [
            Video("78687", 10, 14),
            Video("42326", 93, 20),
            Video("100904", 0, 25),
            Video("3694", 166, 12),
            Video("169", 86, 31),
        ],
        "val": [Video("74225", 173, 18), Video("116154", 94, 27)],
        "test": [Video("1420", UNLABELLED, 22), Video("66777", UNLABELLED, 9)],
    }
    ann = root / "annotations"
    write_json(ann / "something-something-v2-labels.json", {name: str(i) for i, name in enumerate(names)})
    for split, file in (("train", "train"), ("val", "validation")):
        entries = [
            {
                "id": v.video_id,
                "label": re.sub(r"\b[Ss]omething\b", "a pen", names[v.label]).lower(),
                "template": bracketed(names[v.label]),
                "placeholders": ["a pen"] * names[v.label].lower().count("something"),
            }
            for v in splits[split]
        ]
        write_json(ann / f"something-something-v2-{file}.json", entries)
    write_json(ann / "something-something-v2-test.json", [{"id": v.video_id} for v in splits["test"]])
    for video in (v for videos in splits.values() for v in videos):
        write_webm(root / "videos" / f"{video.video_id}.webm", video.length)
    known = {0: "Approaching something with your camera", 93: "Pushing something from left to right"}
    known[173] = "Wiping something off of something"
    mirror = {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    return Miniature("ssv2", root, splits, 174, known, flip="skip", mirror=mirror)


def build_ssv1(root: Path) -> Miniature:
    file_order = reference_names("ssv1_class_names_file_order.txt")
    by_id = sorted(file_order)  # class_order: sorted (the official RSA / TSM ids)
    picks = {"train": [0, 3, 93, 94, 120], "val": [173, 16]}
    ids = {"train": ["100218", "24554", "8756", "46032", "1337"], "val": ["9223", "61530"]}
    lengths = {"train": [31, 15, 24, 30, 8], "val": [29, 13]}
    splits = {
        split: [Video(i, label, n) for i, label, n in zip(ids[split], picks[split], lengths[split])]
        for split in ("train", "val")
    }
    splits["test"] = [Video("3512", UNLABELLED, 19), Video("108029", UNLABELLED, 11)]
    ann = root / "annotations"
    write_text(ann / "something-something-v1-labels.csv", "\n".join(file_order) + "\n")
    for split, file in (("train", "train"), ("val", "validation")):
        lines = [f"{v.video_id};{by_id[v.label]}" for v in splits[split]]
        write_text(ann / f"something-something-v1-{file}.csv", "\n".join(lines) + "\n")
    write_text(ann / "something-something-v1-test.csv", "".join(f"{v.video_id}\n" for v in splits["test"]))
    for video in (v for videos in splits.values() for v in videos):
        write_jpeg_folder(root / "frames" / video.video_id, video.length)
    known = {0: "Approaching something with your camera", 93: "Pushing something from left to right"}
    known[16] = "Holding something"  # line 1 of the labels csv
    mirror = {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    return Miniature("ssv1", root, splits, 174, known, flip="skip", mirror=mirror, frame_folders=True)


def build_diving48(root: Path) -> Miniature:
    names = reference_names("diving48_class_names.txt")
    # (vid_name, label, frames in the file, start_frame, end_frame) as in Diving48_V2_{train,test}.json
    entries = {
        "train": [
            ("-mmq0PT-u8k_00155", 26, 20, 0, 20),
            ("_8Vy3dlHg2w_00000", 0, 24, 4, 20),
            ("2x1lIrgKxYo_00041", 47, 16, 0, 17),  # end_frame one past the file: clamped to 16 frames
            ("Zj4lJqqrR4Y_00012", 35, 28, 2, 28),
        ],
        "val": [("0GGd9nlYB3Q_00048", 12, 18, 0, 18), ("-Bp3KPsVEPg_00090", 5, 25, 3, 22)],
    }
    ann = root / "annotations"
    write_json(ann / "Diving48_vocab.json", [name.split("+") for name in names])
    for split, file in (("train", "train"), ("val", "test")):
        write_json(
            ann / f"Diving48_V2_{file}.json",
            [{"vid_name": v, "label": lb, "start_frame": s, "end_frame": e} for v, lb, _, s, e in entries[split]],
        )
    splits = {split: [Video(v, lb, min(e, n) - s, s) for v, lb, n, s, e in rows] for split, rows in entries.items()}
    splits["test"] = splits["val"]
    for split_rows in entries.values():
        for vid, _, n, _, _ in split_rows:
            write_mp4(root / "videos" / f"{vid}.mp4", n)
    known = {0: "Back 15som 05Twis FREE", 26: "Forward 35som NoTwis PIKE", 47: "Reverse Dive NoTwis TUCK"}
    return Miniature("diving48", root, splits, 48, known, flip="always")


GYM_CLIPS = {  # subaction id -> frames; FineGym clips are cut from the event videos at the published timestamps
    subaction("0LtLS9wROrk", (2407, 2435), (3, 5)): 22,
    subaction("A0xAXXysHUo", (2184, 2237), (4, 5)): 13,
    subaction("zRT1Eh8F-2Q", (874, 950), (16, 17)): 17,
    subaction("0LtLS9wROrk", (2407, 2435), (9, 11)): 26,
    subaction("9hTXEO7vHWM", (1102, 1166), (28, 30)): 30,
    subaction("-9W9SpaJ1bQ", (3050, 3101), (0, 2)): 11,
}


GYM_LABELS = {"gym99": [0, 98, 42, 58, 70, 7], "gym288": [0, 287, 150, 12, 200, 99]}  # of the clips above, in order


def build_finegym(root: Path) -> None:
    """One FineGym folder for both variants: the clips, gym99 lists + categories, gym288 lists (no categories).

    The first four clips are the train list, the last two the val list."""
    for clip, n in GYM_CLIPS.items():
        write_mp4(root / "subactions" / f"{clip}.mp4", n)
    names = reference_names("gym99_class_names.txt")
    lines = [f"Clabel: {i}; set: {1 + i // 10}; Glabel: {3 * i + 1}; {name}" for i, name in enumerate(names)]
    write_text(root / "annotations" / "gym99_categories.txt", "\n".join(lines) + "\n")
    for variant, labels in GYM_LABELS.items():
        rows = [f"{clip} {label}" for clip, label in zip(GYM_CLIPS, labels)]
        write_text(root / "annotations" / f"{variant}_train_element_v1.1.txt", "\n".join(rows[:4]) + "\n")
        write_text(root / "annotations" / f"{variant}_val_element.txt", "\n".join(rows[4:]) + "\n")


def gym_miniature(root: Path, variant: str) -> Miniature:
    videos = [Video(clip, label, n) for (clip, n), label in zip(GYM_CLIPS.items(), GYM_LABELS[variant])]
    splits = {"train": videos[:4], "val": videos[4:], "test": videos[4:]}  # FineGym: test reads the val list
    if variant == "gym99":
        names = reference_names("gym99_class_names.txt")
        known = {0: names[0], 42: "(BB) split jump with 0.5 turn in side position"}
        # published names repeat across apparatus sets: the repeated ones get their set (class 58: set 6, 70: set 8)
        known[58], known[70] = "(BB) salto backward tucked [set 6]", "(BB) salto backward tucked [set 8]"
        return Miniature("gym99", root, splits, 99, known, flip="always")
    known = {0: "class_0", 287: "class_287"}  # no gym288_categories.txt in this copy (optional): generic names
    return Miniature("gym288", root, splits, 288, known, flip="always")


def build_kinetics400(root: Path) -> Miniature:
    """A partial download, as Kinetics usually is: train.csv lists all 400 classes, a few clips arrived, and the
    exclusion list (as scan_videos writes it) leaves out the rest."""
    names = kinetics400_names()
    ids = {name: i for i, name in enumerate(sorted(names))}
    downloaded = {  # (label name, youtube_id, time_start, time_end, frames)
        "train": [
            ("zumba", "--0NTAs-ZjE", 14, 24, 28),
            ("abseiling", "---QUuC4vJs", 3, 13, 21),
            ("passing American football (in game)", "-0JBFpEpuN0", 120, 130, 31),
            ("air drumming", "-VtLx-mcPds", 0, 10, 17),
        ],
        "val": [("air drumming", "--nQbRBEz2s", 104, 114, 24), ("hurling (sport)", "0bU3mXzu-pw", 7, 17, 15)],
        "test": [("", "--33Lscn6sk", 4, 14, 26), ("", "-4dqPx7KMpI", 30, 40, 12)],
    }
    header = "label,youtube_id,time_start,time_end,split\n"
    missing = [(name, f"yt{i:09d}", 0, 10) for i, name in enumerate(names)]  # one more clip of every class
    ann = root / "annotations"
    ann.mkdir(parents=True)
    with (ann / "train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        handle.write(header)
        for name, yt, start, end, _ in downloaded["train"]:
            writer.writerow([name, yt, start, end, "train"])
        for name, yt, start, end in missing:
            writer.writerow([name, yt, start, end, "train"])
    with (ann / "validate.csv").open("w", newline="") as handle:
        handle.write(header)
        csv.writer(handle).writerows([[n, yt, s, e, "val"] for n, yt, s, e, _ in downloaded["val"]])
    with (ann / "test.csv").open("w", newline="") as handle:  # the first release: no label column
        handle.write("youtube_id,time_start,time_end,split\n")
        csv.writer(handle).writerows([[yt, s, e, "test"] for _, yt, s, e, _ in downloaded["test"]])
    splits = {}
    for split, rows in downloaded.items():
        splits[split] = []
        for name, yt, start, end, n in rows:
            clip = f"{yt}_{start:06d}_{end:06d}"
            write_mp4_with_audio(root / "videos" / split / f"{clip}.mp4", n)
            splits[split].append(Video(clip, ids[name] if name else UNLABELLED, n))
    write_exclusions(
        root / "exclusions.txt",
        [
            ("train", f"{yt}_{s:06d}_{e:06d}", str(root / "videos" / "train" / f"{yt}_{s:06d}_{e:06d}.mp4"), "missing")
            for _, yt, s, e in missing
        ],
    )
    known = {0: "abseiling", ids["passing American football (in game)"]: "passing American football (in game)"}
    known[399] = "zumba"
    return Miniature("kinetics400", root, splits, 400, known, flip="always")


HMDB_CLASSES = ["brush_hair", "cartwheel", "catch", "chew", "clap"]


def build_list_video(root: Path) -> Miniature:
    """``<path> <label>`` lists of video files (an HMDB51-like subset), with a class-name file and a test list."""
    rows = {
        "train": [
            ("videos/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.mp4", 0, 19),
            ("videos/cartwheel/Bodenturnen_2004_cartwheel_f_cm_np1_le_med_0.mp4", 1, 3),  # shorter than T
            ("videos/catch/Ball_hochwerfen_catch_u_cm_np1_fr_goo_0.mp4", 2, 26),
            ("videos/clap/Hand_Clapping_clap_u_nm_np1_fr_med_1.mp4", 4, 11),
        ],
        "val": [("videos/chew/chewing_gum_chew_h_nm_np1_fr_goo_0.mp4", 3, 23), ("videos/clap/clap_clap_2.mp4", 4, 9)],
        "test": [("videos/catch/Catch_catch_f_cm_np1_ba_med_2.mp4", 2, 16), ("videos/chew/chew_0.mp4", 3, 30)],
    }
    for split, entries in rows.items():
        write_text(root / "annotations" / f"{split}.txt", "".join(f"{p} {lb}\n" for p, lb, _ in entries))
        for path, _, n in entries:
            write_mp4(root / path, n, fps=30)
    write_text(root / "annotations" / "classes.txt", "\n".join(HMDB_CLASSES) + "\n")
    splits = {s: [Video(str(Path(p).with_suffix("")), lb, n) for p, lb, n in e] for s, e in rows.items()}
    extra = [
        "data.num_classes=5",
        "data.annotations.class_names_file=annotations/classes.txt",
        "data.annotations.test_list=annotations/test.txt",
    ]
    known = {0: "brush_hair", 4: "clap"}
    return Miniature("list", root, splits, 5, known, flip="always", extra=extra)


def build_list_frames(root: Path) -> Miniature:
    """The official RSA / TSM frame lists ``<frame_folder> <num_frames> <label>`` over JPEG folders."""
    rows = {  # folder, num_frames in the list, label, frames on disk
        "train": [
            ("20bn-something-something-v1/100218", 30, 2, 30),
            ("20bn-something-something-v1/24554", 12, 0, 16),  # the list's count wins over the folder's
            ("20bn-something-something-v1/8756", 21, 3, 21),
            ("20bn-something-something-v1/46032", 9, 1, 9),
        ],
        "val": [("20bn-something-something-v1/9223", 25, 2, 25), ("20bn-something-something-v1/61530", 14, 1, 14)],
        "test": [("20bn-something-something-v1/3512", 17, 0, 17), ("20bn-something-something-v1/1337", 31, 3, 31)],
    }
    for split, entries in rows.items():
        write_text(root / "lists" / f"{split}_videofolder.txt", "".join(f"{p} {n} {lb}\n" for p, n, lb, _ in entries))
        for folder, _, _, on_disk in entries:
            write_jpeg_folder(root / folder, on_disk)
    splits = {s: [Video(p, lb, n) for p, n, lb, _ in e] for s, e in rows.items()}
    extra = [
        "data/backend=frames",
        "data.num_classes=4",
        "data.annotations.train_list=lists/train_videofolder.txt",
        "data.annotations.val_list=lists/val_videofolder.txt",
        "data.annotations.test_list=lists/test_videofolder.txt",
    ]
    known = {0: "class_0", 3: "class_3"}
    return Miniature("list", root, splits, 4, known, flip="always", extra=extra, frame_folders=True)


DATASETS = ["ssv2", "ssv1", "diving48", "gym99", "gym288", "kinetics400", "list_video", "list_frames"]


@pytest.fixture(scope="module")
def miniature(tmp_path_factory) -> Callable[[str], Miniature]:
    """``miniature(name)``: the dataset's miniature copy, built once per module."""
    cache: dict[str, Miniature] = {}
    finegym: list[Path] = []  # gym99 and gym288 share one FineGym folder, as in conf/data
    builders = {
        "ssv2": build_ssv2,
        "ssv1": build_ssv1,
        "diving48": build_diving48,
        "kinetics400": build_kinetics400,
        "list_video": build_list_video,
        "list_frames": build_list_frames,
    }

    def get(name: str) -> Miniature:
        if name not in cache:
            if name in ("gym99", "gym288"):
                if not finegym:
                    finegym.append(tmp_path_factory.mktemp("finegym"))
                    build_finegym(finegym[0])
                cache[name] = gym_miniature(finegym[0], name)
            else:
                cache[name] = builders[name](tmp_path_factory.mktemp(name))
        return cache[name]

    return get


def datamodule(mini: Miniature, out: Path, *more: str, stage: Optional[str] = None):
    cfg = compose_config("train", mini.overrides(*more), out)
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup(stage)
    return dm


def clip_frames(video: torch.Tensor) -> list[int]:
    """The frame index encoded in each frame of a uint8 (C, T, H, W) clip."""
    assert video.dtype == torch.uint8 and video.shape[0] == 3, (video.dtype, video.shape)
    return [decoded_frame_index(video[:, t]) for t in range(video.shape[1])]


# ---------------------------------------------------------------------------------------------------------------------
# Records, class names, flip policy
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_records_and_class_names(name, miniature, tmp_path):
    mini = miniature(name)
    dm = datamodule(mini, tmp_path)
    assert dm.num_classes == mini.num_classes and len(dm.class_names) == mini.num_classes
    for class_id, class_name in mini.known_classes.items():
        assert dm.class_names[class_id] == class_name, class_id
    for split, videos in mini.splits.items():
        records = dm.datasets[split].records
        assert [(r.video_id, r.label) for r in records] == [(v.video_id, v.label) for v in videos], split
        for record in records:
            assert record.path.is_absolute() and record.path.is_relative_to(mini.root)
            assert record.path.is_dir() if mini.frame_folders else record.path.is_file(), record.path


@pytest.mark.parametrize("name", DATASETS)
def test_flip_policy_and_mirror_classes(name, miniature, tmp_path):
    mini = miniature(name)
    dm = datamodule(mini, tmp_path)
    transform = dm.train_transform()
    assert transform.flip == mini.flip
    assert transform.mirror == mini.mirror
    if mini.flip != "skip":
        return
    gen = torch.Generator().manual_seed(0)
    never = [transform.sample_params(32, 56, label=93, generator=gen).flip for _ in range(40)]
    sometimes = [transform.sample_params(32, 56, label=10, generator=gen).flip for _ in range(40)]
    assert not any(never) and any(sometimes)  # 93 has a mirror class (94): never flipped


# ---------------------------------------------------------------------------------------------------------------------
# Which frames the clips hold
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_val_clips_are_the_segment_centres(name, miniature, tmp_path):
    mini = miniature(name)
    dm = datamodule(mini, tmp_path)
    dataset = dm.datasets["val"]
    assert len(dataset) == len(mini.splits["val"])  # validation during training: one view per video
    for i, video in enumerate(mini.splits["val"]):
        sample = dataset[i]
        assert sample["video"].shape == (3, NUM_FRAMES, 32, 32)
        assert (sample["video_id"], sample["label"], sample["replaced"]) == (video.video_id, video.label, "")
        expected = video.start + segment_centre_indices(video.length, NUM_FRAMES)
        assert clip_frames(sample["video"]) == expected.tolist(), video


@pytest.mark.parametrize("name", DATASETS)
def test_train_clips_take_one_frame_per_segment(name, miniature, tmp_path):
    mini = miniature(name)
    dm = datamodule(mini, tmp_path)
    dataset = dm.datasets["train"]
    torch.manual_seed(0)
    drawn = {}
    for _ in range(3):
        for i, video in enumerate(mini.splits["train"]):
            sample = dataset[i]
            assert sample["video"].shape == (3, NUM_FRAMES, 32, 32) and sample["video_id"] == video.video_id
            assert sample["label"] == video.label  # flips never relabel ("skip" / "always")
            frames = np.array(clip_frames(sample["video"])) - video.start
            n = video.length
            if n >= NUM_FRAMES:  # segments of n // T frames
                segment = n // NUM_FRAMES
                assert all(s * segment <= f < (s + 1) * segment for s, f in enumerate(frames)), (video, frames)
            else:
                assert np.all(np.diff(frames) >= 0) and frames.min() >= 0 and frames.max() < n, (video, frames)
            drawn.setdefault(video.video_id, set()).add(tuple(frames))
    assert any(len(clips) > 1 for clips in drawn.values()), "training clips should be random"


@pytest.mark.parametrize("name", DATASETS)
def test_test_views_are_clips_times_crops(name, miniature, tmp_path):
    mini = miniature(name)
    dm = datamodule(mini, tmp_path, "data.num_clips=2", "data.num_crops=3")
    dataset = dm.datasets["test"]
    assert len(dataset) == 6 * len(mini.splits["test"])
    assert len(dm.datasets["val"]) == len(mini.splits["val"])  # validation keeps one view
    for i, video in enumerate(mini.splits["test"]):
        samples = [dataset[6 * i + view] for view in range(6)]
        assert [s["view"] for s in samples] == list(range(6))
        assert {(s["video_id"], s["label"]) for s in samples} == {(video.video_id, video.label)}
        clips = []
        for clip in range(2):
            expected = video.start + segment_view_indices(video.length, NUM_FRAMES, clip, 2)
            for crop in range(3):
                assert clip_frames(samples[3 * clip + crop]["video"]) == expected.tolist(), (video, clip, crop)
            clips.append(expected.tolist())
        if video.length >= 2 * NUM_FRAMES:
            assert clips[0] != clips[1], video  # the two temporal views sit at different offsets


@pytest.mark.parametrize("name", ["ssv2", "ssv1"])
def test_loader_workers_decode_the_same_frames(name, miniature, tmp_path):
    """The backends travel to DataLoader worker processes (pickled) and decode there: decord webm, JPEG folders."""
    mini = miniature(name)
    dm = datamodule(mini, tmp_path, "data.num_workers=2", stage="validate")
    batches = list(dm.val_dataloader())
    assert [vid for batch in batches for vid in batch["video_id"]] == [v.video_id for v in mini.splits["val"]]
    clips = [clip for batch in batches for clip in batch["video"]]  # uint8 (C, T, H, W): normalised only on device
    for clip, video in zip(clips, mini.splits["val"]):
        assert clip_frames(clip) == (video.start + segment_centre_indices(video.length, NUM_FRAMES)).tolist()


# ---------------------------------------------------------------------------------------------------------------------
# Training, prediction
# ---------------------------------------------------------------------------------------------------------------------

TRAIN_OVERRIDES = ["model=rsa_tiny", *TINY_TRAINING]


@pytest.fixture(scope="module")
def trained(miniature, tmp_path_factory) -> Callable[[str], tuple[dict, Path]]:
    """``trained(name)``: ``(metrics, run dir)`` of a short training run on the miniature, run once per module."""
    cache: dict[str, tuple[dict, Path]] = {}

    def get(name: str) -> tuple[dict, Path]:
        if name not in cache:
            run_dir = tmp_path_factory.mktemp(f"run_{name}")
            cfg = compose_config("train", miniature(name).overrides(*TRAIN_OVERRIDES), run_dir)
            cache[name] = (train(cfg), run_dir)
        return cache[name]

    return get


@pytest.mark.parametrize("name", DATASETS)
def test_training_steps_run(name, miniature, trained):
    mini = miniature(name)
    metrics, run_dir = trained(name)
    assert np.isfinite(metrics["train/loss_epoch"]) and 0.0 <= metrics["val/acc1"] <= 1.0
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert ckpt["state_dict"]["net.fc.weight"].shape[0] == mini.num_classes  # num_classes from the data config
    assert len(ckpt["class_names"]) == mini.num_classes
    assert all(ckpt["class_names"][i] == n for i, n in mini.known_classes.items())
    assert ckpt["config"]["data"]["root"] == str(mini.root)


def test_ssv2_test_split_is_unlabelled_and_predicts(miniature, trained, tmp_path):
    mini = miniature("ssv2")
    dm = datamodule(mini, tmp_path / "dm")
    assert [r.label for r in dm.datasets["test"].records] == [UNLABELLED, UNLABELLED]
    assert dm.datasets["test"][0]["label"] == UNLABELLED
    _, run_dir = trained("ssv2")
    overrides = [
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "split=test",
        "data.num_clips=2",
        "data.num_crops=3",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
    ]
    out = tmp_path / "eval"
    metrics = evaluate(compose_config("eval", overrides, out), overrides=overrides)
    assert metrics["num_videos"] == 2 and metrics["views_per_video"] == 6 and not metrics["skipped_videos"]
    assert "acc1" not in metrics  # nothing to score
    rows = list(csv.DictReader((out / "predictions_test.csv").read_text().splitlines()))
    assert [(r["video_id"], r["label"]) for r in rows] == [("1420", "-1"), ("66777", "-1")]
    names = set(dm.class_names)
    assert all(r["pred_1_name"] in names for r in rows)


def test_test_after_training_with_an_unlabelled_test_split(miniature, tmp_path):
    """Fails before training starts (not after the whole run) and points to eval.py for test predictions."""
    mini = miniature("ssv2")
    overrides = mini.overrides(*TRAIN_OVERRIDES, "test_after_training=true", "trainer.limit_test_batches=1")
    with pytest.raises(ValueError, match="no labels.*split=test"):
        train(compose_config("train", overrides, tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Broken videos and the exclusion list
# ---------------------------------------------------------------------------------------------------------------------

BROKEN = ["videos/corrupt", "videos/truncated", "videos/zero", "videos/missing"]


def build_broken_list(root: Path) -> Miniature:
    """A ``<path> <label>`` list whose train split holds a corrupt (an HTML error page saved as .mp4), a truncated
    (download cut off: no moov atom), a zero-byte and a missing video between good ones."""
    good = {f"videos/good{i}": n for i, n in enumerate([12, 16, 9, 20])}
    for vid, n in good.items():
        write_mp4(root / f"{vid}.mp4", n)
    write_text(root / "videos" / "corrupt.mp4", "<!DOCTYPE html><html><body>Video unavailable</body></html>\n" * 20)
    whole = write_mp4(root / "videos" / "whole.mp4", 24).read_bytes()
    (root / "videos" / "truncated.mp4").write_bytes(whole[: len(whole) * 6 // 10])
    (root / "videos" / "zero.mp4").write_bytes(b"")
    order = ["videos/good0", "videos/corrupt", "videos/good1", "videos/truncated", "videos/zero"]
    order += ["videos/good2", "videos/missing", "videos/good3"]
    write_text(root / "annotations" / "train.txt", "".join(f"{v}.mp4 {i % 3}\n" for i, v in enumerate(order)))
    write_text(root / "annotations" / "val.txt", "videos/good0.mp4 0\nvideos/good3.mp4 1\n")
    splits = {
        "train": [Video(v, i % 3, good.get(v, 0)) for i, v in enumerate(order)],
        "val": [Video("videos/good0", 0, 12), Video("videos/good3", 1, 20)],
    }
    return Miniature("list", root, splits, 3, {}, flip="always", extra=["data.num_classes=3"])


def test_broken_videos_are_skipped_and_reported(tmp_path, caplog):
    broken = build_broken_list(tmp_path / "ds")
    cfg = compose_config("train", [], tmp_path / "probe")
    monitor = [f"+callbacks.skipped._target_={SKIPPED_MONITOR}"]
    if SKIPPED_MONITOR in [c.get("_target_") for c in cfg.callbacks.values()]:
        key = next(k for k, c in cfg.callbacks.items() if c.get("_target_") == SKIPPED_MONITOR)
        monitor = [f"callbacks.{key}.max_skipped_fraction=0.5"]
    else:
        monitor.append("+callbacks.skipped.max_skipped_fraction=0.5")  # 4 of 8 broken: tolerated here
    overrides = broken.overrides(*TRAIN_OVERRIDES, "trainer.limit_train_batches=1.0", *monitor)
    caplog.set_level(logging.WARNING, logger="rsa_lightning")
    metrics = train(compose_config("train", overrides, tmp_path / "run"))
    assert metrics["train/skipped"] == len(BROKEN)  # every train sample of the epoch was drawn once
    assert metrics["val/skipped"] == 0
    reports = [r.getMessage() for r in caplog.records if "replaced because their video failed" in r.getMessage()]
    assert len(reports) == 1, reports
    # each skipped id with its file and the reason: "<id> (<file>: <reason>)"
    for vid in BROKEN:
        assert re.search(rf"{re.escape(vid)} \({re.escape(str(broken.root))}/\S+: \S", reports[0]), (vid, reports)
    assert np.isfinite(metrics["train/loss_epoch"])


def test_exclusion_list_removes_videos(tmp_path):
    mini = build_broken_list(tmp_path / "ds")
    write_exclusions(
        mini.root / "exclusions.txt",
        [("train", vid, str(mini.root / f"{vid}.mp4"), "scan_videos: cannot decode") for vid in BROKEN]
        + [("val", "videos/good3", str(mini.root / "videos" / "good3.mp4"), "excluded by hand")],
    )
    dm = datamodule(mini, tmp_path / "out", stage="fit")  # no test list
    train_ids = [r.video_id for r in dm.datasets["train"].records]
    assert train_ids == ["videos/good0", "videos/good1", "videos/good2", "videos/good3"]  # good3 stays in train
    assert [r.video_id for r in dm.datasets["val"].records] == ["videos/good0"]
    assert all(dm.datasets["train"][i]["replaced"] == "" for i in range(len(train_ids)))
    assert not dm.datasets["train"].skipped
    # without the list (data.exclusions_file=null) every listed video is back
    dm = datamodule(mini, tmp_path / "out2", "data.exclusions_file=null", stage="fit")
    assert len(dm.datasets["train"].records) == 8 and len(dm.datasets["val"].records) == 2


def test_setup_without_a_test_split(miniature, tmp_path):
    """data=list has no test split by default (test_list: null), nor has Kinetics without test.csv or SSv1 without
    its test csv: setup() with no stage builds the splits the data has."""
    mini = miniature("list_video")
    cfg = compose_config("train", mini.overrides("data.annotations.test_list=null"), tmp_path)
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    assert set(dm.datasets) == {"train", "val"}
    dm.setup()
    assert set(dm.datasets) == {"train", "val"}
