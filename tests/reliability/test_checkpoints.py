"""Checkpoints that are not what eval.py, predict and load_model expect get one message naming the file and the fix:
truncated or not a checkpoint, pickled code (weights_only=True), an official release, another model, another class set
(refused with the difference, or mapped by name on request)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_config, train_tiny_run

import rsa_lightning
from rsa_lightning.errors import CheckpointError, ConfigError, MissingFileError
from rsa_lightning.evaluate import class_columns, evaluate
from rsa_lightning.evaluation.checkpoints import load_checkpoint, model_from_checkpoint, resave_trusted

SIDE_EFFECT = "rsa_lightning_pickled_code_ran"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("checkpoints"))


def run_eval(ckpt: Path, out: Path, *overrides: str) -> dict:
    overrides = (f"ckpt_path={ckpt}", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", *overrides)
    return evaluate(compose_config("eval", list(overrides), out), overrides=overrides)


# --- weights_only -----------------------------------------------------------------------------------------------------


def test_a_trained_checkpoint_is_read_with_weights_only(trained, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    checkpoint = load_checkpoint(trained["ckpt"])
    assert calls == [True]
    assert {"state_dict", "config", "class_names"} <= set(checkpoint)
    assert len(rsa_lightning.load_model(trained["ckpt"]).class_names) == 10


def _side_effect(path: str) -> None:  # what a malicious checkpoint would run when unpickled
    Path(path).write_text("ran")


class _RunsCode:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (_side_effect, (self.path,))


def test_pickled_code_is_refused_unrun_and_can_be_converted_when_trusted(trained, tmp_path):
    marker = tmp_path / SIDE_EFFECT
    state = torch.load(trained["ckpt"], weights_only=True)
    state["hyper_parameters"]["callback"] = _RunsCode(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(state, evil)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(evil)
    message = str(info.value)
    assert str(evil) in message and "_side_effect" in message  # what it tried to load
    assert "weights_only=True" in message and "trust" in message and "resave_trusted" in message
    assert not marker.exists(), "loading must not run the pickled code"
    with pytest.raises(CheckpointError, match="needs code to be unpickled"):
        rsa_lightning.load_model(evil)

    plain = resave_trusted(evil, tmp_path / "plain.ckpt")  # the user trusts it: unpickled once, code and all
    assert marker.exists()
    checkpoint = load_checkpoint(plain)
    assert set(checkpoint) == {"state_dict", "config", "class_names"}
    model = model_from_checkpoint(plain)
    assert torch.equal(model.net.fc.weight, state["state_dict"]["net.fc.weight"])


# --- damaged files --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "random bytes"])
def test_a_damaged_or_foreign_file_is_one_message_naming_it(trained, kind):
    folder = trained["ckpt"].parent
    bad = folder / f"damaged_{kind.replace(' ', '_')}.ckpt"
    data = trained["ckpt"].read_bytes()
    content = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "text": b"model: rsa_tiny\n",
        "random bytes": bytes(range(256)) * 4,
    }[kind]
    bad.write_bytes(content)
    try:
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(bad)
    finally:
        bad.unlink()
    message = str(info.value)
    assert message.startswith(f"{bad} could not be read: truncated or not a checkpoint")
    assert "re-copy it" in message and str(trained["ckpt"]) in message  # last.ckpt of the same run offered
    assert "\n" not in message


def test_a_damaged_file_outside_a_run_folder_is_not_offered_its_neighbours(tmp_path):
    """Two bad files side by side outside any run folder: neither message offers the other as "another checkpoint
    of the run"."""
    for name in ("trunc.ckpt", "text.ckpt"):
        (tmp_path / name).write_bytes(b"model: rsa_tiny\n")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "trunc.ckpt")
    assert "text.ckpt" not in str(info.value)
    assert "re-copy it, or use <run dir>/checkpoints/last.ckpt of the run that wrote it" in str(info.value)


