"""A real video as the camera: an object enters at a known frame -> exactly one clip, with pre-roll.

The video is written here with cv2.VideoWriter: a fixed camera's empty scene
(find-the-ship), then a parrot (shared photo) appears at ENTRY and leaves at EXIT.
The real Coral MobileNetV2 classifies it as `macaw`, which is the recorded class.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from edgetl_device.camera import Frame
from edgetl_device.config import DeviceConfig, RecordingConfig
from edgetl_device.recording import Recorder
from edgetl_device.reporting import read_jsonl
from edgetl_device.runtime import Runtime

FPS = 10
ENTRY, EXIT, TOTAL = 30, 50, 80
SIZE = 200  # parrot side in pixels (in a 320x240 frame)


def scene_frames(shared: Path, entry: int = ENTRY, exit: int = EXIT, total: int = TOTAL) -> list[np.ndarray]:
    bg = cv2.imread(str(shared / "datasets/find-the-ship/set-A_train/20171105_185402_Empty.jpg"))
    parrot = cv2.resize(cv2.imread(str(shared / "images/parrot.jpg")), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    with_parrot = bg.copy()
    y, x = (bg.shape[0] - SIZE) // 2, (bg.shape[1] - SIZE) // 2
    with_parrot[y:y + SIZE, x:x + SIZE] = parrot
    return [with_parrot if entry <= i < exit else bg for i in range(total)]


def write_video(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def scene_config(shared: Path, video: Path, data_dir: Path, **recording) -> DeviceConfig:
    models = shared / "models"
    return DeviceConfig.model_validate({
        "device_id": "cam-test",
        "camera": {"source": str(video)},
        "model": {"path": models / "mobilenet_v2_1.0_224_quant.tflite", "labels": models / "imagenet_labels.txt",
                  "num_threads": 1},
        "decision": {"k": 3, "n": 5, "record_unknown": False, "record_classes": ["macaw"], "min_score": 0.5},
        "recording": {"pre_roll": 1.0, "post_roll": 1.0, "cooldown": 0.0, **recording},
        "storage": {"data_dir": data_dir, "min_free_mb": 1},
    })


def read_clip(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames


def centre_is_parrot(img: np.ndarray, ref_bg: np.ndarray, ref_parrot: np.ndarray) -> bool:
    c = (slice(80, 160), slice(120, 200))
    d_bg = np.abs(img[c].astype(int) - ref_bg[c].astype(int)).mean()
    d_parrot = np.abs(img[c].astype(int) - ref_parrot[c].astype(int)).mean()
    return d_parrot < d_bg


def test_object_entering_gives_one_clip_that_starts_before_it_and_triggers_within_n_frames(shared_data, tmp_path):
    frames = scene_frames(shared_data)
    video = write_video(tmp_path / "scene.avi", frames)
    runtime = Runtime(scene_config(shared_data, video, tmp_path / "data"))
    status = runtime.run()

    assert status["frames_in"] == TOTAL
    clips = sorted((tmp_path / "data/clips").glob("*.mp4"))
    assert len(clips) == 1, clips
    assert not list((tmp_path / "data/clips").glob(".*")), "temporary files left behind"
    sidecar = json.loads(clips[0].with_suffix(".json").read_text())
    assert sidecar["classes"].keys() == {"macaw"} and sidecar["classes"]["macaw"] > 0.9
    assert sidecar["pre_roll_frames"] == 10  # pre_roll 1 s at 10 fps
    assert clips[0].with_suffix(".jpg").is_file()

    clip = read_clip(clips[0])
    assert len(clip) == sidecar["frames"]
    bg, parrot = frames[0], frames[ENTRY]
    seen = [centre_is_parrot(f, bg, parrot) for f in clip]
    first = seen.index(True)
    assert first >= 5, "the clip must start with frames from before the object entered"
    assert all(not s for s in seen[:first]) and sum(seen) == EXIT - ENTRY  # the whole visit, once
    assert len(clip) - (first + sum(seen)) >= 5  # post-roll after it left
    # The clip's frame `pre_roll_frames` is the trigger frame: k-of-n means k-1..n frames after entry.
    frames_to_trigger = sidecar["pre_roll_frames"] - first
    assert 3 - 1 <= frames_to_trigger <= 5

    events = read_jsonl(tmp_path / "data/events.jsonl", "event")
    assert [e["type"] for e in events] == ["start", "end"]
    assert events[0]["object_id"] == events[1]["object_id"] and events[0]["label"] == "macaw"
    assert events[1]["clip_path"] == str(clips[0])
    assert sidecar["event_ids"] == [events[0]["object_id"]]


def test_overlapping_events_merge_and_max_clip_caps(shared_data, tmp_path):
    # Two visits 1.5 s apart with a 2 s post-roll -> one merged clip; a 3 s cap splits nothing shorter.
    frames = scene_frames(shared_data, entry=20, exit=30, total=70)
    frames[45:55] = [frames[25]] * 10
    video = write_video(tmp_path / "two.avi", frames)
    Runtime(scene_config(shared_data, video, tmp_path / "merged", post_roll=2.0)).run()
    assert len(list((tmp_path / "merged/clips").glob("*.mp4"))) == 1
    events = read_jsonl(tmp_path / "merged/events.jsonl", "event")
    assert [e["type"] for e in events] == ["start", "end", "start", "end"]
    sidecar = json.loads(next((tmp_path / "merged/clips").glob("*.json")).read_text())
    assert len(sidecar["event_ids"]) == 2

    Runtime(scene_config(shared_data, video, tmp_path / "capped", post_roll=2.0, max_clip=2.0)).run()
    for s in (tmp_path / "capped/clips").glob("*.json"):
        meta = json.loads(s.read_text())
        assert meta["frames"] <= 2.0 * FPS + 1
    reasons = [json.loads(s.read_text())["end_reason"] for s in (tmp_path / "capped/clips").glob("*.json")]
    assert "max_clip" in reasons


def synthetic(t: float, i: int) -> Frame:
    img = np.full((48, 64, 3), (i * 7) % 256, np.uint8)
    return Frame(img, t, i)


def test_clip_end_and_cooldown_follow_frame_times_not_an_assumed_fps(tmp_path):
    # A camera that reports no fps (Picamera2, some RTSP streams): the recorder assumes 10 fps, but the loop
    # pushes 30 frames a second. A 7 s clip must not count as 21 s: the cooldown would swallow the next object.
    cfg = RecordingConfig(pre_roll=1.0, post_roll=1.0, cooldown=2.0)
    rec = Recorder(cfg, tmp_path / "clips", fps=None)
    t0, i, done = 1_700_000_000.0, 0, []
    while i / 30 < 15:
        t = t0 + i / 30
        wanted = 1 <= i / 30 < 6 or 10 <= i / 30 < 11  # two visits, 4 s apart after the first clip ended
        if (c := rec.push(synthetic(t, i), wanted)) is not None:
            done.append(c)
        i += 1
    if (c := rec.finish()) is not None:
        done.append(c)
    assert len(done) == 2, [(c.start_time - t0, c.end_time - t0) for c in done]
    first = json.loads(done[0].sidecar_path.read_text())
    assert first["end_time"] <= t0 + 7.1  # its last frame, not start + frames / 10


def test_wall_clock_stepping_back_mid_clip_does_not_keep_the_clip_open(tmp_path):
    # NTP steps a live camera's clock back an hour while a clip is open: post-roll and max_clip must still end it,
    # and the cooldown of a clip that ended before the step must not block recording for that hour.
    cfg = RecordingConfig(pre_roll=0.5, post_roll=1.0, max_clip=5.0, cooldown=2.0)
    rec = Recorder(cfg, tmp_path / "clips", fps=10.0)
    t0, done = 1_700_000_000.0, []
    for i in range(30):  # wanted 0..3 s
        rec.push(synthetic(t0 + i / 10, i), wanted=True)
    back = t0 + 3.0 - 3600
    for i in range(30):  # then an hour earlier by the wall clock, nothing wanted for 3 s
        if (c := rec.push(synthetic(back + i / 10, 30 + i), wanted=False)) is not None:
            done.append(c)
    assert len(done) == 1 and not rec.recording, "the clip is still open after the clock stepped back"
    assert done[0].frames <= 3.0 * 10 + 1.0 * 10 + 2

    for i in range(20):  # the clock steps back again, an object arrives 2 s later
        rec.push(synthetic(back - 3600 + i / 10, 60 + i), wanted=i >= 10)
    assert rec.recording, "the cooldown from before the clock step blocked a new clip"
    assert rec.finish() is not None
