"""MQTT reporter: events through a durable outbox, retained status with a Last Will, telemetry, commands.

Topics under `<prefix>/<device_id>/` (contract in DEVELOPERS.md, reference in docs/mqtt.md):
`status` (retained), `events` (QoS 1), `telemetry` (QoS 0), `cmd/<name>` (subscribed),
`cmd_result` (QoS 1).

Nothing here blocks the frame loop on the network: `publish("event", ...)` commits the
event to the SQLite outbox and returns; a publisher thread sends pending events in order
(at most `inflight_window` unacknowledged) and deletes each one only when its PUBACK
arrives. paho re-sends its in-flight messages after a reconnect; after a restart of the
process the outbox still holds every unacknowledged event and they go out first. A
consumer may therefore see an event twice and de-duplicates on `event_id`.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edgetl_device.commands import refusal
from edgetl_device.config import MqttConfig
from edgetl_device.errors import DeviceError
from edgetl_device.events import SCHEMA_VERSION
from edgetl_device.outbox import Outbox
from edgetl_device.reporting import KINDS, CommandHandler
from edgetl_device.telemetry import HostTelemetry

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_STOPPING = "device stopping: the command was not run; send it again once the device is back online"
TELEMETRY_FIELDS = ("fps", "inference_ms_p50", "inference_ms_p95", "motion_skip_ratio", "cpu_percent",
                    "temperature_c", "disk_free_mb", "model_version", "uptime_s", "outbox_depth",
                    "outbox_dropped", "camera_online")


def topic_base(prefix: str, device_id: str) -> str:
    return f"{prefix.strip('/')}/{device_id}"


def status_payload(device_id: str, state: str, model_version: str | None = None) -> dict[str, Any]:
    return {"schema": SCHEMA_VERSION, "device_id": device_id, "state": state, "time": time.time(),
            "model_version": model_version}


def _dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), default=str)


def _same_status(a: dict[str, Any], b: dict[str, Any] | None) -> bool:
    """Equal but for the time."""
    return b is not None and {k: v for k, v in a.items() if k != "time"} == {k: v for k, v in b.items() if k != "time"}


class _OutageNoise(logging.Filter):
    """paho logs an ERROR on every failed reconnect attempt ("Client is not connected"), up to one every 30 s
    through a broker outage, which the reporter already reports once as a warning: keep those at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "Client is not connected" in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


