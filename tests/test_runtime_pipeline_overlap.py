"""An unpaced video file keeps the pipeline full: frame N+1 is read and its preprocessing started before
frame N goes through the interpreter.

A lock-step (every frame waiting for its own decode and resize) does not lose frames, so only the order
shows it; this test records the order with the real camera thread, model and video."""

from __future__ import annotations

from edgetl_device.config import DeviceConfig
from edgetl_device.runtime import Runtime


def test_next_frame_is_in_flight_while_the_current_one_is_inferred(shared_data, tmp_path, monkeypatch):
    models = shared_data / "models"
    cfg = DeviceConfig.model_validate({
        "device_id": "pipe-test",
        "camera": {"source": str(shared_data / "videos/vtest.avi")},
        "model": {"path": models / "mobilenet_v1_0.25_128_quant.tflite", "labels": models / "imagenet_labels.txt",
                  "num_threads": 1},
        "motion": {"enabled": False},
        "decision": {"record_unknown": False},
        "storage": {"data_dir": tmp_path, "min_free_mb": 1},
    })
    prepared: list[int] = []
    in_flight_at_process: list[tuple[int, int]] = []
    prepare, process = Runtime._prepare, Runtime._process

    def spy_prepare(self, frame, pool):
        prepared.append(frame.index)
        return prepare(self, frame, pool)

    def spy_process(self, item):
        in_flight_at_process.append((item.frame.index, prepared[-1]))
        return process(self, item)

    monkeypatch.setattr(Runtime, "_prepare", spy_prepare)
    monkeypatch.setattr(Runtime, "_process", spy_process)
    status = Runtime(cfg).run(max_frames=120)

    assert status["frames_in"] == 120 and status["frames_inferred"] == 120
    assert [i for i, _ in in_flight_at_process] == list(range(120))  # lossless and in order
    lock_step = [i for i, newest in in_flight_at_process if newest != i + 1]
    assert lock_step == [], f"frames inferred with no next frame in flight: {lock_step[:10]}"
