"""SIGTERM in the middle of a clip: the real `edgetl-device run` finishes a complete, playable clip."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import yaml

from edgetl_device.reporting import read_jsonl
from tests.test_record_clips import scene_frames, write_video


def test_sigterm_mid_clip_leaves_a_complete_playable_clip(shared_data, tmp_path):
    # Paced like a live camera: the parrot arrives at frame 10 and stays for 20 s.
    video = write_video(tmp_path / "long.avi", scene_frames(shared_data, entry=10, exit=200, total=220))
    models = shared_data / "models"
    config = {
        "device_id": "cam-sigterm",
        "camera": {"source": str(video), "paced": True},
        "model": {"path": str(models / "mobilenet_v2_1.0_224_quant.tflite"),
                  "labels": str(models / "imagenet_labels.txt"), "num_threads": 1},
        "decision": {"record_unknown": False, "record_classes": ["macaw"]},
        "recording": {"pre_roll": 0.5, "post_roll": 5.0},
        "storage": {"data_dir": str(tmp_path / "data"), "min_free_mb": 1},
    }
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(config))
    clips = tmp_path / "data" / "clips"
    exe = shutil.which("edgetl-device")
    cmd = [exe] if exe else [sys.executable, "-m", "edgetl_device.cli"]
    proc = subprocess.Popen([*cmd, "run", "--config", str(tmp_path / "device.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (clips.is_dir() and list(clips.glob(".*.tmp.mp4"))):  # a clip is being written
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no clip started"
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    mp4s = list(clips.glob("*.mp4"))
    assert len(mp4s) == 1 and not list(clips.glob(".*")), list(clips.iterdir())
    meta = json.loads(mp4s[0].with_suffix(".json").read_text())
    assert meta["end_reason"] == "shutdown"
    cap = cv2.VideoCapture(str(mp4s[0]))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == meta["frames"] >= 10  # playable to the last frame
    events = read_jsonl(tmp_path / "data" / "events.jsonl", "event")
    assert [e["type"] for e in events] == ["start", "end"]
    statuses = read_jsonl(tmp_path / "data" / "events.jsonl", "status")
    assert statuses and json.loads((tmp_path / "data" / "status.json").read_text())["state"] == "stopped"
