"""Bad or unusual data input: every annotation problem is one DataError / MissingFileError naming the file and line (or
JSON entry) and the fix, mmaction2's list variants are parsed when declared and refused when ambiguous, and
dataset-time problems (missing, broken, short, tiny, huge, grey or RGBA videos) are handled as documented."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import decoded_frame_index, frame_brightness, write_brightness_video, write_video
from PIL import Image

from rsa_lightning.callbacks.skipped_samples import SkippedSamplesMonitor, TooManySkippedVideosError
from rsa_lightning.data import VideoDataModule
from rsa_lightning.data.annotations import (
    GymAnnotations,
    KineticsAnnotations,
    ListAnnotations,
    SSv1Annotations,
    SSv2Annotations,
    VideoRecord,
    read_class_names,
)
from rsa_lightning.data.dataset import UndecodableVideosError, VideoDataset, as_rgb
from rsa_lightning.data.decoding import DecordBackend, FrameFolderBackend, PyAVBackend
from rsa_lightning.data.sampling import SegmentSampler
from rsa_lightning.data.transforms import EvalTransform, TrainTransform
from rsa_lightning.errors import USER_ERROR_EXIT, ConfigError, DataError, MissingFileError, UserError, classify


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def lists(root: Path, train: str, val: str = "v/val.mp4 0\n", classes: str = "a\nb\nc\n", **kwargs) -> ListAnnotations:
    write(root / "train.txt", train)
    write(root / "val.txt", val)
    write(root / "classes.txt", classes)
    args = {"train_list": "train.txt", "val_list": "val.txt", "class_names_file": "classes.txt"}
    return ListAnnotations(root=root, **{**args, **kwargs})


def refused(call, error=DataError, match=None) -> str:
    """The message of the user error ``call()`` raises (exit code 2, one line)."""
    with pytest.raises(error, match=match) as info:
        call()
    assert classify(info.value) == USER_ERROR_EXIT
    assert "\n" not in str(info.value)
    return str(info.value)


class AllFrames:
    """Stand-in sampler: every frame of the clip (evaluation) or the first ``T`` (wrapping)."""

    def __init__(self, num_frames=None):
        self.num_frames = num_frames

    def __call__(self, n, rng=None, view=0, num_views=1):
        return np.arange(n) if self.num_frames is None else np.arange(self.num_frames) % n


# ---------------------------------------------------------------------------------------------------------------------
# Annotation files: missing, malformed, wrong delimiter, unknown template, label out of range, duplicates
# ---------------------------------------------------------------------------------------------------------------------


def test_missing_root_list_and_class_name_files_name_the_setting(tmp_path):
    ann = ListAnnotations(root=tmp_path / "nowhere", num_classes=3)
    message = refused(lambda: ann.records("train"), MissingFileError, "data.root .*nowhere does not exist")
    assert "set data.root=" in message
    ann = ListAnnotations(root=tmp_path, num_classes=3, train_list="lists/train.txt")
    refused(lambda: ann.records("train"), MissingFileError, r"lists/train\.txt does not exist: .*train_list")
    ann = ListAnnotations(root=tmp_path, class_names_file="names.txt")
    refused(ann.class_names, MissingFileError, r"class-name file .*names\.txt does not exist.*class_names_file")
    refused(lambda: SSv2Annotations(root=tmp_path).class_names(), MissingFileError, r"labels\.json .*labels_file")


def test_bad_json_names_file_line_and_column(tmp_path):
    root = tmp_path / "ssv2"
    write(root / "annotations/something-something-v2-labels.json", '{"Holding something": "0",\n "Moving": 1,}')
    message = refused(SSv2Annotations(root=root).class_names, match=r"labels\.json:2:14: not valid JSON")
    assert "download it again" in message
    write(root / "annotations/something-something-v2-labels.json", '["Holding something"]')
    refused(SSv2Annotations(root=root).class_names, match=r"labels\.json: expected a JSON object template -> id")
    (root / "annotations/something-something-v2-labels.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    refused(SSv2Annotations(root=root).class_names, match=r"labels\.json: not UTF-8 text")


def test_unknown_or_unparseable_ssv2_template_names_the_entry(tmp_path):
    root = tmp_path / "ssv2"
    labels = {"Holding something": "0", "Moving something up": "1"}
    write(root / "annotations/something-something-v2-labels.json", json.dumps(labels))
    train = [{"id": "1", "template": "Holding [something]"}, {"id": "2", "template": "Juggling [something]"}]
    write(root / "annotations/something-something-v2-train.json", json.dumps(train))
    ann = SSv2Annotations(root=root)
    refused(lambda: ann.records("train"), match=r"train\.json: entry 1 \(id 2\): template 'Juggling \[something\]'")
    train[1] = {"id": "2", "template": None}
    write(root / "annotations/something-something-v2-train.json", json.dumps(train))
    refused(lambda: ann.records("train"), match=r"train\.json: entry 1 \(id 2\): 'template' must be a string")
    train[1] = {"id": ["2"], "template": "Holding [something]"}
    write(root / "annotations/something-something-v2-train.json", json.dumps(train))
    refused(lambda: ann.records("train"), match=r"train\.json: entry 1: 'id' must be a video number")


def test_wrong_delimiters_are_named(tmp_path):
    # comma-separated where spaces are expected
    message = refused(lambda: lists(tmp_path, "v/a.mp4,0\n").records("train"), match=r"train\.txt:1: expected")
    assert "looks comma-separated" in message and "spaces (or tabs)" in message
    # tabs are whitespace: a tab-separated list reads the same as a space-separated one
    tabbed = lists(tmp_path / "tabs", "v/a b.mp4\t2\nv/c.mp4 \t 1\n").records("train")
    assert [(r.video_id, r.label) for r in tabbed] == [("v/a b", 2), ("v/c", 1)]
    # FineGym lists: spaces expected
    gym = tmp_path / "gym"
    write(gym / "annotations/gym99_train_element_v1.1.txt", "clip_a;3\n")
    refused(lambda: GymAnnotations(root=gym).records("train"), match=r"v1\.1\.txt:1: .*looks semicolon-separated")
    # SSv1: ';' expected, commas or spaces found
    v1 = tmp_path / "ssv1"
    write(v1 / "annotations/something-something-v1-labels.csv", "Holding something\nMoving something up\n")
    write(v1 / "annotations/something-something-v1-train.csv", "100218,Holding something\n")
    message = refused(lambda: SSv1Annotations(root=v1).records("train"), match=r"train\.csv:1: expected '<id>;")
    assert "looks comma-separated" in message and "semicolons" in message
    write(v1 / "annotations/something-something-v1-test.csv", "100218 Holding something\n")
    refused(lambda: SSv1Annotations(root=v1).records("test"), match=r"test\.csv:1: .*looks space-separated")
    # Kinetics csv: commas expected, tabs found
    kin = tmp_path / "kinetics"
    write(kin / "annotations/train.csv", "label\tyoutube_id\ttime_start\ttime_end\tsplit\nzumba\tabc\t1\t11\ttrain\n")
    message = refused(KineticsAnnotations(root=kin, version=None).class_names, match=r"train\.csv:1: header")
    assert "looks tab-separated" in message and "commas" in message


def test_label_out_of_range_and_duplicate_ids_name_the_lines(tmp_path):
    ann = lists(tmp_path, "v/a.mp4 0\nv/b.mp4 3\n")
    message = refused(lambda: ann.records("train"), match=r"train\.txt:2: label 3 of 'v/b' is outside \[0, 3\)")
    assert "class ids 0 .. 2" in message
    ann = lists(tmp_path, "v/a.mp4 0\nv/b.mp4 1\nv/a.mp4 2\n")
    refused(lambda: ann.records("train"), match=r"'v/a' is listed twice .*train\.txt:1 and .*train\.txt:3")


def test_class_name_file_that_repeats_a_name_is_refused_with_both_lines(tmp_path):
    write(tmp_path / "classes.txt", "jump\nrun\nwalk\nrun\n")
    message = refused(lambda: read_class_names(tmp_path / "classes.txt"), match=r"class 'run' is listed twice")
    assert "(line 2 and line 4)" in message and "rename one" in message
    # through a dataset: the class-name file is named
    ann = lists(tmp_path / "ds", "v/a.mp4 0\n", classes="jump\nrun\nrun\n")
    refused(ann.class_names, match=r"classes\.txt: class 'run' is listed twice \(line 2 and line 3\)")


def test_finegym_categories_make_repeated_names_unique_by_set(tmp_path):
    """The published Gym99 categories (and mmaction2's label_map_gym99.txt, the same format) repeat names across
    apparatus sets: the repeated names get their set appended; names that occur once are kept."""
    text = (
        "Clabel:   0; set: 33; Glabel: 290; (BB) salto backward tucked\n"
        "Clabel:   1; set: 34; Glabel: 336; (BB) round-off\n"
        "Clabel:   2; set: 35; Glabel: 359; (BB) salto backward tucked\n"
    )
    label_map = write(tmp_path / "label_map_gym99.txt", text)
    expected = ["(BB) salto backward tucked [set 33]", "(BB) round-off", "(BB) salto backward tucked [set 35]"]
    assert read_class_names(label_map) == expected  # as a class-name file of data=list
    write(tmp_path / "gym/annotations/gym99_categories.txt", text)
    assert GymAnnotations(root=tmp_path / "gym", num_classes=3).class_names() == expected
    # equal even with the set: refused, naming both lines
    write(label_map, text.replace("set: 35", "set: 33"))
    refused(lambda: read_class_names(label_map), match=r"\[set 33\]' is listed twice \(line 1 and line 3\)")


def test_fewer_than_two_classes_is_refused_at_load_time(tmp_path):
    ann = lists(tmp_path, "v/a.mp4 0\n", val="v/b.mp4 0\n", classes="only\n")
    message = refused(ann.class_names, match=r"classes\.txt: 1 class: 'only'; a classifier needs at least 2")
    assert "give every class" in message
    refused(lambda: lists(tmp_path, "v/a.mp4 0\n", classes="\n\n").class_names(), match=r"classes\.txt: 0 classes")
    refused(lambda: ListAnnotations(root=tmp_path, num_classes=1), ConfigError, r"data\.num_classes must be >= 2")
    # num_classes=1 and a one-line class file (the way a one-class list is set up): the file is named
    write(tmp_path / "classes.txt", "only\n")
    one = ListAnnotations(root=tmp_path, class_names_file="classes.txt", num_classes=1)
    refused(one.class_names, match=r"classes\.txt: 1 class: 'only'")
    write(tmp_path / "kin/annotations/train.csv", "label,youtube_id,time_start,time_end,split\nzumba,a,1,11,train\n")
    refused(KineticsAnnotations(root=tmp_path / "kin", version=None).class_names, match=r"train\.csv: 1 class")
    write(tmp_path / "classes.txt", "a\nb\nc\n")
    with pytest.raises(ConfigError, match=r"data\.num_classes must be >= 2 .* set data\.num_classes=3"):
        VideoDataModule(
            root=tmp_path,
            annotations=partial(ListAnnotations, class_names_file="classes.txt"),
            num_classes=1,
            num_frames=4,
            batch_size=2,
            crop_size=16,
            sampler=partial(SegmentSampler),
            backend=DecordBackend(),
            train_transform=partial(TrainTransform, resize=16, crop_size=16),
            eval_transform=EvalTransform(resize=16, crop_size=16),
        )


# ---------------------------------------------------------------------------------------------------------------------
# mmaction2 list variants and ids
# ---------------------------------------------------------------------------------------------------------------------


def test_offset_list_is_refused_by_auto_and_parsed_when_declared(tmp_path):
    message = refused(lambda: lists(tmp_path, "imgs 2 5 2\n").records("train"), match=r"train\.txt:1: cannot tell")
    assert "start offset" in message and "list_format=frames_offset" in message
    # read with one number too few, the folder would be "imgs 2": refused, naming the format it looks like
    frames = lists(tmp_path, "imgs 2 5 2\n", list_format="frames")
    message = refused(lambda: frames.records("train"), match=r"3 numbers end 'imgs 2 5 2' but list_format=frames")
    assert "would make the path 'imgs 2'" in message and "list_format=frames_offset" in message
    # declared: folder, start frame, frame count, label; one folder at two start frames gives two ids
    ann = lists(tmp_path, "imgs 2 5 2\nimgs 10 4 1\nother 0 3 0\n", list_format="frames_offset")
    records = ann.records("train")
    assert [(r.video_id, r.start_frame, r.num_frames, r.label) for r in records] == [
        ("imgs#2", 2, 5, 2),
        ("imgs#10", 10, 4, 1),
        ("other", 0, 3, 0),
    ]
    assert records[0].path == tmp_path / "imgs"
    # the same clip twice (as in mmaction2's test list) is a duplicate
    dup = lists(
        tmp_path,
        "imgs 2 5 127\nimgs 2 5 127\n",
        list_format="frames_offset",
        classes="\n".join(f"c{i}" for i in range(128)),
    )
    refused(lambda: dup.records("train"), match=r"'imgs' is listed twice .*train\.txt:1 and .*train\.txt:2")


def test_offset_list_reads_the_declared_frames(tmp_path):
    root = tmp_path / "ds"
    for i in range(16):
        folder = root / "imgs"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((24, 24, 3), frame_brightness(i), np.uint8)).save(
            folder / f"{i + 1:05d}.jpg", quality=95
        )
    record = lists(root, "imgs 2 5 1\n", list_format="frames_offset").records("train")[0]
    frames, indices = FrameFolderBackend().read(record, AllFrames())
    assert indices.tolist() == [0, 1, 2, 3, 4]
    assert [decoded_frame_index(f) for f in frames] == [2, 3, 4, 5, 6]  # files 00003 .. 00007


@pytest.mark.parametrize(
    "text, fmt, match",
    [
        ("imgs 5 1\nimgs 5 3 5\n", "auto", r"train\.txt:2: cannot tell .*several labels per video"),
        ("imgs 5 3 5\n", "frames", r"would make the path 'imgs 5'"),
        ("test.mp4 0 3\ntest.mp4 0 2 4\n", "auto", r"train\.txt:1: cannot tell .*a video with two labels"),
        ("v/a.mp4 1\nfolder 8 2\n", "auto", r"train\.txt:2: 2 numbers end this line but 1 ends line 1"),
        ("v/a.mp4 0 3\n", "video", r"would make the path 'v/a\.mp4 0'.*video with two labels"),
    ],
    ids=["multi-label-frames", "multi-label-as-frames", "multi-label-video", "mixed", "two-labels-as-video"],
)
def test_multi_label_and_mixed_lines_are_refused(tmp_path, text, fmt, match):
    message = refused(lambda: lists(tmp_path, text, list_format=fmt).records("train"), match=match)
    assert "list_format" in message or "one label per line" in message


def test_videos_differing_only_by_extension_get_distinct_ids(tmp_path):
    ann = lists(tmp_path, "data/test.mp4 0\ndata/test.avi 1\ndata/other.mp4 2\n/abs/x/c.mp4 0\n/abs/y/c.mp4 1\n")
    ids = [r.video_id for r in ann.records("train")]
    # the extension stays only where stems collide; two absolute files of one name keep their whole path
    assert ids == ["data/test.mp4", "data/test.avi", "data/other", "/abs/x/c.mp4", "/abs/y/c.mp4"]
    # one and the same file twice is still a duplicate
    ann = lists(tmp_path, "data/test.mp4 0\ndata/test.avi 1\ndata/test.mp4 2\n")
    refused(lambda: ann.records("train"), match=r"'data/test\.mp4' is listed twice .*train\.txt:1 and .*:3")


# ---------------------------------------------------------------------------------------------------------------------
# Dataset time: broken, missing, one-video splits, short videos, frame sizes, channels
# ---------------------------------------------------------------------------------------------------------------------


def broken_videos(root: Path) -> dict[str, Path]:
    import av

    root.mkdir(parents=True, exist_ok=True)
    good = write_brightness_video(root / "source.mp4", 16)
    (root / "zero.mp4").write_bytes(b"")
    (root / "html.mp4").write_bytes(b"<html><body>403 Forbidden</body></html>\n" * 20)
    (root / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size * 6 // 10])
    with av.open(str(root / "noframes.mkv"), mode="w") as container:  # a video stream without one frame
        stream = container.add_stream("libx264", rate=12)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
    return {
        "missing": root / "missing.mp4",
        "zero": root / "zero.mp4",
        "html": root / "html.mp4",
        "truncated": root / "truncated.mp4",
        "noframes": root / "noframes.mkv",
    }


def record(path: Path, label: int = 0) -> VideoRecord:
    return VideoRecord(path=path, label=label, video_id=path.stem)


def dataset(records, backend=None, **kwargs) -> VideoDataset:
    args = {"sampler": SegmentSampler(num_frames=4, training=False), "training": False, "split": "train"}
    return VideoDataset(records=records, backend=backend or DecordBackend(), **{**args, **kwargs})


@pytest.mark.parametrize("backend", [DecordBackend(), PyAVBackend()], ids=["decord", "pyav"])
def test_broken_and_absent_videos_are_skipped_with_file_and_reason(tmp_path, caplog, backend):
    broken = broken_videos(tmp_path / "broken")
    good = write_brightness_video(tmp_path / "good.mp4", 8)
    records = [record(p, 1) for p in broken.values()] + [record(good, 2)]
    caplog.set_level(logging.WARNING, logger="rsa_lightning")
    samples = [dataset(records, backend)[i] for i in range(len(broken))]
    assert all(s["video_id"] == "good" and s["label"] == 2 for s in samples)
    for sample, (kind, path) in zip(samples, broken.items()):
        assert sample["replaced"] == path.stem
        assert sample["replaced_reason"].startswith(f"{path}: "), (kind, sample["replaced_reason"])
        assert any(str(path) in r.getMessage() for r in caplog.records), kind
    reasons = {kind: s["replaced_reason"] for kind, s in zip(broken, samples)}
    assert "does not exist" in reasons["missing"] and "zero-byte" in reasons["zero"]


def test_a_one_video_split_says_its_video_failed_and_why(tmp_path):
    (tmp_path / "only.mp4").write_bytes(b"")
    ds = dataset([record(tmp_path / "only.mp4")])
    message = refused(lambda: ds[0], UndecodableVideosError)
    assert message.startswith(f"the only video of the train split failed to decode: {tmp_path / 'only.mp4'}: ")
    assert "zero-byte" in message and "consecutive" not in message and "Fix or replace the file" in message
    (tmp_path / "second.mp4").write_bytes(b"junk" * 100)
    ds = dataset([record(tmp_path / "only.mp4"), record(tmp_path / "second.mp4")])
    message = refused(lambda: ds[1], UndecodableVideosError, r"^all 2 videos of the train split failed to decode: ")
    assert "scan_videos writes an exclusion list" in message
    assert f"{tmp_path / 'second.mp4'}: " in message and f"{tmp_path / 'only.mp4'}: zero-byte" in message
    # more videos than retries: the consecutive ones tried, named
    for i in range(4):
        (tmp_path / f"bad{i}.mp4").write_bytes(b"")
    ds = dataset([record(tmp_path / f"bad{i}.mp4") for i in range(4)], max_decode_retries=1)
    refused(lambda: ds[0], UndecodableVideosError, r"^2 consecutive videos of the train split starting at .*bad0\.mp4")


def test_skipped_samples_monitor_names_files_and_reasons():
    monitor = SkippedSamplesMonitor(max_skipped_fraction=0.0)
    monitor._split_size["train"] = 1
    batch = {"replaced": ["clip7", ""], "replaced_reason": ["/data/clip7.mp4: zero-byte file", ""]}
    message = refused(lambda: monitor._count("train", batch), TooManySkippedVideosError)
    assert "clip7 (/data/clip7.mp4: zero-byte file)" in message and "1 videos of the split" in message


def test_videos_shorter_than_the_clip_repeat_frames_in_order(tmp_path):
    short = write_brightness_video(tmp_path / "short.mp4", 3)
    for training in (False, True):
        ds = dataset([record(short)], sampler=SegmentSampler(num_frames=8, training=training), training=training)
        video = ds[0]["video"]  # (C, T, H, W)
        seen = [decoded_frame_index(video[:, t]) for t in range(video.shape[1])]
        assert len(seen) == 8 and set(seen) <= {0, 1, 2} and seen == sorted(seen), (training, seen)
        assert ds[0]["replaced"] == ""


def test_frames_smaller_than_the_crop_are_scaled_up(tmp_path):
    frames = np.zeros((6, 12, 16, 3), np.uint8)
    frames[:, :, 8:] = 200  # right half bright
    tiny = write_video(tmp_path / "tiny.mp4", frames)
    evaluation = dataset([record(tiny)], transform=EvalTransform(resize=40, crop_size=32))
    video = evaluation[0]["video"]
    assert video.shape == (3, 4, 32, 32) and video.dtype == torch.uint8
    assert video[:, :, :, :12].float().mean() < 40 and video[:, :, :, -12:].float().mean() > 160
    train = TrainTransform(resize=40, crop_size=32, flip="off")
    training = dataset(
        [record(tiny)], transform=train, training=True, sampler=SegmentSampler(num_frames=4, training=True)
    )
    assert training[0]["video"].shape == (3, 4, 32, 32)


def test_very_large_frames_are_resized_in_bounded_chunks(tmp_path, monkeypatch):
    from rsa_lightning.data import transforms

    frames = torch.randint(0, 256, (3, 5, 1080, 1920), dtype=torch.uint8)
    whole = transforms.resize(frames, 64)
    monkeypatch.setattr(transforms, "_RESIZE_CHUNK_VALUES", 3 * 1080 * 1920 * 2)  # two frames at a time
    assert torch.equal(transforms.resize(frames, 64), whole) and whole.shape == (3, 5, 64, 114)
    assert torch.equal(transforms.resize(frames, (48, 80)), transforms.resize_frames(frames, (48, 80)))
    # a folder of 4K JPEG frames through the dataset
    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((2160, 3840, 3), frame_brightness(i), np.uint8)).save(folder / f"{i + 1:05d}.jpg")
    ds = dataset(
        [record(folder)],
        backend=FrameFolderBackend(),
        sampler=AllFrames(),
        transform=EvalTransform(resize=64, crop_size=56),
    )
    video = ds[0]["video"]
    assert video.shape == (3, 2, 56, 56) and [decoded_frame_index(video[:, t]) for t in range(2)] == [0, 1]


@pytest.mark.parametrize("decoder", ["simplejpeg", "pil"])
def test_grey_and_rgba_frame_folders_become_rgb(tmp_path, decoder):
    grey = tmp_path / "grey"
    grey.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 24), frame_brightness(i), np.uint8), mode="L").save(grey / f"{i + 1:05d}.jpg")
    ds = dataset([record(grey)], backend=FrameFolderBackend(decoder=decoder), sampler=AllFrames())
    video = ds[0]["video"]
    assert video.shape == (3, 3, 20, 24)
    assert torch.equal(video[0], video[1]) and torch.equal(video[1], video[2])
    assert [decoded_frame_index(video[:, t]) for t in range(3)] == [0, 1, 2]
    if decoder == "pil":  # RGBA PNG frames (simplejpeg reads only JPEG)
        rgba = tmp_path / "rgba"
        rgba.mkdir()
        pixels = np.zeros((20, 24, 4), np.uint8)
        pixels[..., 0], pixels[..., 3] = 180, 60  # red, mostly transparent: the colour is kept, alpha dropped
        for i in range(2):
            Image.fromarray(pixels, mode="RGBA").save(rgba / f"{i + 1:05d}.png")
        backend = FrameFolderBackend(filename_template="{:05d}.png", decoder="pil")
        video = dataset([record(rgba)], backend=backend, sampler=AllFrames())[0]["video"]
        assert video.shape == (3, 2, 20, 24) and video[0].eq(180).all() and video[1:].eq(0).all()


def test_backend_frames_of_any_channel_layout_become_rgb():
    grey = np.full((2, 4, 5), 9, np.uint8)
    assert as_rgb(grey, "x").shape == (2, 4, 5, 3) and (as_rgb(grey, "x") == 9).all()
    assert as_rgb(grey[..., None], "x").shape == (2, 4, 5, 3)
    rgba = np.zeros((2, 4, 5, 4), np.uint8)
    rgba[..., 2], rgba[..., 3] = 77, 255
    assert (as_rgb(rgba, "x")[..., 2] == 77).all() and as_rgb(rgba, "x").shape == (2, 4, 5, 3)
    with pytest.raises(RuntimeError, match=r"clip\.mp4: decoded frames with 2 channels"):
        as_rgb(np.zeros((2, 4, 5, 2), np.uint8), "clip.mp4")
    with pytest.raises(RuntimeError, match=r"clip\.mp4: decoded frames of type uint16"):
        as_rgb(np.zeros((2, 4, 5, 3), np.uint16), "clip.mp4")


def test_exclusion_list_with_spaces_instead_of_tabs_names_the_line(tmp_path):
    from rsa_lightning.data.exclusions import read_exclusions

    write(tmp_path / "exclusions.txt", "# by hand\ntrain videos/a /data/videos/a.mp4 broken\n")
    refused(lambda: read_exclusions(tmp_path / "exclusions.txt"), match=r"exclusions\.txt:2: .*separated by tabs")


# ---------------------------------------------------------------------------------------------------------------------
# Through train(): the composed config, the real DataModule and Lightning
# ---------------------------------------------------------------------------------------------------------------------


def list_run(tmp_path: Path, train_lines: str, classes: str, num_classes: int = 2) -> list[str]:
    from conftest import TINY_TRAINING

    root = tmp_path / "ds"
    write_brightness_video(root / "videos" / "good.mp4", 8)
    (root / "videos" / "broken.mp4").write_bytes(b"")
    write(root / "annotations" / "train.txt", train_lines)
    write(root / "annotations" / "val.txt", "videos/good.mp4 0\n")
    write(root / "annotations" / "classes.txt", classes)
    return [
        "data=list",
        f"data.root={root}",
        f"data.num_classes={num_classes}",
        "data.annotations.class_names_file=annotations/classes.txt",
        "data.num_frames=4",
        "data.batch_size=1",
        "data.num_workers=0",
        "data.crop_size=32",
        "data.train_transform.resize=32",
        "data.train_transform.scales=[1.0]",
        "data.eval_transform.resize=32",
        "model=rsa_tiny",
        *TINY_TRAINING,
    ]


def test_training_on_a_one_video_list_whose_video_is_broken_says_so(tmp_path):
    from conftest import compose_config

    from rsa_lightning.errors import message
    from rsa_lightning.train import train

    overrides = list_run(tmp_path, "videos/broken.mp4 1\n", "a\nb\n")
    with pytest.raises(DataError) as info:
        train(compose_config("train", overrides, tmp_path / "run"))
    assert classify(info.value) == USER_ERROR_EXIT
    text = message(info.value)
    assert text.startswith("the only video of the train split failed to decode: ") and "broken.mp4: zero-byte" in text
    assert "consecutive" not in text


def test_training_on_a_one_class_list_is_refused_naming_the_file(tmp_path):
    from conftest import compose_config

    from rsa_lightning.train import train

    # data.num_classes=1 is refused by the config checks first (naming the key); with 2 the class file is named
    overrides = list_run(tmp_path, "videos/good.mp4 0\n", "only\n", num_classes=2)
    with pytest.raises(UserError, match=r"classes\.txt: 1 class: 'only'; a classifier needs at least 2") as info:
        train(compose_config("train", overrides, tmp_path / "run"))
    assert classify(info.value) == USER_ERROR_EXIT
