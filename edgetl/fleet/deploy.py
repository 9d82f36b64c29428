"""Send commands to devices and roll out model bundles, canary first.

A command goes to `<prefix>/<device>/cmd/<name>` with a fresh `request_id`; the answer is the
device's `cmd_result` carrying the same id. A rollout sends `update_model` to the canary
devices, waits for every answer (or the timeout), and only if all of them succeeded goes on
to the rest of the fleet, wave by wave. One failure or silence halts it: devices not yet
reached keep their current model.

The session also follows each device's retained `status`: a device that says `offline` or `stopped` is
not sent anything and fails at once (it could not receive the command: devices use a clean session),
and a device whose answer was lost (e.g. in a broker restart) but whose status, received after the
command, shows the version being deployed counts as updated.
"""

from __future__ import annotations

import functools
import http.server
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from edgetl.errors import EdgetlError
from edgetl.fleet import mqtt as fleet_mqtt
from edgetl.fleet.topics import COMMANDS, command_topic, parse_topic
from edgetl_device.bundle import sha256_file

log = logging.getLogger(__name__)

_DEVICE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # what edgetl_device.mqtt accepts as a device id


@dataclass
class CommandResult:
    device_id: str
    request_id: str
    command: str
    ok: bool
    detail: Any = None  # the device's "result", or its "error" text, or why we have no answer
    answered: bool = True
    seconds: float = 0.0


@dataclass
class _Status:
    """A device's last status as this session received it."""

    state: str
    time: float | None  # the device's own time (None in the Last Will)
    arrived_wall: float
    retained: bool  # delivered because we subscribed (it predates us), not live


