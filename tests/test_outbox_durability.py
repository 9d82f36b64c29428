"""The SQLite outbox: seq increases by one across restarts, nothing stored is lost, drops are counted."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgetl_device.errors import DeviceError
from edgetl_device.outbox import Outbox

ROOT = Path(__file__).resolve().parents[1]


def test_seq_increases_by_one_and_survives_restart_after_everything_was_acked(tmp_path):
    box = Outbox(tmp_path / "o.db")
    stored = [box.put({"event_id": f"e{i}"}) for i in range(5)]
    assert [e["seq"] for e in stored] == [1, 2, 3, 4, 5]
    assert [s for s, _ in box.pending(limit=10)] == [1, 2, 3, 4, 5]
    assert [s for s, _ in box.pending(after_seq=3)] == [4, 5]
    assert box.ack([1, 2, 3, 4, 5, 99]) == 5 and box.depth == 0
    box.close()
    box = Outbox(tmp_path / "o.db")
    assert box.put({"event_id": "after-restart"})["seq"] == 6
    assert box.depth == 1 and box.last_seq == 6
    box.close()


def test_unacked_events_are_there_after_reopen_in_order(tmp_path):
    box = Outbox(tmp_path / "o.db")
    for i in range(10):
        box.put({"event_id": f"e{i}", "n": i})
    box.ack([2, 5])
    box.close()
    box = Outbox(tmp_path / "o.db")
    assert [s for s, _ in box.pending(limit=100)] == [1, 3, 4, 6, 7, 8, 9, 10] and box.depth == 8
    box.close()


@pytest.mark.parametrize("policy, kept", [("drop_oldest", [4, 5, 6]), ("drop_newest", [1, 2, 3])])
def test_bounded_outbox_drops_by_policy_and_counts_across_restarts(tmp_path, policy, kept):
    box = Outbox(tmp_path / "o.db", max_events=3, drop_policy=policy)
    results = [box.put({"event_id": f"e{i}"}) for i in range(6)]
    assert [s for s, _ in box.pending(limit=10)] == kept and box.dropped == 3
    assert (results[-1] is None) == (policy == "drop_newest")
    box.close()
    assert Outbox(tmp_path / "o.db", max_events=3, drop_policy=policy).dropped == 3


def test_sigkill_right_after_put_loses_nothing(tmp_path):
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT / 'device')!r})
        from edgetl_device.outbox import Outbox
        box = Outbox({str(tmp_path / 'o.db')!r})
        i = 0
        while True:
            i += 1
            box.put({{"event_id": f"e{{i}}"}})
            print(i, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if int(line) >= 300:
            break
    proc.kill()
    proc.wait(5)
    box = Outbox(tmp_path / "o.db")
    seqs = [s for s, _ in box.pending(limit=100_000)]
    assert len(seqs) >= 300 and seqs == list(range(1, len(seqs) + 1)) and box.last_seq == len(seqs)
    assert box._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    box.close()


def test_bad_outbox_settings_and_files_are_clear_errors(tmp_path):
    with pytest.raises(DeviceError, match="drop_policy"):
        Outbox(tmp_path / "o.db", drop_policy="drop_random")
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DeviceError, match="move it aside"):
        Outbox(bad)


def test_outbox_with_damaged_event_pages_is_a_clear_error(tmp_path):
    # The header and schema pages are fine, so the damage only shows when the events are counted.
    box = Outbox(tmp_path / "o.db")
    for i in range(300):
        box.put({"event_id": f"e{i}", "pad": "x" * 200})
    box.close()
    path = tmp_path / "o.db"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size - 4 * 4096)
        f.write(b"\xff" * 2 * 4096)
    with pytest.raises(DeviceError, match="move it aside"):
        Outbox(path)


def test_disk_full_while_the_outbox_is_full_keeps_the_count_and_says_why(tmp_path):
    box = Outbox(tmp_path / "o.db", max_events=3)
    for i in range(3):
        box.put({"event_id": f"e{i}"})
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count={pages}")  # the file cannot grow: SQLite's "disk full"
    for _ in range(3):
        with pytest.raises(sqlite3.OperationalError, match="full"):
            box.put({"event_id": "big", "pad": "x" * 50_000})
    assert box.depth == len(box.pending(limit=100)) == 3 and box.dropped == 0
    box._db.execute(f"PRAGMA max_page_count={pages * 100}")  # space again: the bound still holds
    box.put({"event_id": "big", "pad": "x" * 50_000})
    assert box.depth == len(box.pending(limit=100)) == 3 and box.dropped == 1
    box.close()


def test_ack_failing_on_a_locked_file_keeps_full_sync_and_the_outbox_usable(tmp_path):
    box = Outbox(tmp_path / "o.db", sync="full")
    box.put({"event_id": "e1"})
    box.put({"event_id": "e2"})
    box._db.execute("PRAGMA busy_timeout=100")  # not 30 s for the test
    other = sqlite3.connect(tmp_path / "o.db", isolation_level=None)  # e.g. an inspection tool
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        box.ack([1])
    other.execute("ROLLBACK")
    other.close()
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: puts still survive power loss
    assert box.put({"event_id": "e3"})["seq"] == 3 and box.ack([1]) == 1
    assert [s for s, _ in box.pending()] == [2, 3] and box.depth == 2
    box.close()


def test_write_ahead_log_is_trimmed_after_checkpoints(tmp_path):
    # A device sends events for months: the -wal file stayed at its high-water mark (~4 MB) for the life of
    # the process; it is trimmed back to WAL_SIZE_LIMIT after each automatic checkpoint.
    from edgetl_device.outbox import WAL_SIZE_LIMIT

    box = Outbox(tmp_path / "o.sqlite3", sync="normal")
    try:
        for i in range(3000):
            stored = box.put({"type": "start", "object_id": f"o{i}", "pad": "x" * 400})
            box.ack([stored["seq"]])
        wal = tmp_path / "o.sqlite3-wal"
        assert wal.stat().st_size <= WAL_SIZE_LIMIT + 64 * 1024, wal.stat().st_size
        assert box.depth == 0 and box.last_seq == 3000
    finally:
        box.close()
