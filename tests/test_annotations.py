"""Dataset annotation classes on miniature copies of the published layouts (empty placeholder video files)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rsa_lightning.data.annotations import (
    UNLABELLED,
    Diving48Annotations,
    GymAnnotations,
    KineticsAnnotations,
    ListAnnotations,
    SSv1Annotations,
    SSv2Annotations,
    VideoRecord,
    read_video_list,
)

REFERENCE = Path("/work/shared/reference")


def reference_names(name: str) -> list[str]:
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"reference class names {path} not available")
    return [line for line in path.read_text().splitlines() if line.strip()]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_json(path: Path, data) -> Path:
    return write(path, json.dumps(data, indent=1))


# ---------------------------------------------------------------------------------------------------------------------
# Something-Something V2
# ---------------------------------------------------------------------------------------------------------------------


def bracketed(name: str) -> str:
    """The SSv2 ``template`` of a class name: its placeholders in brackets."""
    return re.sub(r"\b([Ss]omething)\b", r"[\1]", name)


@pytest.fixture
def ssv2(tmp_path: Path) -> tuple[Path, list[str]]:
    names = reference_names("ssv2_class_names.txt")
    root = tmp_path / "ssv2"
    ann = root / "annotations"
    # labels.json written in reverse key order: the ids must come from the numbers, not from the key order
    write_json(ann / "something-something-v2-labels.json", {n: str(i) for i, n in reversed(list(enumerate(names)))})
    train = [
        {"id": "78687", "label": "holding potato next to vicks vaporub bottle", "template": bracketed(names[10]),
         "placeholders": ["potato", "vicks vaporub bottle"]},
        {"id": "42326", "label": "pushing pen from left to right", "template": bracketed(names[93]),
         "placeholders": ["pen"]},
        {"id": "100904", "label": "approaching lamp with your camera", "template": bracketed(names[0]),
         "placeholders": ["lamp"]},
    ]  # fmt: skip
    val = [{"id": "74225", "label": "x", "template": bracketed(names[173]), "placeholders": ["x"]}]
    write_json(ann / "something-something-v2-train.json", train)
    write_json(ann / "something-something-v2-validation.json", val)
    write_json(ann / "something-something-v2-test.json", [{"id": "1420"}, {"id": "66777"}])
    for vid in ("78687", "42326", "100904", "74225", "1420", "66777"):
        touch(root / "videos" / f"{vid}.webm")
    return root, names


def test_ssv2_classes_labels_paths(ssv2):
    root, names = ssv2
    ann = SSv2Annotations(root=root)
    assert ann.num_classes == 174
    assert ann.class_names() == names
    assert names[93] == "Pushing something from left to right"
    assert bracketed(names[93]) == "Pushing [something] from left to right"
    train = ann.records("train")
    assert [r.video_id for r in train] == ["78687", "42326", "100904"]
    assert [r.label for r in train] == [10, 93, 0]
    assert train[1].path == root / "videos" / "42326.webm" and train[1].path.is_absolute()
    assert all(r.path.is_file() for r in train)
    assert [(r.video_id, r.label) for r in ann.records("val")] == [("74225", 173)]
    test = ann.records("test")
    assert [(r.video_id, r.label) for r in test] == [("1420", UNLABELLED), ("66777", UNLABELLED)]
    assert ann.splits == ("train", "val", "test")


def test_ssv2_relative_root_becomes_absolute(ssv2, monkeypatch):
    root, _ = ssv2
    monkeypatch.chdir(root.parent)
    record = SSv2Annotations(root="ssv2").records("val")[0]
    assert record.path.is_absolute() and record.path == root / "videos" / "74225.webm"


def test_ssv2_unknown_template_names_file_and_entry(ssv2):
    root, _ = ssv2
    path = root / "annotations" / "something-something-v2-validation.json"
    write_json(path, [{"id": "1", "template": "Pushing [something] upwards into space"}])
    with pytest.raises(ValueError, match=r"validation\.json: entry 0.*Pushing \[something\] upwards into space"):
        SSv2Annotations(root=root).records("val")


def test_ssv2_duplicate_ids_name_both_entries(ssv2):
    root, names = ssv2
    path = root / "annotations" / "something-something-v2-train.json"
    write_json(path, [{"id": str(i % 2), "template": bracketed(names[0])} for i in range(3)])
    with pytest.raises(ValueError, match=r"'0' is listed twice.*entry 0 and .*entry 2"):
        SSv2Annotations(root=root).records("train")


def test_ssv2_missing_and_malformed_files(ssv2, tmp_path):
    root, _ = ssv2
    with pytest.raises(FileNotFoundError, match="something-something-v2-labels.json"):
        SSv2Annotations(root=tmp_path / "elsewhere").class_names()
    write(root / "annotations" / "something-something-v2-test.json", "[{'id': 1}]")
    with pytest.raises(ValueError, match=r"test\.json:1:3: not valid JSON"):
        SSv2Annotations(root=root).records("test")
    write_json(root / "annotations" / "something-something-v2-train.json", [])
    with pytest.raises(ValueError, match=r"train\.json: the train split has no videos"):
        SSv2Annotations(root=root).records("train")
    with pytest.raises(ValueError, match=r"no 'validation' split; available: train, val, test"):
        SSv2Annotations(root=root).records("validation")


def test_ssv2_labels_json_ids_must_be_dense(tmp_path):
    write_json(tmp_path / "annotations" / "something-something-v2-labels.json", {"A something": "0", "B": "2"})
    with pytest.raises(ValueError, match=r"labels\.json: class ids must be 0 \.\. 1"):
        SSv2Annotations(root=tmp_path).class_names()


def test_ssv2_overridable_paths(ssv2, tmp_path):
    root, _ = ssv2
    moved = write(
        tmp_path / "elsewhere" / "labels.json", (root / "annotations/something-something-v2-labels.json").read_text()
    )
    ann = SSv2Annotations(root=root, labels_file=str(moved), videos_dir="20bn-something-something-v2")
    assert ann.num_classes == 174
    assert ann.records("val")[0].path == root / "20bn-something-something-v2" / "74225.webm"


# ---------------------------------------------------------------------------------------------------------------------
# Something-Something V1
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def ssv1(tmp_path: Path) -> tuple[Path, list[str]]:
    names = reference_names("ssv1_class_names_file_order.txt")
    root = tmp_path / "ssv1"
    ann = root / "annotations"
    write(ann / "something-something-v1-labels.csv", "\n".join(names) + "\n")
    write(ann / "something-something-v1-train.csv", f"100218;{names[0]}\n24554;{names[3]}\n")
    write(ann / "something-something-v1-validation.csv", f"9223;{names[173]}\n")
    for vid in ("100218", "24554", "9223"):
        touch(root / "frames" / vid / "00001.jpg")
    return root, names


def test_ssv1_sorted_and_file_class_order(ssv1):
    root, names = ssv1
    assert names[0] == "Holding something"
    by_name = SSv1Annotations(root=root)
    by_file = SSv1Annotations(root=root, class_order="file")
    assert by_name.class_names() == sorted(names) and by_name.class_names() != names
    assert by_file.class_names() == names
    assert by_name.num_classes == by_file.num_classes == 174
    sorted_train = by_name.records("train")
    assert [r.label for r in sorted_train] == [sorted(names).index(names[0]), sorted(names).index(names[3])]
    assert [r.label for r in by_file.records("train")] == [0, 3]
    assert sorted_train[0] == VideoRecord(
        path=root / "frames" / "100218", label=sorted_train[0].label, video_id="100218"
    )
    assert sorted_train[0].path.is_dir()
    assert [r.label for r in by_file.records("val")] == [173]
    with pytest.raises(ValueError, match="class_order"):
        SSv1Annotations(root=root, class_order="alphabetical")


def test_ssv1_test_split_only_with_a_test_csv(ssv1):
    root, _ = ssv1
    ann = SSv1Annotations(root=root)
    assert ann.splits == ("train", "val")
    with pytest.raises(ValueError, match=r"no 'test' split; available: train, val .*something-something-v1-test\.csv"):
        ann.records("test")
    write(root / "annotations" / "something-something-v1-test.csv", "1420\n87\n")
    assert ann.splits == ("train", "val", "test")
    assert [(r.video_id, r.label) for r in ann.records("test")] == [("1420", UNLABELLED), ("87", UNLABELLED)]


def test_ssv1_errors_name_file_and_line(ssv1):
    root, names = ssv1
    train = root / "annotations" / "something-something-v1-train.csv"
    write(train, f"1;{names[0]}\n2;Juggling something\n")
    with pytest.raises(ValueError, match=r"v1-train\.csv:2: class 'Juggling something' is not in .*labels\.csv"):
        SSv1Annotations(root=root).records("train")
    write(train, f"1;{names[0]}\n\n2\n")
    with pytest.raises(ValueError, match=r"v1-train\.csv:3: expected '<id>;<class name>'"):
        SSv1Annotations(root=root).records("train")
    write(train, f"1;{names[0]}\n2;{names[1]}\n1;{names[2]}\n")
    with pytest.raises(ValueError, match=r"'1' is listed twice.*train\.csv:1 and .*train\.csv:3"):
        SSv1Annotations(root=root).records("train")
    train.unlink()
    with pytest.raises(FileNotFoundError, match=r"something-something-v1-train\.csv"):
        SSv1Annotations(root=root).records("train")


# ---------------------------------------------------------------------------------------------------------------------
# Diving48
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def diving48(tmp_path: Path) -> tuple[Path, list[str]]:
    names = reference_names("diving48_class_names.txt")
    root = tmp_path / "diving48"
    ann = root / "annotations"
    write_json(ann / "Diving48_vocab.json", [name.split("+") for name in names])
    train = [
        {"vid_name": "-mmq0PT-u8k_00155", "label": 26, "start_frame": 0, "end_frame": 89},
        {"vid_name": "_8Vy3dlHg2w_00000", "label": 0, "start_frame": 0, "end_frame": 61},
    ]
    test = [{"vid_name": "2x1lIrgKxYo_00041", "label": 47, "start_frame": 0, "end_frame": 120}]
    write_json(ann / "Diving48_V2_train.json", train)
    write_json(ann / "Diving48_V2_test.json", test)
    for entry in train + test:
        touch(root / "videos" / f"{entry['vid_name']}.mp4")
    return root, names


def test_diving48_classes_frames_and_val_is_test(diving48):
    root, names = diving48
    ann = Diving48Annotations(root=root)
    assert ann.num_classes == 48
    assert ann.class_names() == [name.replace("+", " ") for name in names]
    assert ann.class_names()[0] == "Back 15som 05Twis FREE"
    assert Diving48Annotations(root=root, name_separator="+").class_names() == names
    train = ann.records("train")
    assert train[0] == VideoRecord(
        path=root / "videos" / "-mmq0PT-u8k_00155.mp4",
        label=26,
        video_id="-mmq0PT-u8k_00155",
        start_frame=0,
        end_frame=89,
    )
    assert train[1].label == 0 and train[1].end_frame == 61
    assert ann.records("val") == ann.records("test")
    assert [(r.video_id, r.label) for r in ann.records("val")] == [("2x1lIrgKxYo_00041", 47)]


def test_diving48_errors(diving48):
    root, _ = diving48
    path = root / "annotations" / "Diving48_V2_test.json"
    write_json(path, [{"vid_name": "a_00001", "label": 48, "start_frame": 0, "end_frame": 10}])
    with pytest.raises(ValueError, match=r"V2_test\.json: entry 0: label 48 of 'a_00001' is outside \[0, 48\)"):
        Diving48Annotations(root=root).records("val")
    write_json(path, [{"vid_name": "a_00001", "label": 3, "start_frame": 10, "end_frame": 10}])
    with pytest.raises(ValueError, match=r"entry 0 \(a_00001\): frames \[10, 10\)"):
        Diving48Annotations(root=root).records("test")
    write_json(path, [{"vid_name": "a_00001", "start_frame": 0, "end_frame": 10}])
    with pytest.raises(ValueError, match=r"V2_test\.json: entry 0: missing 'label'"):
        Diving48Annotations(root=root).records("test")
    (root / "annotations" / "Diving48_vocab.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"Diving48_vocab\.json"):
        Diving48Annotations(root=root).records("train")


# ---------------------------------------------------------------------------------------------------------------------
# FineGym
# ---------------------------------------------------------------------------------------------------------------------

GYM_TRAIN = "0LtLS9wROrk_E_002407_002435_A_0003_0005 0\nA0xAXXysHUo_E_002184_002237_A_0004_0005 98\n"
GYM_VAL = "zRT1Eh8F-2Q_E_000874_000950_A_0016_0017 42\n"


@pytest.fixture
def gym(tmp_path: Path) -> Path:
    root = tmp_path / "finegym"
    write(root / "annotations" / "gym99_train_element_v1.1.txt", GYM_TRAIN)
    write(root / "annotations" / "gym99_val_element.txt", GYM_VAL)
    for line in (GYM_TRAIN + GYM_VAL).splitlines():
        touch(root / "subactions" / f"{line.split()[0]}.mp4")
    return root


def test_gym99_categories_ids_paths(gym):
    names = reference_names("gym99_class_names.txt")
    lines = [f"Clabel: {i}; set: {1 + i // 10}; Glabel: {3 * i + 1}; {name}" for i, name in enumerate(names)]
    write(gym / "annotations" / "gym99_categories.txt", "\n".join(reversed(lines)) + "\n")  # ids from Clabel
    ann = GymAnnotations(root=gym)
    # the published names repeat across sets: the repeated ones get their set appended (class names must be unique)
    repeated = {i for i, name in enumerate(names) if names.count(name) > 1}
    assert 58 in repeated and 70 in repeated
    expected = [f"{name} [set {1 + i // 10}]" if i in repeated else name for i, name in enumerate(names)]
    assert ann.class_names() == expected and ann.num_classes == 99
    assert ann.class_names()[0].startswith("(VT) round-off, flic-flac with 0.5 turn on")
    assert ann.class_names()[58] == "(BB) salto backward tucked [set 6]"
    assert ann.class_names()[70] == "(BB) salto backward tucked [set 8]"
    train = ann.records("train")
    assert [(r.video_id, r.label) for r in train] == [
        ("0LtLS9wROrk_E_002407_002435_A_0003_0005", 0),
        ("A0xAXXysHUo_E_002184_002237_A_0004_0005", 98),
    ]
    assert train[0].path == gym / "subactions" / "0LtLS9wROrk_E_002407_002435_A_0003_0005.mp4"
    assert train[0].path.is_file()
    assert ann.records("test") == ann.records("val")
    assert [r.label for r in ann.records("val")] == [42]


def test_gym_without_categories_and_configured_files(gym):
    ann = GymAnnotations(root=gym)
    assert ann.num_classes == 99 and ann.class_names()[:2] == ["class_0", "class_1"]
    with pytest.raises(ValueError, match=r"gym99_train_element_v1\.1\.txt:2: label 98 .* outside \[0, 50\)"):
        GymAnnotations(root=gym, num_classes=50).records("train")
    write(gym / "lists" / "my_train.txt", "clip_a 3\n")
    custom = GymAnnotations(root=gym, train_file="lists/my_train.txt", num_classes=4)
    assert custom.records("train")[0].label == 3 and custom.num_classes == 4
    gym288 = GymAnnotations(root=gym, variant="gym288")
    with pytest.raises(FileNotFoundError, match=r"annotations/gym288_val_element\.txt"):
        gym288.records("val")
    assert gym288.num_classes == 288
    with pytest.raises(ValueError, match="variant"):
        GymAnnotations(root=gym, variant="gym530")


def test_gym_malformed_lines(gym):
    write(gym / "annotations" / "gym99_categories.txt", "Clabel: 0; set: 1; Glabel: 1; (VT) a\n(VT) b\n")
    with pytest.raises(ValueError, match=r"gym99_categories\.txt:2: expected 'Clabel"):
        GymAnnotations(root=gym).class_names()
    write(
        gym / "annotations" / "gym99_categories.txt",
        "Clabel: 0; set: 1; Glabel: 1; a\nClabel: 2; set: 1; Glabel: 2; b\n",
    )
    with pytest.raises(ValueError, match=r"gym99_categories\.txt: class ids must be 0 \.\. 1 .*missing \[1\]"):
        GymAnnotations(root=gym).class_names()
    write(gym / "annotations" / "gym99_val_element.txt", "clip_a 1\nclip_b\n")
    with pytest.raises(ValueError, match=r"gym99_val_element\.txt:2: expected '<subaction_id> <label>'"):
        GymAnnotations(root=gym, num_classes=99).records("test")


# ---------------------------------------------------------------------------------------------------------------------
# Kinetics
# ---------------------------------------------------------------------------------------------------------------------

K_HEADER = "label,youtube_id,time_start,time_end,split\n"
K_TRAIN = (
    K_HEADER
    + "zumba,--0NTAs-ZjE,14,24,train\n"
    + "abseiling,---QUuC4vJs,3,13,train\n"
    + '"passing American football (in game)",-0JBFpEpuN0,120,130,train\n'
    + "air drumming,-VtLx-mcPds,0,10,train\n"
)
K_VAL = K_HEADER + "air drumming,--nQbRBEz2s,104,114,val\n"


@pytest.fixture
def kinetics(tmp_path: Path) -> Path:
    root = tmp_path / "kinetics400"
    write(root / "annotations" / "train.csv", K_TRAIN)
    write(root / "annotations" / "validate.csv", K_VAL)
    return root


def test_kinetics_sorted_classes_and_clip_paths(kinetics):
    ann = KineticsAnnotations(root=kinetics, version=None)
    assert ann.class_names() == ["abseiling", "air drumming", "passing American football (in game)", "zumba"]
    train = ann.records("train")
    assert [r.label for r in train] == [3, 0, 2, 1]
    assert train[0].path == kinetics / "videos" / "train" / "--0NTAs-ZjE_000014_000024.mp4"
    assert train[0].video_id == "--0NTAs-ZjE_000014_000024"
    assert train[2].path.name == "-0JBFpEpuN0_000120_000130.mp4"
    val = ann.records("val")[0]
    assert val.path == kinetics / "videos" / "val" / "--nQbRBEz2s_000104_000114.mp4" and val.label == 1
    foldered = KineticsAnnotations(root=kinetics, version=None, label_folders=True).records("train")
    assert foldered[1].path == kinetics / "videos" / "train" / "abseiling" / "---QUuC4vJs_000003_000013.mp4"
    short = KineticsAnnotations(root=kinetics, version=None, filename_template="{youtube_id}.mkv")
    assert short.records("val")[0].path.name == "--nQbRBEz2s.mkv"


def test_kinetics_test_split_and_errors(kinetics):
    ann = KineticsAnnotations(root=kinetics, version=None)
    with pytest.raises(ValueError, match=r"no 'test' split; available: train, val \(no test csv"):
        ann.records("test")
    write(kinetics / "annotations" / "test.csv", "youtube_id,time_start,time_end,split\n--33Lscn6sk,4,14,test\n")
    test = ann.records("test")
    assert [(r.video_id, r.label) for r in test] == [("--33Lscn6sk_000004_000014", UNLABELLED)]
    assert test[0].path.parent == kinetics / "videos" / "test"
    with pytest.raises(ValueError, match=r"train\.csv has 4 classes but version=400"):
        KineticsAnnotations(root=kinetics).class_names()
    with pytest.raises(ValueError, match="filename_template"):
        KineticsAnnotations(root=kinetics, filename_template="{youtube}_{time_start:06d}.mp4")
    write(kinetics / "annotations" / "validate.csv", K_VAL + "unicycling,abcdefghijk,1,11,val\n")
    with pytest.raises(ValueError, match=r"validate\.csv:3: class 'unicycling' is not a class of .*train\.csv"):
        ann.records("val")
    write(kinetics / "annotations" / "validate.csv", K_VAL + "zumba,--nQbRBEz2s,104,114,val\n")
    with pytest.raises(ValueError, match=r"listed twice.*validate\.csv:2 and .*validate\.csv:3"):
        ann.records("val")
    write(kinetics / "annotations" / "validate.csv", "label,youtube_id,start,end\nzumba,x,1,2\n")
    with pytest.raises(ValueError, match=r"validate\.csv:1: header .* lacks the columns \['time_end', 'time_start'\]"):
        ann.records("val")


# ---------------------------------------------------------------------------------------------------------------------
# Generic lists
# ---------------------------------------------------------------------------------------------------------------------


def test_list_annotations_video_and_frames_formats(tmp_path):
    write(tmp_path / "annotations" / "train.txt", "videos/a b.mp4 1\n# comment\nvideos/sub/c.mp4 0\n")
    write(
        tmp_path / "annotations" / "val.txt",
        "something/v1/20bn-something-something-v1/100218 37 2\nsomething/v1/20bn-something-something-v1/9223 48 0\n",
    )
    write(tmp_path / "annotations" / "classes.txt", "a\nb\nc\n")
    ann = ListAnnotations(root=tmp_path, class_names_file="annotations/classes.txt")
    assert ann.class_names() == ["a", "b", "c"] and ann.splits == ("train", "val")
    train = ann.records("train")
    assert train[0] == VideoRecord(path=tmp_path / "videos" / "a b.mp4", label=1, video_id="videos/a b")
    assert train[1].video_id == "videos/sub/c" and train[1].num_frames is None
    val = ann.records("val")
    assert val[0] == VideoRecord(
        path=tmp_path / "something/v1/20bn-something-something-v1/100218",
        label=2,
        video_id="something/v1/20bn-something-something-v1/100218",
        num_frames=37,
    )
    assert val[1].num_frames == 48 and val[1].label == 0
    # forced formats: a frame list read as videos is refused (its path would end in " 37"), naming the format
    with pytest.raises(ValueError, match=r"val\.txt:1: 2 numbers end .*data.annotations.list_format=frames"):
        ListAnnotations(root=tmp_path, num_classes=3, list_format="video").records("val")
    with pytest.raises(ValueError, match=r"train\.txt:1: expected '<frame_folder> <num_frames> <label>'"):
        ListAnnotations(root=tmp_path, num_classes=3, list_format="frames").records("train")
    # the plain reader keeps its behaviour
    assert read_video_list(tmp_path / "annotations" / "train.txt", tmp_path) == train


def test_list_annotations_classes_splits_and_errors(tmp_path):
    write(tmp_path / "train.txt", "v/1.mp4 0\nv/2.mp4 4\nv/1.mp4 1\n")
    write(tmp_path / "val.txt", "v/3.mp4 -1\n")
    write(tmp_path / "test.txt", "v/3.mp4 -1\nv/4.mp4 2\n")
    ann = ListAnnotations(
        root=tmp_path, train_list="train.txt", val_list="val.txt", test_list="test.txt", num_classes=5
    )
    assert ann.class_names() == [f"class_{i}" for i in range(5)]
    with pytest.raises(
        ValueError, match=r"'v/1' is listed twice in the train split: .*train\.txt:1 and .*train\.txt:3"
    ):
        ann.records("train")
    with pytest.raises(ValueError, match=r"val\.txt:1: label -1 .*only in a test split"):
        ann.records("val")
    assert [r.label for r in ann.records("test")] == [UNLABELLED, 2]
    small = ListAnnotations(root=tmp_path, train_list="train.txt", val_list="val.txt", num_classes=4)
    write(tmp_path / "train.txt", "v/1.mp4 0\nv/2.mp4 4\n")
    with pytest.raises(ValueError, match=r"train\.txt:2: label 4 of 'v/2' is outside \[0, 4\)"):
        small.records("train")
    hint = r"\(give it a test_list, e.g. \+data.annotations.test_list="
    with pytest.raises(ValueError, match=r"no .test. split; available: train, val " + hint):
        small.records("test")
    write(tmp_path / "train.txt", "# nothing yet\n")
    with pytest.raises(ValueError, match=r"train\.txt: the train split has no videos"):
        small.records("train")
    with pytest.raises(ValueError, match="class_names_file or num_classes"):
        ListAnnotations(root=tmp_path)
    with pytest.raises(ValueError, match="list_format"):
        ListAnnotations(root=tmp_path, num_classes=2, list_format="rawframes")
    write(tmp_path / "classes.txt", "a\nb\n")
    with pytest.raises(ValueError, match=r"num_classes is 3 but .*classes\.txt lists 2"):
        ListAnnotations(root=tmp_path, class_names_file="classes.txt", num_classes=3).class_names()
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        ListAnnotations(root=tmp_path, train_list="missing.txt", num_classes=2).records("train")
    with pytest.raises(TypeError):
        ListAnnotations(tmp_path, num_classes=2)  # keyword-only
