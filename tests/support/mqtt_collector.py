"""A real MQTT subscriber that records what a device published (tests and tools/bench_mqtt.py)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class Collector:
    """Subscribes to `topic` and keeps every JSON message with its arrival time.

    Re-subscribes on every reconnect and retries connecting quickly (0.1 s), so after a
    broker restart it is back before a device with the usual 1 s back-off.
    """

    def __init__(self, port: int, topic: str = "edgetl/#", qos: int = 0, host: str = "127.0.0.1",
                 client_id: str | None = None, **client_kwargs: Any) -> None:
        self.topic = topic
        self.qos = qos
        self.messages: list[tuple[str, dict[str, Any], float]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client_id = client_id or f"collector-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, **client_kwargs)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.2)
        self.host, self.port = host, port

    def start(self, timeout: float = 10.0) -> Collector:
        self.client.connect_async(self.host, self.port, keepalive=5)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"collector could not subscribe to {self.topic} on port {self.port}")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=self.qos)

    def _on_message(self, client, userdata, message) -> None:
        try:
            payload = json.loads(message.payload)
        except ValueError:
            payload = {"raw": bytes(message.payload)}
        with self._lock:
            self.messages.append((message.topic, payload, time.time()))

    def of(self, suffix: str) -> list[dict[str, Any]]:
        """Payloads whose topic ends with `/suffix` (e.g. "events", "status")."""
        with self._lock:
            return [p for t, p, _ in self.messages if t.endswith("/" + suffix)]

    def wait_for(self, predicate: Callable[[Collector], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return predicate(self)


def delivery_report(events: list[dict[str, Any]], expected: int) -> dict[str, int]:
    """Lost, duplicate and seq-gap counts for the events of one device whose seqs run 1..expected."""
    unique = {e["event_id"]: e for e in events}
    seqs = sorted(e["seq"] for e in unique.values())
    seen = set(seqs)
    return {
        "received": len(events),
        "unique": len(unique),
        "duplicates": len(events) - len(unique),
        "lost": sum(1 for s in range(1, expected + 1) if s not in seen),
        "seq_gaps": (max(seen) - len(seen)) if seen else 0,  # seqs missing below the highest seen
        "seq_repeats": len(seqs) - len(seen),
        "missing_ranges": _ranges([s for s in range(1, expected + 1) if s not in seen])[:10],
    }


def _ranges(values: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in values:
        if out and out[-1][1] == v - 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out
