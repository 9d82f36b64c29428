"""Rollouts read the devices' retained status: an offline or stopped device fails at once (not after the
timeout), an answer lost while the tool reconnects is confirmed by the status' model_version, and the halt
summary names the failed devices with their reasons."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgetl.bundle import generate_keys
from edgetl.cli import app
from edgetl.fleet.deploy import CommandSession, rollout, update_args
from edgetl.fleet.mqtt import BrokerOptions
from edgetl.fleet.sim import SimDevice
from tests.support.mqtt_collector import Collector
from tests.support.waiting import wait_until
from tests.test_fleet_rollout_canary_halts import _signed_archive
from tools.tcp_proxy import TcpProxy


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    priv, pub = generate_keys(d / "publisher")
    return {"priv": priv, "pub": pub, "other_pub": generate_keys(d / "stranger")[1]}


@pytest.fixture(scope="module")
def archive(tmp_path_factory, keys, shared_data) -> Path:
    model = shared_data / "models" / "mobilenet_v1_0.25_128_quant.tflite"
    return _signed_archive(tmp_path_factory.mktemp("good"), model, "2.0.0", keys)


def _states(sub: Collector) -> dict[str, str]:
    """The latest status state per device, as the broker delivered them."""
    return {p["device_id"]: p["state"] for p in sub.of("status")}


def _halt_line(output: str) -> str:
    return next(line for line in output.splitlines() if "rollout HALTED" in line)


def test_offline_or_stopped_devices_fail_fast_and_never_seen_ones_are_still_tried(broker, tmp_path, keys, archive):
    devs = [SimDevice(f"cam{i}", "127.0.0.1", broker.port, tmp_path / "devices", trusted_keys=[keys["pub"]])
            for i in range(1, 4)]
    assert all(d.wait_connected(10) for d in devs)
    cam1, cam2, cam3 = devs
    runner = CliRunner()
    try:
        with Collector(broker.port, "edgetl/+/status", qos=1) as sub:
            cam1.stop()  # clean shutdown: retained "stopped"
            cam2.kill()  # vanishes: the broker publishes its Last Will, retained "offline"
            assert sub.wait_for(lambda s: _states(s) == {"cam1": "stopped", "cam2": "offline", "cam3": "online"})
        for canary, reason in (("cam1", "stopped"), ("cam2", "offline since")):
            start = time.monotonic()
            r = runner.invoke(app, ["fleet", "deploy", str(archive), "--devices", f"{canary},cam3", "--canary", "1",
                                    "--via", "path", "--timeout", "30", "--broker", broker.url],
                              env={"COLUMNS": "200"})
            elapsed = time.monotonic() - start
            assert r.exit_code == 1, r.output
            assert elapsed < 10, f"{canary} ({reason}) took {elapsed:.1f}s: it waited for the --timeout"
            assert f"FAILED {canary}: {reason}" in r.output, r.output
            halt = _halt_line(r.output)
            assert "not attempted (cam3)" in halt, halt
            assert cam3.model_version == "1.0.0"
        # one wave with all kinds: the never-seen device is still sent the update and waited for, as before
        with CommandSession(BrokerOptions(url=broker.url)) as session:
            report = rollout(session, ["cam1", "cam2", "ghost", "cam3"], update_args(archive, "path"), canary=0,
                             timeout=5)
        results = {r.device_id: r for r in report.waves[0]}
        assert results["cam1"].detail.startswith("stopped") and not results["cam1"].ok
        assert results["cam2"].detail.startswith("offline since") and not results["cam2"].ok
        assert results["cam1"].seconds < 1 and results["cam2"].seconds < 1
        assert not results["ghost"].ok and results["ghost"].detail == "no answer within 5s"
        assert results["cam3"].ok and results["cam3"].answered and cam3.model_version == "2.0.0"
        assert report.halted
    finally:
        for d in devs:
            d.stop()


def test_halt_summary_names_the_failed_devices_and_why(broker, tmp_path, keys, archive):
    cam1 = SimDevice("cam1", "127.0.0.1", broker.port, tmp_path / "devices", trusted_keys=[keys["other_pub"]])
    cam2 = SimDevice("cam2", "127.0.0.1", broker.port, tmp_path / "devices", trusted_keys=[keys["pub"]])
    assert cam1.wait_connected(10) and cam2.wait_connected(10)
    try:
        r = CliRunner().invoke(app, ["fleet", "deploy", str(archive), "--devices", "cam1,cam2", "--via", "path",
                                     "--timeout", "20", "--broker", broker.url])
        assert r.exit_code == 1, r.output
        halt = _halt_line(r.output)
        assert "0 updated" in halt and "1 failed: cam1 (" in halt and "not trusted here" in halt, halt
        assert "not attempted (cam2)" in halt, halt
    finally:
        cam1.stop()
        cam2.stop()


class _GatedDevice(SimDevice):
    """A SimDevice whose update waits until the test says go (or that never gets the update at all)."""

    def __init__(self, *args, lose_update: bool = False, **kwargs) -> None:
        self.received = threading.Event()
        self.go = threading.Event()
        self.lose_update = lose_update
        super().__init__(*args, **kwargs)

    def on_command(self, name: str, raw: bytes) -> None:
        if name == "update_model":
            self.received.set()
            if self.lose_update:
                return
            self.go.wait(60)
        super().on_command(name, raw)


def test_answer_lost_in_a_broker_restart_is_confirmed_by_the_status_model_version(broker, tmp_path, keys, archive):
    """The tool's link and the broker go down while cam1 updates; cam1 comes back first, updates and answers
    while the tool is still away, so its answer is lost. Its status (2.0.0) counts it as updated; cam2, which
    never got the update, stays a failure."""
    cam1 = _GatedDevice("cam1", "127.0.0.1", broker.port, tmp_path / "devices", trusted_keys=[keys["pub"]])
    cam2 = _GatedDevice("cam2", "127.0.0.1", broker.port, tmp_path / "devices", trusted_keys=[keys["pub"]],
                        lose_update=True)
    assert cam1.wait_connected(10) and cam2.wait_connected(10)
    steps: list[str] = []
    with TcpProxy(broker.port) as proxy, Collector(broker.port, "edgetl/+/cmd_result", qos=1) as sub:
        def restart_while_cam1_updates() -> None:
            if not cam1.received.wait(30):
                return
            # Let the broker's PUBACK reach the tool first: otherwise paho re-sends the update after the
            # reconnect, cam1 applies it again and that second answer arrives (a different, honest path).
            time.sleep(1.0)
            proxy.cut()  # the tool loses its link...
            broker.kill()  # ...and the broker restarts, forgetting every retained status (persistence off)
            broker.start()
            if wait_until(lambda: cam1.reporter.reconnects >= 1 and cam1.reporter.connected, 20):
                steps.append("cam1 back")
            cam1.go.set()  # cam1 updates and answers while the tool is still away
            if wait_until(lambda: any(p.get("device_id") == "cam1" for p in sub.of("cmd_result")), 20):
                steps.append("cam1 answered")
            proxy.restore()

        chaos = threading.Thread(target=restart_while_cam1_updates, daemon=True)
        chaos.start()
        try:
            r = CliRunner().invoke(app, ["fleet", "deploy", str(archive), "--devices", "cam1,cam2", "--canary", "0",
                                         "--via", "path", "--timeout", "25", "--broker",
                                         f"mqtt://127.0.0.1:{proxy.port}"], env={"COLUMNS": "200"})
            chaos.join(30)
            assert steps == ["cam1 back", "cam1 answered"], steps
            assert cam1.model_version == "2.0.0" and cam2.model_version == "1.0.0"
            assert r.exit_code == 1, r.output  # cam2 really failed
            # (the log line, not the table cell: rich wraps cells to whatever width an earlier test left it)
            assert "cam1: no answer to update_model, but its status says it runs 2.0.0 now" in r.output, r.output
            assert "FAILED cam2: no answer within 25s" in r.output
            assert "FAILED cam1" not in r.output
            assert _halt_line(r.output).startswith("rollout HALTED: 1 updated"), r.output
        finally:
            cam1.go.set()
            cam1.stop()
            cam2.stop()
