"""The runtime on the shared vtest.avi: status snapshot, and the CommandTarget methods the MQTT commands call
(threshold, snapshot, manual recording, swapping in a signed bundle, refusing a bad one)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np
import pytest
import yaml

from edgetl_device.config import DeviceConfig, load_config
from edgetl_device.errors import DeviceError
from edgetl_device.reporting import read_jsonl
from edgetl_device.runtime import Runtime
from tests.support.device_config import vtest_device_dict


def vtest_config(shared_data, data_dir, **camera) -> DeviceConfig:
    models = shared_data / "models"
    return DeviceConfig.model_validate({
        "device_id": "cam-vtest",
        "camera": {"source": str(shared_data / "videos/vtest.avi"), **camera},
        "model": {"path": models / "mobilenet_v1_0.25_128_quant.tflite", "labels": models / "imagenet_labels.txt",
                  "num_threads": 1},
        "decision": {"record_unknown": False},
        "recording": {"pre_roll": 0.5, "post_roll": 0.5, "cooldown": 0},
        "storage": {"data_dir": data_dir, "min_free_mb": 1},
        "runtime": {"status_interval": 0.5},
    })


@contextmanager
def started(runtime: Runtime) -> Iterator[Runtime]:
    """The runtime's frame loop on a thread, stopped and joined on the way out."""
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    try:
        yield runtime
    finally:
        runtime.stop()
        thread.join(timeout=20)


def from_file(path, data: dict) -> Runtime:
    """A runtime on `data` written to the config file `path` (so reload_config reads it back)."""
    path.write_text(yaml.safe_dump(data))
    return Runtime(load_config(path), config_path=path)


def looped_vtest(shared_data, device_id: str, tmp_path, **sections) -> dict:
    return vtest_device_dict(shared_data, device_id, tmp_path / "data", camera={"paced": True, "loop": True},
                             **sections)


def test_vtest_as_camera_status_snapshot(shared_data, tmp_path):
    status = Runtime(vtest_config(shared_data, tmp_path)).run(max_frames=300)
    assert status["frames_in"] == 300 and status["state"] == "stopped"
    assert 0 < status["frames_inferred"] <= 300
    assert status["frames_in"] == status["frames_inferred"] + status["frames_skipped_by_gate"]
    assert status["fps_out"] > 0 and 0 < status["inference_ms_p50"] <= status["inference_ms_p95"]
    assert status["disk_free_mb"] > 0 and status["frames_dropped"] == 0
    saved = json.loads((tmp_path / "status.json").read_text())
    assert saved["frames_in"] == 300
    telemetry = read_jsonl(tmp_path / "events.jsonl", "telemetry")
    assert telemetry and {"fps", "inference_ms_p50", "motion_skip_ratio", "camera_online"} <= telemetry[0].keys()


def test_opencv_pool_is_sized_by_the_config(shared_data, tmp_path):
    cv2.setNumThreads(-1)  # back to OpenCV's default
    default = cv2.getNumThreads()
    cfg = vtest_config(shared_data, tmp_path / "a")
    Runtime(cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"opencv_threads": None})}))
    assert cv2.getNumThreads() == default  # null: left alone
    Runtime(vtest_config(shared_data, tmp_path / "b"))
    assert cfg.runtime.opencv_threads == 1 and cv2.getNumThreads() == 1


@pytest.fixture
def running(shared_data, tmp_path):
    runtime = Runtime(vtest_config(shared_data, tmp_path / "data", paced=True, loop=True))
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while runtime.frames_in < 3:
        assert time.monotonic() < deadline, "runtime did not start"
        time.sleep(0.05)
    yield runtime
    runtime.stop()
    thread.join(timeout=20)
    assert not thread.is_alive()


