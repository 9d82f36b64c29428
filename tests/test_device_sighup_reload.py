"""SIGHUP (`systemctl reload edgetl-device`) re-reads the config file like the `reload_config` command:
the real `edgetl-device run` on the looped vtest video and the Coral model, nothing mocked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import yaml

from tests.support.device_config import device_cli, vtest_device_dict


def _status(data_dir: Path) -> dict:
    try:
        return json.loads((data_dir / "status.json").read_text())
    except (OSError, ValueError):  # not written yet (it is replaced atomically, never half-written)
        return {}


def _wait_for(what: str, check, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"edgetl-device exited ({proc.returncode}) waiting for {what}:\n" \
                                    f"{log.read_text()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log.read_text()}"
        time.sleep(0.1)


def test_sighup_reloads_the_config_and_keeps_the_running_one_on_a_bad_file(shared_data, tmp_path):
    data_dir = tmp_path / "data"
    config = vtest_device_dict(shared_data, "cam-sighup", data_dir, camera={"paced": True, "loop": True},
                               decision={"unknown_threshold": 0.5}, runtime={"status_interval": 0.3})
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*device_cli(), "run", "--config", str(path)], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for("the first status", lambda: _status(data_dir).get("frames_in", 0) > 0, proc, log)
        assert _status(data_dir)["unknown_threshold"] == 0.5

        config["decision"]["unknown_threshold"] = 0.8
        path.write_text(yaml.safe_dump(config))
        proc.send_signal(signal.SIGHUP)
        _wait_for("the reloaded threshold in status.json",
                  lambda: _status(data_dir).get("unknown_threshold") == 0.8, proc, log)
        assert "config reloaded from" in log.read_text()

        config["decision"].update(k=9, n=4)  # invalid: k > n
        path.write_text(yaml.safe_dump(config))
        proc.send_signal(signal.SIGHUP)
        _wait_for("the refused reload in the log", lambda: "keeping the running config" in log.read_text(), proc, log)
        frames = _status(data_dir)["frames_in"]
        _wait_for("frames after the refused reload", lambda: _status(data_dir).get("frames_in", 0) > frames,
                  proc, log)
        assert _status(data_dir)["unknown_threshold"] == 0.8  # the running config was kept

        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "keeping the running config" in text and "decision.k" in text, text
    assert _status(data_dir)["state"] == "stopped"


def test_the_systemd_unit_reloads_with_sighup():
    unit = (Path(__file__).resolve().parents[1] / "device" / "systemd" / "edgetl-device.service").read_text()
    assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in unit
