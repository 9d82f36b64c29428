"""`edgetl fleet serve` against hostile input: files a device wrote, event payloads, odd paths, idle sockets.

Real dashboard, real HTTP, real files; nothing mocked.
"""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from edgetl.fleet.dashboard import Dashboard
from edgetl.fleet.store import Message, open_store


@pytest.fixture
def fleet(tmp_path):
    media = tmp_path / "media"
    for dev in ("cam1", "cam2"):
        (media / dev).mkdir(parents=True)
    # what a compromised camera could get copied into --media next to its clips
    (media / "cam1" / "clip.html").write_text("<script>fetch('/api/devices')</script>")
    (media / "cam1" / "clip.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    (media / "cam1" / "snap.jpg").write_bytes(b"\xff\xd8cam1")
    (media / "cam2" / "snap.jpg").write_bytes(b"\xff\xd8cam2")
    db = tmp_path / "fleet.sqlite3"
    now = time.time()
    with open_store(db) as store:
        store.write_batch([
            # no device_id in the payload (the topic names the device)
            Message("cam1", "events", {"event_id": "bare", "time": now, "snapshot_path": "snap.jpg"}, now),
            # cam1 claims to be cam2 inside its payload to borrow cam2's snapshot
            Message("cam1", "events", {"event_id": "spoof", "time": now, "device_id": "cam2",
                                       "snapshot_path": "snap.jpg"}, now),
            *[Message("cam1", "events", {"event_id": f"e{i}", "time": now - i}, now) for i in range(20)],
        ])
    return db, media


def _get(dash: Dashboard, path: str) -> tuple[int, http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", dash.httpd.server_address[1], timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("name", ["clip.html", "clip.svg"])
def test_media_written_by_a_device_never_runs_as_a_page_of_the_dashboard(fleet, name):
    db, media = fleet
    with Dashboard(db, media=media, port=0) as dash:
        status, resp, _ = _get(dash, f"/media/cam1/{name}")
    assert status == 200
    assert "sandbox" in (resp.getheader("Content-Security-Policy") or "")
    assert resp.getheader("X-Content-Type-Options") == "nosniff"


def test_images_are_still_served_inline(fleet):
    db, media = fleet
    with Dashboard(db, media=media, port=0) as dash:
        status, resp, body = _get(dash, "/media/cam1/snap.jpg")
    assert status == 200 and body == b"\xff\xd8cam1" and resp.getheader("Content-Type") == "image/jpeg"


@pytest.mark.parametrize("path", ["/media/%00", "/media/cam1/snap.jpg%00.html", "/media/" + "a" * 5000,
                                  "/media/" + "a/" * 3000 + "x.jpg"],
                         ids=["nul", "nul-suffix", "long-name", "deep"])
def test_odd_media_paths_are_not_found_not_server_errors(fleet, path):
    db, media = fleet
    with Dashboard(db, media=media, port=0) as dash:
        status, _, body = _get(dash, path)
    assert status == 404, body


def test_negative_limit_does_not_return_the_whole_store(fleet):
    db, media = fleet
    with Dashboard(db, media=media, port=0) as dash:
        status, _, body = _get(dash, "/api/events?limit=-1")
        assert status == 400, body[:200]
        status, _, body = _get(dash, "/api/events?limit=3")
        assert status == 200 and len(json.loads(body)) == 3


def test_event_detail_names_the_device_that_sent_it_not_the_one_its_payload_claims(fleet):
    db, media = fleet
    with Dashboard(db, media=media, port=0) as dash:
        status, _, body = _get(dash, "/api/events/bare")
        assert status == 200, body
        bare = json.loads(body)
        assert bare["device_id"] == "cam1" and bare["snapshot_url"] == "/media/cam1/snap.jpg"
        status, _, body = _get(dash, "/api/events/spoof")
        assert status == 200, body
        spoof = json.loads(body)
        assert spoof["device_id"] == "cam1" and spoof["snapshot_url"] == "/media/cam1/snap.jpg"


def test_an_idle_connection_is_dropped_instead_of_holding_a_thread_forever(fleet):
    db, media = fleet
    with Dashboard(db, media=media, port=0, request_timeout=0.5) as dash:
        sock = socket.create_connection(("127.0.0.1", dash.httpd.server_address[1]))
        sock.settimeout(5)
        try:
            started = time.monotonic()
            assert sock.recv(100) == b""  # the server closed it
            assert time.monotonic() - started < 4
        finally:
            sock.close()
        status, _, _ = _get(dash, "/api/devices")  # and it still serves everyone else
        assert status == 200