def test_a_missing_file_or_a_folder(trained, tmp_path):
    with pytest.raises(MissingFileError, match="nope.ckpt does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match=r"is a folder; pass one checkpoint file: .*last\.ckpt"):
        load_checkpoint(trained["ckpt"].parent.parent)  # the run folder


def test_eval_py_prints_one_line_and_exits_2_for_a_truncated_checkpoint(trained, tmp_path):
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(trained["ckpt"].read_bytes()[:4096])
    result = subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), f"ckpt_path={bad}", f"paths.log_dir={tmp_path / 'logs'}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: {bad} could not be read: truncated or not a checkpoint" in result.stderr
    assert "re-copy it" in result.stderr and "Traceback" not in result.stderr


# --- official checkpoints -------------------------------------------------------------------------------------------


def official_state(num_classes: int) -> dict[str, torch.Tensor]:
    """The first keys of the official RSANet layout (module.base_model.*, module.new_fc.*)."""
    return {
        "module.base_model.conv1.weight": torch.zeros(64, 3, 1, 7, 7),
        "module.base_model.bn1.weight": torch.ones(64),
        "module.new_fc.weight": torch.zeros(num_classes, 2048, 1),
        "module.new_fc.bias": torch.zeros(num_classes),
    }


@pytest.mark.parametrize("bare", [False, True], ids=["released", "bare state dict"])
def test_an_official_checkpoint_points_to_convert_official_with_the_command(bare, tmp_path):
    src = tmp_path / "rsanet_r50_ssv2.pth.tar"
    state = official_state(174)
    torch.save(state if bare else {"epoch": 50, "arch": "resnet50", "state_dict": state, "best_prec1": 66.0}, src)
    command = f"python -m rsa_lightning.tools.convert_official {src} {tmp_path / 'rsanet_r50_ssv2.ckpt'} --data ssv2"
    for load in (load_checkpoint, rsa_lightning.load_model):
        with pytest.raises(CheckpointError) as info:
            load(src)
        assert "released official RSANet checkpoint" in str(info.value) and command in str(info.value)


def test_an_official_checkpoint_names_the_data_config_of_its_class_count(tmp_path):
    src = tmp_path / "diving.pth"
    torch.save({"state_dict": official_state(48)}, src)
    with pytest.raises(CheckpointError, match=r"diving\.ckpt --data diving48 --num-frames"):
        load_checkpoint(src)


# --- another model, another class set -------------------------------------------------------------------------------


def test_another_model_names_both_and_the_fix(trained, tmp_path):
    with pytest.raises(CheckpointError) as info:
        run_eval(trained["ckpt"], tmp_path / "tsn", "model=tsn_tiny")
    message = str(info.value)
    assert f"{trained['ckpt']} holds another model than model=tsn_tiny builds" in message
    assert "RelationalSelfAttention at [[0], [0], [], []]" in message  # the checkpoint's
    assert "model=tsn_tiny builds create_resnet" in message and "no space-time mixer" in message
    assert "builds the model from the checkpoint's own config: leave out model=tsn_tiny" in message


