"""The monitor shows who is online, flags devices gone silent and events lost on the way (seq gaps)."""

from __future__ import annotations

import io
import json
import time

import paho.mqtt.client as mqtt
from rich.console import Console

from edgetl.fleet.monitor import FleetState, listen, render_table
from edgetl.fleet.mqtt import BrokerOptions, close
from edgetl.fleet.sim import SimDevice


def _text(state: FleetState, now: float | None = None) -> str:
    buf = io.StringIO()
    Console(file=buf, width=200).print(render_table(state, now))
    return buf.getvalue()


def _ev(seq: int, eid: str | None = None) -> dict:
    return {"event_id": eid or f"e{seq}", "seq": seq, "type": "start", "label": "car"}


def test_seq_gaps_are_counted_and_filled_by_late_events():
    s = FleetState()
    for seq in (1, 2, 5, 6):
        s.apply("cam1", "events", _ev(seq), now=100.0)
    d = s.devices["cam1"]
    assert d.gaps == 2 and d.missing == {3, 4}
    s.apply("cam1", "events", _ev(3), now=101.0)  # replayed from the device's outbox
    s.apply("cam1", "events", _ev(3), now=101.0)  # and delivered twice (QoS 1)
    assert d.missing == {4} and d.events == 5 and d.duplicates == 1
    assert "1 lost" in _text(s, 101.0)


def test_silence_is_three_learnt_telemetry_intervals():
    s = FleetState(default_interval=10.0)
    s.apply("cam1", "status", {"state": "online", "model_version": "v1"}, now=0.0)
    for t in (0.0, 2.0, 4.0, 6.0):
        s.apply("cam1", "telemetry", {"fps": 12.0, "model_version": "v1"}, now=t)
    d = s.devices["cam1"]
    assert abs(d.interval - 2.0) < 1e-6
    assert not d.silent(11.9, s.default_interval)
    assert d.silent(12.5, s.default_interval)
    assert "SILENT" in _text(s, 12.5) and "SILENT" not in _text(s, 7.0)
    s.apply("cam1", "status", {"state": "offline"}, now=13.0)
    assert not d.silent(20.0, s.default_interval)  # offline is shown as offline, not silent


def test_live_monitor_sees_telemetry_last_will_and_lost_events(broker, tmp_path):
    state = FleetState(default_interval=0.3)
    client = listen(BrokerOptions(url=broker.url), state)
    cam = SimDevice("cam1", "127.0.0.1", broker.port, tmp_path, telemetry_interval=0.2, model_version="2.1.0")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    try:
        assert cam.wait_connected(10)
        for _ in range(3):
            cam.emit_event()
        assert cam.reporter.wait_drained(10)
        # a second device whose events 3 and 4 never arrive
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        for seq in (1, 2, 5):
            pub.publish("edgetl/cam2/events", json.dumps(_ev(seq)), qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
                state.devices.get("cam1") and state.devices["cam1"].telemetry and state.devices["cam1"].events == 3
                and state.devices.get("cam2") and state.devices["cam2"].events == 3):
            time.sleep(0.05)
        cam1, cam2 = state.devices["cam1"], state.devices["cam2"]
        assert cam1.state == "online" and cam1.model_version == "2.1.0" and cam1.gaps == 0
        assert cam1.telemetry["outbox_depth"] == 0 and cam1.telemetry["fps"] > 0
        assert cam2.gaps == 2
        text = _text(state)
        assert "2.1.0" in text and "2 lost" in text
        time.sleep(1.0)  # the device has been connected a while when it vanishes
        killed_at = time.time()
        cam.kill()  # the connection drops without a DISCONNECT: the broker publishes the Last Will
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and state.devices["cam1"].state != "offline":
            time.sleep(0.05)
        assert state.devices["cam1"].state == "offline"
        # offline since it vanished, not since it connected (the Last Will is written at connect time)
        assert state.devices["cam1"].state_time >= killed_at - 0.2
        assert "offline" in _text(state)
    finally:
        pub.disconnect()
        pub.loop_stop()
        close(client)
        cam.stop()


def test_clean_stop_shows_stopped(broker, tmp_path):
    state = FleetState()
    client = listen(BrokerOptions(url=broker.url), state)
    cam = SimDevice("cam9", "127.0.0.1", broker.port, tmp_path)
    try:
        assert cam.wait_connected(10)
        cam.stop()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and getattr(state.devices.get("cam9"), "state", None) != "stopped":
            time.sleep(0.05)
        assert state.devices["cam9"].state == "stopped"
    finally:
        close(client)


def test_monitor_cli_prints_the_table_once(broker, tmp_path):
    from typer.testing import CliRunner

    from edgetl.cli import app

    cam = SimDevice("cam7", "127.0.0.1", broker.port, tmp_path, model_version="3.3.3")
    try:
        assert cam.wait_connected(10)
        # a wide terminal, so that rich does not squeeze the cells this test reads
        r = CliRunner().invoke(app, ["fleet", "monitor", "--broker", broker.url, "--once", "--duration", "1"],
                               env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        assert "cam7" in r.output and "3.3.3" in r.output and "1 online" in r.output
    finally:
        cam.stop()


def test_a_malformed_message_does_not_stop_the_live_monitor(broker):
    """A JSON array as event id (or any payload the state cannot take) must not end paho's network thread."""
    state = FleetState()
    client = listen(BrokerOptions(url=broker.url), state)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    try:
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        pub.publish("edgetl/odd/events", json.dumps({"event_id": ["e1"], "seq": 1}), qos=1).wait_for_publish(5)
        pub.publish("edgetl/cam1/telemetry", json.dumps({"fps": 9.5}), qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "cam1" not in state.devices:
            time.sleep(0.05)
        assert state.devices["cam1"].telemetry["fps"] == 9.5
    finally:
        pub.disconnect()
        pub.loop_stop()
        close(client)


def test_device_strings_are_shown_as_sent_not_as_markup():
    s = FleetState()
    s.apply("cam1", "status", {"state": "online", "model_version": "resnet[int8]"}, now=0.0)
    s.apply("cam2", "status", {"state": "online", "model_version": "v2[/]"}, now=0.0)  # would not render at all
    s.apply("cam3", "telemetry", {"model_version": {"major": 3}}, now=0.0)
    text = _text(s, 1.0)
    assert "resnet[int8]" in text and "v2[/]" in text and "major" in text
