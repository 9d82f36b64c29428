"""Remote commands are validated; every malformed one gets an error result and nothing crashes."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetl_device.commands import COMMANDS, dispatch
from edgetl_device.config import MqttConfig
from edgetl_device.mqtt import MqttReporter
from edgetl_device.ota import ModelUpdater
from edgetl_device.reporting import JsonlReporter, read_jsonl
from tests.support.device_target import ModelHolder
from tests.support.mqtt_collector import Collector


@pytest.fixture
def target(tmp_path):
    return ModelHolder(tmp_path / "device")


@pytest.fixture
def reporter(tmp_path):
    r = JsonlReporter(tmp_path / "report.jsonl", "cam1")
    yield r
    r.stop()


def run(name, doc, target, reporter):
    payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return dispatch(name, payload, target, reporter)


def test_valid_commands_act_on_the_device_and_answer(target, reporter, tmp_path):
    assert run("ping", {"schema": 1, "request_id": "r1"}, target, reporter)["result"]["pong"] is True
    assert run("set_threshold", {"request_id": "r2", "value": 0.25}, target, reporter)["ok"]
    assert target.threshold == 0.25
    snap = run("snapshot", {"request_id": "r3"}, target, reporter)["result"]["path"]
    assert (tmp_path / "device" / "snapshot_1.jpg").stat().st_size > 0 and snap.endswith(".jpg")
    assert run("record", {"action": "start", "duration": 5}, target, reporter)["result"]["recording"]
    assert target.recording == "manual-5.0"
    assert run("record", {"action": "stop"}, target, reporter)["ok"] and target.recording is None
    assert run("reload_config", {}, target, reporter)["ok"] and target.reloads == 1
    results = read_jsonl(tmp_path / "report.jsonl", "cmd_result")
    assert [r["request_id"] for r in results[:3]] == ["r1", "r2", "r3"]
    assert all(r["ok"] and r["schema"] == 1 and r["command"] for r in results)
    # energy / Mahalanobis / combined open-set thresholds are negative numbers
    assert run("set_threshold", {"value": -1.25}, target, reporter)["ok"] and target.threshold == -1.25


@pytest.mark.parametrize("name, doc, why", [
    ("reboot", {}, "unknown command"),
    ("set_threshold", {"value": "0.5"}, "value"),
    ("set_threshold", {"value": -2e6}, "greater than or equal"),
    ("set_threshold", {"value": 2e6}, "less than or equal"),
    ("set_threshold", {}, "value: Field required"),
    ("set_threshold", {"value": 0.4, "schema": 2}, "schema"),
    ("set_threshold", {"value": 0.4, "colour": "red"}, "colour"),
    ("record", {"action": "pause"}, "action"),
    ("record", {"action": "start", "duration": 1e9}, "duration"),
    ("update_model", {"url": "file:///x", "path": "/x"}, "exactly one"),
    ("update_model", {"url": "file:///x", "sha256": "abc"}, "sha256"),
    ("ping", b"\xff\xfe", "not UTF-8 JSON"),
    ("ping", b"[1, 2]", "JSON object"),
    ("ping", b"{", "not UTF-8 JSON"),
    # the exact texts docs/mqtt.md shows: one message per field, not one per branch of a number union
    ("set_threshold", {"value": "0.5"}, "invalid set_threshold: value: Input should be a valid number"),
    ("set_threshold", b'{"value": NaN}', "value: Input should be a finite number"),
    ("set_threshold", b'{"value": -Infinity}', "value: Input should be a finite number"),
    ("record", b'{"action": "start", "duration": NaN}', "duration: Input should be a finite number"),
    # valid JSON nested past Python's recursion limit: a payload error, not a RecursionError traceback
    pytest.param("ping", b"[" * 100_000 + b"]" * 100_000, "payload is nested too deeply", id="deep-array"),
    pytest.param("ping", b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, "payload is nested too deeply", id="deep-object"),
])
def test_malformed_commands_get_an_error_result(target, reporter, tmp_path, name, doc, why):
    before = target.status()
    msg = run(name, doc, target, reporter)
    assert msg["ok"] is False and why in msg["error"], msg["error"]
    assert target.status() == before
    assert read_jsonl(tmp_path / "report.jsonl", "cmd_result")[-1]["error"] == msg["error"]


def test_a_failing_target_is_reported_not_raised(target, reporter):
    run("record", {"action": "start"}, target, reporter)
    msg = run("record", {"action": "start", "request_id": "again"}, target, reporter)
    assert msg == {**msg, "ok": False, "request_id": "again"} and "already recording" in msg["error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10)
command_docs = st.fixed_dictionaries(
    {}, optional={"schema": json_values, "request_id": json_values, "value": json_values, "action": json_values,
                  "duration": json_values, "url": json_values, "path": json_values, "chunk": json_values,
                  "sha256": json_values}) | json_values
payloads = command_docs.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=64)
names = st.sampled_from([n for n in COMMANDS if n != "update_model"]) | st.text(max_size=12)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names, payload=payloads)
def test_fuzzed_commands_never_crash(target, name, payload):
    sink = Sink()
    msg = dispatch(name, payload, target, sink)
    assert isinstance(msg["ok"], bool) and sink.messages == [("cmd_result", msg)]
    assert ("error" in msg) != msg["ok"]
    json.dumps(msg, allow_nan=True)
    assert 0.0 <= target.threshold <= 1e6


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunk=json_values, sha=json_values, url=json_values)
def test_fuzzed_update_model_never_crashes_and_changes_nothing(target, tmp_path, chunk, sha, url):
    updater = ModelUpdater(tmp_path / "bundles", trusted_keys=[tmp_path / "no-such-key.pub"])
    doc = {"chunk": chunk, "sha256": sha} if url is None else {"url": url, "sha256": sha}
    msg = dispatch("update_model", json.dumps(doc).encode(), target, Sink(), updater=updater)
    assert msg["ok"] is False and target.model_version is None and updater.current is None


class Sink:
    """Keeps what dispatch publishes (the Reporter protocol, in memory) for the fuzz loop's speed."""

    def __init__(self):
        self.messages = []

    def publish(self, kind, payload):
        self.messages.append((kind, payload))

    def subscribe(self, on_command):
        pass

    def stop(self):
        pass


