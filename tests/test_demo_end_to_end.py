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

from edgetl import demo
from edgetl.demo import DEVICE_ID
from edgetl_device.bundle import open_bundle
from edgetl_device.reporting import read_jsonl
from tests.support.mosquitto import MosquittoBroker, mosquitto_binary

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


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory, shared_data):
    """One `edgetl demo --quick` run (the expensive part), with a real broker and our own subscriber."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto not installed (tools/test.sh installs it)")
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "demo"
    with MosquittoBroker(workdir=tmp / "broker") as broker:
        sub = _Subscriber(broker.port, f"edgetl/{DEVICE_ID}/events")
        env = dict(os.environ, EDGETL_SHARED_DATA=str(shared_data))
        try:
            proc = subprocess.run([sys.executable, "-m", "edgetl", "demo", "--quick", "--out", str(out),
                                   "--broker", broker.url], capture_output=True, text=True, timeout=300, env=env)
        finally:
            sub.stop()
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out, proc.stdout, sub.events


def test_quick_demo_sees_the_unknown_once_and_delivers_every_event(quick_demo):
    out, text, received = quick_demo

    # It says the data is synthetic and where the weights came from.
    assert "SYNTHETIC camera scenes" in text
    assert "ImageNet weights from" in text

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
    assert sent_ids <= {e["event_id"] for e in received}
    assert [e["type"] for e in summary["events"] if e["unknown"]] == ["start", "end"]

    # The bundle the device ran is signed with the demo's key, and the report exists.
    bundle = open_bundle(out / "bundle", [out / "keys" / "demo.pub"])
    assert bundle.unknown and bundle.unknown["scorer"]
    report = Path(re.search(r"report: (\S+)", text).group(1))
    assert report.is_file() and report.stat().st_size > 10_000


def test_without_a_broker_the_same_device_run_keeps_every_event_in_the_local_log(quick_demo, tmp_path):
    """The demo's fallback when no broker answers: the device writes events to its local JSONL log."""
    out, _, _ = quick_demo
    truth = json.loads((out / "video" / "truth.json").read_text())
    drone = next(a for a in truth if not a["known"])
    lines: list[str] = []
    result = demo.run_device(tmp_path, out / "bundle", out / "keys" / "demo.pub", out / "video" / "camera.avi",
                             broker=None, ignore=["Empty"], fps=10.0, echo=lines.append)
    assert result["transport"] == "local event log" and "local event log" in lines[0]
    logged = read_jsonl(tmp_path / "device" / "events.jsonl", "event")
    assert result["events_sent"] == result["events_delivered"] == len(logged) >= 2
    assert [e["seq"] for e in logged] == list(range(1, len(logged) + 1))
    assert len(result["clips"]) == 1 and len(result["unknown_starts"]) == 1
    assert drone["first_frame"] <= result["unknown_starts"][0] <= drone["last_frame"]
