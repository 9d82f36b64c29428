"""SIGTERM while a command is stuck and the command queue is full (real Mosquitto, real Runtime, real video).

A model download from a server that never answers holds the reporter's command thread (for http_timeout, 60 s);
100 more commands fill the queue behind it. Stopping the device must still finish well within systemd's stop
timeout, and the waiting commands must be answered (refused: the device is stopping), not run beside the
shutdown nor left without a result.
"""

from __future__ import annotations

import json
import socket
import threading
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgetl_device.config import DeviceConfig
from edgetl_device.runtime import Runtime
from tests.support.device_config import vtest_device_dict
from tests.support.mqtt_collector import Collector
from tests.support.waiting import wait_until

DEVICE = "cam-stop-busy"


def test_stop_is_bounded_and_answers_the_waiting_commands_when_the_queue_is_full(shared_data, tmp_path, broker):
    pub = tmp_path / "publisher.pub"  # update_model needs a trusted key before it starts a download
    pub.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    data = vtest_device_dict(shared_data, DEVICE, tmp_path / "data", camera={"paced": True, "fps": 10},
                             decision={"record_unknown": False})
    data["mqtt"] = {"port": broker.port, "outbox_path": str(tmp_path / "data/outbox.sqlite3")}
    data["trusted_keys"] = [str(pub)]
    runtime = Runtime(DeviceConfig.model_validate(data))
    silent = socket.socket()  # connections queue in the backlog and never get an answer: the download hangs
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    thread = threading.Thread(target=runtime.run, daemon=True)
    try:
        with Collector(broker.port, f"edgetl/{DEVICE}/#", qos=1) as sub:
            thread.start()
            assert sub.wait_for(lambda s: any(m.get("state") == "online" for m in s.of("status")), 15)
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/bundle.tar.gz"
            sub.client.publish(f"edgetl/{DEVICE}/cmd/update_model", json.dumps({"request_id": "stuck", "url": url}),
                               qos=1)
            assert wait_until(lambda: runtime.reporter._commands.empty() and (tmp_path / "data/bundles").is_dir(),
                              10), "the download never started"
            for i in range(100):
                sub.client.publish(f"edgetl/{DEVICE}/cmd/ping", json.dumps({"request_id": f"p{i}"}), qos=1)
            assert wait_until(lambda: runtime.reporter._commands.full(), 10), "the command queue never filled"

            started = time.monotonic()
            runtime.stop()  # what SIGTERM does
            thread.join(20)
            stop_s = time.monotonic() - started
            assert not thread.is_alive(), f"the device did not stop within 20 s (still stopping after {stop_s:.0f} s)"
            assert sub.wait_for(lambda s: any(m.get("state") == "stopped" for m in s.of("status")), 5)
            results = {r["request_id"]: r for r in sub.of("cmd_result")}
    finally:
        silent.close()  # the stuck download fails now, whatever happened above
        thread.join(70)
    waiting = [results.get(f"p{i}") for i in range(100)]
    assert all(r is not None for r in waiting), f"{waiting.count(None)} waiting commands got no answer"
    assert all(r["ok"] is False and "stopping" in r["error"] and r["command"] == "ping" for r in waiting), waiting[0]
