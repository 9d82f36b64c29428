"""Camera sources and the capture thread.

Sources (OpenCV device index, RTSP/HTTP URL, video file, image folder, Picamera2)
share a tiny interface: open / read / close / fps. The `Camera` thread reads
continuously and keeps only the newest frame for live sources (a slow consumer
never sees a stale backlog); an unpaced video file instead hands over every
frame (lossless, as fast as the consumer takes them) so tests and benchmarks are
deterministic. When a live stream drops it is reopened with exponential backoff
and the camera reports offline meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edgetl_device.config import CameraConfig
from edgetl_device.errors import DeviceError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # BGR uint8 (H, W, 3)
    timestamp: float  # wall-clock seconds (time.time()) when captured, or the file's media time
    index: int  # frame number since the camera started (counts dropped frames too)


class Source(Protocol):
    live: bool  # True: frames keep coming and a failure means "reconnect"

    def open(self) -> None: ...
    def read(self) -> np.ndarray | None: ...  # None: no frame (end of file, drop, corrupt)
    def close(self) -> None: ...
    @property
    def fps(self) -> float | None: ...


def redact_source(source: int | str) -> str:
    """The source as it may appear in logs, status and MQTT: a URL's password replaced by ***."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@:]*):[^/]*@", r"\1:***@", str(source))


