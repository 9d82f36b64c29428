"""Retained status (online/stopped/model version) and periodic telemetry over a real broker."""

from __future__ import annotations

import time

import pytest

from edgetl_device.config import MqttConfig, MqttTlsConfig
from edgetl_device.errors import DeviceError
from edgetl_device.mqtt import TELEMETRY_FIELDS, MqttReporter
from tests.support.mqtt_collector import Collector


def config(port, tmp_path, **kw):
    return MqttConfig(port=port, outbox_path=tmp_path / "o.sqlite3", **kw)


def test_telemetry_carries_runtime_and_host_fields(broker, tmp_path):
    calls = []

    def source():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("camera stats unavailable")  # a failing source must not stop telemetry
        return {"fps": 14.5, "inference_ms_p50": 21.0, "inference_ms_p95": 30.5, "motion_skip_ratio": 0.6,
                "model_version": "1.2.0", "camera_online": True}

    with Collector(broker.port) as sub:
        reporter = MqttReporter(config(broker.port, tmp_path, telemetry_interval=0.1), "cam1", source)
        assert sub.wait_for(lambda s: len(s.of("telemetry")) >= 3, 5)
        reporter.stop()
    t = sub.of("telemetry")[0]
    assert set(TELEMETRY_FIELDS) <= set(t) and t["schema"] == 1 and t["device_id"] == "cam1"
    assert (t["fps"], t["model_version"], t["camera_online"]) == (14.5, "1.2.0", True)
    assert t["disk_free_mb"] > 0 and t["uptime_s"] >= 0 and t["outbox_depth"] == 0 and t["outbox_dropped"] == 0
    assert t["cpu_percent"] is None or 0 <= t["cpu_percent"] <= 100
    assert sub.of("status")[-1]["model_version"] == "1.2.0"


def test_status_is_retained_online_then_stopped(broker, tmp_path):
    reporter = MqttReporter(config(broker.port, tmp_path), "cam1")
    assert reporter.wait_connected(5)
    reporter.publish("status", {"state": "online", "model_version": "2.0"})
    time.sleep(0.2)
    with Collector(broker.port, "edgetl/cam1/status") as late:  # joins after: gets the retained one
        assert late.wait_for(lambda s: s.of("status"), 5)
        first = late.of("status")[0]
        reporter.stop()
        assert late.wait_for(lambda s: s.of("status")[-1]["state"] == "stopped", 5)
    assert (first["state"], first["model_version"], first["schema"]) == ("online", "2.0", 1)
    with Collector(broker.port, "edgetl/cam1/status") as later:
        assert later.wait_for(lambda s: s.of("status"), 5)
        assert later.of("status")[0]["state"] == "stopped"


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(DeviceError, match="device id"):
        MqttReporter(config(1883, tmp_path), "cam/1#")
    with pytest.raises(DeviceError, match="ca_file"):
        MqttReporter(config(1883, tmp_path, tls=MqttTlsConfig(ca_file=tmp_path / "missing.pem")), "cam1")
    reporter = MqttReporter(config(1, tmp_path, stop_flush_timeout=0), "cam1")  # nothing listens on port 1
    with pytest.raises(ValueError, match="kind"):
        reporter.publish("gossip", {})
    reporter.stop()


def test_status_fields_survive_a_broker_restart(broker, tmp_path):
    # The runtime adds disk_low to its status; the retained status re-published on reconnect must keep it.
    reporter = MqttReporter(config(broker.port, tmp_path), "cam1")
    try:
        assert reporter.wait_connected(5)
        reporter.publish("status", {"state": "online", "model_version": "2.0", "disk_low": True,
                                    "disk_free_mb": 12.5})
        broker.restart()  # a broker without persistence: the retained status is gone until the device re-sends it
        deadline = time.monotonic() + 20
        while reporter.reconnects < 1:
            assert time.monotonic() < deadline, "reporter did not reconnect"
            time.sleep(0.1)
        with Collector(broker.port, "edgetl/cam1/status") as late:
            assert late.wait_for(lambda s: s.of("status"), 5)
            status = late.of("status")[-1]
        assert (status["state"], status["model_version"], status["disk_low"], status["disk_free_mb"]) == \
            ("online", "2.0", True, 12.5)
    finally:
        reporter.stop()
