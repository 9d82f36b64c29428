"""End to end: the real device Runtime (video camera, TFLite) takes a signed model update over MQTT,
and refuses a broken one while the running model keeps running."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

from edgetl.bundle import generate_keys, pack_bundle, sign_bundle, write_manifest
from edgetl_device.config import DeviceConfig
from tests.support.mqtt_collector import Collector

MODELS = {"good": "mobilenet_v1_0.25_128_quant.tflite", "broken": "invalid_model_invoking_error.tflite"}


def bundle(shared: Path, out: Path, version: str, model: str, key: Path) -> Path:
    root = out / version
    root.mkdir(parents=True)
    shutil.copy(shared / "models" / model, root / "model.tflite")
    labels = [x.strip() for x in (shared / "models" / "imagenet_labels.txt").read_text().splitlines() if x.strip()]
    (root / "labels.txt").write_text("\n".join(labels) + "\n")
    write_manifest(root, {"model_version": version, "classes": labels})
    sign_bundle(root, key)
    return root


def test_runtime_applies_a_signed_update_and_rolls_back_a_broken_one(shared_data, tmp_path, broker):
    from edgetl_device.runtime import Runtime

    priv, pub = generate_keys(tmp_path / "keys" / "publisher")
    first = bundle(shared_data, tmp_path / "build", "1.0", MODELS["good"], priv)
    second = pack_bundle(bundle(shared_data, tmp_path / "build", "2.0", MODELS["good"], priv), tmp_path / "2.0.tgz")
    broken = pack_bundle(bundle(shared_data, tmp_path / "build", "bad", MODELS["broken"], priv), tmp_path / "bad.tgz")
    cfg = DeviceConfig.model_validate({
        "device_id": "cam-ota",
        "camera": {"source": str(shared_data / "videos" / "vtest.avi"), "paced": True, "fps": 10},
        "model": {"bundle": first, "num_threads": 1},
        "storage": {"data_dir": tmp_path / "data", "min_free_mb": 1},
        "mqtt": {"port": broker.port, "outbox_path": tmp_path / "data" / "outbox.sqlite3"},
        "trusted_keys": [pub],
    })
    runtime = Runtime(cfg)
    thread = threading.Thread(target=runtime.run, daemon=True)
    with Collector(broker.port, "edgetl/cam-ota/#", qos=1) as sub:
        thread.start()
        try:
            assert sub.wait_for(lambda s: any(m["state"] == "online" for m in s.of("status")), 15)
            for rid, archive in (("up", second), ("bad", broken)):
                sub.client.publish("edgetl/cam-ota/cmd/update_model",
                                   json.dumps({"request_id": rid, "path": str(archive)}), qos=1)
                assert sub.wait_for(lambda s, rid=rid: any(r["request_id"] == rid for r in s.of("cmd_result")), 30)
                if rid == "up":
                    version_after_update = runtime.model.model_version
            time.sleep(0.5)  # frames keep flowing through the kept model
            frames_at_end = runtime.frames_in
        finally:
            runtime.stop()
            thread.join(timeout=30)
        results = {r["request_id"]: r for r in sub.of("cmd_result")}
        statuses = sub.of("status")
    assert results["up"]["ok"] is True and results["up"]["result"]["model_version"] == "2.0", results["up"]
    assert version_after_update == "2.0"
    assert results["bad"]["ok"] is False and "rolled back" in results["bad"]["error"], results["bad"]
    assert runtime.model.model_version == "2.0" and frames_at_end > 0
    assert any(m.get("model_version") == "2.0" for m in statuses)
    current = (tmp_path / "data" / "bundles" / "current").resolve()
    assert json.loads((current / "manifest.json").read_text())["model_version"] == "2.0"
