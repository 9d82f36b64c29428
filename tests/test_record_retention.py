"""Retention by age and total size (oldest first) and the low-disk guard that stops recording."""

from __future__ import annotations

import json
import os
import time

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