class CommandSession:
    """One broker connection that sends commands and collects `cmd_result`s by request id.

    It also follows the devices' retained `status`: `run` fails a device that is `offline` or `stopped` at
    once, and `wait` counts a device whose answer never came as updated when a status received after the
    command shows `expect_version`.
    """

    # Retained statuses arrive right after the subscription is acknowledged; a device with none after this
    # long has never been seen (or the broker lost its retained messages) and is tried as usual.
    STATUS_SETTLE_S = 1.0

    def __init__(self, broker: fleet_mqtt.BrokerOptions) -> None:
        self.broker = broker
        self._results: dict[str, dict[str, Any]] = {}
        self._status: dict[str, _Status] = {}  # what the broker says now; forgotten on reconnect
        self._versions: dict[str, tuple[float, str]] = {}  # latest model_version seen (monotonic arrival)
        self._cond = threading.Condition()
        prefix = broker.prefix.rstrip("/")
        self.client = fleet_mqtt.connect(broker, subscribe=[(f"{prefix}/+/cmd_result", 1), (f"{prefix}/+/status", 1)],
                                         on_message=self._on_message)
        self._status_settled = time.monotonic() + self.STATUS_SETTLE_S
        subscribe_on_connect = self.client.on_connect

        def on_connect(client: mqtt.Client, userdata: object, flags: Any, reason_code: Any, props: Any) -> None:
            if not reason_code.is_failure:  # a reconnect: the broker re-sends the retained statuses it still has
                with self._cond:
                    self._status.clear()
                    self._status_settled = time.monotonic() + self.STATUS_SETTLE_S
            subscribe_on_connect(client, userdata, flags, reason_code, props)

        self.client.on_connect = on_connect

    def close(self) -> None:
        fleet_mqtt.close(self.client)

    def __enter__(self) -> CommandSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        topic = parse_topic(msg.topic, self.broker.prefix)
        try:
            payload = json.loads(msg.payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning("ignoring malformed message on %s", msg.topic)
            return
        if topic is not None and topic.kind == "status" and isinstance(payload, dict):
            self._on_status(topic.device_id, payload, bool(msg.retain))
            return
        if topic is None or not isinstance(payload, dict) or "request_id" not in payload:
            return
        with self._cond:
            self._results[f"{topic.device_id}/{payload['request_id']}"] = payload
            self._cond.notify_all()

    def _on_status(self, device_id: str, payload: dict[str, Any], retained: bool) -> None:
        state, when, version = payload.get("state"), payload.get("time"), payload.get("model_version")
        if not isinstance(state, str):
            return
        now = time.monotonic()
        with self._cond:
            self._status[device_id] = _Status(state, when if isinstance(when, int | float) else None, time.time(),
                                              retained)
            if isinstance(version, str) and version:  # the Last Will has none: it does not erase the last known
                self._versions[device_id] = (now, version)
            self._cond.notify_all()

    def unreachable(self, devices: Sequence[str]) -> dict[str, str]:
        """Devices whose status says they cannot receive a command now (offline, stopped), with the reason.

        Waits up to STATUS_SETTLE_S after (re)connecting for retained statuses of devices not seen yet;
        a device with no status at all is not in the answer (it is tried).
        """
        with self._cond:
            while any(d not in self._status for d in devices):
                remaining = self._status_settled - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return {d: why for d in devices if d in self._status and (why := _unreachable_reason(self._status[d]))}

    def send(self, device_id: str, command: str, args: dict[str, Any] | None = None) -> str:
        """Publish one command with a fresh request id (args must not carry their own)."""
        request_id = uuid.uuid4().hex
        self.send_payload(device_id, command, {"schema": 1, **(args or {}), "request_id": request_id})
        return request_id

    def send_payload(self, device_id: str, command: str, payload: dict[str, Any]) -> None:
        info = self.client.publish(command_topic(self.broker.prefix, device_id, command), json.dumps(payload),
                                   qos=1)
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            # The broker is away (restart, network cut) and paho reconnects by itself: it keeps this QoS 1
            # message and sends it once the link is back. The wait for the device's answer bounds how long.
            log.warning("broker %s unreachable; %s for %s goes out when it is back", self.broker.url, command,
                        device_id)
            return
        info.wait_for_publish(30)

    def wait(self, pending: dict[str, str | list[str]], command: str, timeout: float,
             expect_version: str | None = None, sent_at: float | None = None) -> list[CommandResult]:
        """pending: device id -> request id(s). A device is done when all its requests are answered or one
        failed. Returns one result per device; those without an answer fail after `timeout`, unless
        `expect_version` is given and a status received since `sent_at` (time.monotonic(), default: now)
        shows it: then the answer was lost, not the update (ok, answered=False)."""
        start = time.monotonic()
        sent_at = start if sent_at is None else sent_at
        deadline = start + timeout
        wanted = {d: [r] if isinstance(r, str) else list(r) for d, r in pending.items()}
        done: dict[str, CommandResult] = {}
        with self._cond:
            while True:
                for device, rids in wanted.items():
                    if device in done:
                        continue
                    answers = [self._results.get(f"{device}/{rid}") for rid in rids]
                    failed = next((a for a in answers if a is not None and not a.get("ok")), None)
                    if failed is not None or all(a is not None for a in answers):
                        last = failed or answers[-1]
                        ok = failed is None
                        done[device] = CommandResult(device, str(last.get("request_id")), command, ok,
                                                     last.get("result") if ok else last.get("error"),
                                                     seconds=time.monotonic() - start)
                remaining = deadline - time.monotonic()
                if len(done) == len(wanted) or remaining <= 0:
                    break
                self._cond.wait(remaining)
            versions = dict(self._versions)
        for device, rids in wanted.items():
            if device in done:
                continue
            seen = versions.get(device)
            if expect_version is not None and seen is not None and seen[0] >= sent_at and seen[1] == expect_version:
                log.warning("%s: no answer to %s, but its status says it runs %s now", device, command,
                            expect_version)
                done[device] = CommandResult(device, rids[-1], command, True,
                                             "updated (confirmed by status; answer lost)", answered=False,
                                             seconds=timeout)
            else:
                done[device] = CommandResult(device, rids[-1], command, False, f"no answer within {timeout:g}s",
                                             answered=False, seconds=timeout)
        return [done[d] for d in wanted]

    def run(self, devices: Sequence[str], command: str, args: dict[str, Any] | list[dict[str, Any]] | None = None,
            timeout: float = 30.0, expect_version: str | None = None) -> list[CommandResult]:
        """Send to all devices at once, then wait for all answers. `args` may also be a list of complete
        payloads (each with its request_id) sent in order, like the chunks of an MQTT transfer.

        Devices whose retained status is `offline` or `stopped` are not sent anything and fail at once;
        `expect_version`: see `wait`."""
        if command not in COMMANDS:
            raise EdgetlError(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}")
        skipped = self.unreachable(devices)
        for d, why in skipped.items():
            log.warning("%s: %s; %s not sent", d, why, command)
        sent_at = time.monotonic()
        pending: dict[str, str | list[str]] = {}
        for d in devices:
            if d in skipped:
                continue
            if isinstance(args, list):
                for payload in args:
                    self.send_payload(d, command, payload)
                pending[d] = [str(p["request_id"]) for p in args]
            else:
                pending[d] = self.send(d, command, args)
        answers = {r.device_id: r for r in self.wait(pending, command, timeout, expect_version, sent_at)}
        return [answers[d] if d in answers else CommandResult(d, "", command, False, f"{skipped[d]}; not sent",
                                                              answered=False)
                for d in dict.fromkeys(devices)]


def _unreachable_reason(status: _Status) -> str | None:
    """Why a device in this status cannot take a command now, or None when it can (or we cannot tell)."""
    if status.state == "stopped":
        return "stopped" + (f" (clean shutdown at {_clock(status.time)})" if status.time is not None else "")
    if status.state == "offline":
        if status.time is not None:
            return f"offline since {_clock(status.time)}"
        if status.retained:  # the Last Will carries no time: it was already there when we subscribed
            return f"offline since before {_clock(status.arrived_wall)} (its Last Will is retained)"
        return f"offline since {_clock(status.arrived_wall)}"
    return None


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@dataclass
class RolloutReport:
    waves: list[list[CommandResult]] = field(default_factory=list)
    halted: bool = False
    not_attempted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.halted and all(r.ok for w in self.waves for r in w)


def plan_waves(devices: Sequence[str], canary: int, batch: int | None) -> list[list[str]]:
    """Canary wave (the first `canary` devices), then the rest in waves of `batch` (all at once when None)."""
    devices = list(dict.fromkeys(devices))  # keep order, drop repeats
    if canary < 0 or (batch is not None and batch < 1):
        raise EdgetlError("--canary must be >= 0 and --batch >= 1")
    if canary >= len(devices) and canary > 0:
        raise EdgetlError(f"--canary {canary} leaves no device after the canary ({len(devices)} in total); "
                          "pass --canary 0 to update them all at once")
    waves = [devices[:canary]] if canary else []
    rest = devices[canary:]
    step = batch or len(rest) or 1
    waves += [rest[i:i + step] for i in range(0, len(rest), step)]
    return waves


def rollout(session: CommandSession, devices: Sequence[str], args: dict[str, Any] | list[dict[str, Any]],
            canary: int = 1,
            batch: int | None = None, timeout: float = 120.0,
            on_wave: Callable[[int, list[CommandResult]], None] | None = None,
            version: str | None = None) -> RolloutReport:
    """Send `update_model` wave by wave; halt at the first wave with a failure or a silent device.

    `version`: the bundle's model_version; a device whose answer is lost but whose status then shows it
    counts as updated. Devices whose status is offline or stopped fail at once (see CommandSession.run)."""
    waves = plan_waves(devices, canary, batch)
    report = RolloutReport()
    for i, wave in enumerate(waves):
        log.info("rollout wave %d/%d: %s", i + 1, len(waves), ", ".join(wave))
        results = session.run(wave, "update_model", args, timeout, expect_version=version)
        report.waves.append(results)
        if on_wave:
            on_wave(i, results)
        if not all(r.ok for r in results):
            report.halted = True
            report.not_attempted = [d for w in waves[i + 1:] for d in w]
            failed = [f"{r.device_id}: {r.detail}" for r in results if not r.ok]
            log.error("rollout halted after wave %d (%s); %d device(s) not attempted keep their model",
                      i + 1, "; ".join(failed), len(report.not_attempted))
            break
    return report


# -------------------------------------------------------------------------------- bundle delivery
def bundle_archive(bundle: Path, workdir: Path) -> Path:
    """The .tar.gz to ship: the file itself, or a directory packed with `edgetl.bundle.pack_bundle`."""
    if bundle.is_file() and bundle.name.endswith((".tar.gz", ".tgz")):
        return bundle
    if bundle.is_dir():
        from edgetl.bundle import pack_bundle

        return pack_bundle(bundle, workdir / f"{bundle.name}.tar.gz")
    raise EdgetlError(f"bundle not found or not a bundle: {bundle} (give the folder or .tar.gz from `edgetl export`)")


class BundleServer:
    """Serve one bundle archive over HTTP so devices can download it (`update_model {url, sha256}`)."""

    def __init__(self, archive: Path, host: str = "0.0.0.0", port: int = 0, advertise: str | None = None) -> None:
        self.archive = archive
        handler = functools.partial(_OneFileHandler, archive=archive)
        self.httpd = http.server.ThreadingHTTPServer((host, port), handler)
        self.port = self.httpd.server_address[1]
        self.advertise = advertise or _local_address()
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="bundle-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.advertise}:{self.port}/{self.archive.name}"

    def __enter__(self) -> BundleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _OneFileHandler(http.server.BaseHTTPRequestHandler):
    def __init__(self, *args: Any, archive: Path, **kwargs: Any) -> None:
        self.archive = archive
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.lstrip("/") != self.archive.name:
            self.send_error(404, "only the bundle being deployed is served here")
            return
        data = self.archive.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: Any) -> None:
        log.info("bundle download: %s", fmt % args)