class MqttReporter:
    """Reporter over MQTT (paho-mqtt 2.x, MQTT 3.1.1). Starts connecting at once, in the background."""

    def __init__(self, config: MqttConfig, device_id: str,
                 telemetry_source: Callable[[], dict[str, Any]] | None = None,
                 model_version: str | None = None) -> None:
        if not _ID_RE.match(device_id):
            raise DeviceError(f"device id {device_id!r} must be 1-64 letters, digits, '.', '_' or '-' "
                              "(it is an MQTT topic level and the client id)")
        self.config = config
        self.device_id = device_id
        self.client_id = config.client_id or device_id
        self.telemetry_source = telemetry_source
        self.base = topic_base(config.prefix, device_id)
        self.topics = {kind: f"{self.base}/{kind}" for kind in ("status", "events", "telemetry", "cmd_result")}
        self.outbox = Outbox(config.outbox_path, config.outbox_max_events, config.drop_policy, config.outbox_sync)
        self.host = HostTelemetry(disk_path=config.outbox_path.parent if config.outbox_path.parent.exists() else ".")
        self.model_version = model_version  # set before connecting: the first retained status carries it
        self.reconnects = 0
        self._status_extra: dict[str, Any] = {}  # fields of the last "online" status beyond the standard ones
        self._status_lock = threading.Lock()  # publish() against _on_connect: the newest status is sent last
        self._online_sent: dict[str, Any] | None = None  # the "online" status sent on this connection
        self.last_error: str | None = None
        self._unreachable_logged = False  # one warning per outage, not one per reconnect attempt

        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._acks: collections.deque[int] = collections.deque()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq (publisher thread only)
        self._last_sent = 0
        self._commands: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=100)
        self._on_command: CommandHandler | None = None
        self._connect_count = 0

        self.client = self._make_client()
        log.info("MQTT reporter for %s -> %s:%d (tls=%s, user=%s, %d events pending in the outbox)",
                 device_id, config.host, config.port, config.tls is not None, config.username is not None,
                 self.outbox.depth)
        self.client.connect_async(config.host, config.port, config.keepalive)
        self.client.loop_start()
        self._threads = [threading.Thread(target=self._publisher, name="mqtt-publisher", daemon=True),
                         threading.Thread(target=self._telemetry_loop, name="mqtt-telemetry", daemon=True),
                         threading.Thread(target=self._command_loop, name="mqtt-commands", daemon=True)]
        for t in self._threads:
            t.start()

    # -- Reporter protocol -------------------------------------------------------------------
    def publish(self, kind: str, payload: dict[str, Any]) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown message kind {kind!r}; expected one of {KINDS}")
        if kind == "event":
            self._put_event(payload)
        elif kind == "status":
            with self._status_lock:
                self.model_version = payload.get("model_version", self.model_version)
                message = status_payload(self.device_id, payload.get("state", "online"), self.model_version)
                extra = {k: v for k, v in payload.items() if k not in message}
                message.update({**extra, **({"time": payload["time"]} if "time" in payload else {})})
                if message["state"] == "online":
                    self._status_extra = extra  # re-published on reconnect: a broker restart must not erase disk_low
                    # Offline, _on_connect sends it (queued now, paho would send it after that newer one); connected,
                    # only a change is sent: one "online" per connect, and the retained one is the newest.
                    if not self._connected.is_set() or _same_status(message, self._online_sent):
                        return
                    self._online_sent = message
                else:
                    self._online_sent = None
                self.client.publish(self.topics["status"], _dumps(message), qos=1, retain=True)
        elif kind == "telemetry":
            self.client.publish(self.topics["telemetry"], _dumps(self._telemetry(payload)), qos=0)
        else:  # cmd_result
            message = {"schema": SCHEMA_VERSION, "device_id": self.device_id, "time": time.time(), **payload}
            self.client.publish(self.topics["cmd_result"], _dumps(message), qos=1)

    def subscribe(self, on_command: CommandHandler) -> None:
        self._on_command = on_command

    def stop(self) -> None:
        """Deliver what can be delivered within stop_flush_timeout, say `stopped`, disconnect cleanly."""
        if self._stopping.is_set():
            return
        deadline = time.monotonic() + self.config.stop_flush_timeout
        while self.outbox.depth and self._connected.is_set() and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.02)
        self._stopping.set()
        self._wake.set()
        # Never block here: the command thread may be held by a slow command with the queue full. The waiting
        # commands are refused now (like those that reach a runtime that is shutting down), not run afterwards.
        self._refuse_waiting_commands()
        try:
            self._commands.put_nowait(None)
        except queue.Full:  # refilled since (a race with paho's thread): the command loop sees _stopping anyway
            pass
        for t in self._threads:
            t.join(5)
        if self._connected.is_set():
            info = self.client.publish(self.topics["status"],
                                       _dumps(status_payload(self.device_id, "stopped", self.model_version)),
                                       qos=1, retain=True)
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        if self.outbox.depth:
            log.info("stopped with %d events still in the outbox; they are sent on the next start",
                     self.outbox.depth)
        self.outbox.close()

    # -- state for telemetry, tests and benchmarks ---------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    def wait_drained(self, timeout: float = 10.0) -> bool:
        """True once every stored event has been acknowledged by the broker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.depth == 0:
                return True
            time.sleep(0.01)
        return self.outbox.depth == 0

    # -- internals ---------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
                             protocol=mqtt.MQTTv311)
        paho_log = logging.getLogger("edgetl_device.mqtt.paho")
        if not any(isinstance(f, _OutageNoise) for f in paho_log.filters):
            paho_log.addFilter(_OutageNoise())
        client.enable_logger(paho_log)
        # The will is fixed at connect: a time in it would date every later outage to this connect, so it has
        # none and receivers use the time it arrives (when the broker noticed the device gone).
        will = {**status_payload(self.device_id, "offline"), "time": None}
        client.will_set(self.topics["status"], _dumps(will), qos=1, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        if cfg.tls is not None:
            for name in ("ca_file", "cert_file", "key_file"):
                path = getattr(cfg.tls, name)
                if path is not None and not path.is_file():
                    raise DeviceError(f"mqtt.tls.{name}: {path} does not exist; give the PEM file's path")
            if (cfg.tls.cert_file is None) != (cfg.tls.key_file is None):
                raise DeviceError("mqtt.tls: cert_file and key_file go together; give both or neither")
            try:
                client.tls_set(ca_certs=str(cfg.tls.ca_file),
                               certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
                               keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise DeviceError(f"mqtt.tls: cannot load the certificates: {exc}") from exc
            client.tls_insecure_set(cfg.tls.insecure)
        client.max_inflight_messages_set(cfg.inflight_window)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            log.error("MQTT %s (check the user name, password, certificates and ACL for client id %s)",
                      self.last_error, self.client_id)
            return
        self._connect_count += 1
        self._unreachable_logged = False
        if self._connect_count > 1:
            self.reconnects += 1
        log.info("MQTT connected to %s:%d", self.config.host, self.config.port)
        client.subscribe(f"{self.base}/cmd/+", qos=1)
        with self._status_lock:
            online = {**status_payload(self.device_id, "online", self.model_version), **self._status_extra}
            client.publish(self.topics["status"], _dumps(online), qos=1, retain=True)
            self._online_sent = online
            self._connected.set()
        self._wake.set()

    def _on_connect_fail(self, client, userdata) -> None:
        # Once per outage (paho retries every 1..30 s): a WARNING here rather than an ERROR per attempt.
        if not self._unreachable_logged and not self._stopping.is_set():
            self._unreachable_logged = True
            self.last_error = f"broker {self.config.host}:{self.config.port} unreachable"
            log.warning("MQTT %s; retrying every 1-30 s, events wait in the outbox", self.last_error)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            log.warning("MQTT disconnected (%s); events wait in the outbox", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # Runs on paho's thread, possibly under its locks: only hand the mid over.
        self._acks.append(mid)
        self._wake.set()

    def _on_message(self, client, userdata, message) -> None:
        name = message.topic.rsplit("/", 1)[-1]
        if self._stopping.is_set():
            self._refuse(name, message.payload, _STOPPING)
            return
        try:
            self._commands.put_nowait((name, bytes(message.payload)))
        except queue.Full:
            # Answered at once, on paho's thread (publish only queues): the sender learns to retry later.
            waiting = self._commands.qsize()
            log.warning("command queue full (%d waiting); refused command %r", waiting, name)
            self._refuse(name, message.payload, f"device busy: {waiting} commands waiting; retry later")

    def _refuse(self, name: str, payload: bytes, error: str) -> None:
        """Answer a command that is not run (publish only queues: safe on paho's thread)."""
        try:
            self.publish("cmd_result", refusal(name, payload, error))
        except Exception:
            log.exception("could not answer refused command %r", name)

    def _refuse_waiting_commands(self) -> None:
        """Stopping: answer every queued command as not run, without running it."""
        refused = 0
        while True:
            try:
                item = self._commands.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._refuse(*item, _STOPPING)
                refused += 1
        if refused:
            log.warning("stopping: refused %d waiting command(s)", refused)

    def _put_event(self, payload: dict[str, Any]) -> None:
        event = dict(payload)
        event.setdefault("schema", SCHEMA_VERSION)
        event.setdefault("device_id", self.device_id)
        event.setdefault("event_id", uuid.uuid4().hex)
        try:
            self.outbox.put(event)
        except sqlite3.Error as exc:
            # Disk full or failing card: keep the frame loop alive, say so loudly.
            log.error("could not store event %s in the outbox: %s", event["event_id"], exc)
            return
        self._wake.set()

    def _publisher(self) -> None:
        window = self.config.inflight_window
        stall_s = max(30.0, 3.0 * self.config.keepalive)
        last_progress = time.monotonic()
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            seqs = []
            while self._acks:
                seq = self._inflight.pop(self._acks.popleft(), None)
                if seq is not None:
                    seqs.append(seq)
            if seqs:
                last_progress = time.monotonic()
                try:
                    self.outbox.ack(seqs)
                except sqlite3.Error as exc:
                    log.error("could not mark events delivered (%s); they will be sent again", exc)
            if self._stopping.is_set():
                return
            if not self._connected.is_set():
                last_progress = time.monotonic()
                continue
            if self._inflight and time.monotonic() - last_progress > stall_s:
                # Connected, yet no PUBACK for a long time: never wait forever on paho's memory,
                # send every pending event again (duplicates are de-duplicated downstream).
                log.warning("no acknowledgement for %.0f s with %d events in flight; re-sending from the outbox",
                            stall_s, len(self._inflight))
                self._inflight.clear()
                self._last_sent = 0
                last_progress = time.monotonic()
            if len(self._inflight) >= window:
                continue
            try:
                pending = self.outbox.pending(self._last_sent, window - len(self._inflight))
            except sqlite3.Error as exc:  # a flaky card or a locked file: retry, never end the sender thread
                log.error("could not read the outbox (%s); retrying in 1 s", exc)
                self._stopping.wait(1.0)
                continue
            for seq, text in pending:
                info = self.client.publish(self.topics["events"], text, qos=1)
                if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                    log.warning("publish of event seq %d failed (%s); retrying", seq, info.rc)
                    break
                # With NO_CONN paho still holds the QoS 1 message and sends it on reconnect.
                if not self._inflight:  # the stall clock starts at the oldest unacknowledged send, not at the
                    last_progress = time.monotonic()  # last PUBACK, which may be long ago on a quiet camera
                self._inflight[info.mid] = seq
                self._last_sent = seq
                self._wake.set()

    def _telemetry(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        message: dict[str, Any] = dict.fromkeys(TELEMETRY_FIELDS)
        message.update(self.host.snapshot())
        if self.telemetry_source is not None:
            try:
                message.update(self.telemetry_source())
            except Exception:  # a broken source must not stop telemetry
                log.exception("telemetry source failed")
        if extra:
            message.update(extra)
        if message.get("model_version"):
            self.model_version = message["model_version"]
        message["model_version"] = message.get("model_version") or self.model_version
        message.update({"schema": SCHEMA_VERSION, "device_id": self.device_id, "time": time.time(),
                        "outbox_depth": self.outbox.depth, "outbox_dropped": self.outbox.dropped})
        return message

    def _telemetry_loop(self) -> None:
        while not self._stopping.wait(self.config.telemetry_interval):
            if self._connected.is_set():
                try:
                    self.client.publish(self.topics["telemetry"], _dumps(self._telemetry()), qos=0)
                except Exception:
                    log.exception("telemetry publish failed")

    def _command_loop(self) -> None:
        while True:
            item = self._commands.get()
            if item is None or self._stopping.is_set():
                if item is not None:
                    self._refuse(*item, _STOPPING)
                self._refuse_waiting_commands()
                return
            if self._on_command is None:
                log.warning("command %r arrived but nothing subscribed to commands", item[0])
                continue
            try:
                self._on_command(*item)
            except Exception:  # the handler should never raise; never let it kill the thread
                log.exception("command handler failed on %r", item[0])
