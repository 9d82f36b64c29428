"""`edgetl demo --quick` end to end: a real broker, the real CLI in a subprocess, its summary checked
against the video's ground truth, the clips on disk and the events a separate subscriber received."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import cv2
import paho.mqtt.client as mqtt
import pytest

from edgetl.demo import DEVICE_ID
from edgetl_device.bundle import open_bundle

pytestmark = pytest.mark.slow


class _Subscriber:
    """Independent of the demo's own collector: keeps every event published on the device's topic."""

    def __init__(self, port: int, topic: str) -> None:
        self.events: list[dict] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "test subscriber could not subscribe"

    def _on_message(self, _c, _u, message) -> None:
        with self._lock:
            self.events.append(json.loads(message.payload))

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_quick_demo_sees_the_unknown_once_and_delivers_every_event(tmp_path: Path, broker, shared_data):
    out = tmp_path / "demo"
    sub = _Subscriber(broker.port, f"edgetl/{DEVICE_ID}/events")
    env = dict(os.environ, EDGETL_SHARED_DATA=str(shared_data))
    try:
        proc = subprocess.run([sys.executable, "-m", "edgetl", "demo", "--quick", "--out", str(out),
                               "--broker", broker.url], capture_output=True, text=True, timeout=300, env=env)
    finally:
        sub.stop()
    text = proc.stdout
    assert proc.returncode == 0, f"demo failed:\n{text[-3000:]}\n{proc.stderr[-3000:]}"

    # It says the data is synthetic and where the weights came from.
    assert "SYNTHETIC camera scenes" in text
    assert "ImageNet weights from the shared data" in text

    # Exactly one unknown, triggered while the drone (the never-trained kind) is in view.
    truth = json.loads((out / "video" / "truth.json").read_text())
    drone = next(a for a in truth if not a["known"])
    triggers = [int(m) for m in re.findall(r"unknown triggered at frame (\d+)", text)]
    assert len(triggers) == 1, text
    assert drone["first_frame"] <= triggers[0] <= drone["last_frame"], (triggers, drone)

    # Known objects were recognised by the device while they were in view.
    seen = dict(re.findall(r"(\w+) \(frames (\d+)-\d+", text.split("classes seen:")[1].splitlines()[0]))
    for a in truth:
        if a["known"]:
            assert a["kind"] in seen, f"{a['kind']} not seen: {text}"
            assert a["first_frame"] <= int(seen[a["kind"]]) <= a["last_frame"]

    # One clip, a playable video around the trigger, with its sidecar naming the unknown.
    assert re.search(r"^  clips: 1$", text, re.M), text
    clip = Path(re.search(r"clip: (\S+\.mp4)", text).group(1))
    sidecar = json.loads(clip.with_suffix(".json").read_text())
    assert "unknown" in sidecar["classes"]
    cap = cv2.VideoCapture(str(clip))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == sidecar["frames"] > sidecar["pre_roll_frames"] > 0

    # Every event the device sent reached the broker: the demo's count and our own subscriber agree.
    sent, delivered = (int(x) for x in re.search(r"events sent: (\d+), delivered: (\d+)", text).groups())
    summary = json.loads((out / "summary.json").read_text())
    sent_ids = {e["event_id"] for e in summary["events"]}
    assert sent == delivered == len(sent_ids) >= 2
    assert sent_ids <= {e["event_id"] for e in sub.events}
    assert [e["type"] for e in summary["events"] if e["unknown"]] == ["start", "end"]

    # The bundle the device ran is signed with the demo's key, and the report exists.
    bundle = open_bundle(out / "bundle", [out / "keys" / "demo.pub"])
    assert bundle.unknown and bundle.unknown["scorer"]
    report = Path(re.search(r"report: (\S+)", text).group(1))
    assert report.is_file() and report.stat().st_size > 10_000
