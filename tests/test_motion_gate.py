"""Motion gate: static scenes skip inference, movement opens it (outside masks), hold and keep-alive."""

from __future__ import annotations

import cv2
import numpy as np

from edgetl_device.config import MotionConfig
from edgetl_device.motion import MotionGate, mask_image


def scene(shared_data) -> np.ndarray:
    return cv2.imread(str(shared_data / "datasets/find-the-ship/set-A_train/20171105_185402_Empty.jpg"))


def with_square(img: np.ndarray, x: int, y: int, side: int = 40) -> np.ndarray:
    out = img.copy()
    out[y:y + side, x:x + side] = (20, 200, 240)
    return out


def test_static_scene_is_skipped_after_the_hold(shared_data):
    gate = MotionGate(MotionConfig(hold_frames=3, keepalive=0))
    bg = scene(shared_data)
    noise = np.random.default_rng(0)
    runs = []
    for i in range(20):
        jitter = noise.integers(-3, 4, bg.shape, dtype=np.int16)  # sensor noise, no motion
        frame = np.clip(bg.astype(np.int16) + jitter, 0, 255).astype(np.uint8)
        runs.append(gate.check(frame, i * 0.1).run_inference)
    assert runs[:4] == [True] * 4 and not any(runs[4:])  # first frame + 3 held
    assert gate.frames_skipped == 16 and gate.skip_ratio == 0.8


def test_moving_object_opens_the_gate(shared_data):
    gate = MotionGate(MotionConfig(hold_frames=0, keepalive=0))
    bg = scene(shared_data)
    gate.check(bg, 0.0)
    assert not gate.check(bg, 0.1).run_inference
    results = [gate.check(with_square(bg, 20 + 15 * i, 100), 0.2 + 0.1 * i) for i in range(5)]
    assert all(r.run_inference and r.moving for r in results)
    assert all(r.changed > 0.002 for r in results)


def test_masked_motion_is_ignored(shared_data):
    bg = scene(shared_data)
    # the square moves only inside the left quarter, which is masked
    gate = MotionGate(MotionConfig(hold_frames=0, keepalive=0, masks=[(0.0, 0.0, 0.25, 1.0)]))
    gate.check(bg, 0.0)
    assert not any(gate.check(with_square(bg, 5 + 5 * i, 60 + 10 * i), 0.1 * (i + 1)).run_inference
                   for i in range(4))
    mask = mask_image((120, 160), [(0.0, 0.0, 0.25, 1.0)])
    assert mask[:, :40].max() == 0 and mask[:, 40:].min() == 255


def test_keepalive_forces_inference_on_a_static_scene(shared_data):
    gate = MotionGate(MotionConfig(hold_frames=0, keepalive=1.0))
    bg = scene(shared_data)
    runs = [gate.check(bg, i * 0.1).run_inference for i in range(31)]
    assert [i for i, r in enumerate(runs) if r] == [0, 10, 20, 30]


def test_disabled_gate_always_runs(shared_data):
    gate = MotionGate(MotionConfig(enabled=False))
    bg = scene(shared_data)
    assert all(gate.check(bg, i).run_inference for i in range(5))


def test_keepalive_survives_the_clock_stepping_back(shared_data):
    # Live frames carry wall-clock time: an NTP correction that steps the clock back an hour must not
    # silence the keep-alive for that hour.
    gate = MotionGate(MotionConfig(hold_frames=0, keepalive=1.0))
    bg = scene(shared_data)
    for i in range(5):
        gate.check(bg, 3600.0 + i * 0.1)
    runs = [gate.check(bg, 100.0 + i * 0.1).run_inference for i in range(31)]
    assert sum(runs) >= 3