def test_commands_over_a_real_broker(broker, tmp_path, target):
    config = MqttConfig(port=broker.port, outbox_path=tmp_path / "o.sqlite3", telemetry_interval=3600)
    reporter = MqttReporter(config, "cam1")
    reporter.subscribe(lambda name, payload: dispatch(name, payload, target, reporter))
    try:
        assert reporter.wait_connected(5)
        with Collector(broker.port, "edgetl/cam1/cmd_result", qos=1) as sub:
            sub.client.publish("edgetl/cam1/cmd/set_threshold", json.dumps({"request_id": "a", "value": 0.7}), qos=1)
            sub.client.publish("edgetl/cam1/cmd/set_threshold", b"nonsense", qos=1)
            sub.client.publish("edgetl/cam1/cmd/selfdestruct", b"{}", qos=1)
            sub.client.publish("edgetl/cam2/cmd/set_threshold", json.dumps({"value": 0.1}), qos=1)  # not ours
            assert sub.wait_for(lambda s: len(s.of("cmd_result")) >= 3, 5)
            results = sub.of("cmd_result")
    finally:
        reporter.stop()
    assert target.threshold == 0.7
    assert [r["ok"] for r in results] == [True, False, False]
    assert results[0]["request_id"] == "a" and results[0]["device_id"] == "cam1"
    assert "unknown command 'selfdestruct'" in results[2]["error"]


def test_commands_beyond_the_queue_are_answered_busy_at_once(broker, tmp_path, target):
    # A slow command (e.g. a model download) holds the command thread while 100 more wait; the ones beyond
    # that are refused with an error result at once (not silently dropped), while the slow one still runs.
    config = MqttConfig(port=broker.port, outbox_path=tmp_path / "o.sqlite3", telemetry_interval=3600)
    reporter = MqttReporter(config, "cam1")
    busy, release = threading.Event(), threading.Event()

    def slow_reload() -> None:
        busy.set()
        release.wait(30)
        target.reloads += 1

    target.reload_config = slow_reload
    reporter.subscribe(lambda name, payload: dispatch(name, payload, target, reporter))
    try:
        assert reporter.wait_connected(5)
        with Collector(broker.port, "edgetl/cam1/cmd_result", qos=1) as sub:
            sub.client.publish("edgetl/cam1/cmd/reload_config", json.dumps({"request_id": "slow"}), qos=1)
            assert busy.wait(10)
            for i in range(103):  # 100 fill the queue, 3 are over
                sub.client.publish("edgetl/cam1/cmd/ping", json.dumps({"request_id": f"p{i}"}), qos=1)
            assert sub.wait_for(lambda s: len(s.of("cmd_result")) >= 3, 10), "commands over the queue went unanswered"
            refused = sub.of("cmd_result")
            release.set()
            assert sub.wait_for(lambda s: len(s.of("cmd_result")) >= 3 + 1 + 100, 20)
            results = sub.of("cmd_result")
    finally:
        release.set()
        reporter.stop()
    assert [r["request_id"] for r in refused] == ["p100", "p101", "p102"]
    assert all(r["ok"] is False and r["command"] == "ping" and r["device_id"] == "cam1" for r in refused)
    assert "device busy: 100 commands waiting; retry later" in refused[0]["error"], refused[0]
    answered = {r["request_id"]: r["ok"] for r in results[3:]}
    assert answered == {"slow": True, **{f"p{i}": True for i in range(100)}}
    assert target.reloads == 1
