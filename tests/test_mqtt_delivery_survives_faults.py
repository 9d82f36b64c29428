"""Events reach a real subscriber exactly once after dedup, whatever fails in between.

Real Mosquitto processes, a real TCP proxy for the network cut, real SQLite outboxes and a
real device process that is SIGKILLed. Counts are small (hundreds); tools/bench_mqtt.py runs
the 10,000-event version.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgetl_device.config import MqttConfig
from edgetl_device.events import new_event
from edgetl_device.mqtt import MqttReporter
from tests.support.mqtt_collector import Collector, delivery_report
from tools.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[1]


def reporter_for(port: int, tmp_path: Path, device_id: str = "cam1", **overrides) -> MqttReporter:
    settings = {"keepalive": 5, "telemetry_interval": 3600, **overrides}
    config = MqttConfig(port=port, outbox_path=tmp_path / f"{device_id}-outbox.sqlite3", **settings)
    return MqttReporter(config, device_id)


def burst(reporter: MqttReporter, count: int, rate: float, faults: dict[int, callable]) -> None:
    """Publish `count` events at `rate`/s, calling faults[i] right after event i."""
    t0 = time.monotonic()
    for i in range(1, count + 1):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        reporter.publish("event", new_event(reporter.device_id, "start", f"o{i}", "person", 0.9))
        if i in faults:
            faults[i]()


def test_no_broker_at_start_events_wait_then_all_arrive(broker, tmp_path):
    with TcpProxy(broker.port) as proxy, Collector(broker.port) as sub:
        proxy.cut()  # the broker is unreachable from the device
        reporter = reporter_for(proxy.port, tmp_path)
        t0 = time.perf_counter()
        burst(reporter, 100, rate=10_000, faults={})
        publish_s = time.perf_counter() - t0
        assert not reporter.connected
        assert reporter.outbox.depth == 100
        assert not sub.of("events")
        proxy.restore()
        assert reporter.wait_drained(15)
        assert sub.wait_for(lambda s: len(s.of("events")) >= 100, 5)
        reporter.stop()
    report = delivery_report(sub.of("events"), 100)
    assert report["lost"] == 0 and report["seq_gaps"] == 0, report
    assert [e["seq"] for e in sub.of("events")] == list(range(1, 101))  # sent in order
    assert publish_s < 2.0, "publish must not wait for the network"


def test_broker_killed_and_restarted_mid_burst_loses_nothing(broker_factory, tmp_path):
    # Persistence keeps the consumer's session across the restart (as in device/mosquitto/mosquitto.conf);
    # without it, events a device re-sends before the consumer re-subscribes go nowhere.
    broker = broker_factory(persistence=True, extra_config="autosave_interval 1").start()
    count = 800
    with Collector(broker.port, qos=1, client_id="consumer", clean_session=False) as sub:
        time.sleep(1.2)  # the broker saves the consumer's session
        reporter = reporter_for(broker.port, tmp_path)
        assert reporter.wait_connected(5)
        publishing = threading.Thread(target=burst, args=(reporter, count, 200, {}))
        publishing.start()
        for crash in (1, 2):
            time.sleep(0.4)
            broker.kill()  # SIGKILL, no persistence: the broker forgets everything
            time.sleep(0.3)
            broker.start()
            deadline = time.monotonic() + 5
            while reporter.reconnects < crash and time.monotonic() < deadline:
                time.sleep(0.02)
        crashed_mid_burst = publishing.is_alive()
        publishing.join()
        assert reporter.wait_drained(20)
        assert sub.wait_for(lambda s: len({e["event_id"] for e in s.of("events")}) >= count, 5)
        online = [s for s in sub.of("status") if s["state"] == "online"]
        reporter.stop()
    report = delivery_report(sub.of("events"), count)
    assert report["lost"] == 0 and report["seq_gaps"] == 0 and report["unique"] == count, report
    assert crashed_mid_burst and reporter.reconnects == 2
    assert len(online) >= 3, "status 'online' is republished on every reconnect"


def test_network_cut_mid_burst_loses_nothing(broker, tmp_path):
    with TcpProxy(broker.port) as proxy, Collector(broker.port) as sub:
        reporter = reporter_for(proxy.port, tmp_path)
        assert reporter.wait_connected(5)

        def cut():
            proxy.cut()
            threading.Timer(2.0, proxy.restore).start()

        burst(reporter, 300, rate=300, faults={80: cut})
        assert reporter.wait_drained(20)
        assert sub.wait_for(lambda s: len({e["event_id"] for e in s.of("events")}) >= 300, 5)
        reporter.stop()
    report = delivery_report(sub.of("events"), 300)
    assert report["lost"] == 0 and report["seq_gaps"] == 0, report
    assert proxy.connections >= 2


def test_event_after_a_quiet_spell_is_not_resent_as_stalled(broker, tmp_path, caplog):
    # The stall guard (no PUBACK for 30 s: re-send everything) timed from the last PUBACK, so on a camera
    # quiet for longer than that, every new event counted as stalled the moment it was sent: a false
    # warning and a second copy. The broker is frozen for a moment so the PUBACK cannot win that race.
    with Collector(broker.port) as sub:
        reporter = reporter_for(broker.port, tmp_path)  # keepalive 5: the guard's 30 s floor applies
        assert reporter.wait_connected(5)
        reporter.publish("event", new_event(reporter.device_id, "start", "o1", "person", 0.9))
        assert reporter.wait_drained(5)
        time.sleep(31)  # quiet: no events, so no PUBACKs
        broker.process.send_signal(signal.SIGSTOP)
        try:
            with caplog.at_level(logging.WARNING, logger="edgetl_device.mqtt"):
                reporter.publish("event", new_event(reporter.device_id, "end", "o1", "person", 0.9))
                time.sleep(2.0)
        finally:
            broker.process.send_signal(signal.SIGCONT)
        assert reporter.wait_drained(10)
        assert sub.wait_for(lambda s: len(s.of("events")) >= 2, 5)
        time.sleep(0.5)  # a second copy, if one was sent, arrives by now
        reporter.stop()
    assert "no acknowledgement" not in caplog.text
    report = delivery_report(sub.of("events"), 2)
    assert report["lost"] == 0 and report["duplicates"] == 0, report


def _publisher(port: int, outbox: Path, count: int) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "tools" / "event_publisher.py"), "--port", str(port), "--device-id",
           "cam9", "--outbox", str(outbox), "--count", str(count), "--rate", "400", "--report-every", "20"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def test_device_sigkill_mid_burst_last_will_then_restart_resends(broker, tmp_path):
    outbox = tmp_path / "cam9.sqlite3"
    with Collector(broker.port) as sub:
        proc = _publisher(broker.port, outbox, 400)
        for line in proc.stdout:
            if line.startswith("stored") and int(line.split()[1]) >= 160:
                break
        proc.kill()  # SIGKILL: no clean disconnect, paho's in-memory session is gone
        proc.wait(5)
        assert sub.wait_for(lambda s: any(m["state"] == "offline" for m in s.of("status")), 5), \
            "the broker must publish the Last Will 'offline' after the device dies"
        before_restart = len(sub.of("events"))
        proc = _publisher(broker.port, outbox, 400)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert sub.wait_for(lambda s: len({e["event_id"] for e in s.of("events")}) >= 400, 5)
        states = [m["state"] for m in sub.of("status")]
    report = delivery_report(sub.of("events"), 400)
    assert 0 < before_restart < 400
    assert report["lost"] == 0 and report["seq_gaps"] == 0 and report["unique"] == 400, report
    assert states[-1] == "stopped" and "offline" in states and states.count("online") >= 2


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_full_outbox_drops_by_policy_and_reports_it_in_telemetry(broker, tmp_path, policy):
    with TcpProxy(broker.port) as proxy, Collector(broker.port) as sub:
        proxy.cut()
        reporter = reporter_for(proxy.port, tmp_path, outbox_max_events=50, drop_policy=policy,
                                telemetry_interval=0.2)
        burst(reporter, 80, rate=10_000, faults={})
        assert reporter.outbox.depth == 50 and reporter.outbox.dropped == 30
        proxy.restore()
        assert reporter.wait_drained(15)
        assert sub.wait_for(lambda s: any(t["outbox_dropped"] == 30 for t in s.of("telemetry")), 5)
        reporter.stop()
    seqs = sorted(e["seq"] for e in sub.of("events"))
    assert seqs == (list(range(31, 81)) if policy == "drop_oldest" else list(range(1, 51)))


def test_broker_outage_is_one_warning_not_an_error_per_reconnect_attempt(tmp_path, caplog):
    # paho logs an ERROR for every failed reconnect attempt (one every 1..30 s for the whole outage): an
    # operator's journal filled with errors for a condition the device handles. One warning per outage instead.
    from tests.support.mosquitto import MosquittoBroker, free_port, mosquitto_binary

    if mosquitto_binary() is None:
        pytest.skip("mosquitto not installed (tools/test.sh installs it)")
    port = free_port()
    with caplog.at_level(logging.DEBUG, logger="edgetl_device.mqtt"):
        reporter = reporter_for(port, tmp_path)
        time.sleep(3.5)  # the first connect and two retries (1 s, 2 s) fail: nothing listens yet
        with MosquittoBroker(port=port, workdir=tmp_path / "broker"):
            assert reporter.wait_connected(10)
            reporter.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage() and r.levelno == logging.WARNING]
    assert len(unreachable) == 1
    assert any("Client is not connected" in r.getMessage() for r in caplog.records)  # still there, at DEBUG