def as_bgr(img: np.ndarray | None) -> np.ndarray | None:
    """8-bit BGR from what a driver may hand over (a V4L2 grey mode, BGRA, 16-bit); None when it is no image."""
    if img is None or img.size == 0 or img.ndim not in (2, 3):
        return img
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.dtype != np.uint8:
        return img
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def source_kind(source: int | str) -> str:
    """'device', 'url', 'picamera2', 'folder' or 'file'."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return "device"
    if source == "picamera2":
        return "picamera2"
    if "://" in source:
        return "url"
    return "folder" if Path(source).is_dir() else "file"


class OpenCVSource:
    """cv2.VideoCapture over a device index, a URL or a video file."""

    def __init__(self, source: int | str, width: int | None = None, height: int | None = None,
                 fps: float | None = None, timeout: float = 5.0, decode_threads: int = 1) -> None:
        self.source = int(source) if source_kind(source) == "device" else source
        self.live = source_kind(source) in ("device", "url")
        self._size = (width, height)
        self._want_fps = fps
        self._timeout = timeout
        self._decode_threads = decode_threads
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        if not self.live and not Path(str(self.source)).is_file():
            raise DeviceError(f"video file not found: {self.source}")
        cap = None
        if isinstance(self.source, str):
            # FFmpeg's default of one decoder thread per core costs 40-70% more CPU per frame on camera-sized
            # video (and is no faster there) than one thread beside the model's own threads.
            params = [cv2.CAP_PROP_N_THREADS, self._decode_threads] if self._decode_threads else []
            if "://" in self.source:
                # A stalled network stream must not block read() for FFmpeg's default ~30 s: time out and reconnect.
                ms = int(self._timeout * 1000)
                params += [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            cap = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG, params)
            if not cap.isOpened() and "://" not in self.source:
                cap.release()
                cap = None  # not a file FFmpeg reads (OpenCV has other readers): let OpenCV choose
        if cap is None:
            cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            cap.release()
            raise DeviceError(f"cannot open camera source {redact_source(self.source)!r}: check the device index / "
                              "URL / file, permissions and network")
        w, h = self._size
        if self.live and w and h:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
        if self.live and self._want_fps:
            cap.set(cv2.CAP_PROP_FPS, self._want_fps)
        if self.live:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # ask the driver for no backlog (ignored by some backends)
        self._cap = cap

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        ok, img = self._cap.read()
        return img if ok else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    @property
    def fps(self) -> float | None:
        if self._cap is None:
            return self._want_fps
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        return float(fps) if fps and 0 < fps < 1000 else self._want_fps


class FolderSource:
    """Images of a folder in name order; unreadable files are corrupt frames. Images added while it runs (a camera
    uploading snapshots) are read too when they arrive before the end of the listing, once unchanged for `settle` s."""

    live = False

    def __init__(self, folder: str | Path, fps: float | None = None, settle: float = 0.5) -> None:
        self.folder = Path(folder)
        self._fps = fps
        self.settle = settle
        self._files: list[Path] = []
        self._listed: set[Path] = set()
        self._pos = 0

    def _images(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def open(self) -> None:
        if not self.folder.is_dir():
            raise DeviceError(f"image folder not found: {self.folder}")
        self._files = self._images()
        if not self._files:
            raise DeviceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {self.folder}")
        self._listed = set(self._files)
        self._pos = 0

    def _list_new(self) -> bool:
        """Append the images added since the folder was listed; True if there were any."""
        try:
            new = [p for p in self._images() if p not in self._listed]
        except OSError:
            return False
        self._files += new
        self._listed.update(new)
        # An upload still being written decodes as half a picture: wait (boundedly) until none changed for `settle`.
        deadline = time.monotonic() + 4 * self.settle
        while new and time.monotonic() < deadline:
            try:
                age = time.time() - max(p.stat().st_mtime for p in new)
            except OSError:
                break
            if age >= self.settle:
                break
            time.sleep(min(self.settle - max(0.0, age), max(0.0, deadline - time.monotonic())))
        return bool(new)

    def read(self) -> np.ndarray | None:
        if self._pos >= len(self._files) and not self._list_new():
            raise EOFError
        path = self._files[self._pos]
        self._pos += 1
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            log.warning("unreadable image skipped: %s", path)
        return img

    def close(self) -> None:
        self._files = []
        self._listed = set()

    @property
    def fps(self) -> float | None:
        return self._fps


class Picamera2Source:
    """Raspberry Pi camera via Picamera2 (libcamera), when importable."""

    live = True

    def __init__(self, width: int | None, height: int | None) -> None:
        self._size = (width or 640, height or 480)
        self._cam: Any = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError as exc:
            raise DeviceError("camera.source is 'picamera2' but picamera2 is not installed: "
                              "`sudo apt install python3-picamera2` (Raspberry Pi OS)") from exc
        cam = None
        try:
            cam = Picamera2()
            # libcamera names formats by word order: "RGB888" is stored [B, G, R] per pixel, OpenCV's order.
            cam.configure(cam.create_video_configuration(main={"size": self._size, "format": "RGB888"}))
            cam.start()
        except Exception as exc:  # no camera detected (IndexError), busy, failed start: offline, retried with backoff
            if cam is not None:  # a half-opened camera stays acquired and makes every retry fail as busy
                with contextlib.suppress(Exception):
                    cam.close()
            raise DeviceError(f"Picamera2 camera did not open ({type(exc).__name__}: {exc}): check the ribbon "
                              "cable and that no other process uses the camera") from exc
        self._cam = cam

    def read(self) -> np.ndarray | None:
        return None if self._cam is None else self._cam.capture_array("main")[:, :, :3]

    def close(self) -> None:
        if self._cam is not None:
            self._cam.stop()
            self._cam.close()
            self._cam = None

    @property
    def fps(self) -> float | None:
        return None


def make_source(cfg: CameraConfig) -> Source:
    kind = source_kind(cfg.source)
    if kind == "picamera2":
        return Picamera2Source(cfg.width, cfg.height)
    if kind == "folder":
        return FolderSource(str(cfg.source), cfg.fps)
    return OpenCVSource(cfg.source, cfg.width, cfg.height, cfg.fps, cfg.timeout, cfg.decode_threads)


class Camera:
    """A capture thread over a Source; `read()` returns frames newer than the last one read."""

    def __init__(self, cfg: CameraConfig, source: Source | None = None) -> None:
        self.cfg = cfg
        self.source = source or make_source(cfg)
        # Lossless hand-over for unpaced files; newest-frame-only for live or paced sources.
        self.lossless = not self.source.live and not cfg.paced
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._taken = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.online = False
        self.ended = False
        self.frames_captured = 0
        self.frames_dropped = 0  # overwritten before the consumer took them
        self.bad_reads = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self.fps: float | None = None

    # -- lifecycle
    def start(self) -> Camera:
        self._thread = threading.Thread(target=self._loop, name="camera", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():  # stuck in a driver read: never close a capture under its feet
                log.warning("camera thread did not stop within 10 s; leaving it to exit with the process")
                return
        self.source.close()

    def __enter__(self) -> Camera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- consumer side
    def read(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet read; None on timeout or when the source has ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._taken:
                if self.ended or self._stop.is_set():
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is not None else 0.5)
            self._taken = True
            self._cond.notify_all()
            return self._frame

    def has_unread(self) -> bool:
        with self._cond:
            return not self._taken

    def latest(self) -> Frame | None:
        with self._cond:
            return self._frame

    def state(self) -> dict[str, Any]:
        return {"camera_online": self.online, "camera_ended": self.ended, "frames_captured": self.frames_captured,
                "frames_dropped": self.frames_dropped, "bad_reads": self.bad_reads, "reconnects": self.reconnects,
                "camera_error": self.last_error}

    # -- capture thread
    def _publish(self, img: np.ndarray, ts: float) -> None:
        with self._cond:
            if self.lossless:
                while not self._taken and not self._stop.is_set():
                    self._cond.wait(0.5)
            elif not self._taken:
                self.frames_dropped += 1
            self._frame = Frame(img, ts, self.frames_captured)
            self.frames_captured += 1
            self._taken = False
            self._cond.notify_all()

    def _open_with_backoff(self) -> bool:
        delay = self.cfg.reconnect_initial
        while not self._stop.is_set():
            try:
                self.source.open()
                self.fps = self.source.fps or self.cfg.fps
                self.online = True
                self.last_error = None
                return True
            except DeviceError as exc:
                self.online = False
                if self.last_error != str(exc):
                    log.warning("camera offline: %s (retrying with backoff up to %.0fs)", exc,
                                self.cfg.reconnect_max)
                self.last_error = str(exc)
            self._stop.wait(delay)
            delay = min(delay * 2, self.cfg.reconnect_max)
        return False

    def _loop(self) -> None:
        try:
            self._run()
        finally:
            with self._cond:
                self.ended = True
                self.online = False
                self._cond.notify_all()

    def _run(self) -> None:
        if not self._open_with_backoff():
            return
        # Files get media timestamps (t0 + i / fps): pre-roll and post-roll mean the same number of
        # frames whether the file is paced or read as fast as possible.
        t0 = time.time()
        paced_start = time.monotonic()
        media_index = 0
        bad = 0
        good = 0  # frames delivered since the file / folder was (re)opened
        empty_delay = self.cfg.reconnect_initial
        while not self._stop.is_set():
            try:
                img = self.source.read()
            except EOFError:
                img, eof = None, True
            else:
                eof = img is None and not self.source.live and isinstance(self.source, OpenCVSource)
            if eof:
                if not self.cfg.loop:
                    log.info("camera source ended after %d frames", self.frames_captured)
                    return
                self.source.close()
                if good == 0:  # an empty / all-unreadable file or folder: back off, never reopen it in a busy loop
                    self.online = False
                    if empty_delay == self.cfg.reconnect_initial:
                        log.warning("camera source %r has no readable frame; retrying with backoff",
                                    redact_source(self.cfg.source))
                    self.last_error = f"camera source {redact_source(self.cfg.source)!r} has no readable frame"
                    self._stop.wait(empty_delay)
                    empty_delay = min(empty_delay * 2, self.cfg.reconnect_max)
                else:
                    empty_delay = self.cfg.reconnect_initial
                good = 0
                if not self._open_with_backoff():
                    return
                continue
            img = as_bgr(img)
            if img is None or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
                bad += 1
                self.bad_reads += 1
                if bad >= self.cfg.max_bad_reads and self.source.live:
                    log.warning("camera stream dropped after %d bad reads; reconnecting", bad)
                    self.online = False
                    self.source.close()
                    self.reconnects += 1
                    if not self._open_with_backoff():
                        return
                    bad = 0
                elif self.source.live:
                    self._stop.wait(0.01)
                continue
            bad = 0
            good += 1
            if self.source.live:
                ts = time.time()
            else:
                period = 1.0 / (self.fps or 30.0)
                if self.cfg.paced:
                    self._stop.wait(max(0.0, paced_start + media_index * period - time.monotonic()))
                ts = t0 + media_index * period
                media_index += 1
            self._publish(img, ts)


def grab_one(cfg: CameraConfig, timeout: float = 10.0) -> np.ndarray:
    """One frame from the configured camera (for `edgetl-device check`)."""
    source = make_source(cfg)
    deadline = time.monotonic() + timeout
    source.open()
    try:
        while time.monotonic() < deadline:
            try:
                img = source.read()
            except EOFError:
                break
            if img is not None:
                return img
            if not source.live and not isinstance(source, FolderSource):  # a folder's None is one bad image, not EOF
                break
    finally:
        source.close()
    raise DeviceError(f"camera {redact_source(cfg.source)!r} opened but gave no frame within {timeout:.0f}s")
