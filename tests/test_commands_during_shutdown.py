"""MQTT commands that land while the runtime is shutting down (real Mosquitto, real video, real MqttReporter).

The frame loop applies commands between frames; once it has run its last task, a command must neither wait out
its timeout (holding the reporter's stop and losing its result) nor run beside the shutdown (a manual recording
started then would publish a start event that never ends). Small Runtime subclasses only pick the moment at
which the command is sent; the broker, the reporter and the camera are real.
"""

from __future__ import annotations

import json
import time

from edgetl_device.config import DeviceConfig
from edgetl_device.runtime import Runtime
from tests.support.mqtt_collector import Collector
from tests.support.waiting import wait_until

DEVICE = "cam-shutdown"


def mqtt_config(shared_data, tmp_path, port: int) -> DeviceConfig:
    models = shared_data / "models"
    return DeviceConfig.model_validate({
        "device_id": DEVICE,
        "camera": {"source": str(shared_data / "videos/vtest.avi")},
        "model": {"path": models / "mobilenet_v1_0.25_128_quant.tflite", "labels": models / "imagenet_labels.txt",
                  "num_threads": 1},
        "decision": {"record_unknown": False},
        "recording": {"pre_roll": 0.5, "post_roll": 0.5, "cooldown": 0},
        "storage": {"data_dir": tmp_path / "data", "min_free_mb": 1},
        "mqtt": {"host": "127.0.0.1", "port": port, "outbox_path": tmp_path / "data/outbox.sqlite3"},
    })


def wait_online(collector: Collector) -> None:
    # the device publishes "online" after subscribing to its commands, on the same connection
    assert collector.wait_for(lambda c: any(s.get("state") == "online" for s in c.of("status")), 15), \
        "device never came online"


def send(collector: Collector, name: str, payload: dict) -> None:
    collector.client.publish(f"edgetl/{DEVICE}/cmd/{name}", json.dumps({"schema": 1, **payload}), qos=1)


def results(collector: Collector, request_id: str) -> list[dict]:
    return [r for r in collector.of("cmd_result") if r.get("request_id") == request_id]


def test_a_command_after_the_last_frame_is_applied_and_answered_without_delaying_the_stop(
        shared_data, tmp_path, broker):
    with Collector(broker.port, f"edgetl/{DEVICE}/#", qos=1) as collector:
        sent_at: list[float] = []

        class CommandOnLastFrame(Runtime):
            def _process(self, prepared) -> None:
                super()._process(prepared)
                if self.frames_in == 20:  # max_frames: the loop runs no more tasks after this frame
                    wait_online(collector)
                    send(collector, "set_threshold", {"request_id": "late", "value": 0.9})
                    assert wait_until(lambda: self._tasks.qsize() > 0, 10), "command never reached the runtime"
                    sent_at.append(time.monotonic())

        runtime = CommandOnLastFrame(mqtt_config(shared_data, tmp_path, broker.port))
        status = runtime.run(max_frames=20)
        stop_s = time.monotonic() - sent_at[0]
        assert status["state"] == "stopped"
        assert collector.wait_for(lambda c: results(c, "late"), 5), "no cmd_result for the late command"
    assert results(collector, "late")[0]["ok"] is True, results(collector, "late")
    assert runtime.decider.threshold == 0.9
    assert stop_s < 3.0, f"stop took {stop_s:.1f}s"  # was held by a command waiting out its 10 s timeout


def test_a_manual_recording_started_during_shutdown_is_refused_not_left_open(shared_data, tmp_path, broker):
    with Collector(broker.port, f"edgetl/{DEVICE}/#", qos=1) as collector:

        class CommandDuringShutdown(Runtime):
            def _report_status(self) -> None:
                if self.state == "stopped":  # the final snapshot: the clip is closed, the reporter still up
                    wait_online(collector)
                    send(collector, "record", {"request_id": "rec", "action": "start"})
                    assert collector.wait_for(lambda c: results(c, "rec"), 10), "no cmd_result for record start"
                super()._report_status()

        runtime = CommandDuringShutdown(mqtt_config(shared_data, tmp_path, broker.port))
        runtime.run(max_frames=20)
        assert collector.wait_for(lambda c: any(s.get("state") == "stopped" for s in c.of("status")), 10)
        manual = [e for e in collector.of("events") if e.get("label") == "manual"]
    result = results(collector, "rec")[0]
    assert result["ok"] is False and "shutting down" in result["error"], result
    assert manual == [], manual  # a start event here would never get its end
