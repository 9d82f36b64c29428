"""`edgetl data from-video`: frames from real footage into a class folder (every N, or on scene change)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgetl.cli import app
from edgetl.data import frames_from_video, load_dataset
from edgetl.errors import EdgetlError


@pytest.fixture
def cut_video(tmp_path):
    """A synthetic 40-frame video with exactly two hard cuts (three scenes)."""
    path = tmp_path / "cuts.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert w.isOpened()
    for i in range(40):
        frame = np.full((48, 64, 3), (30, 30, 30) if i < 15 else (200, 200, 200) if i < 30 else (30, 30, 200),
                        np.uint8)
        cv2.putText(frame, ".", (i, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (128, 128, 128))  # small motion
        w.write(frame)
    w.release()
    return path


def test_every_nth_frame_of_real_footage(shared_data, tmp_path):
    video = shared_data / "videos" / "vtest.avi"
    paths = frames_from_video(video, tmp_path / "ds", "street", every=100, size=240)
    assert len(paths) == 8  # 795 frames -> 0, 100, ..., 700
    assert paths[1].name == "vtest_000100.jpg"
    img = cv2.imread(str(paths[0]))
    assert max(img.shape[:2]) == 240
    assert load_dataset(tmp_path / "ds").classes == ["street"]  # directly usable as a class folder


def test_scene_change_keeps_one_frame_per_scene(cut_video, tmp_path):
    paths = frames_from_video(cut_video, tmp_path / "ds", "scenes", scene_threshold=20)
    assert [p.name for p in paths] == ["cuts_000000.jpg", "cuts_000015.jpg", "cuts_000030.jpg"]


def test_bad_arguments(cut_video, tmp_path):
    with pytest.raises(EdgetlError, match="exactly one"):
        frames_from_video(cut_video, tmp_path, "x")
    with pytest.raises(EdgetlError, match="not found"):
        frames_from_video(tmp_path / "none.mp4", tmp_path, "x", every=5)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(EdgetlError):
        frames_from_video(junk, tmp_path, "x", every=5)


def test_cli_from_video(cut_video, tmp_path):
    res = CliRunner().invoke(app, ["data", "from-video", str(cut_video), "--out", str(tmp_path / "ds"),
                                   "--class", "yard", "--every", "10", "--max-frames", "3"])
    assert res.exit_code == 0, res.output
    assert "wrote 3 frames" in res.output
    assert len(list((tmp_path / "ds" / "yard").glob("*.jpg"))) == 3


def test_a_video_without_frames_leaves_no_empty_class_folder_behind(tmp_path):
    empty = tmp_path / "empty.avi"  # OpenCV opens it, but there is no frame to decode
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48)).release()
    (tmp_path / "ds" / "ships").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "ds" / "ships" / "1.jpg"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(EdgetlError, match="no frames"):
        frames_from_video(empty, tmp_path / "ds", "empty_sea", every=5)
    assert load_dataset(tmp_path / "ds").classes == ["ships"]  # no empty class folder breaking the dataset