def _local_address() -> str:
    """The address other machines reach us on (the interface of the default route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent for a UDP connect
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def update_args(archive: Path, via: str, url: str | None = None) -> dict[str, Any] | list[dict[str, Any]]:
    """Arguments of `update_model`: where to get the bundle plus its sha256 (the device checks both).

    via: `url` (devices download it), `path` (a path the devices can read, e.g. shared storage),
    `mqtt` (the archive itself, in chunks through the broker: a list of complete payloads).
    """
    if via == "mqtt":
        from edgetl_device.ota import chunk_commands

        return list(chunk_commands(archive))
    args: dict[str, Any] = {"sha256": sha256_file(archive)}
    if via == "path":
        args["path"] = str(archive.resolve())
    elif via == "url":
        if not url:
            raise EdgetlError("--via url needs the bundle's URL")
        args["url"] = url
    else:
        raise EdgetlError(f"unknown delivery {via!r}: use serve, url, path or mqtt")
    return args


def staging_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="edgetl-deploy-"))


# -------------------------------------------------------------------------------- device selection
def resolve_devices(devices: str | None, group: str | None, groups_file: Path | None) -> list[str]:
    """`--devices a,b,c` or `--group NAME` from a YAML file `{groups: {NAME: [ids]}}` (or `{NAME: [ids]}`)."""
    if bool(devices) == bool(group):
        raise EdgetlError("give exactly one of --devices ID,ID,... or --group NAME")
    if devices:
        ids = [d.strip() for d in devices.split(",") if d.strip()]
        if not ids:
            raise EdgetlError("--devices is empty; give device ids separated by commas")
        return _checked_ids(ids)
    path = groups_file or Path(os.environ.get("EDGETL_FLEET_GROUPS", "fleet-groups.yaml"))
    if not path.is_file():
        raise EdgetlError(f"groups file {path} not found: write `groups: {{{group}: [cam1, cam2]}}` there "
                          "or pass --groups FILE")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise EdgetlError(f"{path} is not valid YAML ({exc})") from exc
    groups = doc.get("groups", doc) if isinstance(doc, dict) else {}
    if group not in groups:
        raise EdgetlError(f"group {group!r} not in {path}; known groups: {', '.join(map(str, groups)) or 'none'}")
    ids = groups[group]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise EdgetlError(f"group {group!r} in {path} must be a non-empty list of device ids")
    return _checked_ids(ids)


def _checked_ids(ids: list[str]) -> list[str]:
    """Reject ids no device can have: a `+`/`#` in a topic makes paho raise mid-rollout, after the canary."""
    bad = [i for i in ids if not _DEVICE_ID.fullmatch(i)]
    if bad:
        raise EdgetlError(f"not a device id: {', '.join(map(repr, bad))}; ids are 1-64 letters, digits, '.', '_' "
                          "or '-'")
    return ids
