"""Clip recording: a memory-bounded pre-roll ring buffer and clips written atomically.

`Recorder.push(frame, wanted)` is called for every camera frame. While `wanted`
(an object is active) a clip is open; it starts with the ring buffer's last
`pre_roll` seconds, continues `post_roll` seconds after the last wanted frame
(so overlapping events merge into one clip), stops at `max_clip`, and no new
clip starts within `cooldown` of the last. Encoding runs on a writer thread so
the frame loop never waits for the disk. A clip is written as `.<id>.tmp<ext>`,
then renamed; its JSON sidecar (written last, also atomically) marks it complete.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgetl_device.camera import Frame
from edgetl_device.config import RecordingConfig

log = logging.getLogger(__name__)


class RingBuffer:
    """The last `seconds` of frames, never more than `max_bytes` of pixels."""

    def __init__(self, seconds: float, max_bytes: int) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self._frames: deque[Frame] = deque()
        self.nbytes = 0

    def append(self, frame: Frame) -> None:
        self._frames.append(frame)
        self.nbytes += frame.image.nbytes
        horizon = frame.timestamp - self.seconds
        while self._frames and (self._frames[0].timestamp < horizon or self.nbytes > self.max_bytes):
            self.nbytes -= self._frames.popleft().image.nbytes

    def shift(self, dt: float) -> None:
        """Move every frame's timestamp by dt (the wall clock was stepped)."""
        self._frames = deque(replace(f, timestamp=f.timestamp + dt) for f in self._frames)

    def since(self, t: float) -> list[Frame]:
        return [f for f in self._frames if f.timestamp >= t]

    def __len__(self) -> int:
        return len(self._frames)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_jpeg_atomic(path: Path, image: np.ndarray, quality: int = 90) -> None:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"JPEG encoding failed for {path}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


def remove_stale_temp_files(clips_dir: Path) -> int:
    """Delete temp files (`.<name>.tmp*`) a killed process left behind; call only while no clip is open."""
    removed = 0
    try:
        for p in clips_dir.iterdir() if clips_dir.is_dir() else ():
            if p.name.startswith(".") and ".tmp" in p.name and p.is_file():
                p.unlink(missing_ok=True)
                removed += 1
    except OSError as exc:  # a read-only disk must not stop the device; recording will report its own errors
        log.error("cannot remove temp files in %s: %s", clips_dir, exc)
    if removed:
        log.warning("removed %d temp file(s) of clips cut short by a crash in %s", removed, clips_dir)
    return removed


@dataclass
class ClipInfo:
    clip_id: str
    video_path: Path
    sidecar_path: Path
    snapshot_path: Path
    start_time: float
    trigger_time: float
    last_wanted: float
    model_version: str | None
    last_frame_time: float = 0.0  # timestamp of the newest frame handed to the clip
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    best_score: float = -1.0
    best_frame: np.ndarray | None = None
    frames: int = 0
    pre_roll_frames: int = 0
    frames_dropped: int = 0  # encoder could not keep up (live sources only)
    end_time: float | None = None
    end_reason: str | None = None


class _ClipWriter(threading.Thread):
    """Encodes one clip from a queue of frames on its own thread."""

    def __init__(self, info: ClipInfo, fps: float, codec: str, size: tuple[int, int]) -> None:
        super().__init__(name=f"clip-{info.clip_id[:8]}", daemon=True)
        self.info = info
        self.tmp_path = info.video_path.with_name(f".{info.clip_id}.tmp{info.video_path.suffix}")
        self.queue: queue.Queue[np.ndarray | None] = queue.Queue()
        self.size = size
        self.writer = cv2.VideoWriter(str(self.tmp_path), cv2.VideoWriter_fourcc(*codec), fps, size)
        if not self.writer.isOpened():
            raise OSError(f"cannot open a {codec} video writer for {self.tmp_path}")
        self.error: Exception | None = None
        self.written = 0
        self._pending = 0  # real bytes of the queued frames: they may be larger than the clip's (resolution change)
        self._pending_lock = threading.Lock()

    def put(self, img: np.ndarray) -> None:
        with self._pending_lock:
            self._pending += img.nbytes
        self.queue.put(img)

    def pending_bytes(self) -> int:
        return self._pending

    def run(self) -> None:
        try:
            while True:
                img = self.queue.get()
                if img is None:
                    break
                nbytes = img.nbytes
                if (img.shape[1], img.shape[0]) != self.size:
                    img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
                with self._pending_lock:
                    self._pending -= nbytes
                self.writer.write(img)
                self.written += 1
        except Exception as exc:  # disk full, codec failure: reported by finish()
            self.error = exc
        finally:
            self.writer.release()


