"""The event store: events, status changes, telemetry and command results in SQLite or PostgreSQL.

One small interface over both: `open_store("fleet.sqlite3")` (embedded default) or
`open_store("postgresql://user@host/db")`. Events are idempotent by `event_id`, so a
message the broker delivers twice (QoS 1) is stored once. Writes come in batches
(`write_batch`) so a recorder commits once per batch rather than per message.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgetl.errors import EdgetlError

log = logging.getLogger(__name__)

EVENT_COLUMNS = (
    "event_id", "device_id", "seq", "type", "object_id", "label", "score", "unknown_score", "unknown",
    "time", "start_time", "end_time", "clip_path", "snapshot_path", "model_version",
)
DEVICE_COLUMNS = ("device_id", "state", "state_time", "last_seen", "model_version", "telemetry", "events",
                  "last_seq")


@dataclass(frozen=True)
class Message:
    """One message off the broker: which device, which kind (events|status|telemetry|cmd_result)."""

    device_id: str
    kind: str
    payload: dict[str, Any]
    received_at: float


@dataclass
class BatchResult:
    events_new: int = 0
    events_duplicate: int = 0
    status: int = 0
    telemetry: int = 0
    cmd_results: int = 0
    rejected: int = 0


class EventStore:
    """SQL shared by both back ends; subclasses give the connection and the dialect bits."""

    placeholder = "?"
    autoinc = "INTEGER PRIMARY KEY"
    greatest = "MAX"

    def __init__(self, conn: Any, prefix: str = "") -> None:
        if not re.fullmatch(r"[A-Za-z0-9_]*", prefix):
            raise EdgetlError(f"table prefix {prefix!r} may only contain letters, digits and _")
        self.conn = conn
        self.p = prefix
        self._lock = threading.RLock()
        self._create()

    # -- schema -------------------------------------------------------------------------------------
    def _create(self) -> None:
        p = self.p
        statements = [
            f"""CREATE TABLE IF NOT EXISTS {p}events (
                event_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, seq BIGINT, type TEXT, object_id TEXT,
                label TEXT, score DOUBLE PRECISION, unknown_score DOUBLE PRECISION, unknown INTEGER,
                time DOUBLE PRECISION, start_time DOUBLE PRECISION, end_time DOUBLE PRECISION,
                clip_path TEXT, snapshot_path TEXT, model_version TEXT, payload TEXT NOT NULL,
                received_at DOUBLE PRECISION NOT NULL)""",
            f"CREATE INDEX IF NOT EXISTS {p}events_device_time ON {p}events (device_id, time)",
            f"CREATE INDEX IF NOT EXISTS {p}events_time ON {p}events (time)",
            f"""CREATE TABLE IF NOT EXISTS {p}status (
                id {self.autoinc}, device_id TEXT NOT NULL, state TEXT, time DOUBLE PRECISION,
                model_version TEXT, received_at DOUBLE PRECISION NOT NULL)""",
            f"CREATE INDEX IF NOT EXISTS {p}status_device ON {p}status (device_id, received_at)",
            # a Last Will repeats one (state, time) at every outage: _write_one dedups against the current status
            f"DROP INDEX IF EXISTS {p}status_once",
            f"""CREATE TABLE IF NOT EXISTS {p}telemetry (
                id {self.autoinc}, device_id TEXT NOT NULL, time DOUBLE PRECISION, payload TEXT NOT NULL,
                received_at DOUBLE PRECISION NOT NULL)""",
            f"CREATE INDEX IF NOT EXISTS {p}telemetry_device ON {p}telemetry (device_id, time)",
            f"""CREATE TABLE IF NOT EXISTS {p}cmd_results (
                request_id TEXT NOT NULL, device_id TEXT NOT NULL, command TEXT, ok INTEGER, error TEXT,
                payload TEXT NOT NULL, time DOUBLE PRECISION, PRIMARY KEY (request_id, device_id))""",
            f"""CREATE TABLE IF NOT EXISTS {p}devices (
                device_id TEXT PRIMARY KEY, state TEXT, state_time DOUBLE PRECISION,
                last_seen DOUBLE PRECISION, model_version TEXT, telemetry TEXT, events BIGINT NOT NULL DEFAULT 0,
                last_seq BIGINT)""",
        ]
        with self._lock:
            cur = self.conn.cursor()
            for sql in statements:
                cur.execute(sql)
            self.conn.commit()

    def drop(self) -> None:
        """Remove this store's tables (tests, or starting over)."""
        with self._lock:
            cur = self.conn.cursor()
            for table in ("events", "status", "telemetry", "cmd_results", "devices"):
                cur.execute(f"DROP TABLE IF EXISTS {self.p}{table}")
            self.conn.commit()

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes -------------------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", self.placeholder) if self.placeholder != "?" else sql

    def write_batch(self, messages: Iterable[Message]) -> BatchResult:
        """Store messages in one transaction. Malformed payloads are counted as rejected and logged."""
        result = BatchResult()
        with self._lock:
            cur = self.conn.cursor()
            try:
                for msg in messages:
                    try:
                        self._write_one(cur, msg, result)
                    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # the message's fault
                        result.rejected += 1
                        log.warning("rejected %s from %s: %s", msg.kind, msg.device_id, exc)
                self.conn.commit()
            except Exception:
                self.conn.rollback()
                raise
        return result

    def _write_one(self, cur: Any, msg: Message, result: BatchResult) -> None:
        p, g, pl = self.p, self.greatest, msg.payload
        if msg.kind == "events":
            row = _event_row(msg)
            cur.execute(self._sql(
                f"INSERT INTO {p}events ({', '.join(EVENT_COLUMNS)}, payload, received_at) "
                f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) + 2))}) ON CONFLICT (event_id) DO NOTHING"), row)
            if cur.rowcount == 1:
                result.events_new += 1
                self._touch(cur, msg, events=1, seq=row[2], model_version=row[14])
            else:
                result.events_duplicate += 1
        elif msg.kind == "status":
            state = str(pl["state"])
            when = _num(pl.get("time"))
            version = _text(pl.get("model_version"))
            cur.execute(self._sql(f"SELECT state, state_time FROM {p}devices WHERE device_id = ?"), (msg.device_id,))
            current = cur.fetchone()
            if when is not None and current is not None and (current[0], current[1]) == (state, when):
                return  # the retained copy of the current status, delivered again on a resubscribe
            cur.execute(self._sql(
                f"INSERT INTO {p}status (device_id, state, time, model_version, received_at) VALUES (?, ?, ?, ?, ?)"),
                (msg.device_id, state, when, version, msg.received_at))
            cur.execute(self._sql(
                f"INSERT INTO {p}devices (device_id, state, state_time, last_seen, model_version) "
                f"VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET state = excluded.state, "
                f"state_time = excluded.state_time, last_seen = {g}({p}devices.last_seen, excluded.last_seen), "
                f"model_version = COALESCE(excluded.model_version, {p}devices.model_version)"),
                (msg.device_id, state, when if when is not None else msg.received_at, msg.received_at, version))
            result.status += 1
        elif msg.kind == "telemetry":
            text = json.dumps(pl, separators=(",", ":"))
            version = _text(pl.get("model_version"))  # checked before anything is written
            cur.execute(self._sql(
                f"INSERT INTO {p}telemetry (device_id, time, payload, received_at) VALUES (?, ?, ?, ?)"),
                (msg.device_id, _num(pl.get("time")), text, msg.received_at))
            self._touch(cur, msg, telemetry=text, model_version=version)
            result.telemetry += 1
        elif msg.kind == "cmd_result":
            row = (str(pl["request_id"]), msg.device_id, _text(pl.get("command")), int(bool(pl.get("ok"))),
                   _text(pl.get("error")), json.dumps(pl), _num(pl.get("time")))
            cur.execute(self._sql(
                f"INSERT INTO {p}cmd_results (request_id, device_id, command, ok, error, payload, time) "
                f"VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id, device_id) DO NOTHING"), row)
            self._touch(cur, msg)
            result.cmd_results += 1
        else:
            raise ValueError(f"unknown message kind {msg.kind!r}")

    def _touch(self, cur: Any, msg: Message, events: int = 0, seq: int | None = None,
               telemetry: str | None = None, model_version: str | None = None) -> None:
        p, g = self.p, self.greatest
        cur.execute(self._sql(
            f"INSERT INTO {p}devices (device_id, last_seen, events, last_seq, telemetry, model_version) "
            f"VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
            f"last_seen = {g}({p}devices.last_seen, excluded.last_seen), "
            f"events = {p}devices.events + excluded.events, "
            f"last_seq = COALESCE({g}({p}devices.last_seq, excluded.last_seq), excluded.last_seq, "
            f"{p}devices.last_seq), "
            f"telemetry = COALESCE(excluded.telemetry, {p}devices.telemetry), "
            f"model_version = COALESCE(excluded.model_version, {p}devices.model_version)"),
            (msg.device_id, msg.received_at, events, seq, telemetry, model_version))

    def prune_telemetry(self, before: float) -> int:
        """Delete telemetry received before `before` (unix time); returns how many rows went.

        Telemetry is the bulk of the store (200 devices every 5 s is 3.5 M rows a day); events
        and status changes are kept.
        """
        with self._lock:
            cur = self.conn.cursor()
            cur.execute(self._sql(f"DELETE FROM {self.p}telemetry WHERE received_at < ?"), [before])
            self.conn.commit()
            return max(cur.rowcount, 0)

    # -- reads --------------------------------------------------------------------------------------
    def events(self, device: str | None = None, since: float | None = None, until: float | None = None,
               label: str | None = None, unknown: bool | None = None, limit: int | None = 1000,
               newest_first: bool = False) -> list[dict[str, Any]]:
        """Query events; every filter is optional. Rows are dicts with the event columns."""
        where, args = [], []
        for column, op, value in (("device_id", "=", device), ("time", ">=", since), ("time", "<", until),
                                  ("label", "=", label)):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        if unknown is not None:
            where.append("unknown = ?")
            args.append(int(unknown))
        sql = f"SELECT {', '.join(EVENT_COLUMNS)} FROM {self.p}events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY time {'DESC' if newest_first else 'ASC'}, device_id, seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._fetch(sql, args)
        return [_event_dict(r) for r in rows]

    def event(self, event_id: str) -> dict[str, Any] | None:
        """The event as its device sent it, with `device_id` set to the device whose topic it came on (the
        payload's own field is whatever the device wrote)."""
        rows = self._fetch(f"SELECT payload, device_id FROM {self.p}events WHERE event_id = ?", [event_id])
        return {**json.loads(rows[0][0]), "device_id": rows[0][1]} if rows else None

    def count_events(self, device: str | None = None) -> int:
        if device is None:
            return int(self._fetch(f"SELECT COUNT(*) FROM {self.p}events", [])[0][0])
        return int(self._fetch(f"SELECT COUNT(*) FROM {self.p}events WHERE device_id = ?", [device])[0][0])

    def devices(self) -> list[dict[str, Any]]:
        """Latest known state per device (status, last telemetry, event count)."""
        rows = self._fetch(f"SELECT {', '.join(DEVICE_COLUMNS)} FROM {self.p}devices ORDER BY device_id", [])
        out = []
        for r in rows:
            d = dict(zip(DEVICE_COLUMNS, r, strict=True))
            d["telemetry"] = json.loads(d["telemetry"]) if d["telemetry"] else None
            out.append(d)
        return out

    def labels(self) -> list[str]:
        rows = self._fetch(f"SELECT DISTINCT label FROM {self.p}events WHERE label IS NOT NULL ORDER BY label", [])
        return [r[0] for r in rows]

    def status_history(self, device: str) -> list[dict[str, Any]]:
        rows = self._fetch(f"SELECT state, time, model_version, received_at FROM {self.p}status "
                           f"WHERE device_id = ? ORDER BY received_at, id", [device])
        return [dict(zip(("state", "time", "model_version", "received_at"), r, strict=True)) for r in rows]

    def telemetry(self, device: str, since: float | None = None) -> list[dict[str, Any]]:
        rows = self._fetch(f"SELECT payload FROM {self.p}telemetry WHERE device_id = ? AND time >= ? "
                           f"ORDER BY time", [device, since if since is not None else float("-inf")])
        return [json.loads(r[0]) for r in rows]

    def cmd_results(self, request_id: str) -> list[dict[str, Any]]:
        rows = self._fetch(f"SELECT payload FROM {self.p}cmd_results WHERE request_id = ? ORDER BY device_id",
                           [request_id])
        return [json.loads(r[0]) for r in rows]

    def _fetch(self, sql: str, args: Sequence[Any]) -> list[tuple]:
        with self._lock:
            cur = self.conn.cursor()
            cur.execute(self._sql(sql), list(args))
            rows = cur.fetchall()
            self.conn.commit()  # end the read transaction so PostgreSQL sees later writes
            return rows


