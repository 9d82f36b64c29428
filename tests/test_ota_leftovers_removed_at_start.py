"""A download a crash cut off (`<data_dir>/bundles/.incoming/<uuid>.tar.gz`) is removed when the device starts,
not only when the first update_model arrives, which may be weeks later (real Runtime, real video and TFLite)."""

from __future__ import annotations

import uuid

from edgetl_device.config import DeviceConfig
from edgetl_device.runtime import Runtime
from tests.support.device_config import vtest_device_dict


def test_the_runtime_removes_interrupted_downloads_when_it_starts(shared_data, tmp_path):
    data_dir = tmp_path / "data"
    incoming = data_dir / "bundles" / ".incoming"
    incoming.mkdir(parents=True)
    leftover = incoming / f"{uuid.uuid4().hex}.tar.gz"  # what _download was writing when the power went
    leftover.write_bytes(b"\x1f\x8b" + bytes(256 * 1024))
    transfer = incoming / "t1"  # an unfinished chunked transfer: kept, so its sender can finish it
    transfer.mkdir()
    (transfer / "000000.part").write_bytes(b"x")

    status = Runtime(DeviceConfig.model_validate(vtest_device_dict(shared_data, "cam-ota", data_dir))).run(max_frames=3)

    assert status["state"] == "stopped"
    assert not leftover.exists(), "the interrupted download is still on the disk after the device started"
    assert (transfer / "000000.part").is_file()


def test_a_device_without_a_bundles_folder_gets_none(shared_data, tmp_path):
    data_dir = tmp_path / "data"
    Runtime(DeviceConfig.model_validate(vtest_device_dict(shared_data, "cam-ota", data_dir))).run(max_frames=3)
    assert not (data_dir / "bundles").exists()
