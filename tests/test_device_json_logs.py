"""`runtime.log_format: json`: the real `edgetl-device run` keeps one JSON object per stderr line, even failing."""

from __future__ import annotations

import json
import subprocess

import yaml

from tests.support.device_config import device_cli, vtest_device_dict


def test_a_runtime_failure_is_one_json_log_line_and_a_nonzero_exit(shared_data, tmp_path):
    # e.g. a data_dir the service cannot create (outside the unit's ReadWritePaths, or a file in the way)
    (tmp_path / "a_file").write_text("")
    config = vtest_device_dict(shared_data, "cam-json", tmp_path / "a_file" / "data", runtime={"log_format": "json"})
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([*device_cli(), "run", "--config", str(tmp_path / "device.yaml")],
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
