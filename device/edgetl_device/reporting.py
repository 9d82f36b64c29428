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
        self._seq = _last_seq(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the runtime

    def publish(self, kind: str, payload: dict[str, Any]) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown message kind {kind!r}; expected one of {KINDS}")
        with self._lock:
            record = dict(payload)
            if kind == "event":
                self._seq += 1
                record["seq"] = self._seq
            line = json.dumps({"kind": kind, "time": time.time(), "payload": record}, separators=(",", ":"))
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def subscribe(self, on_command: CommandHandler) -> None:
        # A local log has no command channel; commands come over MQTT.
        log.debug("JsonlReporter has no command channel; ignoring subscribe")

    def stop(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


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
