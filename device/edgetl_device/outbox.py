"""Store-and-forward outbox: every event is on disk before it is sent, and leaves only on PUBACK.

One SQLite file in WAL mode. `put` assigns the per-device `seq` (last value kept in a
meta row, so it keeps increasing after acknowledged rows are deleted and across restarts)
and commits before returning: a crash after `put` loses nothing. The outbox is bounded;
when full, the drop policy removes the oldest pending event (`drop_oldest`) or refuses the
new one (`drop_newest`), and every drop is counted in the same file.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgetl_device.errors import DeviceError

log = logging.getLogger(__name__)

DROP_POLICIES = ("drop_oldest", "drop_newest")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0), ('dropped', 0);
"""


WAL_SIZE_LIMIT = 512 * 1024  # bytes the write-ahead log may keep between checkpoints


class Outbox:
    """Thread-safe bounded event outbox (one connection guarded by a lock).

    sync="full" fsyncs every commit (survives power loss); "normal" survives a
    process crash only, and is faster on slow SD cards.
    """

    def __init__(self, path: str | os.PathLike[str], max_events: int = 100_000,
                 drop_policy: str = "drop_oldest", sync: str = "full") -> None:
        if drop_policy not in DROP_POLICIES:
            raise DeviceError(f"outbox drop_policy {drop_policy!r} is not one of {DROP_POLICIES}")
        if max_events < 1:
            raise DeviceError("outbox max_events must be at least 1")
        if sync not in ("full", "normal"):
            raise DeviceError(f"outbox sync {sync!r} must be 'full' or 'normal'")
        self.path = Path(path)
        self.max_events = max_events
        self.drop_policy = drop_policy
        self.sync = sync
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            # SQLite keeps the WAL at its high-water mark (~4 MB after the default 1000-page checkpoint) until
            # close; on a small SD card trim it back to this after each checkpoint.
            self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._db.execute(f"PRAGMA synchronous={sync.upper()}")
            self._db.executescript(_SCHEMA)
            # Counting reads every events page: damage there must get the same clear error.
            self._depth = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        except (sqlite3.DatabaseError, OSError) as exc:
            raise DeviceError(
                f"cannot open the event outbox {self.path}: {exc}. Check the path is writable; "
                "if the file is corrupt, move it aside (pending events in it are lost)."
            ) from exc
        self._lock = threading.Lock()

    def put(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Store one event, assigning its `seq`; returns the stored event, or None when dropped."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            removed = 0
            try:
                if self._depth >= self.max_events:
                    self._bump("dropped", 1, cur)
                    if self.drop_policy == "drop_newest":
                        cur.execute("COMMIT")
                        log.warning("outbox full (%d events): dropped the new event", self._depth)
                        return None
                    cur.execute("DELETE FROM events WHERE seq = (SELECT MIN(seq) FROM events)")
                    removed = cur.rowcount  # applied to _depth only once committed (a rollback restores the row)
                    log.warning("outbox full (%d events): dropped the oldest event", self.max_events)
                seq = self._meta("last_seq", cur) + 1
                stored = dict(event)
                stored["seq"] = seq
                cur.execute("INSERT INTO events (seq, event_id, payload) VALUES (?, ?, ?)",
                            (seq, str(stored.get("event_id", "")), json.dumps(stored, separators=(",", ":"))))
                cur.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (seq,))
                cur.execute("COMMIT")
            except BaseException:
                self._rollback(cur)
                raise
            self._depth += 1 - removed
            return stored

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[tuple[int, str]]:
        """Unacknowledged events with seq > after_seq, oldest first, as (seq, JSON text)."""
        with self._lock:
            return self._db.execute(
                "SELECT seq, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            ).fetchall()

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete acknowledged events; returns how many were still pending."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._lock:
            cur = self._db.cursor()
            # A lost ack only means a re-send (de-duplicated downstream), so acks skip the fsync;
            # the next put's fsync makes them durable anyway (WAL is sequential).
            cur.execute("PRAGMA synchronous=NORMAL")
            try:
                cur.execute("BEGIN IMMEDIATE")
                removed = 0
                try:
                    for i in range(0, len(seqs), 500):  # SQLite's bound-parameter limit
                        chunk = seqs[i:i + 500]
                        cur.execute(f"DELETE FROM events WHERE seq IN ({','.join('?' * len(chunk))})", chunk)
                        removed += cur.rowcount
                    cur.execute("COMMIT")
                except BaseException:
                    self._rollback(cur)
                    raise
            finally:  # a failed ack (locked file, I/O error) must not leave later puts without fsync
                cur.execute(f"PRAGMA synchronous={self.sync.upper()}")
            self._depth -= removed
            return removed

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._meta("dropped", self._db.cursor())

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._meta("last_seq", self._db.cursor())

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rollback(self, cur: sqlite3.Cursor) -> None:
        # SQLITE_FULL / IOERR may already have rolled back: a second ROLLBACK would hide the real error.
        if self._db.in_transaction:
            cur.execute("ROLLBACK")

    def _meta(self, key: str, cur: sqlite3.Cursor) -> int:
        return int(cur.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def _bump(self, key: str, by: int, cur: sqlite3.Cursor) -> None:
        cur.execute("UPDATE meta SET value = value + ? WHERE key = ?", (by, key))
