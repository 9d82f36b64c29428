"""The camera's resolution changes mid-stream (a camera that comes back from a reconnect at another size, a folder of
mixed-size images): the pre-roll then holds frames of two sizes. cv2.VideoWriter silently drops frames whose size
differs from the one it was opened with, so the clip must resize them; the motion gate must neither crash nor see
the rescale as motion."""

from __future__ import annotations

import json

import cv2
import numpy as np

from edgetl_device.config import MotionConfig
from edgetl_device.motion import MotionGate
from edgetl_device.runtime import Runtime
from tests.test_record_clips import ENTRY, EXIT, TOTAL, centre_is_parrot, read_clip, scene_config, scene_frames

CHANGE = 25  # frames before this one are 640x480, the rest 320x240 (the scene's own size)


def test_clip_whose_pre_roll_spans_a_resolution_change_keeps_every_frame(shared_data, tmp_path):
    frames = scene_frames(shared_data)
    folder = tmp_path / "camera"
    folder.mkdir()
    for i, f in enumerate(frames):
        img = cv2.resize(f, (640, 480), interpolation=cv2.INTER_CUBIC) if i < CHANGE else f
        cv2.imwrite(str(folder / f"{i:04d}.png"), img)
    cfg = scene_config(shared_data, folder, tmp_path / "data")
    cfg.camera.fps = 10
    status = Runtime(cfg).run()

    assert status["frames_in"] == TOTAL and status["bad_reads"] == 0
    clips = sorted((tmp_path / "data/clips").glob("*.mp4"))
    assert len(clips) == 1
    sidecar = json.loads(clips[0].with_suffix(".json").read_text())
    assert sidecar["pre_roll_frames"] == 10 and sidecar["frames_dropped"] == 0
    clip = read_clip(clips[0])
    assert len(clip) == sidecar["frames"], "frames were lost in the clip"
    assert all(f.shape == (240, 320, 3) for f in clip)
    # The clip starts before the change: its first frames are the 640x480 ones, resized, not black or lost.
    seen = [centre_is_parrot(f, frames[0], frames[ENTRY]) for f in clip]
    first_index = ENTRY - seen.index(True)  # the source frame the clip starts with
    assert first_index < CHANGE and sum(seen) == EXIT - ENTRY
    for f in clip[:CHANGE - first_index]:
        assert np.abs(f.astype(int) - frames[0].astype(int)).mean() < 12


def test_motion_gate_does_not_see_a_rescaled_picture_as_motion(shared_data):
    img = cv2.imread(str(shared_data / "images/grace_hopper.bmp"))
    gate = MotionGate(MotionConfig(hold_frames=2, keepalive=0))
    results = [gate.check(cv2.resize(img, (640, 480)), t) for t in range(5)]
    results += [gate.check(cv2.resize(img, (320, 240)), t) for t in range(5, 10)]
    assert not any(r.moving for r in results[1:])
    assert not results[-1].run_inference
    # Another aspect ratio cannot be compared: the gate starts again from that frame, without an error.
    r = gate.check(cv2.resize(img, (400, 240)), 10)
    assert r.run_inference
    assert not gate.check(cv2.resize(img, (400, 240)), 11).moving
