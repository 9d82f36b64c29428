"""A full disk (a real, tiny tmpfs in a private mount namespace): the real `edgetl-device run` keeps running."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import pytest
import yaml

from tests.support.device_config import device_cli, vtest_device_dict


def test_status_reports_on_a_full_disk_do_not_stop_the_runtime(shared_data, tmp_path):
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare -rm` (user and mount namespaces) to mount a tiny tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    config = vtest_device_dict(shared_data, "cam-full", disk / "data",
                               runtime={"status_interval": 0.2, "log_format": "json"})
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(config))
    cmd = shlex.join(device_cli())
    script = (f"mount -t tmpfs -o size=256k tmpfs {disk} && mkdir {disk}/data && "
              f"(dd if=/dev/zero of={disk}/filler bs=4k 2>/dev/null; true) && "
              f"exec {cmd} run --config {tmp_path / 'device.yaml'} --max-frames 60")
    proc = subprocess.run([unshare, "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = [json.loads(line) for line in proc.stderr.splitlines() if '"final status' in line]
    assert final and '"frames_in": 60' in final[0]["message"], proc.stderr[-3000:]
