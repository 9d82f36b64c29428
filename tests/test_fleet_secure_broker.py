"""Fleet tools on a secured broker: TLS + passwords + the per-device ACL, and mutual TLS; clear refusals."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from device.mosquitto.mqtt_pki import make_certs, password_line
from edgetl.errors import EdgetlError
from edgetl.fleet.deploy import CommandSession
from edgetl.fleet.mqtt import BrokerOptions, connect
from edgetl.fleet.recorder import Recorder
from edgetl.fleet.sim import SimDevice
from edgetl.fleet.store import open_store
from edgetl_device.config import MqttTlsConfig

ACL = Path(__file__).resolve().parents[1] / "device" / "mosquitto" / "acl"
PASSWORDS = {"cam1": "pw-cam1-Tf27", "fleet": "pw-fleet-Hn93"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("pki"), clients=["cam1", "fleet"])


def _tls(pki, require_certificate: bool) -> str:
    return "\n".join([f"cafile {pki['ca']}", f"certfile {pki['server']}", f"keyfile {pki['server_key']}",
                      f"require_certificate {str(require_certificate).lower()}",
                      f"use_identity_as_username {str(require_certificate).lower()}", f"acl_file {ACL}"])


def test_record_and_command_over_tls_with_passwords(broker_factory, tmp_path, pki):
    passwd = tmp_path / "passwd"
    passwd.write_text("\n".join(password_line(u, p) for u, p in PASSWORDS.items()) + "\n")
    b = broker_factory(allow_anonymous=False, extra_config=_tls(pki, False) + f"\npassword_file {passwd}").start()
    url = f"mqtts://localhost:{b.port}"
    fleet = BrokerOptions(url=url, ca=pki["ca"], username="fleet", password=PASSWORDS["fleet"])
    cam = SimDevice("cam1", "localhost", b.port, tmp_path / "dev", tls=MqttTlsConfig(ca_file=pki["ca"]),
                    username="cam1", password=PASSWORDS["cam1"])
    store = open_store(tmp_path / "fleet.sqlite3")
    try:
        with Recorder(store, fleet, client_id="fleet-recorder") as rec, CommandSession(fleet) as session:
            assert cam.wait_connected(10)
            sent = cam.emit_event(label="person")
            (pong,) = session.run(["cam1"], "ping", timeout=10)
            assert pong.ok and pong.detail["pong"] is True
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and store.count_events() < 1:
                time.sleep(0.05)
            assert rec.wait_idle()
        assert [e["event_id"] for e in store.events()] == [sent["event_id"]]

        with pytest.raises(EdgetlError, match="refused"):
            connect(BrokerOptions(url=url, ca=pki["ca"], username="fleet", password="wrong"))
        with pytest.raises(EdgetlError, match="cannot reach broker"):  # the system CAs do not know ours
            connect(BrokerOptions(url=url, username="fleet", password=PASSWORDS["fleet"]))
        with pytest.raises(EdgetlError, match="not found"):
            connect(BrokerOptions(url=url, ca=tmp_path / "missing.pem"))
    finally:
        cam.stop()
        store.close()


def test_mutual_tls_fleet_identity(broker_factory, tmp_path, pki):
    b = broker_factory(allow_anonymous=False, extra_config=_tls(pki, True)).start()
    url = f"mqtts://localhost:{b.port}"
    cam = SimDevice("cam1", "localhost", b.port, tmp_path / "dev",
                    tls=MqttTlsConfig(ca_file=pki["ca"], cert_file=pki["cam1"], key_file=pki["cam1_key"]))
    try:
        fleet = BrokerOptions(url=url, ca=pki["ca"], cert=pki["fleet"], key=pki["fleet_key"])
        with CommandSession(fleet) as session:
            assert cam.wait_connected(10)
            (answer,) = session.run(["cam1"], "set_threshold", {"value": 0.25}, timeout=10)
        assert answer.ok and cam.threshold == 0.25
        with pytest.raises(EdgetlError, match="go together"):
            connect(BrokerOptions(url=url, ca=pki["ca"], cert=pki["fleet"]))
    finally:
        cam.stop()
