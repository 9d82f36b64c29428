"""How the runtime reports to the outside world: a 3-method interface.

The frame loop calls `publish` and must never block on it; the MQTT reporter
(`edgetl_device.mqtt`) and the local JSONL log below both implement it.

Message kinds: "event" (see `edgetl_device.events`), "status", "telemetry",
"cmd_result". Commands arrive through the handler given to `subscribe` as
(name, raw payload bytes).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

CommandHandler = Callable[[str, bytes], None]
KINDS = ("event", "status", "telemetry", "cmd_result")


class Reporter(Protocol):
    def publish(self, kind: str, payload: dict[str, Any]) -> None:
        """Queue a message; never blocks the caller on the network."""

    def subscribe(self, on_command: CommandHandler) -> None:
        """Deliver remote commands (name, raw payload) to `on_command`."""

    def stop(self) -> None:
        """Flush what can be flushed and release resources."""


class JsonlReporter:
    """Embedded default: append every message to a local JSON-lines file.

    Events get a per-device `seq` that continues across restarts (read back
    from the file's last event on start). Each line is flushed and fsynced so a
    crash loses nothing that `publish` returned from.
    """

    def __init__(self, path: str | os.PathLike[str], device_id: str = "device") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.device_id = device_id
        self._lock = threading.Lock()
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        # a crash mid-write can leave a partial last line: the next event must not be glued to it
        self._torn = _ends_torn(self._fd)
        self._seq = _last_seq(self.path)

    def publish(self, kind: str, payload: dict[str, Any]) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown message kind {kind!r}; expected one of {KINDS}")
        with self._lock:
            if self._fd is None:
                raise ValueError("JsonlReporter is stopped")
            record = dict(payload)
            seq = self._seq + 1
            if kind == "event":
                record["seq"] = seq
            line = json.dumps({"kind": kind, "time": time.time(), "payload": record}, separators=(",", ":"))
            try:
                _append_all_or_nothing(self._fd, (("\n" if self._torn else "") + line + "\n").encode("utf-8"))
            except OSError:
                self._torn = _ends_torn(self._fd)  # the partial line could not be cut off
                raise
            self._torn = False
            if kind == "event":
                self._seq = seq  # only a stored event uses up a seq: no gaps after a failed write

    def subscribe(self, on_command: CommandHandler) -> None:
        # A local log has no command channel; commands come over MQTT.
        log.debug("JsonlReporter has no command channel; ignoring subscribe")

    def stop(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _append_all_or_nothing(fd: int, data: bytes) -> None:
    """Append `data` durably, or raise leaving the file as it was (no buffered remainder written later)."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        done = 0
        while done < len(data):
            done += os.write(fd, data[done:])
        os.fsync(fd)
    except OSError:
        try:
            os.ftruncate(fd, start)  # drop a partial line (e.g. ENOSPC): a failed publish stores nothing
        except OSError:
            log.warning("could not cut a partial line from the event log")
        raise


def _ends_torn(fd: int) -> bool:
    size = os.lseek(fd, 0, os.SEEK_END)
    return bool(size) and os.pread(fd, 1, size - 1) != b"\n"


def _last_seq(path: Path) -> int:
    if not path.exists():
        return 0
    last = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line after a crash
            if msg.get("kind") == "event":
                last = max(last, int(msg["payload"].get("seq", 0)))
    return last


def read_jsonl(path: str | os.PathLike[str], kind: str | None = None) -> list[dict[str, Any]]:
    """Read back the payloads of a JSONL report log (optionally one kind)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            if kind is None or msg.get("kind") == kind:
                out.append(msg["payload"])
    return out
