"""Simulated devices for tests and load tests: the real device reporter, a made-up camera.

Each `SimDevice` reports through `edgetl_device.mqtt.MqttReporter` (outbox, retained status,
Last Will, telemetry, commands) exactly like a camera would; only the frames are missing.
Commands go through the device's own `edgetl_device.commands.dispatch` with this object as
the `CommandTarget`, and `update_model` through the real `edgetl_device.ota.ModelUpdater`
(download, sha256, signature against the device's trusted keys, staging, a health check that
loads and invokes the TFLite model, rollback): a bundle a real device would refuse fails here too.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from edgetl_device.commands import dispatch
from edgetl_device.errors import DeviceError
from edgetl_device.events import new_event
from edgetl_device.ota import ModelUpdater

log = logging.getLogger(__name__)

LABELS = ("person", "car", "dog", "bicycle", "ship")


class SimDevice:
    def __init__(self, device_id: str, host: str, port: int, workdir: Path, prefix: str = "edgetl",
                 trusted_keys: list[Path] | None = None, telemetry_interval: float = 10.0,
                 model_version: str = "1.0.0", outbox_sync: str = "normal", **mqtt: Any) -> None:
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
        self.snapshots = 0
        self.reloads = 0
        self.recording: str | None = None
        self.updater = ModelUpdater(self.workdir / "bundles", self.trusted_keys)
        config = MqttConfig(host=host, port=port, prefix=prefix, telemetry_interval=telemetry_interval,
                            outbox_path=self.workdir / "outbox.sqlite3", outbox_sync=outbox_sync,
                            **mqtt)  # tls, username, password, ...
        self.reporter = MqttReporter(config, device_id, telemetry_source=self._telemetry,
                                     model_version=model_version)  # announced in the retained status on connect
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

    # -- commands: the device's own dispatch and OTA updater, this object as the CommandTarget ---
    def on_command(self, name: str, raw: bytes) -> None:
        dispatch(name, raw, self, self.reporter, self.updater)

    def set_threshold(self, value: float) -> None:
        self.threshold = value

    def take_snapshot(self) -> str:
        import cv2

        self.snapshots += 1
        path = self.workdir / f"snapshot_{self.snapshots}.jpg"
        frame = np.full((120, 160, 3), 90, np.uint8)
        if not cv2.imwrite(str(path), frame):
            raise DeviceError(f"could not write {path}")
        return str(path)

    def start_manual_recording(self, duration: float | None) -> str:
        if self.recording is not None:
            raise DeviceError("already recording; send record {action: stop} first")
        self.recording = f"manual-{uuid.uuid4().hex[:8]}"
        return self.recording

    def stop_manual_recording(self) -> None:
        self.recording = None

    def reload_config(self) -> None:
        self.reloads += 1

    def swap_model(self, bundle_dir: Path) -> None:
        """Called by the OTA updater once the new bundle verified and passed its health check."""
        manifest = json.loads((Path(bundle_dir) / "manifest.json").read_text(encoding="utf-8"))
        self.model_version = str(manifest.get("model_version", "unknown"))
        self.reporter.publish("status", {"state": "online", "model_version": self.model_version})

    def status(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "model_version": self.model_version, "threshold": self.threshold,
                "uptime_s": round(time.time() - self.started, 1)}
