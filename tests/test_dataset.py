import threading
import time
from functools import partial

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import decoded_frame_index, write_brightness_video
from test_decoding import broken_files
from torch.utils.data import DataLoader

from rsa_lightning.data import ListAnnotations, VideoDataModule, VideoRecord, read_video_list
from rsa_lightning.data.dataset import VideoDataset, VideoDecodeError
from rsa_lightning.data.decoding import DecordBackend, PyAVBackend
from rsa_lightning.data.exclusions import Exclusion, read_exclusion_entries, read_exclusions, write_exclusions
from rsa_lightning.data.sampling import SegmentSampler, segment_centre_indices
from rsa_lightning.data.transforms import EvalTransform, TrainTransform


def _record(path, label=0):
    return VideoRecord(path=path, label=label, video_id=path.stem)


def _dataset(records, **kwargs):
    args = {"backend": DecordBackend(), "sampler": SegmentSampler(num_frames=4, training=False), "training": False}
    return VideoDataset(records=records, **{**args, **kwargs})


class FrameSampler:
    """Stand-in sampler: frame ``view`` (evaluation) or frame 0; records its keyword arguments."""

    def __init__(self):
        self.calls = []

    def __call__(self, n, rng=None, view=0, num_views=1):
        self.calls.append({"n": n, "rng": rng is not None, "view": view, "num_views": num_views})
        return np.array([view % n])


@pytest.mark.parametrize("num_video_frames", [3, 8, 13, 20])
def test_val_clip_holds_the_sampled_frames(tmp_path, num_video_frames):
    path = write_brightness_video(tmp_path / "v.mp4", num_video_frames)
    ds = _dataset([_record(path, 2)], sampler=SegmentSampler(num_frames=8, training=False))
    sample = ds[0]
    assert sample["video"].shape == (3, 8, 32, 32) and sample["video"].dtype == torch.uint8
    assert sample["label"] == 2 and sample["video_id"] == "v"
    assert sample["view"] == 0 and sample["replaced"] == ""
    got = [decoded_frame_index(sample["video"][:, t]) for t in range(8)]
    assert got == segment_centre_indices(num_video_frames, 8).tolist()


def test_without_transform_the_clip_is_the_decoded_frames_contiguous(tmp_path):
    """No transform: the decoded (T, H, W, 3) frames as one contiguous (C, T, H, W) tensor (the batch collation then
    copies it as is instead of transposing it); with a transform, the transform gets the same pixels."""
    path = write_brightness_video(tmp_path / "v.mp4", 12)
    sampler = SegmentSampler(num_frames=4, training=False)
    frames, _ = DecordBackend().read(_record(path), lambda n: sampler(n))
    video = _dataset([_record(path)], sampler=sampler)[0]["video"]
    assert video.is_contiguous() and video.shape == (3, 4, 32, 32)
    assert torch.equal(video, torch.from_numpy(frames).permute(3, 0, 1, 2))
    seen = []
    _dataset([_record(path)], sampler=sampler, transform=lambda v, **_: seen.append(v) or v)[0]
    assert torch.equal(seen[0], video)


