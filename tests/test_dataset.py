import numpy as np
import pytest
import torch
from conftest import decoded_frame_index, write_brightness_video

from rsa_lightning.data import VideoDataModule, VideoDataset, VideoRecord, read_video_list
from rsa_lightning.data.sampling import segment_centre_indices


def _record(path, label=0):
    return VideoRecord(path=path, label=label, video_id=path.stem)


@pytest.mark.parametrize("num_video_frames", [3, 8, 13, 20])
def test_val_clip_holds_the_sampled_frames(tmp_path, num_video_frames):
    path = write_brightness_video(tmp_path / "v.mp4", num_video_frames)
    ds = VideoDataset(records=[_record(path, 2)], num_frames=8, training=False)
    sample = ds[0]
    assert sample["video"].shape == (3, 8, 32, 32) and sample["video"].dtype == torch.uint8
    assert sample["label"] == 2 and sample["video_id"] == "v"
    got = [decoded_frame_index(sample["video"][:, t]) for t in range(8)]
    assert got == segment_centre_indices(num_video_frames, 8).tolist()


@pytest.mark.parametrize("num_video_frames", [5, 16, 21])
def test_train_clip_frames_come_from_their_segments(tmp_path, num_video_frames):
    path = write_brightness_video(tmp_path / "v.mp4", num_video_frames)
    ds = VideoDataset(records=[_record(path)], num_frames=4, training=True)
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


def test_unreadable_video_is_skipped_and_replaced(tmp_path, caplog):
    good = write_brightness_video(tmp_path / "good.mp4", 8)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    ds = VideoDataset(records=[_record(bad, 1), _record(good, 2)], num_frames=4, training=False)
    sample = ds[0]
    assert sample["video_id"] == "good" and sample["label"] == 2
    assert "bad.mp4" in caplog.text


def test_list_file_errors_name_the_file(tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("videos/a.mp4 notanumber\n")
    with pytest.raises(ValueError, match=r"train.txt:1"):
        read_video_list(lst, tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_video_list(tmp_path / "missing.txt", tmp_path)


def test_datamodule_batches_and_normalisation(brightness_dataset):
    dm = VideoDataModule(
        root=brightness_dataset, num_classes=3, num_frames=4, batch_size=4, scale_size=32, crop_size=24
    )
    dm.setup("fit")
    assert dm.class_names == ["a", "b", "c"]
    batch = next(iter(dm.val_dataloader()))
    assert batch["video"].shape == (4, 3, 4, 24, 24) and batch["video"].dtype == torch.uint8
    assert batch["label"].tolist() == [0, 1, 2, 0]
    out = dm.on_after_batch_transfer({k: v for k, v in batch.items()}, 0)
    expected = (batch["video"].float() / 255 - dm.mean.view(1, 3, 1, 1, 1)) / dm.std.view(1, 3, 1, 1, 1)
    assert out["video"].dtype == torch.float32
    torch.testing.assert_close(out["video"], expected)
    train_batch = next(iter(dm.train_dataloader()))
    assert train_batch["video"].shape == (4, 3, 4, 24, 24)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_frames": 0}, "data.num_frames"),
        ({"batch_size": -1}, "data.batch_size"),
        ({"crop_size": 80}, "data.crop_size"),
    ],
)
def test_datamodule_rejects_bad_values(tmp_path, kwargs, match):
    args = {"root": tmp_path, "num_classes": 3, "num_frames": 4, "batch_size": 2, "scale_size": 64, "crop_size": 64}
    with pytest.raises(ValueError, match=match):
        VideoDataModule(**{**args, **kwargs})


def test_datamodule_checks_class_count(brightness_dataset):
    dm = VideoDataModule(
        root=brightness_dataset, num_classes=5, num_frames=4, batch_size=2, scale_size=32, crop_size=32
    )
    with pytest.raises(ValueError, match="num_classes is 5"):
        dm.setup("fit")


def test_resize_keeps_frame_content(tmp_path):
    frames = np.zeros((4, 32, 48, 3), np.uint8)
    from rsa_lightning.data.transforms import ClipTransform

    video = torch.from_numpy(frames).permute(3, 0, 1, 2)
    out = ClipTransform(scale_size=16, crop_size=16, training=False)(video)
    assert out.shape == (3, 4, 16, 16)