class SqliteStore(EventStore):
    def __init__(self, path: str | Path, prefix: str = "", busy_timeout: float = 30.0) -> None:
        path = Path(path)
        if path.is_dir():
            raise EdgetlError(f"{path} is a folder; give a database file such as {path / 'fleet.sqlite3'}")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(path), check_same_thread=False, timeout=busy_timeout)
            conn.execute("PRAGMA journal_mode=WAL")  # the dashboard reads while the recorder writes
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise EdgetlError(f"{path} is not a usable SQLite database ({exc}); give another --db path") from exc
        self.path = path
        super().__init__(conn, prefix)


class PostgresStore(EventStore):
    placeholder = "%s"
    autoinc = "BIGSERIAL PRIMARY KEY"
    greatest = "GREATEST"

    def __init__(self, url: str, prefix: str = "") -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise EdgetlError("PostgreSQL needs psycopg: pip install 'edgetl[fleet]'") from exc
        try:
            conn = psycopg.connect(url, connect_timeout=5)
        except psycopg.Error as exc:
            raise EdgetlError(f"cannot connect to PostgreSQL {_redact(url)}: {str(exc).strip()}") from exc
        super().__init__(conn, prefix)


def open_store(db: str | Path, prefix: str = "") -> EventStore:
    """`postgresql://...` (or `postgres://`) opens PostgreSQL; anything else is a SQLite file path."""
    text = str(db)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresStore(text, prefix)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///"):]
    return SqliteStore(text, prefix)


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _text(value: Any) -> str | None:
    """A string column's value; a JSON object/array there cannot be bound and would fail the whole batch."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _int64(value: Any) -> int | None:
    """A BIGINT column's value; out of range fails the batch server-side (PostgreSQL), so reject it here."""
    if value is None:
        return None
    n = int(value)
    if not -(2**63) <= n < 2**63:
        raise ValueError(f"{n} is out of the 64-bit integer range")
    return n