class Recorder:
    """Decides when clips start and stop and hands frames to the clip writer."""

    def __init__(self, cfg: RecordingConfig, clips_dir: Path, fps: float | None, device_id: str = "device",
                 model_version: str | None = None) -> None:
        self.cfg = cfg
        self.clips_dir = Path(clips_dir)
        self.fps = cfg.fps or fps or 10.0
        self.device_id = device_id
        self.model_version = model_version
        self.ring = RingBuffer(cfg.pre_roll, int(cfg.buffer_mb * 1024 * 1024))
        self.clip: ClipInfo | None = None
        self._writer: _ClipWriter | None = None
        self._cooldown_until = float("-inf")
        self.allowed = True  # the disk guard clears this
        self.manual_until: float | None = None  # manual recording: None = off, inf = until stopped
        self.clips_written = 0  # a count: keeping every saved ClipInfo grew ~3 KB a clip for the process's life
        self.clips_failed = 0
        self._last_time = float("-inf")
        remove_stale_temp_files(self.clips_dir)  # retention never counts temp files: a crash's would stay forever

    # -- per frame
    def push(self, frame: Frame, wanted: bool) -> ClipInfo | None:
        """Feed every frame. Returns a ClipInfo when a clip was just completed."""
        now = frame.timestamp
        if now < self._last_time:  # wall clock stepped back (NTP): else clips, cooldown, manual never end
            self._clock_stepped(now - self._last_time)
        self._last_time = now
        manual = self.manual_until is not None and now < self.manual_until
        if self.manual_until is not None and not manual:
            self.manual_until = None
        wanted = wanted or manual
        finished = None
        if self.clip is not None:
            if wanted:
                self.clip.last_wanted = now
            if now - self.clip.last_wanted > self.cfg.post_roll:
                finished = self.finish("post_roll")
            elif now - self.clip.start_time >= self.cfg.max_clip:
                finished = self.finish("max_clip")
        if (self.clip is None and wanted and self.cfg.enabled and self.allowed and now >= self._cooldown_until
                and finished is None):
            self._start(frame)
        if self.clip is not None and self._writer is not None:
            self.clip.last_frame_time = now
            if self._wait_for_writer():
                self._writer.put(frame.image)
                self.clip.frames += 1
            else:
                self.clip.frames_dropped += 1
        else:
            self.ring.append(frame)
        return finished

    def _clock_stepped(self, dt: float) -> None:
        """Re-base everything timed by frame timestamps by dt seconds so durations keep counting."""
        log.warning("wall clock stepped by %.1f s; recorder timing re-based", dt)
        if self.clip is not None:
            c = self.clip
            c.start_time, c.trigger_time, c.last_wanted = c.start_time + dt, c.trigger_time + dt, c.last_wanted + dt
            c.last_frame_time += dt
        self._cooldown_until += dt
        if self.manual_until is not None:
            self.manual_until += dt
        self.ring.shift(dt)

    def _wait_for_writer(self, timeout: float = 1.0) -> bool:
        """Bound the encoder's backlog to buffer_mb (the ring is empty while a clip is open, so frame memory
        never exceeds buffer_mb). Waits for the encoder up to `timeout`; False means drop this frame."""
        writer = self._writer
        deadline = time.monotonic() + timeout
        while writer.pending_bytes() > self.ring.max_bytes:
            if time.monotonic() > deadline or not writer.is_alive():
                return False
            time.sleep(0.002)
        return True

    def note(self, object_id: str, label: str, score: float, unknown_score: float, frame: Frame) -> None:
        """Attach an object's observation to the open clip (best frame -> snapshot)."""
        clip = self.clip
        if clip is None:
            return
        o = clip.objects.setdefault(object_id, {"object_id": object_id, "labels": {}, "first_seen": frame.timestamp})
        o["labels"][label] = max(float(score), o["labels"].get(label, 0.0))
        o["max_unknown_score"] = max(float(unknown_score), o.get("max_unknown_score", 0.0))
        o["last_seen"] = frame.timestamp
        if score > clip.best_score:
            clip.best_score = float(score)
            clip.best_frame = frame.image

    @property
    def recording(self) -> bool:
        return self.clip is not None

    def expected_paths(self) -> tuple[str, str] | None:
        if self.clip is None:
            return None
        return str(self.clip.video_path), str(self.clip.snapshot_path)

    # -- clip lifecycle
    def _start(self, frame: Frame) -> None:
        clip_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(frame.timestamp)) + "_" + uuid.uuid4().hex[:8]
        self.clips_dir.mkdir(parents=True, exist_ok=True)
        pre = self.ring.since(frame.timestamp - self.cfg.pre_roll)
        first = pre[0] if pre else frame
        h, w = frame.image.shape[:2]
        info = ClipInfo(clip_id=clip_id, video_path=self.clips_dir / f"{clip_id}{self.cfg.extension}",
                        sidecar_path=self.clips_dir / f"{clip_id}.json",
                        snapshot_path=self.clips_dir / f"{clip_id}.jpg",
                        start_time=first.timestamp, trigger_time=frame.timestamp, last_wanted=frame.timestamp,
                        model_version=self.model_version)
        try:
            writer = _ClipWriter(info, self.fps, self.cfg.codec, (w, h))
        except OSError as exc:
            log.error("cannot start a clip: %s", exc)
            self.clips_failed += 1
            self._cooldown_until = frame.timestamp + max(self.cfg.cooldown, 1.0)
            return
        writer.start()
        for f in pre:
            writer.put(f.image)
        info.frames = info.pre_roll_frames = len(pre)
        info.best_frame = frame.image  # snapshot of the trigger frame unless a better one is noted
        self.ring = RingBuffer(self.cfg.pre_roll, self.ring.max_bytes)  # those frames now belong to the clip
        self.clip, self._writer = info, writer
        log.info("recording clip %s (%d pre-roll frames)", clip_id, len(pre))

    def finish(self, reason: str = "stopped") -> ClipInfo | None:
        """Close the open clip now: wait for the encoder, rename, write snapshot and sidecar."""
        clip, writer = self.clip, self._writer
        if clip is None or writer is None:
            return None
        self.clip, self._writer = None, None
        clip.end_time = clip.last_wanted if reason == "post_roll" else None
        clip.end_reason = reason
        writer.queue.put(None)
        writer.join()
        # the newest frame's own time: frames arrive at the loop's rate, not necessarily at self.fps
        clip.end_time = max(clip.end_time or 0.0, clip.last_frame_time)
        self._cooldown_until = clip.end_time + self.cfg.cooldown
        if writer.error is not None or writer.written == 0:
            log.error("clip %s failed: %s", clip.clip_id, writer.error or "no frames")
            writer.tmp_path.unlink(missing_ok=True)
            self.clips_failed += 1
            return None
        try:
            os.replace(writer.tmp_path, clip.video_path)
            if clip.best_frame is not None:
                write_jpeg_atomic(clip.snapshot_path, clip.best_frame, self.cfg.snapshot_quality)
            write_json_atomic(clip.sidecar_path, self.sidecar(clip, writer.written))
        except OSError as exc:
            log.error("clip %s could not be saved: %s", clip.clip_id, exc)
            self.clips_failed += 1
            return None
        clip.best_frame = None  # release the memory
        self.clips_written += 1
        log.info("clip %s saved (%d frames, %s)", clip.video_path.name, writer.written, reason)
        return clip

    def sidecar(self, clip: ClipInfo, frames: int) -> dict[str, Any]:
        labels: dict[str, float] = {}
        for o in clip.objects.values():
            for k, v in o["labels"].items():
                labels[k] = max(v, labels.get(k, 0.0))
        return {
            "schema": 1,
            "clip_id": clip.clip_id,
            "device_id": self.device_id,
            "event_ids": list(clip.objects),  # object ids of the events this clip covers
            "video": clip.video_path.name,
            "snapshot": clip.snapshot_path.name if clip.snapshot_path.exists() else None,
            "start_time": clip.start_time,
            "trigger_time": clip.trigger_time,
            "end_time": clip.end_time,
            "end_reason": clip.end_reason,
            "frames": frames,
            "frames_dropped": clip.frames_dropped,
            "pre_roll_frames": clip.pre_roll_frames,
            "fps": self.fps,
            "classes": labels,
            "objects": list(clip.objects.values()),
            "best_score": clip.best_score if clip.best_score >= 0 else None,
            "model_version": clip.model_version,
        }

    # -- manual recording (commands)
    def start_manual(self, now: float, duration: float | None) -> None:
        self.manual_until = float("inf") if duration is None else now + float(duration)

    def stop_manual(self) -> None:
        self.manual_until = None
