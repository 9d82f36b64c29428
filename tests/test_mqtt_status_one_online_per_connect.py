"""The runtime's retained `online` status over a real Mosquitto: one per connect, with the model version.

A fleet tool that subscribes later gets only the retained status, so the last one the broker keeps must
be the newest and the most complete: a status published while the broker was unreachable must not land
after the one the device sends on connect, and the one sent on connect must already name the model.
"""

from __future__ import annotations

import threading

from edgetl_device.config import DeviceConfig
from edgetl_device.runtime import Runtime
from tests.support.device_config import vtest_device_dict
from tests.support.mqtt_collector import Collector
from tests.support.waiting import wait_until
from tools.tcp_proxy import TcpProxy

DEVICE = "cam-status"


def device_config(shared_data, tmp_path, port: int) -> DeviceConfig:
    data = vtest_device_dict(shared_data, DEVICE, tmp_path / "data", camera={"paced": True, "fps": 10})
    data["mqtt"] = {"port": port, "outbox_path": tmp_path / "data/outbox.sqlite3", "telemetry_interval": 3600}
    return DeviceConfig.model_validate(data)


def stopped(collector: Collector) -> bool:
    return any(s["state"] == "stopped" for s in collector.of("status"))


def test_one_online_status_per_connect_and_it_names_the_model(shared_data, tmp_path, broker):
    with Collector(broker.port, f"edgetl/{DEVICE}/status", qos=1) as sub:
        runtime = Runtime(device_config(shared_data, tmp_path, broker.port))
        assert runtime.reporter.wait_connected(10)  # connected before the loop says "online"
        thread = threading.Thread(target=runtime.run, daemon=True)
        thread.start()
        try:
            assert wait_until(lambda: runtime.frames_in >= 3, 30)
            with Collector(broker.port, f"edgetl/{DEVICE}/status") as late:  # a fleet tool joining later
                assert late.wait_for(lambda s: s.of("status"), 5)
                retained = late.of("status")[0]
        finally:
            runtime.stop()
            thread.join(30)
        assert sub.wait_for(stopped, 10)  # same connection: every earlier status has arrived too
        statuses = sub.of("status")
    version = runtime.model.model_version
    assert version
    assert [(s["state"], s["model_version"]) for s in statuses] == [("online", version), ("stopped", version)]
    assert (retained["state"], retained["model_version"]) == ("online", version)


def test_a_device_started_before_its_broker_is_reachable_says_online_once_and_newest_last(
        shared_data, tmp_path, broker):
    with TcpProxy(broker.port) as proxy, Collector(broker.port, f"edgetl/{DEVICE}/status", qos=1) as sub:
        proxy.cut()  # the broker is unreachable from the device
        runtime = Runtime(device_config(shared_data, tmp_path, proxy.port))
        thread = threading.Thread(target=runtime.run, daemon=True)
        thread.start()
        try:
            # the loop runs frames only after it has said "online", to a broker it cannot reach
            assert wait_until(lambda: runtime.frames_in >= 3, 30)
            assert not runtime.reporter.connected
            proxy.restore()
            assert runtime.reporter.wait_connected(20)
        finally:
            runtime.stop()
            thread.join(30)
        assert sub.wait_for(stopped, 10)
        statuses = sub.of("status")
    version = runtime.model.model_version
    assert [(s["state"], s["model_version"]) for s in statuses] == [("online", version), ("stopped", version)]
    times = [s["time"] for s in statuses]
    assert times == sorted(times), "a retained status arrived after a newer one"
