"""The runtime with an `mqtt` section: events, status and command results go through a real Mosquitto."""

from __future__ import annotations

import json
import queue
import threading
import time

import paho.mqtt.client as mqtt

from edgetl_device.config import DeviceConfig
from tests.test_record_clips import scene_frames, write_video


def test_runtime_reports_over_mqtt_and_answers_commands(shared_data, tmp_path, broker):
    frames = scene_frames(shared_data, entry=20, exit=40, total=60)
    video = write_video(tmp_path / "scene.avi", frames * 20)  # long enough for the command round trip
    models = shared_data / "models"
    cfg = DeviceConfig.model_validate({
        "device_id": "cam-mqtt",
        "camera": {"source": str(video), "paced": True, "fps": 10},
        "model": {"path": models / "mobilenet_v1_0.25_128_quant.tflite", "labels": models / "imagenet_labels.txt",
                  "num_threads": 1},
        "decision": {"record_unknown": False, "record_classes": ["macaw"], "k": 2, "n": 3},
        "recording": {"pre_roll": 0.5, "post_roll": 0.5},
        "storage": {"data_dir": tmp_path / "data", "min_free_mb": 1},
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "outbox_path": tmp_path / "data/outbox.sqlite3"},
    })
    got: queue.Queue[tuple[str, dict]] = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-observer")
    client.on_message = lambda c, u, m: got.put((m.topic, json.loads(m.payload)))
    client.connect("127.0.0.1", broker.port)
    client.subscribe("edgetl/cam-mqtt/#", qos=1)
    client.loop_start()

    from edgetl_device.runtime import Runtime

    runtime = Runtime(cfg)
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    seen: dict[str, list[dict]] = {}
    try:
        deadline = time.monotonic() + 30
        sent = False
        while time.monotonic() < deadline:
            try:
                topic, msg = got.get(timeout=0.2)
            except queue.Empty:
                continue
            kind = topic.split("/", 2)[2]
            seen.setdefault(kind, []).append(msg)
            if kind == "status" and msg.get("state") == "online" and not sent:
                client.publish("edgetl/cam-mqtt/cmd/set_threshold",
                               json.dumps({"schema": 1, "request_id": "r1", "value": 0.9}), qos=1)
                sent = True
            if seen.get("cmd_result") and any(e["type"] == "start" for e in seen.get("events", [])):
                break
    finally:
        runtime.stop()
        thread.join(timeout=30)
        client.loop_stop()
        client.disconnect()
    assert seen.get("events"), seen.keys()
    start = next(e for e in seen["events"] if e["type"] == "start")
    assert start["label"] == "macaw" and start["device_id"] == "cam-mqtt" and start["seq"] >= 1
    result = seen["cmd_result"][0]
    assert result["request_id"] == "r1" and result["ok"] is True, result
    assert runtime.decider.threshold == 0.9