@pytest.mark.parametrize("num_video_frames", [5, 16, 21])
def test_train_clip_frames_come_from_their_segments(tmp_path, num_video_frames):
    path = write_brightness_video(tmp_path / "v.mp4", num_video_frames)
    ds = _dataset([_record(path)], sampler=SegmentSampler(num_frames=4, training=True), training=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(12):
        got = [decoded_frame_index(ds[0]["video"][:, t]) for t in range(4)]
        assert got == sorted(got)
        if num_video_frames >= 4:
            d = num_video_frames // 4
            assert all(i * d <= g < (i + 1) * d for i, g in enumerate(got)), got
        seen.update(got)
    if num_video_frames >= 8:  # segments of >= 2 frames: the draw varies
        assert len(seen) > 4, "training sampling should vary between draws"
    else:  # 5 frames, 4 segments of 1 frame (the tail frame is dropped, as in TSN)
        assert seen == {0, 1, 2, 3}


def test_evaluation_indexes_videos_by_clip_and_crop(tmp_path):
    paths = [write_brightness_video(tmp_path / f"v{i}.mp4", 8) for i in range(2)]
    sampler, crops = FrameSampler(), []

    def transform(video, *, crop_index, num_crops):
        crops.append((crop_index, num_crops))
        return video[:, :, :16, :16]

    records = [_record(p, i) for i, p in enumerate(paths)]
    ds = _dataset(records, sampler=sampler, transform=transform, num_clips=2, num_crops=3)
    assert len(ds) == 2 * 2 * 3
    samples = [ds[i] for i in range(len(ds))]
    assert [s["video_id"] for s in samples] == ["v0"] * 6 + ["v1"] * 6
    assert [s["view"] for s in samples] == list(range(6)) * 2
    assert [ds.locate(i) for i in (0, 4, 11)] == [(0, 0, 0), (0, 1, 1), (1, 1, 2)]
    # clip c reads frame c (the stand-in sampler returns frame `view`); crop k is the transform's crop_index
    assert [decoded_frame_index(s["video"]) for s in samples] == [0, 0, 0, 1, 1, 1] * 2
    assert [c["view"] for c in sampler.calls] == [0, 0, 0, 1, 1, 1] * 2
    assert all(c["num_views"] == 2 and not c["rng"] for c in sampler.calls)
    assert crops == [(k, 3) for k in (0, 1, 2)] * 4
    assert samples[0]["video"].shape == (3, 1, 16, 16)
    with pytest.raises(IndexError):
        ds[12]
    with pytest.raises(ValueError, match="training reads one view"):
        _dataset([_record(paths[0])], training=True, num_clips=2)


def test_training_transform_gets_label_and_a_seeded_generator(tmp_path):
    path = write_brightness_video(tmp_path / "v.mp4", 16)

    def transform(video, *, label, generator):
        shift = int(torch.randint(0, 1000, (1,), generator=generator))
        return video[:, :, :8, :8], label * 100 + shift

    ds = _dataset(
        [_record(path, 3)], sampler=SegmentSampler(num_frames=4, training=True), transform=transform, training=True
    )
    torch.manual_seed(1)
    first = [(ds[0]["label"], ds[0]["video"]) for _ in range(3)]
    torch.manual_seed(1)
    again = [(ds[0]["label"], ds[0]["video"]) for _ in range(3)]
    assert [lbl for lbl, _ in first] == [lbl for lbl, _ in again]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, again))
    assert all(300 <= lbl < 1300 for lbl, _ in first) and len({lbl for lbl, _ in first}) > 1
    assert first[0][1].shape == (3, 4, 8, 8)


@pytest.mark.parametrize("backend", [DecordBackend(), PyAVBackend()], ids=["decord", "pyav"])
def test_broken_videos_are_skipped_and_replaced(tmp_path, caplog, backend):
    broken = broken_files(tmp_path / "broken")  # missing, zero-byte, garbage, truncated, empty
    good = [write_brightness_video(tmp_path / f"good{i}.mp4", 8) for i in range(2)]
    records = [_record(good[0], 0)] + [_record(p, 1) for p in broken.values()] + [_record(good[1], 2)]
    ds = _dataset(records, backend=backend)
    samples = [ds[i] for i in range(len(ds))]
    broken_ids = [p.stem for p in broken.values()]
    assert [s["video_id"] for s in samples] == ["good0"] + ["good1"] * (len(broken) + 1)
    assert [s["replaced"] for s in samples] == [""] + broken_ids + [""]
    assert [s["label"] for s in samples] == [0] + [2] * (len(broken) + 1)  # the replacement's label
    assert set(ds.skipped) == set(broken_ids)
    for path in broken.values():  # tried once per later index, warned once
        assert sum(path.name in r.getMessage() for r in caplog.records if r.levelname == "WARNING") == 1, path


def test_replaced_ids_reach_the_main_process_from_workers(tmp_path):
    broken = broken_files(tmp_path / "broken")
    good = write_brightness_video(tmp_path / "good.mp4", 8)
    records = [_record(broken["garbage"]), _record(good), _record(broken["zero"]), _record(good)]
    loader = DataLoader(_dataset(records), batch_size=2, num_workers=2)
    replaced = [r for batch in loader for r in batch["replaced"]]
    assert replaced == ["garbage", "", "zero", ""]


def test_too_many_consecutive_failures_raise(tmp_path):
    broken = broken_files(tmp_path / "broken")
    ds = _dataset([_record(p) for p in broken.values()], max_decode_retries=2)
    with pytest.raises(VideoDecodeError, match="3 consecutive videos"):
        ds[0]


class HangingBackend:
    """Stand-in for a decoder stuck in native code on the video named ``hang``."""

    def __init__(self, release: threading.Event):
        self.inner, self.release = DecordBackend(), release

    def read(self, record, choose):
        if record.video_id == "hang":
            self.release.wait(60)
        return self.inner.read(record, choose)

    def __reduce__(self):  # in a worker process the event is a fresh, never-set one
        return (HangingBackend, (threading.Event(),))


