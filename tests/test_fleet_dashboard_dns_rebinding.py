"""`edgetl fleet serve` against DNS rebinding: only Host names the operator's browser would really use.

A web page on evil.example can point its own name at 127.0.0.1 and then read http://evil.example:8000/api/...
from the operator's browser (same origin as far as the browser knows). The request still carries
`Host: evil.example:8000`, so the dashboard answers it with 421 instead of the fleet's devices and events.

Real dashboard, real HTTP (http.client sets any Host header), and the real `edgetl fleet serve` in a
subprocess; nothing mocked.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from edgetl.errors import EdgetlError
from edgetl.fleet.dashboard import Dashboard
from edgetl.fleet.store import Message, open_store
from tests.support.waiting import wait_until


@pytest.fixture
def db(tmp_path):
    db = tmp_path / "fleet.sqlite3"
    now = time.time()
    with open_store(db) as store:
        store.write_batch([Message("cam1", "status", {"state": "online", "time": now}, now),
                           Message("cam1", "events", {"event_id": "e1", "time": now, "label": "person"}, now)])
    return db


def _get(port: int, path: str, host: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if host is None:  # no Host header at all (HTTP/1.0 style); http.client adds one unless told not to
            conn.putrequest("GET", path, skip_host=True)
            conn.endheaders()
        else:
            conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


REBOUND = ["evil.example:{port}", "evil.example", "EVIL.example:{port}", "127.0.0.1.nip.io:{port}",
           "localhost.evil.example:{port}", "localhost:{port}@evil.example", "[::1].evil.example",
           "localhost:abc", "", " "]


PATHS = ["/", "/api/devices", "/api/events", "/api/events/e1", "/api/labels", "/media/x.jpg"]


def test_a_rebound_name_gets_no_data_from_a_loopback_dashboard(db):
    with Dashboard(db, port=0) as dash:  # one dashboard for all: each close waits for its poll interval
        port = dash.httpd.server_address[1]
        for host in REBOUND:
            for path in PATHS:
                status, body = _get(port, path, host.format(port=port))
                assert status == 421, (host, path, body[:200])
                assert b"cam1" not in body and b"person" not in body
                assert len(body) < 400 and b"--allowed-host" in body


def test_loopback_names_are_served(db):
    with Dashboard(db, port=0) as dash:
        port = dash.httpd.server_address[1]
        for host in ["127.0.0.1:{port}", "127.0.0.1", "localhost:{port}", "localhost", "LocalHost", "[::1]:{port}",
                     "[::1]", "127.0.0.2:{port}"]:
            status, body = _get(port, "/api/devices", host.format(port=port))
            assert status == 200, (host, body[:200])
            assert [d["device_id"] for d in json.loads(body)] == ["cam1"]
            status, body = _get(port, "/", host.format(port=port))
            assert status == 200 and b"<html" in body.lower(), host


def test_a_request_without_host_header_is_not_from_a_browser_and_is_served(db):
    with Dashboard(db, port=0) as dash:
        status, _ = _get(dash.httpd.server_address[1], "/api/devices", None)
    assert status == 200


def test_allowed_host_lets_a_reverse_proxy_name_through(db):
    with Dashboard(db, port=0, allowed_hosts=["fleet.example.lan", "Proxy.Example:8443"]) as dash:
        port = dash.httpd.server_address[1]
        assert _get(port, "/api/devices", "fleet.example.lan")[0] == 200
        assert _get(port, "/api/devices", "fleet.example.lan:443")[0] == 200
        assert _get(port, "/api/devices", "proxy.example")[0] == 200
        assert _get(port, "/api/devices", "localhost:" + str(port))[0] == 200
        assert _get(port, "/api/devices", "evil.example")[0] == 421


def test_on_a_network_address_ip_literals_and_allowed_names_are_served(db):
    # 0.0.0.0: the operator browses to http://<this host's IP>:PORT/, which no DNS rebinding can forge
    with Dashboard(db, host="0.0.0.0", port=0, allowed_hosts=["fleet.example.lan"]) as dash:
        port = dash.httpd.server_address[1]
        assert _get(port, "/api/devices", f"127.0.0.1:{port}")[0] == 200
        assert _get(port, "/api/devices", f"192.168.1.20:{port}")[0] == 200
        assert _get(port, "/api/devices", f"[fe80::1]:{port}")[0] == 200
        assert _get(port, "/api/devices", "fleet.example.lan")[0] == 200
        assert _get(port, "/api/devices", f"evil.example:{port}")[0] == 421
        assert _get(port, "/api/devices", "192.168.1.20.nip.io")[0] == 421


@pytest.mark.parametrize("bad", ["http://fleet.example/", "a b", "fleet.example/x", "user@fleet.example", ""])
def test_a_malformed_allowed_host_is_refused_before_listening(db, bad):
    with pytest.raises(EdgetlError, match="--allowed-host"):
        Dashboard(db, port=0, allowed_hosts=[bad])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_checks_host_and_takes_allowed_host(db):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgetl", "fleet", "serve", "--db", str(db), "--port", str(port),
                             "--allowed-host", "fleet.example.lan"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=os.getcwd())
    try:
        def up() -> bool:
            try:
                return _get(port, "/api/devices", f"127.0.0.1:{port}")[0] == 200
            except OSError:
                return proc.poll() is not None  # exited: stop waiting, the asserts below say why
        assert wait_until(up, timeout=20) and proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert _get(port, "/api/devices", "fleet.example.lan")[0] == 200
        assert _get(port, "/api/devices", f"evil.example:{port}")[0] == 421
    finally:
        proc.terminate()
        proc.wait(10)
