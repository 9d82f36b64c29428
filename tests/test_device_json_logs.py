"""`runtime.log_format: json`: the real `edgetl-device run` keeps one JSON object per stderr line, even failing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import yaml


def test_a_runtime_failure_is_one_json_log_line_and_a_nonzero_exit(shared_data, tmp_path):
    # e.g. a data_dir the service cannot create (outside the unit's ReadWritePaths, or a file in the way)
    (tmp_path / "a_file").write_text("")
    models = shared_data / "models"
    config = {
        "device_id": "cam-json",
        "camera": {"source": str(shared_data / "videos/vtest.avi")},
        "model": {"path": str(models / "mobilenet_v1_0.25_128_quant.tflite"),
                  "labels": str(models / "imagenet_labels.txt"), "num_threads": 1},
        "storage": {"data_dir": str(tmp_path / "a_file" / "data"), "min_free_mb": 1},
        "runtime": {"log_format": "json"},
    }
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(config))
    exe = shutil.which("edgetl-device")
    cmd = [exe] if exe else [sys.executable, "-m", "edgetl_device.cli"]
    proc = subprocess.run([*cmd, "run", "--config", str(tmp_path / "device.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr  # a runtime failure: systemd's Restart=on-failure tries again
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}\n{proc.stderr}") from None
    errors = [r for r in records if r["level"] == "ERROR"]
    assert errors and "NotADirectoryError" in errors[-1]["exc"], records
