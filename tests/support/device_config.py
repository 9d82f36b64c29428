"""Device configs on the shared vtest video and Coral MobileNetV1-0.25, as a config file holds them."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any


def vtest_device_dict(shared_data: Path, device_id: str, data_dir: Path, **sections: dict[str, Any]) -> dict:
    """A valid config dict; each keyword merges into its section (camera, storage, decision, ...)."""
    models = shared_data / "models"
    data: dict[str, Any] = {
        "device_id": device_id,
        "camera": {"source": str(shared_data / "videos/vtest.avi")},
        "model": {"path": str(models / "mobilenet_v1_0.25_128_quant.tflite"),
                  "labels": str(models / "imagenet_labels.txt"), "num_threads": 1},
        "storage": {"data_dir": str(data_dir), "min_free_mb": 1},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return data


def device_cli() -> list[str]:
    """The installed `edgetl-device` command, or the module when the script is not on PATH."""
    exe = shutil.which("edgetl-device")
    return [exe] if exe else [sys.executable, "-m", "edgetl_device.cli"]
