"""Broker -> event store: subscribe to every device's events, status, telemetry and command results.

The recorder uses a persistent MQTT session (fixed client id, clean_session=False), so the
broker keeps QoS 1 events for it while it is down, and acknowledges each QoS 1 message only
after the batch holding it is committed: a crash between receipt and commit makes the broker
send it again, and the store's `event_id` key drops the duplicate. Nothing is lost either way.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from edgetl.fleet import mqtt as fleet_mqtt
from edgetl.fleet.store import BatchResult, EventStore, Message
from edgetl.fleet.topics import parse_topic, subscriptions

log = logging.getLogger(__name__)


@dataclass
class RecorderStats:
    received: int = 0
    malformed: int = 0
    totals: BatchResult = field(default_factory=BatchResult)
    batches: int = 0


class Recorder:
    """Run with `start()`/`stop()` (or as a context manager); `stats` counts what was stored."""

    def __init__(self, store: EventStore, broker: fleet_mqtt.BrokerOptions,
                 client_id: str = "edgetl-fleet-recorder", batch_seconds: float = 0.1,
                 batch_max: int = 500, keep_telemetry: float | None = None) -> None:
        self.store = store
        self.broker = broker
        self.client_id = client_id
        self.batch_seconds = batch_seconds
        self.batch_max = batch_max
        self.keep_telemetry = keep_telemetry  # seconds of telemetry to keep; None keeps all
        self._next_prune = 0.0
        self._stopping = threading.Event()
        self.stats = RecorderStats()
        self._queue: queue.Queue[tuple[Message, int, int] | None] = queue.Queue()
        self._client: mqtt.Client | None = None
        self._writer: threading.Thread | None = None
        self._idle = threading.Event()

    def start(self) -> Recorder:
        self._writer = threading.Thread(target=self._write_loop, name="fleet-recorder", daemon=True)
        self._writer.start()
        self._client = fleet_mqtt.connect(
            self.broker, client_id=self.client_id, clean_session=False, manual_ack=True,
            subscribe=subscriptions(self.broker.prefix), on_message=self._on_message)
        return self

    def stop(self) -> None:
        """Commit and acknowledge what arrived, disconnect, then let the writer finish."""
        if self._client is not None:
            self.wait_idle(5.0)
            self._stopping.set()
            fleet_mqtt.close(self._client)
            self._client = None
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(30)
            self._writer = None

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until everything received so far is committed (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.05)
        return False

    def _on_message(self, client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.stats.received += 1
        topic = parse_topic(msg.topic, self.broker.prefix)
        payload = _decode(msg.payload)
        if topic is None or topic.kind == "cmd" or payload is None:
            self.stats.malformed += 1
            log.warning("ignoring malformed message on %s", msg.topic)
            client.ack(msg.mid, msg.qos)
            return
        self._queue.put((Message(topic.device_id, topic.kind, payload, time.time()), msg.mid, msg.qos))

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            batch = [item]
            deadline = time.monotonic() + self.batch_seconds
            while len(batch) < self.batch_max:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            stopping = any(b is None for b in batch)
            items = [b for b in batch if b is not None]
            try:
                if items:
                    self._commit_with_retry(items)
                self._maybe_prune()
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _commit_with_retry(self, items: list[tuple[Message, int, int]]) -> None:
        """Retry until the store takes the batch: nothing is acknowledged before it is stored, and the broker
        holds back further QoS 1 messages meanwhile (its in-flight window), so memory stays bounded."""
        delay = 0.5
        while True:
            try:
                self._commit(items)
                return
            except Exception as exc:
                if self._stopping.is_set():
                    log.error("store write failed while stopping (%s); %d messages stay unacknowledged and the "
                              "broker sends them again to this session", exc, len(items))
                    return
                log.error("store write failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _maybe_prune(self) -> None:
        if self.keep_telemetry is None or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + 600
        try:
            gone = self.store.prune_telemetry(time.time() - self.keep_telemetry)
            if gone:
                log.info("pruned %d telemetry rows older than %.0fs", gone, self.keep_telemetry)
        except Exception:
            log.exception("telemetry pruning failed; will try again")

    def _commit(self, items: list[tuple[Message, int, int]]) -> None:
        result = self.store.write_batch(m for m, _, _ in items)
        t = self.stats.totals
        t.events_new += result.events_new
        t.events_duplicate += result.events_duplicate
        t.status += result.status
        t.telemetry += result.telemetry
        t.cmd_results += result.cmd_results
        t.rejected += result.rejected
        self.stats.batches += 1
        client = self._client
        if client is not None:
            for _, mid, qos in items:
                if qos > 0:
                    client.ack(mid, qos)


def _decode(raw: bytes) -> dict | None:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
