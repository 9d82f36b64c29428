"""The local JSONL event log: a torn tail after a crash, and a full disk, lose or corrupt no acknowledged event."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgetl_device.reporting import JsonlReporter, read_jsonl


def _lines_all_parse(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_torn_last_line_after_crash_does_not_swallow_the_next_event(tmp_path: Path) -> None:
    log_path = tmp_path / "events.jsonl"
    writer = textwrap.dedent(f"""
        from edgetl_device.reporting import JsonlReporter
        r = JsonlReporter({str(log_path)!r}, "dev")
        i = 0
        while True:
            r.publish("event", {{"i": i}})
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not log_path.exists() or log_path.read_bytes().count(b"\n") < 5):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # A crash (power loss, or ENOSPC then kill) mid-write leaves the last line torn.
    data = log_path.read_bytes()
    log_path.write_bytes(data + b'{"kind":"event","time":1.0,"payload":{"i":12')
    stored = read_jsonl(log_path, "event")
    last_seq = stored[-1]["seq"]

    r = JsonlReporter(log_path, "dev")
    r.publish("event", {"i": "after-restart"})
    r.stop()

    events = read_jsonl(log_path, "event")
    assert events[-1]["i"] == "after-restart", "the first event after a restart was glued to the torn line"
    assert events[-1]["seq"] == last_seq + 1


@pytest.fixture
def tiny_disk(tmp_path: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("needs permission to mount a small tmpfs for a real full disk")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_full_disk_publish_is_all_or_nothing(tiny_disk: Path) -> None:
    log_path = tiny_disk / "events.jsonl"
    r = JsonlReporter(log_path, "dev")
    r.publish("event", {"i": "before"})
    filler = tiny_disk / "filler"
    _fill(filler)
    failed = []
    for i in range(100):
        try:
            r.publish("event", {"i": i, "pad": "y" * 300})
        except OSError:
            failed.append(i)
    assert failed, "the disk was not full"
    filler.unlink()
    r.publish("event", {"i": "after"})
    r.stop()

    msgs = _lines_all_parse(log_path)  # every line parses: nothing torn
    events = [m["payload"] for m in msgs if m["kind"] == "event"]
    stored = [e["i"] for e in events]
    # publish raised => not stored (a caller that retries must not create a duplicate); returned => stored.
    assert not set(failed) & set(stored), f"events reported as failed were written later: {set(failed) & set(stored)}"
    assert stored[0] == "before" and stored[-1] == "after"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "seq skipped numbers for unstored events"