def test_threshold_snapshot_and_manual_recording(running, tmp_path):
    running.set_threshold(0.25)
    assert running.decider.threshold == 0.25 and running.status()["unknown_threshold"] == 0.25

    snap = running.take_snapshot()
    assert cv2.imread(snap).shape == (360, 480, 3)

    object_id = running.start_manual_recording(duration=None)
    time.sleep(0.8)
    running.stop_manual_recording()
    deadline = time.monotonic() + 10
    while not list((tmp_path / "data/clips").glob("*.json")):
        assert time.monotonic() < deadline, "manual clip not written"
        time.sleep(0.1)
    meta = json.loads(next((tmp_path / "data/clips").glob("*.json")).read_text())
    assert meta["frames"] >= 8  # 0.8 s at 10 fps + pre/post roll
    events = read_jsonl(tmp_path / "data/events.jsonl", "event")
    assert [(e["type"], e["label"]) for e in events if e["object_id"] == object_id] == [("start", "manual"),
                                                                                       ("end", "manual")]


def make_bundle(shared_data, root, keys, version: str):
    from edgetl.bundle import sign_bundle, write_manifest

    root.mkdir(parents=True)
    shutil.copy(shared_data / "models/mobilenet_v1_0.25_128_quant.tflite", root / "model.tflite")
    shutil.copy(shared_data / "models/imagenet_labels.txt", root / "labels.txt")
    write_manifest(root, {"model_version": version, "outputs": [{"name": "probabilities", "index": 0}]})
    sign_bundle(root, keys[0])
    return root


def test_low_disk_refuses_snapshots_like_recordings(shared_data, tmp_path):
    cfg = vtest_config(shared_data, tmp_path / "data", paced=True, loop=True)
    cfg.storage.min_free_mb = 1e9  # the disk is always "low"
    with started(Runtime(cfg)) as runtime:
        deadline = time.monotonic() + 20
        while runtime.frames_in < 3 or not runtime.disk_low:
            assert time.monotonic() < deadline, "runtime did not start / check the disk"
            time.sleep(0.05)
        with pytest.raises(DeviceError, match="disk is low"):
            runtime.take_snapshot()
        with pytest.raises(DeviceError, match="disk is low"):
            runtime.start_manual_recording()
        assert not (tmp_path / "data/snapshots").exists() or not list((tmp_path / "data/snapshots").iterdir())


def test_swap_model_to_a_signed_bundle_and_refuse_a_tampered_one(shared_data, tmp_path):
    from edgetl.bundle import generate_keys

    keys = generate_keys(tmp_path / "keys" / "publisher")
    cfg = vtest_config(shared_data, tmp_path / "data", paced=True, loop=True)
    cfg.trusted_keys = [keys[1]]
    runtime = Runtime(cfg)
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    try:
        while runtime.frames_in < 3:
            time.sleep(0.05)
        good = make_bundle(shared_data, tmp_path / "v2", keys, "2.0.0")
        runtime.swap_model(good)
        assert runtime.model.model_version == "2.0.0"
        time.sleep(0.5)
        assert runtime.frames_in > 3 and runtime.status()["model_version"] == "2.0.0"

        bad = make_bundle(shared_data, tmp_path / "v3", keys, "3.0.0")
        (bad / "labels.txt").write_text("tampered\n")
        with pytest.raises(DeviceError):
            runtime.swap_model(bad)
        assert runtime.model.model_version == "2.0.0"  # the old model keeps running
        before = runtime.frames_in
        time.sleep(0.5)
        assert runtime.frames_in > before
    finally:
        runtime.stop()
        thread.join(timeout=20)
    statuses = read_jsonl(tmp_path / "data/events.jsonl", "status")
    assert any(s.get("model_version") == "2.0.0" for s in statuses)


def _coral_bundle_config(shared_data, tmp_path, model_version: str, unknown: dict, arrays: dict | None = None):
    """A vtest config whose model is a signed bundle of the Coral MobileNetV1 (plus `arrays` as openset.npz)."""
    from edgetl.bundle import generate_keys, sign_bundle, write_manifest

    keys = generate_keys(tmp_path / "keys" / "publisher")
    root = tmp_path / "bundle"
    root.mkdir()
    shutil.copy(shared_data / "models/mobilenet_v1_0.25_128_quant.tflite", root / "model.tflite")
    shutil.copy(shared_data / "models/imagenet_labels.txt", root / "labels.txt")
    if arrays is not None:
        np.savez(root / "openset.npz", **arrays)
    write_manifest(root, {"model_version": model_version,
                          "input": {"normalization": "raw_0_255", "center_crop": False},
                          "outputs": [{"name": "probabilities", "index": 0}], "unknown": unknown})
    sign_bundle(root, keys[0])
    cfg = vtest_config(shared_data, tmp_path / "data")
    cfg.model = cfg.model.model_copy(update={"path": None, "labels": None, "bundle": root})
    cfg.trusted_keys = [keys[1]]
    return cfg


