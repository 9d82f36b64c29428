"""The event store keeps each event once, whatever the back end (SQLite file or PostgreSQL)."""

from __future__ import annotations

import time
import uuid

import pytest

from edgetl.errors import EdgetlError
from edgetl.fleet.store import Message, open_store, parse_time
from edgetl_device.events import new_event

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _pg_reachable() -> str | None:
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=2).close()
        return None
    except Exception as exc:  # any failure means: skip with the reason
        return f"PostgreSQL not reachable at {PG_URL}: {exc}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store(tmp_path / "fleet.sqlite3")
        yield s
        s.close()
        return
    reason = _pg_reachable()
    if reason:
        pytest.skip(reason)
    s = open_store(PG_URL, prefix=f"t{uuid.uuid4().hex[:10]}_")
    yield s
    s.drop()
    s.close()


def _event(device: str, seq: int, label: str = "ship", t: float | None = None, unknown: bool = False) -> Message:
    e = new_event(device, "start", f"obj{seq}", label, 0.9, unknown=unknown, snapshot_path=f"snap/{seq}.jpg")
    e["seq"] = seq
    if t is not None:
        e["time"] = t
    return Message(device, "events", e, time.time())


def test_duplicate_events_are_stored_once(store):
    msgs = [_event("cam1", i) for i in range(1, 6)]
    first = store.write_batch(msgs)
    again = store.write_batch(msgs[:3])  # a QoS 1 redelivery
    assert (first.events_new, first.events_duplicate) == (5, 0)
    assert (again.events_new, again.events_duplicate) == (0, 3)
    assert store.count_events() == 5
    (device,) = store.devices()
    assert device["device_id"] == "cam1" and device["events"] == 5 and device["last_seq"] == 5


def test_query_filters_by_device_time_and_class(store):
    base = 1_800_000_000.0
    store.write_batch([
        _event("cam1", 1, "ship", base), _event("cam1", 2, "empty", base + 10),
        _event("cam2", 1, "ship", base + 20), _event("cam2", 2, "ship", base + 30, unknown=True),
    ])
    assert [e["seq"] for e in store.events(device="cam1")] == [1, 2]
    assert [(e["device_id"], e["seq"]) for e in store.events(label="ship", since=base + 5)] == [
        ("cam2", 1), ("cam2", 2)]
    assert [e["device_id"] for e in store.events(unknown=True)] == ["cam2"]
    assert store.events(since=base + 100) == []
    assert store.labels() == ["empty", "ship"]
    newest = store.events(newest_first=True, limit=1)[0]
    assert newest["time"] == base + 30 and newest["unknown"] is True
    assert store.event(newest["event_id"])["snapshot_path"] == "snap/2.jpg"


def test_status_and_telemetry_update_device_state(store):
    now = time.time()
    online = {"schema": 1, "device_id": "cam1", "state": "online", "time": now, "model_version": "v1"}
    store.write_batch([Message("cam1", "status", online, now)])
    store.write_batch([Message("cam1", "status", online, now + 1)])  # retained copy on resubscribe
    store.write_batch([Message("cam1", "telemetry", {"schema": 1, "device_id": "cam1", "time": now + 2,
                                                    "fps": 12.5, "model_version": "v2"}, now + 2)])
    offline = {**online, "state": "offline", "time": now + 3, "model_version": "v2"}
    store.write_batch([Message("cam1", "status", offline, now + 3)])
    (device,) = store.devices()
    assert device["state"] == "offline"
    assert device["model_version"] == "v2"
    assert device["telemetry"]["fps"] == 12.5
    assert [s["state"] for s in store.status_history("cam1")] == ["online", "offline"]
    assert [t["fps"] for t in store.telemetry("cam1")] == [12.5]


def test_old_telemetry_is_pruned_events_are_kept(store):
    store.write_batch([Message("cam1", "telemetry", {"time": t, "fps": 10.0}, t) for t in (100.0, 200.0, 300.0)])
    store.write_batch([_event("cam1", 1, t=50.0)])
    assert store.prune_telemetry(before=250.0) == 2
    assert [t["time"] for t in store.telemetry("cam1")] == [300.0]
    assert store.count_events() == 1


def test_malformed_messages_are_rejected_not_stored(store):
    bad = Message("cam1", "events", {"label": "ship"}, time.time())  # no event_id
    result = store.write_batch([bad, _event("cam1", 1)])
    assert (result.rejected, result.events_new) == (1, 1)
    assert store.count_events() == 1


def test_parse_time_accepts_iso_unix_and_ages():
    assert parse_time("1800000000") == 1_800_000_000.0
    assert parse_time("2026-11-28T12:00:00Z") == parse_time("2026-11-28T12:00:00")
    assert parse_time("15m", now=1000.0) == 100.0
    with pytest.raises(EdgetlError, match="ISO 8601"):
        parse_time("yesterday-ish")


def test_a_folder_is_not_a_database(tmp_path):
    with pytest.raises(EdgetlError, match="folder"):
        open_store(tmp_path)


@pytest.mark.parametrize("bad", [
    {"label": {"name": "ship"}},  # a JSON object where the contract has a string
    {"type": ["start"]},
    {"seq": 10**30},  # beyond a 64-bit integer column
    {"score": 10**400},  # an integer too large for a float
    {"model_version": [2, 0]},
])
def test_fields_of_the_wrong_type_are_rejected_and_the_batch_is_kept(store, bad):
    """One device's malformed event must not make the whole batch (and the recorder retrying it) fail."""
    good = _event("cam1", 1)
    wrong = _event("cam2", 1)
    wrong.payload.update(bad)
    result = store.write_batch([wrong, good])
    assert (result.rejected, result.events_new) == (1, 1)
    assert [e["device_id"] for e in store.events()] == ["cam1"]


def test_other_kinds_with_wrong_types_are_rejected(store):
    now = time.time()
    result = store.write_batch([
        Message("cam1", "status", {"state": "online", "time": now, "model_version": {"v": 1}}, now),
        Message("cam1", "telemetry", {"time": now, "model_version": ["v1"]}, now),
        Message("cam1", "cmd_result", {"request_id": "r1", "ok": False, "error": {"code": 3}}, now),
        Message("cam1", "status", {"state": "online", "time": now, "model_version": "v1"}, now),
    ])
    assert (result.rejected, result.status) == (3, 1)
    assert store.devices()[0]["model_version"] == "v1"


def test_every_outage_is_recorded_although_the_last_will_repeats(store):
    """A device's Last Will is fixed when it first connects: each outage brings the same offline payload."""
    will = {"schema": 1, "device_id": "cam1", "state": "offline", "time": 1000.0, "model_version": None}
    history = [({"state": "online", "time": 1001.0}, 1001.0), (will, 1050.0),  # first Wi-Fi drop
               ({"state": "online", "time": 1100.0}, 1100.0), (will, 1200.0)]  # second drop: same will
    for payload, received in history:
        store.write_batch([Message("cam1", "status", payload, received)])
    store.write_batch([Message("cam1", "status", will, 1300.0)])  # the retained copy on a resubscribe
    (device,) = store.devices()
    assert device["state"] == "offline"
    assert [s["state"] for s in store.status_history("cam1")] == ["online", "offline", "online", "offline"]