def test_a_hanging_decode_times_out_and_is_skipped(tmp_path, caplog):
    hang = write_brightness_video(tmp_path / "hang.mp4", 8)
    good = write_brightness_video(tmp_path / "good.mp4", 8)
    release = threading.Event()
    try:
        ds = _dataset([_record(hang), _record(good)], backend=HangingBackend(release), decode_timeout=0.5)
        start = time.monotonic()
        sample = ds[0]
        assert time.monotonic() - start < 5
        assert sample["video_id"] == "good" and sample["replaced"] == "hang"
        assert "longer than 0.5 s" in ds.skipped["hang"] and "hang.mp4" in caplog.text
        assert ds[1]["replaced"] == ""
        # the same in a DataLoader worker process
        loader = DataLoader(ds, batch_size=2, num_workers=1)
        start = time.monotonic()
        batch = next(iter(loader))
        assert batch["replaced"] == ["hang", ""] and time.monotonic() - start < 20
    finally:
        release.set()


def test_exclusion_list_round_trip(tmp_path):
    path = tmp_path / "lists" / "exclusions.txt"
    write_exclusions(
        path,
        [
            Exclusion("train", "videos/123", "/data/videos/123.webm", "zero-byte file"),
            ("val", "456", "/data/videos/456.webm", "decode error:\tbad\nNAL"),
        ],
    )
    text = path.read_text()
    assert text.startswith("#") and "train\tvideos/123\t/data/videos/123.webm\tzero-byte file\n" in text
    assert read_exclusions(path) == {"videos/123", "456"}
    assert read_exclusions(path, split="val") == {"456"}
    assert read_exclusion_entries(path)[1] == Exclusion("val", "456", "/data/videos/456.webm", "decode error: bad NAL")
    with path.open("a") as f:  # hand edits: comments, blank lines, id-only lines
        f.write("\n# checked by hand\ntest\t789\n")
    assert read_exclusions(path, split="test") == {"789"}
    (tmp_path / "bad.txt").write_text("train only-one-field\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        read_exclusions(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="scan_videos"):
        read_exclusions(tmp_path / "missing.txt")


def test_list_file_errors_name_the_file(tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("videos/a.mp4 notanumber\n")
    with pytest.raises(ValueError, match=r"train.txt:1"):
        read_video_list(lst, tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_video_list(tmp_path / "missing.txt", tmp_path)


def _datamodule(root, **kwargs):
    args = {
        "root": root,
        "annotations": partial(ListAnnotations, class_names_file="annotations/classes.txt", list_format="video"),
        "num_classes": 3,
        "num_frames": 4,
        "batch_size": 4,
        "crop_size": 24,
        "sampler": partial(SegmentSampler),
        "backend": DecordBackend(),
        "train_transform": partial(TrainTransform, resize=32, crop_size=24, flip="off"),
        "eval_transform": EvalTransform(resize=32, crop_size=24),
    }
    return VideoDataModule(**{**args, **kwargs})


def test_datamodule_batches_and_normalisation(brightness_dataset):
    dm = _datamodule(brightness_dataset)
    dm.setup("fit")
    assert dm.class_names == ["a", "b", "c"]
    batch = next(iter(dm.val_dataloader()))
    assert batch["video"].shape == (4, 3, 4, 24, 24) and batch["video"].dtype == torch.uint8
    assert batch["label"].tolist() == [0, 1, 2, 0] and batch["replaced"] == [""] * 4
    out = dm.on_after_batch_transfer({k: v for k, v in batch.items()}, 0)
    expected = (batch["video"].float() / 255 - dm.mean.view(1, 3, 1, 1, 1)) / dm.std.view(1, 3, 1, 1, 1)
    assert out["video"].dtype == torch.float32
    torch.testing.assert_close(out["video"], expected)
    train_batch = next(iter(dm.train_dataloader()))
    assert train_batch["video"].shape == (4, 3, 4, 24, 24)


def test_datamodule_leaves_out_the_scanned_exclusions(brightness_dataset):
    write_exclusions(brightness_dataset / "exclusions.txt", [("train", "videos/clip1", "videos/clip1.mp4", "corrupt")])
    dm = _datamodule(brightness_dataset)
    assert [r.video_id for r in dm.records("train")] == [f"videos/clip{i}" for i in (0, 2, 3, 4, 5)]
    assert len(dm.records("val")) == 6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_frames": 0}, "data.num_frames"),
        ({"batch_size": -1}, "data.batch_size"),
        ({"crop_size": 16}, "crop_size"),
    ],
)
def test_datamodule_rejects_bad_values(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _datamodule(tmp_path, **kwargs)


@pytest.mark.parametrize("bad", [{"crop_first": "maybe"}, {"max_distort": -1}, {"scales": [1.5]}])
def test_a_bad_train_transform_value_names_its_config_key(brightness_dataset, bad):
    from rsa_lightning.errors import ConfigError

    dm = _datamodule(brightness_dataset, train_transform=partial(TrainTransform, resize=32, crop_size=24, **bad))
    with pytest.raises(ConfigError, match=rf"^data\.train_transform: {next(iter(bad))}"):
        dm.setup("fit")


def test_datamodule_checks_class_count(brightness_dataset):
    dm = _datamodule(brightness_dataset, num_classes=5)
    with pytest.raises(ValueError, match="num_classes is 5"):
        dm.setup("fit")


def test_resize_keeps_frame_content(tmp_path):
    frames = np.zeros((4, 32, 48, 3), np.uint8)
    frames[:, :, 24:] = 200  # right half bright: survives the resize and the centre crop
    from rsa_lightning.data.transforms import EvalTransform

    video = torch.from_numpy(frames).permute(3, 0, 1, 2)
    out = EvalTransform(resize=16, crop_size=16)(video)
    assert out.shape == (3, 4, 16, 16)
    assert out[:, :, :, :6].float().mean() < 5 and out[:, :, :, 10:].float().mean() > 195


class _ReplacedDataset(torch.utils.data.Dataset):
    """Samples shaped like VideoDataset's, with ``replaced`` set for the indices in ``broken``."""

    def __init__(self, size, broken):
        self.records, self.broken = list(range(size)), broken

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return {"video": torch.full((2,), float(i)), "label": i % 2, "replaced": f"vid{i}" if i in self.broken else ""}


class _TinyModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self.layer(batch["video"]), batch["label"])

    def validation_step(self, batch, batch_idx):
        loss = torch.nn.functional.cross_entropy(self.layer(batch["video"]), batch["label"])
        self.log("val/loss", loss, batch_size=len(batch["label"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(monitor, train_broken, val_broken, size=100):
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[monitor],
    )
    train = DataLoader(_ReplacedDataset(size, train_broken), batch_size=25)
    val = DataLoader(_ReplacedDataset(size, val_broken), batch_size=50)
    trainer.fit(_TinyModule(), train, val)
    return trainer


def test_skipped_samples_monitor_counts_per_epoch_and_stops_past_the_ceiling(caplog):
    from rsa_lightning.callbacks import SkippedSamplesMonitor, TooManySkippedVideosError

    trainer = _fit(SkippedSamplesMonitor(max_skipped_fraction=0.02), train_broken={3, 70}, val_broken={5})
    assert float(trainer.callback_metrics["train/skipped"]) == 2  # per epoch, not accumulated
    assert float(trainer.callback_metrics["val/skipped"]) == 1
    assert "vid3, vid70" in caplog.text
    monitor = SkippedSamplesMonitor(max_skipped_fraction=0.02)  # 2 of 100 tolerated, the third stops the run
    with pytest.raises(TooManySkippedVideosError, match="3 distinct train videos") as err:
        _fit(monitor, train_broken={3, 40, 70}, val_broken=set())
    assert "vid3, vid40, vid70" in str(err.value) and "100 videos" in str(err.value)
    with pytest.raises(ValueError, match="max_skipped_fraction"):
        SkippedSamplesMonitor(max_skipped_fraction=1.5)


class _OnDevice:
    """The part of a Trainer the DataModule reads to choose pinned memory: ``strategy.root_device``."""

    def __init__(self, device: str):
        self.strategy = type("Strategy", (), {"root_device": torch.device(device)})()


def test_pinned_memory_follows_the_trainers_device_unless_set(brightness_dataset):
    dm = _datamodule(brightness_dataset)
    dm.setup("fit")
    assert dm.uses_pinned_memory() is False and dm.val_dataloader().pin_memory is False  # no trainer
    dm.trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    assert dm.uses_pinned_memory() is False and dm.train_dataloader().pin_memory is False
    dm.trainer = _OnDevice("cuda:1")  # a GPU trainer's strategy (the loader is built, not iterated: no GPU needed)
    assert dm.uses_pinned_memory() is True and dm.val_dataloader().pin_memory is True
    forced = _datamodule(brightness_dataset, pin_memory=False)
    forced.trainer = _OnDevice("cuda:0")
    assert forced.uses_pinned_memory() is False
    assert _datamodule(brightness_dataset, pin_memory=True).uses_pinned_memory() is True


def test_workers_decode_into_uint8_and_persist(brightness_dataset):
    """Decoding, sampling and transforms run in the workers and hand over uint8 clips (normalised only after the
    transfer); the workers stay up between epochs."""
    dm = _datamodule(brightness_dataset, num_workers=1)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.persistent_workers is True and dm.val_dataloader().persistent_workers is True
    first = next(iter(loader))
    assert first["video"].dtype == torch.uint8 and first["video"].shape == (4, 3, 4, 24, 24)
    workers = loader._iterator._workers  # the same worker processes serve the next epoch
    assert next(iter(loader))["video"].dtype == torch.uint8 and loader._iterator._workers is workers
    assert _datamodule(brightness_dataset).val_dataloader().persistent_workers is False  # no workers: nothing kept
