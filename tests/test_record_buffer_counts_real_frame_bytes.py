"""The clip encoder's backlog is bounded by recording.buffer_mb in real bytes, also when the camera's resolution
grows mid-clip (a camera back from a reconnect at a higher resolution): the frames then queued are larger than
the clip's own frame size (real Recorder, real vtest frames decoded by OpenCV, a real clip encoded to disk)."""

from __future__ import annotations

import cv2

from edgetl_device.camera import Frame
from edgetl_device.config import RecordingConfig
from edgetl_device.recording import Recorder


def vtest_frames(shared_data, n: int) -> list:
    cap = cv2.VideoCapture(str(shared_data / "videos/vtest.avi"))
    frames = []
    while len(frames) < n:
        ok, img = cap.read()
        assert ok, "could not decode vtest.avi"
        frames.append(img)
    cap.release()
    return frames


def test_encoder_backlog_counts_the_real_size_of_larger_frames(shared_data, tmp_path):
    small = [cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA) for f in vtest_frames(shared_data, 40)]
    large = [cv2.resize(f, (1920, 1080), interpolation=cv2.INTER_CUBIC) for f in small[10:]]  # 6.2 MB each
    cfg = RecordingConfig(pre_roll=1.0, post_roll=5.0, cooldown=0, buffer_mb=2.0)
    rec = Recorder(cfg, tmp_path / "clips", fps=10)
    bound = int(cfg.buffer_mb * 1024 * 1024) + large[0].nbytes  # buffer_mb, plus the frame handed over last
    worst = 0
    t = 1000.0
    for img in small[:10]:  # pre-roll at 320x240, the clip opens at that size
        rec.push(Frame(img, t, 0), wanted=True)
        t += 0.1
    assert rec.recording
    writer = rec._writer
    for img in large:  # as fast as the loop can hand them over
        rec.push(Frame(img, t, 0), wanted=True)
        t += 0.1
        with writer.queue.mutex:
            queued = sum(x.nbytes for x in writer.queue.queue if x is not None)
        worst = max(worst, queued)
    clip = rec.finish("stopped")

    assert clip is not None and clip.frames_dropped == 0
    assert worst <= bound, (
        f"{worst / 2**20:.1f} MB of frames queued for the encoder, buffer_mb is {cfg.buffer_mb:g}")
