"""Simulated devices for tests and load tests: the real device reporter, a made-up camera.

Each `SimDevice` reports through `edgetl_device.mqtt.MqttReporter` (outbox, retained status,
Last Will, telemetry, commands) exactly like a camera would; only the frames are missing. It
answers commands itself, and `update_model` is real: it downloads the bundle (path or URL),
checks the sha256, and verifies the signature with `edgetl_device.bundle.extract_bundle`
against the device's trusted keys, so a bundle that a real device would refuse fails here too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from edgetl_device.bundle import extract_bundle
from edgetl_device.errors import DeviceError
from edgetl_device.events import new_event

log = logging.getLogger(__name__)

LABELS = ("person", "car", "dog", "bicycle", "ship")


class SimDevice:
    def __init__(self, device_id: str, host: str, port: int, workdir: Path, prefix: str = "edgetl",
                 trusted_keys: list[Path] | None = None, telemetry_interval: float = 10.0,
                 model_version: str = "1.0.0", outbox_sync: str = "normal") -> None:
        from edgetl_device.config import MqttConfig
        from edgetl_device.mqtt import MqttReporter

        self.device_id = device_id
        self.workdir = Path(workdir) / device_id
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.trusted_keys = list(trusted_keys or [])
        self.model_version = model_version
        self.threshold = 0.5
        self.fps = random.uniform(8, 15)
        self.started = time.time()
        self.events_sent = 0
        self._objects = 0
        config = MqttConfig(host=host, port=port, prefix=prefix, telemetry_interval=telemetry_interval,
                            outbox_path=self.workdir / "outbox.sqlite3", outbox_sync=outbox_sync)
        self.reporter = MqttReporter(config, device_id, telemetry_source=self._telemetry)
        self.reporter.model_version = model_version  # announced in the retained status on connect
        self.reporter.subscribe(self.on_command)

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self.reporter.wait_connected(timeout)

    def stop(self) -> None:
        self.reporter.stop()

    def kill(self) -> None:
        """Vanish without a goodbye (power cut): the broker publishes the Last Will."""
        self.reporter._stopping.set()  # noqa: SLF001 - simulate a crash of the real reporter
        self.reporter._wake.set()  # noqa: SLF001
        sock = self.reporter.client.socket()
        if sock is not None:
            sock.close()
        self.reporter.client.loop_stop()

    def emit_event(self, label: str | None = None, unknown: bool = False, **extra: Any) -> dict[str, Any]:
        self._objects += 1
        label = label or random.choice(LABELS)
        event = new_event(self.device_id, "start", f"{self.device_id}-{self._objects}", label,
                          random.uniform(0.5, 0.99), unknown_score=random.random(), unknown=unknown,
                          model_version=self.model_version, **extra)
        self.reporter.publish("event", event)
        self.events_sent += 1
        return event

    def _telemetry(self) -> dict[str, Any]:
        return {"fps": round(self.fps + random.uniform(-0.5, 0.5), 2),
                "inference_ms_p50": round(random.uniform(20, 30), 1),
                "inference_ms_p95": round(random.uniform(35, 60), 1), "motion_skip_ratio": 0.6,
                "model_version": self.model_version, "uptime_s": round(time.time() - self.started, 1),
                "camera_online": True}

    # -- commands -------------------------------------------------------------------------------
    def on_command(self, name: str, raw: bytes) -> None:
        try:
            body = json.loads(raw)
            request_id = body["request_id"]
        except (ValueError, KeyError, TypeError):
            log.warning("%s: malformed command %s", self.device_id, name)
            return
        try:
            result = self._handle(name, body)
            answer = {"request_id": request_id, "command": name, "ok": True, "result": result}
        except (DeviceError, OSError, ValueError) as exc:
            answer = {"request_id": request_id, "command": name, "ok": False, "error": str(exc)}
        self.reporter.publish("cmd_result", answer)

    def _handle(self, name: str, body: dict[str, Any]) -> Any:
        if name == "ping":
            return {"pong": time.time(), "model_version": self.model_version}
        if name == "set_threshold":
            value = float(body["value"])
            if not 0 <= value <= 1:
                raise ValueError(f"threshold {value} must be within [0, 1]")
            self.threshold = value
            return {"threshold": value}
        if name == "update_model":
            return self._update_model(body)
        if name in ("snapshot", "record", "reload_config"):
            return {"accepted": name}
        raise ValueError(f"unknown command {name!r}")

    def _update_model(self, body: dict[str, Any]) -> dict[str, Any]:
        staging = self.workdir / f"download-{uuid.uuid4().hex[:8]}.tar.gz"
        if body.get("path"):
            shutil.copyfile(body["path"], staging)
        elif body.get("url"):
            with urllib.request.urlopen(body["url"], timeout=30) as r, open(staging, "wb") as f:  # noqa: S310
                shutil.copyfileobj(r, f)
        else:
            raise ValueError("update_model needs a path or url")
        try:
            digest = hashlib.sha256(staging.read_bytes()).hexdigest()
            if body.get("sha256") and digest != body["sha256"]:
                raise DeviceError(f"downloaded bundle sha256 {digest[:12]} does not match {body['sha256'][:12]}")
            bundle = extract_bundle(staging, self.workdir / "models" / uuid.uuid4().hex, self.trusted_keys)
        finally:
            staging.unlink(missing_ok=True)
        self.model_version = bundle.model_version
        self.reporter.publish("status", {"state": "online", "model_version": self.model_version})
        return {"model_version": self.model_version}