def test_bundle_in_config_brings_its_open_set_scorer(shared_data, tmp_path):
    from edgetl.bundle import generate_keys

    cfg = _coral_bundle_config(shared_data, tmp_path, "7.1.0", {"scorer": "msp", "params": {}, "threshold": 0.123})
    runtime = Runtime(cfg)
    assert runtime.model.model_version == "7.1.0" and len(runtime.model.labels) == 1001
    assert runtime.decider.threshold == pytest.approx(0.123)
    assert runtime.decider.scorer(np.array([0.25, 0.75]), None) == pytest.approx(0.25)
    status = runtime.run(max_frames=20)
    assert status["model_version"] == "7.1.0" and status["frames_in"] == 20

    cfg.trusted_keys = [generate_keys(tmp_path / "keys" / "stranger")[1]]
    with pytest.raises(DeviceError):
        Runtime(cfg)  # signed by someone we do not trust


def test_open_set_arrays_that_do_not_fit_the_model_are_refused_at_load(shared_data, tmp_path):
    # A cosine scorer needs the model's embedding: this plain classifier has none. Refused at load, not at the
    # first frame inside the camera loop.
    cfg = _coral_bundle_config(shared_data, tmp_path, "7.2.0",
                               {"scorer": "cosine", "params": {}, "threshold": 0.5, "file": "openset.npz"},
                               {"prototypes": np.ones((1001, 16), np.float32)})
    with pytest.raises(DeviceError, match="open-set scorer does not fit its model"):
        Runtime(cfg)


def test_open_set_arrays_with_nan_are_refused_at_load(shared_data, tiny_export_run, tmp_path):
    from edgetl.bundle import generate_keys, refresh_manifest, sign_bundle
    from edgetl.export import export_run
    from edgetl_device.inference import Model

    keys = generate_keys(tmp_path / "keys" / "publisher")
    root = export_run(tiny_export_run, tmp_path / "bundle", quant="float32").out_dir
    dim = Model(root / "model.tflite", None).run(np.zeros((32, 32, 3), np.uint8)).embedding.shape[-1]
    classes = len((root / "labels.txt").read_text().split())
    np.savez(root / "openset.npz", prototypes=np.full((classes, dim), np.nan, np.float32))
    refresh_manifest(root, unknown={"scorer": "cosine", "params": {}, "threshold": 0.5, "file": "openset.npz"})
    sign_bundle(root, keys[0])
    cfg = vtest_config(shared_data, tmp_path / "data")
    cfg.model = cfg.model.model_copy(update={"path": None, "labels": None, "bundle": root})
    cfg.trusted_keys = [keys[1]]
    with pytest.raises(DeviceError, match="non-finite score"):
        Runtime(cfg)
    np.savez(root / "openset.npz", prototypes=np.ones((classes, dim), np.float32))  # the same bundle, fitted
    refresh_manifest(root)
    sign_bundle(root, keys[0])
    assert Runtime(cfg).decider.threshold == pytest.approx(0.5)


def test_reload_config_applies_new_settings_and_keeps_old_ones_on_a_bad_file(shared_data, tmp_path):
    data = looped_vtest(shared_data, "cam-reload", tmp_path, decision={"k": 3, "n": 5})
    path = tmp_path / "device.yaml"
    with started(from_file(path, data)) as runtime:
        while runtime.frames_in < 2:
            time.sleep(0.05)
        data["decision"] = {"k": 2, "n": 4, "record_classes": ["person"]}
        data["motion"] = {"min_area": 0.05}
        path.write_text(yaml.safe_dump(data))
        runtime.reload_config()
        assert (runtime.decider.cfg.k, runtime.decider.cfg.n) == (2, 4)
        assert runtime.gate.cfg.min_area == 0.05

        data["decision"] = {"k": 9, "n": 4}  # invalid: k > n
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(DeviceError, match="decision"):
            runtime.reload_config()
        assert (runtime.decider.cfg.k, runtime.decider.cfg.n) == (2, 4)
        before = runtime.frames_in
        time.sleep(0.4)
        assert runtime.frames_in > before  # still running


