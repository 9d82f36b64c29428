"""A secured broker (TLS, passwords or client certificates, per-device ACL) with real Mosquitto.

A device cannot publish as another device nor read another device's commands; wrong
credentials are refused without crashing the device; secrets never reach the logs.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device.mosquitto.mqtt_pki import make_certs, password_line
from edgetl_device.config import MqttConfig, MqttTlsConfig
from edgetl_device.events import new_event
from edgetl_device.mqtt import MqttReporter
from tests.support.mqtt_collector import Collector

ACL = Path(__file__).resolve().parents[1] / "device" / "mosquitto" / "acl"
PASSWORDS = {"cam1": "pw-cam1-Qx81", "cam2": "pw-cam2-Zr55", "fleet": "pw-fleet-Lm20"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("pki"), clients=["cam1", "cam2", "fleet"])


def tls_lines(pki, require_certificate: bool) -> str:
    return "\n".join([f"cafile {pki['ca']}", f"certfile {pki['server']}", f"keyfile {pki['server_key']}",
                      f"require_certificate {str(require_certificate).lower()}",
                      f"use_identity_as_username {str(require_certificate).lower()}", f"acl_file {ACL}"])


def password_file(path: Path) -> Path:
    """cam1's line from mosquitto_passwd when installed, the others from our PBKDF2 writer."""
    lines = [password_line(u, p) for u, p in PASSWORDS.items() if u != "cam1"]
    path.write_text("\n".join(lines) + "\n")
    tool = shutil.which("mosquitto_passwd") or ("/usr/bin/mosquitto_passwd"
                                               if Path("/usr/bin/mosquitto_passwd").exists() else None)
    if tool:
        subprocess.run([tool, "-b", str(path), "cam1", PASSWORDS["cam1"]], check=True)
    else:
        with open(path, "a") as f:
            f.write(password_line("cam1", PASSWORDS["cam1"]) + "\n")
    return path


def device(port, tmp_path, pki, device_id, user=None, cert=None, client_id=None) -> MqttReporter:
    tls = MqttTlsConfig(ca_file=pki["ca"], cert_file=pki[cert] if cert else None,
                        key_file=pki[f"{cert}_key"] if cert else None)
    config = MqttConfig(port=port, tls=tls, username=user, password=PASSWORDS.get(user) if user else None,
                        client_id=client_id, outbox_path=tmp_path / f"{device_id}-{user or cert}.sqlite3",
                        telemetry_interval=3600)
    return MqttReporter(config, device_id)


def fleet(port, pki, cert: bool) -> Collector:
    sub = Collector(port, "edgetl/#", qos=1)
    if cert:
        sub.client.tls_set(ca_certs=str(pki["ca"]), certfile=str(pki["fleet"]), keyfile=str(pki["fleet_key"]))
    else:
        sub.client.tls_set(ca_certs=str(pki["ca"]))
        sub.client.username_pw_set("fleet", PASSWORDS["fleet"])
    return sub.start()


def event(device_id: str, label: str) -> dict:
    return new_event(device_id, "start", "o1", label, 0.9)


@pytest.fixture
def password_broker(broker_factory, tmp_path, pki):
    passwd = password_file(tmp_path / "passwd")
    b = broker_factory(allow_anonymous=False,
                       extra_config=tls_lines(pki, require_certificate=False) + f"\npassword_file {passwd}")
    return b.start()


