"""Camera situations met in the field, each with a real source: a network stream that stalls with its TCP
connection open, grayscale and 4-channel images and videos, and an image folder that files are added to while
it runs (a camera that FTPs snapshots into a folder)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from edgetl_device.camera import Camera
from edgetl_device.config import CameraConfig
from tests.support.waiting import wait_until


class _StallingMjpeg:
    """A real HTTP MJPEG camera whose first connection sends `first_frames` frames and then nothing, keeping the
    connection open; later connections send `later_frames` (default: stream normally)."""

    def __init__(self, first_frames: int, later_frames: int = 10**9) -> None:
        ok, jpg = cv2.imencode(".jpg", np.full((120, 160, 3), 128, np.uint8))
        frame = jpg.tobytes()
        self.release = release = threading.Event()
        self.connections = connections = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                connections.append(time.monotonic())
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                n = first_frames if len(connections) == 1 else later_frames
                try:
                    for _ in range(n):
                        if release.is_set():
                            return
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(frame) + frame + b"\r\n")
                        self.wfile.flush()
                        time.sleep(0.04)
                    release.wait(120)  # stalled: the socket stays open, nothing more is sent
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_stream_that_stalls_with_the_connection_open_goes_offline_and_reconnects():
    # FFmpeg's read timeout (CAP_PROP_READ_TIMEOUT_MSEC = camera.timeout) ends the blocked read; the bad reads
    # that follow reconnect the stream. Without it read() blocks for as long as the peer keeps the socket open.
    server = _StallingMjpeg(first_frames=5)
    cam = Camera(CameraConfig(source=server.url, timeout=1.0, reconnect_initial=0.1, reconnect_max=0.4,
                              max_bad_reads=2)).start()
    try:
        assert cam.read(timeout=10) is not None and cam.online
        assert wait_until(lambda: cam.reconnects >= 1, 15), "a stalled stream was never noticed"
        assert len(server.connections) >= 2
        before = cam.frames_captured
        assert wait_until(lambda: cam.online and cam.frames_captured > before + 3, 10)
    finally:
        cam.stop()
        server.close()


def test_stop_completes_while_a_read_blocks_on_a_stalled_stream():
    server = _StallingMjpeg(first_frames=3)
    cam = Camera(CameraConfig(source=server.url, timeout=2.0)).start()
    try:
        assert cam.read(timeout=10) is not None
        time.sleep(0.5)  # the capture thread now waits inside FFmpeg's read
        t0 = time.monotonic()
        cam.stop()
        assert time.monotonic() - t0 < 8  # bounded by camera.timeout, not by the peer
        assert not cam._thread.is_alive()
    finally:
        server.close()


def test_stream_that_stalls_before_the_first_frame_times_out_on_open():
    server = _StallingMjpeg(first_frames=0)  # headers, then silence
    cam = Camera(CameraConfig(source=server.url, timeout=1.0, reconnect_initial=0.1, reconnect_max=0.4)).start()
    try:
        assert wait_until(lambda: len(server.connections) >= 2, 15), "open() blocked on a silent stream"
        assert cam.read(timeout=10) is not None and cam.online
    finally:
        cam.stop()
        server.close()


def _read_all(cfg: CameraConfig) -> tuple[list[np.ndarray], Camera]:
    cam = Camera(cfg).start()
    frames = []
    while (f := cam.read(timeout=5)) is not None:
        frames.append(f.image)
    cam.stop()
    return frames, cam


def test_grayscale_and_rgba_images_become_bgr_frames(tmp_path, shared_data):
    img = cv2.imread(str(shared_data / "images/cat.bmp"))
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "a_grey.png"), grey)
    cv2.imwrite(str(tmp_path / "b_rgba.png"), cv2.cvtColor(img, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(tmp_path / "c_grey16.png"), grey.astype(np.uint16) * 257)
    frames, cam = _read_all(CameraConfig(source=str(tmp_path), fps=5))
    assert cam.bad_reads == 0 and len(frames) == 3
    for f in frames:
        assert f.shape == img.shape and f.dtype == np.uint8
    assert np.array_equal(frames[0][:, :, 0], grey) and np.array_equal(frames[0][:, :, 2], grey)
    assert np.array_equal(frames[1], img)


def test_grayscale_video_becomes_bgr_frames(tmp_path, shared_data):
    grey = cv2.cvtColor(cv2.imread(str(shared_data / "images/cat.bmp")), cv2.COLOR_BGR2GRAY)[:340]
    path = tmp_path / "grey.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10, (grey.shape[1], grey.shape[0]), isColor=False)
    assert w.isOpened()
    for _ in range(6):
        w.write(grey)
    w.release()
    frames, cam = _read_all(CameraConfig(source=str(path)))
    assert cam.bad_reads == 0 and len(frames) == 6
    assert all(f.shape == (*grey.shape, 3) for f in frames)
    assert np.abs(frames[0][:, :, 1].astype(int) - grey).max() <= 2  # lossless codec, colour-converted


def test_images_added_to_the_folder_while_it_runs_are_picked_up(tmp_path, shared_data):
    # A camera that uploads snapshots into the watched folder: files that arrive before the source reaches the end
    # of its listing are frames too, not only those there when it opened.
    img = cv2.imread(str(shared_data / "images/cat.bmp"))
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"snap_{i:03d}.jpg"), np.full_like(img, i * 20))
    cam = Camera(CameraConfig(source=str(tmp_path), fps=5)).start()  # unpaced: hands over every frame
    try:
        first = cam.read(timeout=5)
        assert first is not None
        for i in range(3, 5):  # uploaded while it runs
            cv2.imwrite(str(tmp_path / f"snap_{i:03d}.jpg"), np.full_like(img, i * 20))
        frames = [first.image]
        while (f := cam.read(timeout=5)) is not None:
            frames.append(f.image)
    finally:
        cam.stop()
    assert [round(float(f.mean()) / 20) for f in frames] == [0, 1, 2, 3, 4]
    assert cam.bad_reads == 0


def test_an_image_still_being_uploaded_is_read_once_complete(tmp_path, shared_data):
    # A half-written JPEG decodes as a picture with a grey lower half: a file found while the folder is read waits
    # until it has not changed for a moment.
    img = cv2.imread(str(shared_data / "images/cat.bmp"))
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"snap_{i:03d}.jpg"), img)
    data = cv2.imencode(".jpg", np.ascontiguousarray(img[::-1]))[1].tobytes()
    cam = Camera(CameraConfig(source=str(tmp_path), fps=5)).start()
    try:
        assert cam.read(timeout=5) is not None
        with open(tmp_path / "snap_003.jpg", "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            assert cam.read(timeout=5) is not None  # the capture thread now reaches the end of its listing
            time.sleep(0.3)  # ... and finds the upload half done
            f.write(data[len(data) // 2:])
        frames = []
        while (fr := cam.read(timeout=5)) is not None:
            frames.append(fr.image)
    finally:
        cam.stop()
    assert len(frames) == 2 and cam.bad_reads == 0
    assert np.array_equal(frames[1], cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))


def test_runtime_stops_promptly_while_the_camera_read_blocks_on_a_stalled_stream(shared_data, tmp_path):
    # SIGTERM calls Runtime.stop(): the loop must finish (clip, events, status) while the capture thread is stuck in
    # FFmpeg's read, and the status must show the camera offline once the stall is noticed.
    from edgetl_device.runtime import Runtime
    from tests.test_record_clips import scene_config

    server = _StallingMjpeg(first_frames=5, later_frames=5)  # every connection stalls
    cfg = scene_config(shared_data, server.url, tmp_path / "data")
    cfg.camera.timeout, cfg.camera.max_bad_reads = 2.0, 2
    runtime = Runtime(cfg)
    result: dict = {}
    loop = threading.Thread(target=lambda: result.update(runtime.run()), daemon=True)
    try:
        loop.start()
        assert wait_until(lambda: runtime.frames_in >= 1, 15)
        assert wait_until(lambda: not runtime.status()["camera_online"], 15), "the stall was never reported"
        assert wait_until(lambda: len(server.connections) >= 2, 15)
        time.sleep(1.0)  # the reconnected stream has stalled again: the capture thread waits inside FFmpeg
        t0 = time.monotonic()
        runtime.stop()
        loop.join(15)
        assert not loop.is_alive() and time.monotonic() - t0 < 10
        assert result["state"] == "stopped"
    finally:
        runtime.stop()
        server.close()
