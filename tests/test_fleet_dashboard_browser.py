"""The dashboard in a real headless Chromium: devices, filtering by device and class, an event's snapshot and clip."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgetl.fleet.dashboard import Dashboard, media_url
from edgetl.fleet.store import Message, open_store
from edgetl_device.events import new_event

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture
def fleet_db(tmp_path):
    """A store with two devices (one online, one that went offline) and a snapshot + clip on disk."""
    import cv2

    media = tmp_path / "media"
    (media / "cam2").mkdir(parents=True)
    frame = np.zeros((120, 160, 3), np.uint8)
    cv2.rectangle(frame, (40, 30), (120, 90), (0, 200, 255), -1)
    assert cv2.imwrite(str(media / "cam2" / "obj7.jpg"), frame)
    writer = cv2.VideoWriter(str(media / "cam2" / "obj7.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for _ in range(5):
        writer.write(frame)
    writer.release()
    db = tmp_path / "fleet.sqlite3"
    store = open_store(db)
    now = time.time()
    msgs = [
        Message("cam1", "status", {"state": "online", "time": now, "model_version": "1.0.0"}, now),
        Message("cam1", "telemetry", {"time": now, "fps": 11.5, "inference_ms_p50": 24, "disk_free_mb": 900,
                                      "outbox_depth": 0, "model_version": "1.0.0"}, now),
        Message("cam2", "status", {"state": "offline", "time": now, "model_version": "1.1.0"}, now),
    ]
    for seq, label in enumerate(("person", "car", "person"), start=1):
        e = new_event("cam1", "start", f"o{seq}", label, 0.8)
        msgs.append(Message("cam1", "events", {**e, "seq": seq, "time": now - 100 + seq}, now))
    e = new_event("cam2", "end", "obj7", "dog", 0.42, unknown=True, unknown_score=0.9,
                  snapshot_path="/var/lib/edgetl/clips/obj7.jpg", clip_path="/var/lib/edgetl/clips/obj7.avi")
    msgs.append(Message("cam2", "events", {**e, "seq": 1, "time": now - 50}, now))
    store.write_batch(msgs)
    store.close()
    return db, media, e["event_id"]


def test_api_and_media_stay_inside_the_media_folder(fleet_db, tmp_path):
    db, media, event_id = fleet_db
    assert media_url(media, "cam2", "/var/lib/edgetl/clips/obj7.jpg") == "/media/cam2/obj7.jpg"
    assert media_url(media, "cam2", "../../etc/passwd") is None
    with Dashboard(db, media=media, port=0) as dash:
        devices = json.load(urllib.request.urlopen(dash.url + "api/devices"))
        assert [(d["device_id"], d["state"], d["events"]) for d in devices] == [("cam1", "online", 3),
                                                                               ("cam2", "offline", 1)]
        events = json.load(urllib.request.urlopen(dash.url + "api/events?label=person"))
        assert [e["seq"] for e in events] == [3, 1]  # newest first
        detail = json.load(urllib.request.urlopen(dash.url + f"api/events/{event_id}"))
        assert detail["snapshot_url"] == "/media/cam2/obj7.jpg" and detail["clip_url"] == "/media/cam2/obj7.avi"
        for bad in ("media/..%2F..%2Ffleet.sqlite3", "api/events/nope", "api/events?since=someday"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(dash.url + bad)
            assert err.value.code in (400, 404)


@pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which("chromium") is None,
                    reason=f"chromium not installed at {CHROMIUM} (tools/test.sh installs it)")
def test_click_through_devices_and_events(fleet_db):
    from playwright.sync_api import sync_playwright

    db, media, event_id = fleet_db
    with Dashboard(db, media=media, port=0) as dash, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(dash.url)
            page.wait_for_selector("body[data-ready='1']", timeout=15000)
            assert page.locator("#devices tbody tr").count() == 2
            assert "2 devices, 1 online" in page.inner_text("#summary")
            assert page.locator("#events tbody tr").count() == 4

            page.click("#devices tbody tr[data-device='cam1']")  # filter to one device
            page.wait_for_function("document.querySelectorAll('#events tbody tr').length === 3")
            page.select_option("#f-label", "car")
            page.wait_for_function("document.querySelectorAll('#events tbody tr').length === 1")
            assert "car" in page.inner_text("#events tbody")

            page.click("#devices tbody tr[data-device='cam1']")  # click again: all devices
            page.select_option("#f-label", "")
            page.check("#f-unknown")
            page.wait_for_function("document.querySelectorAll('#events tbody tr').length === 1")
            page.click(f"#events tbody tr[data-event='{event_id}'] td:nth-child(5)")
            page.wait_for_selector("#snapshot")
            page.wait_for_function("document.querySelector('#snapshot').naturalWidth === 160")
            href = page.get_attribute("#clip", "href")
            assert href == "/media/cam2/obj7.avi"
            clip = page.request.get(dash.url.rstrip("/") + href)
            assert clip.ok and clip.body()[:4] == b"RIFF"
        finally:
            browser.close()


@pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which("chromium") is None,
                    reason=f"chromium not installed at {CHROMIUM} (tools/test.sh installs it)")
def test_device_provided_strings_cannot_inject_html(tmp_path):
    """Whatever a device (or anyone who may publish under its topic) sends is shown as text, never run."""
    from playwright.sync_api import sync_playwright

    attack = '<img src=x onerror="document.body.dataset.pwned=1">'
    db = tmp_path / "fleet.sqlite3"
    store = open_store(db)
    now = time.time()
    store.write_batch([
        Message("cam1", "status", {"state": "online", "time": now, "model_version": attack}, now),
        Message("cam1", "telemetry", {"time": now, "fps": 10, "outbox_depth": attack, "outbox_dropped": attack}, now),
        Message("cam1", "events", {**new_event("cam1", "start", attack, attack, 0.5), "seq": 1}, now),
    ])
    store.close()
    with Dashboard(db, port=0) as dash, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(dash.url)
            page.wait_for_selector("body[data-ready='1']", timeout=15000)
            page.wait_for_timeout(300)  # an injected image's onerror would have fired by now
            assert page.locator("#devices img, #events img").count() == 0
            assert page.evaluate("document.body.dataset.pwned") is None
            assert attack in page.inner_text("#devices tbody")
        finally:
            browser.close()