def write_dataset(root: Path, source: Path, classes: list[str], keep: dict[int, int]) -> Path:
    """A list dataset of ``source``'s val videos of the classes in ``keep`` (source label -> new label)."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "classes.txt").write_text("\n".join(classes) + "\n")
    lines = []
    for line in (source / "annotations" / "val.txt").read_text().splitlines():
        path, label = line.rsplit(" ", 1)
        if int(label) in keep:
            lines.append(f"{source / path} {keep[int(label)]}")
    for split in ("train", "val"):
        (root / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def names(trained):
    return (trained["data"] / "annotations" / "classes.txt").read_text().splitlines()


def test_another_class_set_is_refused_with_the_difference(trained, names, tmp_path):
    subset = write_dataset(tmp_path / "sub", trained["data"], [names[2], names[0], names[5]], {2: 0, 0: 1, 5: 2})
    with pytest.raises(CheckpointError) as info:
        run_eval(trained["ckpt"], tmp_path / "a", f"data.root={subset}", "data.prepare=null")
    message = str(info.value)
    assert f"{trained['ckpt']} was trained on other classes than the dataset at data.root={subset}" in message
    assert "10 classes in the checkpoint, 3 in the dataset; 7 only in the checkpoint" in message
    assert repr(names[1]) in message and "class_map=by_name" in message
    assert not (tmp_path / "a" / "metrics_val.json").exists()

    shuffled = [names[(i + 1) % 10] for i in range(10)]  # the same classes, ids shifted by one
    moved = write_dataset(tmp_path / "moved", trained["data"], shuffled, {(i + 1) % 10: i for i in range(10)})
    with pytest.raises(CheckpointError, match=rf"the same 10 names in another order \(class 0 is {names[0]!r}"):
        run_eval(trained["ckpt"], tmp_path / "b", f"data.root={moved}", "data.prepare=null")

    other = write_dataset(tmp_path / "other", trained["data"], [names[0], "Juggling"], {0: 0, 1: 1})
    with pytest.raises(CheckpointError, match="1 only in the dataset \\('Juggling'\\).*cannot help"):
        run_eval(trained["ckpt"], tmp_path / "c", f"data.root={other}", "data.prepare=null")
    with pytest.raises(CheckpointError, match="1 of the 2 classes .* are not among the 10 classes"):
        run_eval(trained["ckpt"], tmp_path / "d", f"data.root={other}", "data.prepare=null", "class_map=by_name")


def test_class_map_by_name_scores_the_dataset_classes_exactly(trained, names, tmp_path):
    keep = {2: 0, 0: 1, 5: 2}
    subset = write_dataset(tmp_path / "sub", trained["data"], [names[2], names[0], names[5]], keep)
    full = run_eval(trained["ckpt"], tmp_path / "full")
    mapped = run_eval(
        trained["ckpt"], tmp_path / "mapped", f"data.root={subset}", "data.prepare=null", "class_map=by_name"
    )
    full_scores = torch.load(full["scores_file"], weights_only=True)
    scores = torch.load(mapped["scores_file"], weights_only=True)
    assert scores["class_names"] == [names[2], names[0], names[5]]
    assert scores["scores"].shape == (3, 3) and mapped["num_videos"] == 3
    # one view, prob fusion: the softmax over the dataset's 3 logits = the 10-class probabilities of those classes,
    # renormalised
    rows = [full_scores["video_ids"].index(f"videos/{v}") for v in scores["video_ids"]]  # ids relative to data.root
    restricted = full_scores["scores"][rows][:, [2, 0, 5]]
    torch.testing.assert_close(scores["scores"], restricted / restricted.sum(dim=1, keepdim=True))
    expected = (scores["scores"].argmax(dim=1) == scores["labels"]).float().mean().item()
    assert mapped["acc1"] == pytest.approx(expected)
    assert "acc5" not in mapped  # 3 classes: top-5 is meaningless


def test_class_columns_compare_counts_without_names_and_check_the_option():
    unnamed = [f"class_{i}" for i in range(3)]
    assert class_columns(["a", "b", "c"], 3, unnamed) is None
    assert class_columns([], 3, ["x", "y", "z"]) is None
    with pytest.raises(CheckpointError, match="has 10 classes but the dataset has 3"):
        class_columns([], 10, ["x", "y", "z"])
    with pytest.raises(ConfigError, match="no class names to match"):
        class_columns(["a", "b", "c"], 3, unnamed, class_map="by_name")
    assert class_columns(["a", "b", "c"], 3, ["c", "a"], class_map="by_name") == [2, 0]
    assert class_columns(["a", "b"], 2, ["a", "b"], class_map="by_name") is None
    with pytest.raises(ConfigError, match="class_map=nearest is not one of"):
        class_columns(["a"], 1, ["a"], class_map="nearest")


def test_an_imagenet_file_that_is_damaged_or_pickles_code_names_the_key(tmp_path):
    from rsa_lightning.models.pretrained import read_state_dict

    damaged = tmp_path / "resnet50.pth"
    damaged.write_bytes(b"PK\x03\x04 half a file")
    with pytest.raises(CheckpointError, match=r"model.net.pretrained=.*resnet50.pth could not be read: truncated"):
        read_state_dict(damaged)
    marker = tmp_path / SIDE_EFFECT
    torch.save({"conv1.weight": torch.zeros(1), "hook": _RunsCode(marker)}, tmp_path / "code.pth")
    with pytest.raises(CheckpointError, match="code.pth needs code to be unpickled"):
        read_state_dict(tmp_path / "code.pth")
    assert not marker.exists()