def _event_row(msg: Message) -> tuple:
    pl = msg.payload
    event_id = pl["event_id"]
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("event without event_id")
    return (
        event_id, msg.device_id, _int64(pl.get("seq")), _text(pl.get("type")), _text(pl.get("object_id")),
        _text(pl.get("label")), _num(pl.get("score")), _num(pl.get("unknown_score")), int(bool(pl.get("unknown"))),
        _num(pl.get("time")), _num(pl.get("start_time")), _num(pl.get("end_time")), _text(pl.get("clip_path")),
        _text(pl.get("snapshot_path")), _text(pl.get("model_version")), json.dumps(pl, separators=(",", ":")),
        msg.received_at,
    )


def _event_dict(row: tuple) -> dict[str, Any]:
    d = dict(zip(EVENT_COLUMNS, row, strict=True))
    d["unknown"] = bool(d["unknown"])
    return d


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: float | None = None) -> float:
    """A point in time: unix seconds, ISO 8601 (UTC when no zone), or an age like `15m`, `2h`, `7d`."""
    text = text.strip()
    now = time.time() if now is None else now
    m = _RELATIVE.match(text)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise EdgetlError(
            f"cannot read time {text!r}: use ISO 8601 (2026-11-28T12:00), unix seconds, or an age like 15m/2h/7d"
        ) from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()
