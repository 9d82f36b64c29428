"""OTA limits from the device config (`ota` section), and downloads a crash left behind in `.incoming/`.

A real runtime from a real config file, real chunked transfers through `dispatch`, real files; nothing mocked."""

from __future__ import annotations

import base64
import inspect
import json
import uuid

import pytest
import yaml

from edgetl.bundle import generate_keys
from edgetl_device.commands import dispatch, updater_for
from edgetl_device.config import DeviceConfig, load_config
from edgetl_device.errors import DeviceError
from edgetl_device.ota import ModelUpdater
from edgetl_device.reporting import JsonlReporter
from edgetl_device.runtime import Runtime
from tests.support.device_config import vtest_device_dict


@pytest.fixture(scope="module")
def public_key(tmp_path_factory):
    return generate_keys(tmp_path_factory.mktemp("keys") / "publisher")[1]


def _runtime(path, data) -> Runtime:
    path.write_text(yaml.safe_dump(data))
    return Runtime(load_config(path), config_path=path)


def _send_unfinished_transfers(runtime: Runtime, tmp_path, n: int) -> None:
    reporter = JsonlReporter(tmp_path / "report.jsonl", "cam-ota")
    piece = base64.b64encode(b"\0" * 1024).decode()
    try:
        for i in range(n):  # the first of two chunks only: never completed
            doc = {"sha256": "0" * 64, "chunk": {"transfer_id": f"t{i}", "index": 0, "count": 2, "data": piece}}
            msg = dispatch("update_model", json.dumps(doc).encode(), runtime, reporter)
            assert msg["ok"], msg
    finally:
        reporter.stop()


def test_ota_limits_come_from_the_config_and_follow_a_reload(shared_data, tmp_path, public_key):
    data = vtest_device_dict(shared_data, "cam-ota", tmp_path / "data",
                             ota={"download_timeout": 7.5, "max_transfers": 3})
    data["trusted_keys"] = [str(public_key)]
    path = tmp_path / "device.yaml"
    runtime = _runtime(path, data)
    try:
        updater = updater_for(runtime)
        assert (updater.download_timeout, updater.max_transfers) == (7.5, 3)
        _send_unfinished_transfers(runtime, tmp_path, 5)
        kept = sorted(p.name for p in updater.incoming.iterdir() if p.is_dir())
        assert kept == ["t2", "t3", "t4"]  # three unfinished transfers, the newest ones

        data["ota"] = {"download_timeout": 30, "max_transfers": 1}
        path.write_text(yaml.safe_dump(data))
        runtime.reload_config()
        assert (updater_for(runtime).download_timeout, updater_for(runtime).max_transfers) == (30, 1)
    finally:
        runtime.reporter.stop()


def test_ota_defaults_are_the_updaters_and_bad_values_name_the_key(shared_data, tmp_path):
    data = vtest_device_dict(shared_data, "cam-ota", tmp_path / "data")
    cfg = DeviceConfig.model_validate(data)
    params = inspect.signature(ModelUpdater).parameters
    assert cfg.ota.download_timeout == params["download_timeout"].default == 1800
    assert cfg.ota.max_transfers == params["max_transfers"].default == 2
    for key, value in (("download_timeout", 0), ("download_timeout", -5), ("max_transfers", 0)):
        path = tmp_path / f"{key}{value}.yaml"
        path.write_text(yaml.safe_dump({**data, "ota": {key: value}}))
        with pytest.raises(DeviceError, match=rf"ota\.{key}"):
            load_config(path)
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({**data, "ota": {"max_transfer": 3}}))
    with pytest.raises(DeviceError, match=r"ota\.max_transfer: unknown key"):
        load_config(path)


def _interrupted_downloads(bundles):
    """What a crash leaves in `bundles/.incoming`: an http download cut off (to remove) and an unfinished chunked
    transfer (kept, so its sender can finish it). Returns (download, transfer folder)."""
    incoming = bundles / ".incoming"
    incoming.mkdir(parents=True)
    leftover = incoming / f"{uuid.uuid4().hex}.tar.gz"  # what _download was writing when the process died
    leftover.write_bytes(b"\x1f\x8b" + bytes(64 * 1024))
    transfer = incoming / "t1"
    transfer.mkdir()
    (transfer / "000000.part").write_bytes(b"x")
    (transfer / "count").write_text(f"2 {'0' * 64}")
    return leftover, transfer


def test_a_download_cut_off_by_a_crash_is_removed_when_the_updater_starts(tmp_path, public_key):
    leftover, transfer = _interrupted_downloads(tmp_path / "bundles")
    incoming = leftover.parent

    updater = ModelUpdater(tmp_path / "bundles", [public_key])

    assert not leftover.exists(), "the interrupted download is still on the disk"
    assert (transfer / "000000.part").is_file() and updater.incoming == incoming
    ModelUpdater(tmp_path / "fresh" / "bundles", [public_key])  # no bundles folder yet: nothing to clean
    assert not (tmp_path / "fresh").exists()


def test_the_runtime_removes_interrupted_downloads_when_it_starts(shared_data, tmp_path):
    # not only when the first update_model arrives, which may be weeks later
    data_dir = tmp_path / "data"
    leftover, transfer = _interrupted_downloads(data_dir / "bundles")

    status = Runtime(DeviceConfig.model_validate(vtest_device_dict(shared_data, "cam-ota", data_dir))).run(max_frames=3)

    assert status["state"] == "stopped"
    assert not leftover.exists(), "the interrupted download is still on the disk after the device started"
    assert (transfer / "000000.part").is_file()


def test_a_device_without_a_bundles_folder_gets_none(shared_data, tmp_path):
    data_dir = tmp_path / "data"
    Runtime(DeviceConfig.model_validate(vtest_device_dict(shared_data, "cam-ota", data_dir))).run(max_frames=3)
    assert not (data_dir / "bundles").exists()
