"""Retention by age and total size (oldest first) and the low-disk guard that stops recording."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgetl_device.camera import Frame
from edgetl_device.config import RecordingConfig
from edgetl_device.recording import Recorder
from edgetl_device.reporting import read_jsonl
from edgetl_device.runtime import Runtime
from edgetl_device.storage import MB, Storage, list_clips, plan_retention
from tests.test_record_clips import scene_config, scene_frames, write_video


def make_clip(folder, stem: str, size: int, age_s: float, now: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for ext, n in ((".mp4", size), (".json", 10), (".jpg", 100)):
        p = folder / f"{stem}{ext}"
        p.write_bytes(b"x" * n)
        os.utime(p, (now - age_s, now - age_s))


def test_snapshots_age_out_with_the_clips(tmp_path):
    # Snapshots taken by command live in data_dir/snapshots; without retention they would pile up forever.
    now = time.time()
    snaps = tmp_path / "snapshots"
    snaps.mkdir()
    for name, age in (("old.jpg", 10 * 86400), ("fresh.jpg", 60), (".partial.jpg", 10 * 86400)):
        (snaps / name).write_bytes(b"x" * 100)
        os.utime(snaps / name, (now - age, now - age))
    storage = Storage(tmp_path / "clips", max_age_days=7, max_total_mb=100, min_free_mb=1, aged_dirs=(snaps,))
    storage.check(now)
    assert sorted(p.name for p in snaps.iterdir()) == [".partial.jpg", "fresh.jpg"]


def test_retention_deletes_old_clips_then_oldest_until_the_total_fits(tmp_path):
    now = time.time()
    clips = tmp_path / "clips"
    make_clip(clips, "a_old", 1000, age_s=10 * 86400, now=now)  # beyond max age
    make_clip(clips, "b", 1000, age_s=3000, now=now)
    make_clip(clips, "c", 1000, age_s=2000, now=now)
    make_clip(clips, "d", 1000, age_s=1000, now=now)
    (clips / ".e.tmp.mp4").write_bytes(b"x" * 5000)  # a clip being written: never counted or deleted

    listed = list_clips(clips)
    assert [c.stem for c in listed] == ["a_old", "b", "c", "d"] and listed[1].size == 1110
    doomed = plan_retention(listed, now, max_age_s=7 * 86400, max_total_bytes=2500)
    assert [c.stem for c in doomed] == ["a_old", "b"]

    storage = Storage(clips, max_age_days=7, max_total_mb=2500 / MB, min_free_mb=0)
    storage.check(now)
    assert sorted(p.name for p in clips.iterdir()) == [".e.tmp.mp4", "c.jpg", "c.json", "c.mp4", "d.jpg",
                                                       "d.json", "d.mp4"]
    assert storage.deleted == 2 and storage.recording_allowed


def test_low_disk_stops_recording_and_reports_it(shared_data, tmp_path):
    # More free space required than any disk has: the guard must refuse to record, and say so.
    video = write_video(tmp_path / "scene.avi", scene_frames(shared_data))
    cfg = scene_config(shared_data, video, tmp_path / "data")
    cfg.storage.min_free_mb = 1e12
    status = Runtime(cfg).run()

    assert status["disk_low"] is True
    assert not list((tmp_path / "data/clips").glob("*.mp4"))
    events = read_jsonl(tmp_path / "data/events.jsonl", "event")
    assert [e["type"] for e in events] == ["start", "end"]  # the object is still reported, just not recorded
    reports = read_jsonl(tmp_path / "data/events.jsonl", "status")
    assert any(r.get("disk_low") for r in reports)
    assert json.loads((tmp_path / "data/status.json").read_text())["disk_low"] is True


CRASH_MID_CLIP = """
import os, signal, sys
import numpy as np
from edgetl_device.camera import Frame
from edgetl_device.config import RecordingConfig
from edgetl_device.recording import Recorder
rec = Recorder(RecordingConfig(pre_roll=0.5), sys.argv[1], fps=10.0)
for i in range(30):
    rec.push(Frame(np.full((48, 64, 3), i, np.uint8), 1_700_000_000 + i / 10, i), wanted=i >= 5)
while rec._writer.queue.qsize():  # let the encoder write something first
    pass
os.kill(os.getpid(), signal.SIGKILL)  # power cut mid-clip
"""


def test_temp_files_of_a_clip_cut_by_a_crash_are_removed_at_the_next_start(tmp_path):
    # Retention skips temp files (they may be being written), so a leftover from a crash would never be deleted.
    clips = tmp_path / "clips"
    proc = subprocess.run([sys.executable, "-c", CRASH_MID_CLIP, str(clips)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = list(clips.glob(".*"))
    assert leftovers and not list(clips.glob("*.json")), list(clips.iterdir())

    rec = Recorder(RecordingConfig(), clips, fps=10.0)  # the restarted service
    assert not list(clips.glob(".*")), "a crashed clip's temp file is left on disk forever"
    assert rec.push(Frame(np.zeros((48, 64, 3), np.uint8), 1_700_000_100.0, 0), wanted=False) is None


def test_a_clip_retention_cannot_delete_does_not_stop_the_device(shared_data, tmp_path):
    # An SD card remounted read-only, or a file made immutable: retention's unlink fails. The frame loop must go on
    # (events, clips) and retention must still delete what it can.
    if shutil.which("chattr") is None:
        pytest.skip("chattr not available")
    now = time.time()
    clips = tmp_path / "data/clips"
    make_clip(clips, "a_old", 1000, age_s=10 * 86400, now=now)
    make_clip(clips, "b_old", 1000, age_s=9 * 86400, now=now)
    stuck = clips / "a_old.mp4"
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a file immutable here (needs root and ext4)")
    try:
        video = write_video(tmp_path / "scene.avi", scene_frames(shared_data))
        status = Runtime(scene_config(shared_data, video, tmp_path / "data")).run()
        assert status["frames_in"] == 80 and status["clips_written"] == 1
        assert stuck.exists() and (clips / "a_old.json").exists()  # kept whole with its sidecar
        assert not list(clips.glob("b_old.*"))
        assert status["clips_deleted"] == 1  # b_old; a_old could not be deleted
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], capture_output=True)

    # ... and a leftover temp file that cannot be removed (read-only disk) must not stop the restarted service
    left = clips / ".stuck.tmp.mp4"
    left.write_bytes(b"x")
    subprocess.run(["chattr", "+i", str(left)], capture_output=True)
    try:
        Recorder(RecordingConfig(), clips, fps=10.0)
        assert left.exists()
    finally:
        subprocess.run(["chattr", "-i", str(left)], capture_output=True)
