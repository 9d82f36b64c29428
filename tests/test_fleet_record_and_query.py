"""Events from real devices reach the store once each, and `edgetl fleet events` finds and exports them."""

from __future__ import annotations

import csv
import json
import sys
import threading

import paho.mqtt.client as mqtt
import pytest
from typer.testing import CliRunner

from edgetl.cli import app
from edgetl.errors import EdgetlError
from edgetl.fleet.mqtt import BrokerOptions
from edgetl.fleet.recorder import Recorder
from edgetl.fleet.sim import SimDevice
from edgetl.fleet.store import open_store
from tests.support.waiting import wait_until

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _wait(predicate, timeout: float = 10.0) -> bool:
    return wait_until(predicate, timeout)


def test_recorder_stores_every_event_once_and_cli_exports(broker, tmp_path):
    db = tmp_path / "fleet.sqlite3"
    store = open_store(db)
    opts = BrokerOptions(url=broker.url)
    cams = [SimDevice(f"cam{i}", "127.0.0.1", broker.port, tmp_path / "devices", telemetry_interval=0.3)
            for i in (1, 2)]
    try:
        with Recorder(store, opts) as rec:
            assert all(c.wait_connected(10) for c in cams)
            sent = [c.emit_event(label="person" if i % 2 else "car") for c in cams for i in range(10)]
            sent.append(cams[0].emit_event(label="ship", unknown=True))
            assert all(c.reporter.wait_drained(10) for c in cams)
            # the same event again, as a QoS 1 redelivery would bring it
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            pub.publish("edgetl/cam1/events", json.dumps({**sent[0], "seq": 1}), qos=1).wait_for_publish(5)
            pub.publish("edgetl/cam1/events", b"not json", qos=1).wait_for_publish(5)
            pub.disconnect()
            pub.loop_stop()
            assert _wait(lambda: store.count_events() == len(sent) and rec.stats.totals.events_duplicate >= 1)
            assert _wait(lambda: rec.stats.totals.telemetry >= 2)
            assert rec.wait_idle()
        assert rec.stats.malformed == 1
        assert {e["event_id"] for e in store.events(limit=None)} == {e["event_id"] for e in sent}
        devices = {d["device_id"]: d for d in store.devices()}
        assert devices["cam1"]["events"] == 11 and devices["cam1"]["last_seq"] == 11
        assert devices["cam2"]["state"] == "online" and devices["cam2"]["telemetry"]["fps"] > 0
    finally:
        for c in cams:
            c.stop()
        store.close()

    runner = CliRunner()
    out_csv = tmp_path / "cam1.csv"
    r = runner.invoke(app, ["fleet", "events", "--db", str(db), "--device", "cam1", "--class", "person",
                            "--since", "1h", "--format", "csv", "-o", str(out_csv)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 5 and {row["label"] for row in rows} == {"person"} and {row["device_id"] for row in rows} == {
        "cam1"}
    r = runner.invoke(app, ["fleet", "events", "--db", str(db), "--unknown", "--format", "json"])
    assert r.exit_code == 0, r.output
    (unknown,) = json.loads(r.stdout)
    assert unknown["label"] == "ship" and unknown["unknown"] is True
    png = tmp_path / "events.png"
    r = runner.invoke(app, ["fleet", "events", "--db", str(db), "--since", "2h", "--plot", str(png)])
    assert r.exit_code == 0 and "21 events" in r.stdout
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 800
        assert len(set(im.convert("RGB").getdata())) > 10  # bars and text were drawn, not a blank canvas
    r = runner.invoke(app, ["fleet", "events", "--db", str(db), "--class", "zebra", "--plot", str(png)])
    assert r.exit_code == 2 and "nothing to plot" in r.output


def test_recorder_gets_events_sent_while_it_was_down(broker, tmp_path):
    """The persistent session makes the broker keep QoS 1 events for the recorder."""
    store = open_store(tmp_path / "fleet.sqlite3")
    opts = BrokerOptions(url=broker.url)
    cam = SimDevice("cam1", "127.0.0.1", broker.port, tmp_path / "devices")
    try:
        with Recorder(store, opts, client_id="rec-test"):
            assert cam.wait_connected(10)
            cam.emit_event()
            assert _wait(lambda: store.count_events() == 1)
        for _ in range(5):
            cam.emit_event()
        assert cam.reporter.wait_drained(10)
        with Recorder(store, opts, client_id="rec-test") as rec:
            assert _wait(lambda: store.count_events() == 6), store.count_events()
            assert rec.wait_idle()
    finally:
        cam.stop()
        store.close()


def test_record_cli_runs_for_a_duration(broker, tmp_path):
    db = tmp_path / "fleet.sqlite3"
    cam = SimDevice("cam1", "127.0.0.1", broker.port, tmp_path / "devices")
    try:
        assert cam.wait_connected(10)
        cam.emit_event()  # published before the recorder ever subscribed: not stored (no session yet)
        assert cam.reporter.wait_drained(10)
        timer = threading.Timer(1.0, cam.emit_event)
        timer.start()
        r = CliRunner().invoke(app, ["fleet", "record", "--broker", broker.url, "--db", str(db), "--duration", "3",
                                     "--keep-telemetry", "7d"])
        timer.join()
        assert r.exit_code == 0, r.output
        assert "stored 1 new events (0 duplicates), 1 status" in r.output
    finally:
        cam.stop()


def test_recorder_into_postgresql(broker, tmp_path):
    import uuid

    try:
        store = open_store(PG_URL, prefix=f"t{uuid.uuid4().hex[:10]}_")
    except EdgetlError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    cam = SimDevice("cam1", "127.0.0.1", broker.port, tmp_path / "devices", telemetry_interval=0.3)
    try:
        with Recorder(store, BrokerOptions(url=broker.url), client_id="rec-pg") as rec:
            assert cam.wait_connected(10)
            sent = [cam.emit_event() for _ in range(5)]
            assert _wait(lambda: store.count_events() == 5 and rec.stats.totals.telemetry >= 1)
            assert rec.wait_idle()
        assert [e["seq"] for e in store.events(device="cam1")] == [1, 2, 3, 4, 5]
        assert {e["event_id"] for e in store.events()} == {e["event_id"] for e in sent}
        assert store.devices()[0]["state"] == "online"
    finally:
        cam.stop()
        store.drop()
        store.close()


def test_events_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["fleet", "events", "--db", str(tmp_path / "missing.sqlite3")])
    assert r.exit_code == 2 and "fleet record" in r.output
    store = open_store(tmp_path / "f.sqlite3")
    store.close()
    r = runner.invoke(app, ["fleet", "events", "--db", str(tmp_path / "f.sqlite3"), "--since", "last tuesday"])
    assert r.exit_code == 2 and "ISO 8601" in r.output
    r = runner.invoke(app, ["fleet", "record", "--broker", "http://x", "--db", str(tmp_path / "f.sqlite3")])
    assert r.exit_code == 2 and "mqtt://" in r.output
    r = runner.invoke(app, ["fleet", "serve", "--db", str(tmp_path / "missing.sqlite3")])
    assert r.exit_code == 2 and "fleet record" in r.output
    r = runner.invoke(app, ["fleet", "monitor", "--broker", "mqtt://127.0.0.1:1", "--once"])
    assert r.exit_code == 2 and "cannot reach broker" in r.output


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    """`pip install "edgetl[fleet]"` has no matplotlib: `fleet events --plot` said so in a traceback."""
    from edgetl.fleet.plots import plot_events

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an install without it looks like to import
    row = {"time": 1795869509.0, "unknown": False, "label": "person", "device_id": "cam1"}
    with pytest.raises(EdgetlError, match="--plot needs matplotlib"):
        plot_events([row], tmp_path / "events.png")


def test_every_network_drop_of_a_device_is_recorded_as_offline(broker, tmp_path):
    """The broker sends the device's Last Will (the same payload each time) at every drop; each one counts."""
    import socket

    store = open_store(tmp_path / "fleet.sqlite3")
    cam = SimDevice("cam1", "127.0.0.1", broker.port, tmp_path / "devices")

    def states() -> list[str]:
        return [s["state"] for s in store.status_history("cam1")]

    try:
        with Recorder(store, BrokerOptions(url=broker.url)) as rec:
            assert cam.wait_connected(10)
            assert _wait(lambda: states() == ["online"])
            for drops in (1, 2):
                cam.reporter.client.socket().shutdown(socket.SHUT_RDWR)  # Wi-Fi gone: no DISCONNECT is sent
                assert _wait(lambda n=drops: states().count("offline") == n), states()
                assert store.devices()[0]["state"] == "offline"
                assert _wait(lambda n=drops: states().count("online") == n + 1, 15), states()  # paho reconnects
            assert rec.wait_idle()
        assert states() == ["online", "offline"] * 2 + ["online"]
    finally:
        cam.stop()
        store.close()