def test_reload_ends_the_events_of_objects_in_view_and_keeps_the_disk_guard(shared_data, tmp_path):
    data = looped_vtest(shared_data, "cam-reload-obj", tmp_path, motion={"enabled": False},
                        decision={"record_unknown": True, "unknown_threshold": 0.001, "k": 1, "n": 1},  # all unknown
                        recording={"enabled": False},
                        storage={"min_free_mb": 1e9})  # the disk is always "low"
    with started(from_file(tmp_path / "device.yaml", data)) as runtime:
        deadline = time.monotonic() + 20
        while runtime.decider.active is None or not runtime.disk_low:
            assert time.monotonic() < deadline, "no unknown object / disk check"
            time.sleep(0.05)
        first = runtime.decider.active.object_id
        runtime.reload_config()
        assert runtime.disk_low and not runtime.storage.recording_allowed, "reload lifted the low-disk guard"
    events = read_jsonl(tmp_path / "data/events.jsonl", "event")
    types = [e["type"] for e in events if e["object_id"] == first]
    assert types[0] == "start" and types[-1] == "end", f"the object in view at the reload never ended: {types}"


def test_reload_during_a_clip_applies_the_new_recording_settings_once_it_ends(shared_data, tmp_path):
    data = looped_vtest(shared_data, "cam-reload-rec", tmp_path, decision={"record_unknown": False},
                        recording={"pre_roll": 0.2, "post_roll": 0.2, "cooldown": 0})
    path = tmp_path / "device.yaml"
    clips = tmp_path / "data/clips"
    with started(from_file(path, data)) as runtime:
        deadline = time.monotonic() + 20
        while runtime.frames_in < 3:
            assert time.monotonic() < deadline, "runtime did not start"
            time.sleep(0.05)
        runtime.start_manual_recording()
        while not runtime.status()["recording"]:
            assert time.monotonic() < deadline, "manual clip did not start"
            time.sleep(0.05)
        data["recording"]["enabled"] = False  # the operator turns recording off while a clip is open
        path.write_text(yaml.safe_dump(data))
        runtime.reload_config()
        runtime.stop_manual_recording()
        while not list(clips.glob("*.json")):
            assert time.monotonic() < deadline, "the open clip was not finished"
            time.sleep(0.05)

        runtime.start_manual_recording()
        time.sleep(1.0)
        runtime.stop_manual_recording()
        time.sleep(0.5)
        assert not runtime.status()["recording"] and len(list(clips.glob("*.json"))) == 1, "recording.enabled: " \
            "false was ignored because the reload came while a clip was open"


def test_timed_manual_recording_ends_its_event_with_the_clip(running, tmp_path):
    object_id = running.start_manual_recording(duration=0.5)
    clips = tmp_path / "data/clips"
    deadline = time.monotonic() + 15
    while not list(clips.glob("*.json")):
        assert time.monotonic() < deadline, "manual clip not written"
        time.sleep(0.1)
    time.sleep(0.3)
    events = [e for e in read_jsonl(tmp_path / "data/events.jsonl", "event") if e["object_id"] == object_id]
    assert [e["type"] for e in events] == ["start", "end"], "the timed recording's event never ended"
    assert events[1]["clip_path"] == str(next(clips.glob("*.mp4")))

    untimed = running.start_manual_recording(duration=None)
    running.stop()  # SIGTERM during a manual recording
    deadline = time.monotonic() + 20
    while running.state != "stopped":
        assert time.monotonic() < deadline, "runtime did not stop"
        time.sleep(0.05)
    events = [e for e in read_jsonl(tmp_path / "data/events.jsonl", "event") if e["object_id"] == untimed]
    assert [e["type"] for e in events] == ["start", "end"], "shutdown left the manual recording's event open"