def test_password_and_acl_stop_a_device_publishing_as_another(password_broker, tmp_path, pki, caplog):
    caplog.set_level(logging.DEBUG)
    port = password_broker.port
    sub = fleet(port, pki, cert=False)
    honest = device(port, tmp_path, pki, "cam2", user="cam2")
    cam1 = device(port, tmp_path, pki, "cam1", user="cam1")  # its line came from mosquitto_passwd
    # cam2's credentials, pretending to be cam1 (topic and client id):
    impostor = device(port, tmp_path, pki, "cam1", user="cam2", client_id="cam1-x")
    try:
        assert honest.wait_connected(5) and impostor.wait_connected(5) and cam1.wait_connected(5)
        impostor.publish("event", event("cam1", "forged"))
        assert impostor.wait_drained(5)  # MQTT 3.1.1 brokers acknowledge, then drop, denied publishes
        honest.publish("event", event("cam2", "real"))
        assert honest.wait_drained(5)
        assert sub.wait_for(lambda s: any(e["label"] == "real" for e in s.of("events")), 5)
        time.sleep(0.3)
        events = [(e["device_id"], e["label"]) for e in sub.of("events")]
        statuses = {(m["device_id"], m["state"]) for m in sub.of("status")}
    finally:
        honest.stop()
        impostor.stop()
        cam1.stop()
        sub.stop()
    assert events == [("cam2", "real")]
    assert ("cam2", "online") in statuses and ("cam1", "online") in statuses
    for secret in PASSWORDS.values():
        assert secret not in caplog.text, "a password reached the logs"
    assert "pw-" not in repr(honest.config)


def test_device_cannot_read_another_devices_commands(password_broker, tmp_path, pki):
    port = password_broker.port
    got: list[str] = []
    spy = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="spy")
    spy.tls_set(ca_certs=str(pki["ca"]))
    spy.username_pw_set("cam2", PASSWORDS["cam2"])
    spy.on_message = lambda c, u, m: got.append(m.topic)
    spy.connect("127.0.0.1", port)
    spy.subscribe([("edgetl/cam1/cmd/#", 1), ("edgetl/cam2/cmd/#", 1)])
    spy.loop_start()
    sub = fleet(port, pki, cert=False)
    try:
        time.sleep(0.3)
        for dev in ("cam1", "cam2"):
            sub.client.publish(f"edgetl/{dev}/cmd/ping", json.dumps({"request_id": dev}), qos=1)
        deadline = time.monotonic() + 5
        while "edgetl/cam2/cmd/ping" not in got and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        spy.disconnect()
        spy.loop_stop()
        sub.stop()
    assert got == ["edgetl/cam2/cmd/ping"]


def test_wrong_password_is_refused_and_the_device_keeps_storing_events(password_broker, tmp_path, pki, caplog):
    config = MqttConfig(port=password_broker.port, tls=MqttTlsConfig(ca_file=pki["ca"]), username="cam1",
                        password="not-the-password", outbox_path=tmp_path / "o.sqlite3", telemetry_interval=3600)
    reporter = MqttReporter(config, "cam1")
    try:
        deadline = time.monotonic() + 5
        while reporter.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        reporter.publish("event", event("cam1", "kept"))
        assert not reporter.connected and "refused" in reporter.last_error
        assert reporter.outbox.depth == 1
    finally:
        reporter.stop()
    assert "not-the-password" not in caplog.text


def test_mutual_tls_identity_is_the_certificate(broker_factory, tmp_path, pki):
    b = broker_factory(allow_anonymous=False, extra_config=tls_lines(pki, require_certificate=True)).start()
    sub = fleet(b.port, pki, cert=True)
    cam1 = device(b.port, tmp_path, pki, "cam1", cert="cam1")
    forged = device(b.port, tmp_path, pki, "cam1", cert="cam2", client_id="cam1-y")  # cam2's certificate
    no_cert = device(b.port, tmp_path, pki, "cam1", client_id="cam1-z")
    try:
        assert cam1.wait_connected(5) and forged.wait_connected(5)
        forged.publish("event", event("cam1", "forged"))
        assert forged.wait_drained(5)
        cam1.publish("event", event("cam1", "real"))
        assert sub.wait_for(lambda s: any(e["label"] == "real" for e in s.of("events")), 5)
        time.sleep(0.3)
        labels = [e["label"] for e in sub.of("events")]
        assert not no_cert.connected
    finally:
        for r in (cam1, forged, no_cert):
            r.stop()
        sub.stop()
    assert labels == ["real"]
