"""Device config: YAML and TOML, strict keys, errors that name the key and the fix; `edgetl-device check`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgetl_device.cli import app
from edgetl_device.config import DeviceConfig, load_config
from edgetl_device.errors import DeviceError
from edgetl_device.interpreter import cpu_int8_dot, describe_int8_dot

EXAMPLE = Path(__file__).resolve().parents[1] / "device" / "example-config.yaml"


def write(tmp_path, data: dict, name: str = "device.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def minimal(shared_data) -> dict:
    models = shared_data / "models"
    return {"device_id": "cam-1",
            "camera": {"source": str(shared_data / "videos/vtest.avi")},
            "model": {"path": str(models / "mobilenet_v1_0.25_128_quant.tflite"),
                      "labels": str(models / "imagenet_labels.txt")},
            "storage": {"data_dir": "data", "min_free_mb": 1}}


def test_example_config_is_valid():
    cfg = load_config(EXAMPLE)
    assert cfg.device_id == "cam-01" and cfg.decision.k == 3 and cfg.mqtt is None


def test_defaults_and_relative_paths(tmp_path, shared_data):
    cfg = load_config(write(tmp_path, minimal(shared_data)))
    assert cfg.storage.data_dir == tmp_path / "data"  # relative to the config file
    assert cfg.recording.pre_roll == 3.0 and cfg.motion.enabled


def test_toml_works_too(tmp_path, shared_data):
    d = minimal(shared_data)
    text = (f'device_id = "cam-t"\n[camera]\nsource = "{d["camera"]["source"]}"\n'
            f'[model]\npath = "{d["model"]["path"]}"\nlabels = "{d["model"]["labels"]}"\n'
            '[decision]\nk = 2\nn = 4\n')
    (tmp_path / "device.toml").write_text(text)
    cfg = load_config(tmp_path / "device.toml")
    assert (cfg.device_id, cfg.decision.k, cfg.decision.n) == ("cam-t", 2, 4)


@pytest.mark.parametrize(("patch", "expected"), [
    ({"camera": {"sorce": 0}}, r"camera\.sorce: unknown key: remove it or fix the spelling \(allowed: source"),
    ({"decision": {"k": 6, "n": 5}}, r"decision.*k \(6\) must be <= decision.n \(5\)"),
    ({"recording": {"pre_roll": -1}}, r"recording\.pre_roll: .*greater than or equal to 0"),
    ({"model": {"path": "a.tflite", "bundle": "b"}}, r"model.*exactly one of model\.path .* or model\.bundle"),
    ({"motion": {"masks": [[0, 0, 1]]}}, r"motion\.masks\.0"),
    ({"motion": {"masks": [[100, 50, 200, 80]]}}, r"masks\[0\] = \[100.*fractions of the frame"),  # pixels
    ({"motion": {"masks": [[0.5, 0.5, -0.2, 0.3]]}}, r"masks\[0\].*w and h > 0"),
    ({"camera": {"reconnect_initial": 60, "reconnect_max": 30}}, r"reconnect_initial \(60.0\) must be <="),
])
def test_errors_name_the_key_and_the_fix(tmp_path, shared_data, patch, expected):
    data = minimal(shared_data)
    for section, values in patch.items():
        data[section] = values if section == "model" else {**data.get(section, {}), **values}
    with pytest.raises(DeviceError, match=expected):
        load_config(write(tmp_path, data))


def test_missing_device_id_and_bad_syntax(tmp_path, shared_data):
    data = minimal(shared_data)
    del data["device_id"]
    with pytest.raises(DeviceError, match="device_id: required key is missing: add it"):
        load_config(write(tmp_path, data))
    (tmp_path / "bad.yaml").write_text("camera: [unclosed\n")
    with pytest.raises(DeviceError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(DeviceError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_home_relative_paths_mean_the_home_folder(tmp_path, shared_data, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    data = minimal(shared_data)
    data["camera"]["source"] = "~/videos/cam.mp4"
    data["storage"]["data_dir"] = "~/edgetl-data"
    data["trusted_keys"] = ["~/keys/release.pub"]
    data["mqtt"] = {"host": "127.0.0.1", "outbox_path": "~/outbox.db"}
    etc = tmp_path / "etc"
    etc.mkdir()
    cfg = load_config(write(etc, data))
    assert cfg.storage.data_dir == home / "edgetl-data"  # not <config folder>/~/edgetl-data
    assert cfg.camera.source == str(home / "videos/cam.mp4")
    assert cfg.trusted_keys == [home / "keys/release.pub"]
    assert cfg.mqtt.outbox_path == home / "outbox.db"


def test_check_passes_on_a_good_setup(tmp_path, shared_data):
    result = CliRunner().invoke(app, ["check", "--config", str(write(tmp_path, minimal(shared_data)))])
    assert result.exit_code == 0, result.output
    for name in ("config", "model", "camera", "disk"):
        assert f"ok   {name}:" in result.stdout
    # a uint8 model on the CPU: the check says whether this CPU has 8-bit dot products (VNNI, dotprod)
    assert f"CPU 8-bit dot product: {describe_int8_dot(cpu_int8_dot())}" in result.stdout


def test_check_reports_each_failure_and_exits_2(tmp_path, shared_data):
    data = minimal(shared_data)
    data["camera"]["source"] = str(tmp_path / "missing.mp4")
    data["model"]["path"] = str(shared_data / "models/mobilenet_v1_0.25_128_quant_edgetpu.tflite")
    data["storage"]["min_free_mb"] = 1e12
    result = CliRunner().invoke(app, ["check", "--config", str(write(tmp_path, data))])
    assert result.exit_code == 2
    assert "FAIL model:" in result.stdout and "Edge TPU" in result.stdout
    assert "FAIL camera:" in result.stdout and "FAIL disk:" in result.stdout
    assert "ok   config:" in result.stdout


def test_config_model_is_the_single_source_of_defaults():
    cfg = DeviceConfig.model_validate({"device_id": "x", "model": {"path": "m.tflite"}})
    assert cfg.storage.min_free_mb == DeviceConfig.model_fields["storage"].default_factory().min_free_mb
