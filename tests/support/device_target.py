"""A small real CommandTarget for command/OTA tests: a real TFLite interpreter, real files.

The device runtime (edgetl_device.runtime.Runtime) is the production CommandTarget; this
one keeps the command and OTA tests independent of the camera and frame loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgetl_device.bundle import open_bundle
from edgetl_device.errors import DeviceError
from edgetl_device.interpreter import load_interpreter


class ModelHolder:
    def __init__(self, workdir: Path, trusted_keys: list[Path] | None = None,
                 frame: np.ndarray | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.trusted_keys = trusted_keys or []
        self.frame = frame if frame is not None else np.full((240, 320, 3), 90, np.uint8)
        self.threshold = 0.5
        self.recording: str | None = None
        self.reloads = 0
        self.interpreter: Any = None
        self.model_version: str | None = None
        self.bundle_dir: Path | None = None
        self.snapshots = 0

    def set_threshold(self, value: float) -> None:
        if not -1e6 <= value <= 1e6:
            raise DeviceError(f"threshold {value} out of range")
        self.threshold = value

    def take_snapshot(self) -> str:
        import cv2

        self.snapshots += 1
        path = self.workdir / f"snapshot_{self.snapshots}.jpg"
        if not cv2.imwrite(str(path), self.frame):
            raise DeviceError(f"could not write {path}")
        return str(path)

    def start_manual_recording(self, duration: float | None) -> str:
        if self.recording is not None:
            raise DeviceError("already recording; send record {action: stop} first")
        self.recording = f"manual-{duration}"
        return self.recording

    def stop_manual_recording(self) -> None:
        self.recording = None

    def reload_config(self) -> None:
        self.reloads += 1

    def swap_model(self, bundle_dir: Path) -> None:
        bundle = open_bundle(bundle_dir, self.trusted_keys)
        interpreter = load_interpreter(bundle.model_path, num_threads=1, delegate="none")
        inp = interpreter.get_input_details()[0]
        interpreter.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
        interpreter.invoke()  # raises for a model that cannot run: the old one stays
        self.interpreter, self.model_version, self.bundle_dir = interpreter, bundle.model_version, Path(bundle_dir)

    def status(self) -> dict:
        return {"threshold": self.threshold, "model_version": self.model_version,
                "recording": self.recording is not None}
