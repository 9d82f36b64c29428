"""The recorder loses nothing when the broker restarts or the database is briefly unavailable."""

from __future__ import annotations

import sqlite3
import threading
import time

from edgetl.fleet.mqtt import BrokerOptions
from edgetl.fleet.recorder import Recorder
from edgetl.fleet.sim import SimDevice
from edgetl.fleet.store import SqliteStore
from tests.support.waiting import wait_until


def _wait(predicate, timeout: float = 15.0) -> bool:
    return wait_until(predicate, timeout)


def test_broker_restart_with_persistence_loses_no_event(broker_factory, tmp_path):
    """The broker keeps the recorder's session across its restart, the device keeps events in its outbox."""
    b = broker_factory(persistence=True).start()
    store = SqliteStore(tmp_path / "fleet.sqlite3")
    cam = SimDevice("cam1", "127.0.0.1", b.port, tmp_path / "dev")
    try:
        with Recorder(store, BrokerOptions(url=b.url), client_id="rec-restart") as rec:
            assert cam.wait_connected(10)
            sent = [cam.emit_event() for _ in range(5)]
            assert _wait(lambda: store.count_events() == 5)
            b.stop()  # graceful: Mosquitto saves sessions and queued messages
            sent += [cam.emit_event() for _ in range(5)]  # into the device's outbox meanwhile
            b.start()
            sent += [cam.emit_event() for _ in range(5)]
            assert _wait(lambda: store.count_events() == 15), store.count_events()
            assert rec.wait_idle()
        assert {e["event_id"] for e in store.events()} == {e["event_id"] for e in sent}
        assert [e["seq"] for e in store.events(device="cam1")] == list(range(1, 16))
    finally:
        cam.stop()
        store.close()


def test_locked_database_is_retried_until_it_frees(broker, tmp_path, caplog):
    db = tmp_path / "fleet.sqlite3"
    store = SqliteStore(db, busy_timeout=0.2)
    cam = SimDevice("cam1", "127.0.0.1", broker.port, tmp_path / "dev")
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        with Recorder(store, BrokerOptions(url=broker.url)) as rec:
            assert cam.wait_connected(10)
            blocker.execute("BEGIN EXCLUSIVE")  # e.g. a backup or a long report holding the file
            sent = [cam.emit_event() for _ in range(5)]
            assert cam.reporter.wait_drained(10)
            time.sleep(1.0)  # the recorder's writes fail meanwhile and are retried
            threading.Timer(0.5, blocker.execute, ["COMMIT"]).start()
            assert _wait(lambda: store.count_events() == 5), store.count_events()
            assert rec.wait_idle()
        assert {e["event_id"] for e in store.events()} == {e["event_id"] for e in sent}
        assert any("store write failed" in r.message and "locked" in r.message for r in caplog.records)
    finally:
        blocker.close()
        cam.stop()
        store.close()


def test_one_malformed_event_does_not_stall_the_recorder(broker, tmp_path):
    """A device that sends a JSON object where a string belongs: that message is rejected, the rest stored."""
    import json

    import paho.mqtt.client as mqtt

    store = SqliteStore(tmp_path / "fleet.sqlite3")
    cam = SimDevice("cam1", "127.0.0.1", broker.port, tmp_path / "dev")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    try:
        with Recorder(store, BrokerOptions(url=broker.url)) as rec:
            assert cam.wait_connected(10)
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            for bad in ({"event_id": "bad1", "label": {"name": "car"}}, {"event_id": "bad2", "seq": 10**30}):
                pub.publish("edgetl/odd/events", json.dumps(bad), qos=1).wait_for_publish(5)
            sent = [cam.emit_event() for _ in range(3)]
            assert _wait(lambda: store.count_events() == 3, 10), store.count_events()
            assert rec.wait_idle()
        assert rec.stats.totals.rejected == 2
        assert {e["event_id"] for e in store.events()} == {e["event_id"] for e in sent}
    finally:
        pub.disconnect()
        pub.loop_stop()
        cam.stop()
        store.close()
