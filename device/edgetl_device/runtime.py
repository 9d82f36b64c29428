"""The frame loop: camera -> motion gate -> classify -> decide -> record -> report.

`Runtime(config).run(max_frames=None)` runs in the calling thread until the
camera ends, `max_frames` frames were processed, or `stop()` (SIGTERM/SIGINT in
the CLI). SIGHUP re-reads the config file like the `reload_config` command (the
loop does it between frames). On the way out it finishes the open clip, ends the
active object and flushes the reporter. Remote commands (edgetl_device.commands) run on the
reporter's thread; anything that touches the loop's state is queued and applied
between frames.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from edgetl_device import __version__
from edgetl_device.camera import Camera, Frame
from edgetl_device.config import DeviceConfig, load_config
from edgetl_device.decision import Decider, FrameDecision, Transition
from edgetl_device.errors import DeviceError
from edgetl_device.events import new_event
from edgetl_device.inference import Model, load_model
from edgetl_device.motion import MotionGate
from edgetl_device.recording import Recorder, write_jpeg_atomic, write_json_atomic
from edgetl_device.reporting import JsonlReporter, Reporter
from edgetl_device.storage import MB, Storage

log = logging.getLogger(__name__)


class Prepared(NamedTuple):
    frame: Frame
    run_inference: bool
    model: Model
    tensor: Future[np.ndarray] | None  # model input being made on the worker thread


def percentile(values: list[float] | deque[float], q: float) -> float | None:
    return float(np.percentile(np.fromiter(values, float), q)) if len(values) else None


def scorer_for(bundle: Any, model: Model | None = None) -> tuple[Callable | None, float | None]:
    """The bundle's open-set scorer and threshold, or (None, None) for the max-probability default.
    With `model`, the scorer is tried once on the model's own outputs, so arrays that do not fit it (another
    embedding width, no embedding output, NaN) are refused at load instead of failing on the first frame."""
    if bundle is None:
        return None, None
    try:
        from edgetl_device.openset import scorer_from_bundle
    except ImportError:
        return None, None
    found = scorer_from_bundle(bundle)
    if found is None:
        return None, None
    if model is not None:
        out = model.run(np.zeros((model.height, model.width, 3), np.uint8))
        try:
            value = float(found[0](out.probabilities, out.embedding))
        except Exception as exc:  # shapes, a missing embedding: the arrays were fitted for another model
            raise DeviceError(f"the bundle's open-set scorer does not fit its model ({type(exc).__name__}: {exc}); "
                              "re-run `edgetl openset fit` on this run and export again") from exc
        if not np.isfinite(value):
            raise DeviceError("the bundle's open-set scorer gives a non-finite score (NaN or inf in its arrays); "
                              "re-run `edgetl openset fit` and export again")
    return found


def make_reporter(config: DeviceConfig, telemetry_source: Callable[[], dict[str, Any]] | None = None,
                  model_version: str | None = None) -> Reporter:
    if config.mqtt is not None:
        try:
            from edgetl_device.mqtt import MqttReporter
        except ImportError as exc:
            raise DeviceError("config has an mqtt section but edgetl_device.mqtt is unavailable: "
                              "`pip install paho-mqtt`, or remove the mqtt section") from exc
        config.mqtt.outbox_path.parent.mkdir(parents=True, exist_ok=True)
        return MqttReporter(config.mqtt, config.device_id, telemetry_source=telemetry_source,
                            model_version=model_version)  # the "online" status sent on connect names the model
    return JsonlReporter(config.storage.data_dir / "events.jsonl", config.device_id)


class Runtime:
    """The device service. Implements edgetl_device.commands.CommandTarget."""

    def __init__(self, config: DeviceConfig, reporter: Reporter | None = None,
                 config_path: str | os.PathLike[str] | None = None) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        if config.runtime.opencv_threads is not None:
            cv2.setNumThreads(config.runtime.opencv_threads)  # process-wide
        self.data_dir = Path(config.storage.data_dir)
        self.clips_dir = self.data_dir / "clips"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.model, self.bundle = load_model(config.model, config.trusted_keys)
        scorer, threshold = scorer_for(self.bundle, self.model)
        self.decider = Decider(self.model.labels, config.decision, scorer, threshold)
        self.gate = MotionGate(config.motion)
        self.storage = Storage(self.clips_dir, config.storage.max_age_days, config.storage.max_total_mb,
                               config.storage.min_free_mb,
                               aged_dirs=(self.data_dir / "snapshots",))
        self._own_reporter = reporter is None
        self.reporter = reporter if reporter is not None else make_reporter(config, self.telemetry,
                                                                             self.model.model_version)
        self.camera: Camera | None = None
        self.recorder: Recorder | None = None
        self._stop = threading.Event()
        self._reload_requested = False  # set by SIGHUP (a plain flag: safe in a signal handler), run by the loop
        self._tasks: queue.Queue[Callable[[], None]] = queue.Queue()
        self._tasks_lock = threading.Lock()  # a command is queued only while the loop will still run it
        self._started = time.monotonic()
        self._cpu_start = time.process_time()
        self.frames_in = 0
        self.frames_inferred = 0
        self.frames_skipped = 0
        self.inference_ms: deque[float] = deque(maxlen=500)
        self._rate: deque[tuple[float, int, int]] = deque(maxlen=64)  # (monotonic, processed, captured)
        self._loop_thread: threading.Thread | None = None
        self.last_decision: FrameDecision | None = None
        self.events_published = 0
        self.disk_low = False
        self._manual_object: str | None = None
        self.state = "starting"

    # ------------------------------------------------------------------ loop
    def run(self, max_frames: int | None = None) -> dict[str, Any]:
        """Process frames until the camera ends, max_frames were processed, or stop(); returns the final status."""
        self._loop_thread = threading.current_thread()
        self._forget_interrupted_downloads()  # before commands arrive: none of those downloads is running
        self.reporter.subscribe(self._on_command)
        self.camera = Camera(self.config.camera).start()
        self.state = "running"
        self._publish_report("status", {"state": "online", "model_version": self.model.model_version})
        next_status = time.monotonic() + self.config.runtime.status_interval
        next_storage = time.monotonic()
        stalled_since: float | None = None
        # Two stages: frame N+1 is gated here and its model input made on a worker while this thread runs
        # frame N through the interpreter (both release the GIL): preprocessing costs no throughput on a
        # multi-core board.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")
        pending: Prepared | None = None
        try:
            while not self._stop.is_set():
                # With a frame in flight, a live camera is only polled (never hold back the pending frame for
                # the next one). An unpaced file is decoded on demand, so there the next frame is always
                # worth waiting for: taking it before the pending invoke keeps decode, preprocess and invoke
                # overlapped instead of falling into a lock-step where each frame waits for its own resize.
                frame = self.camera.read(timeout=0.0 if pending is not None and not self.camera.lossless else 0.5)
                self._run_tasks()
                if self._reload_requested:
                    self._reload_requested = False  # before reading the file: a SIGHUP from now on reloads again
                    self._reload_on_request()
                now_m = time.monotonic()
                nxt = self._prepare(frame, pool) if frame is not None else None
                if pending is not None:
                    self._process(pending)
                    pending = None
                    if max_frames is not None and self.frames_in >= max_frames:
                        break
                pending = nxt
                if frame is None and pending is None:
                    if self.camera.ended and not self.camera.has_unread():
                        break
                    stalled_since = stalled_since or now_m
                    if now_m - stalled_since > self.config.runtime.read_timeout:
                        log.warning("no frame for %.0fs (camera %s)", now_m - stalled_since,
                                    "online" if self.camera.online else "offline")
                        stalled_since = now_m
                elif frame is not None:
                    stalled_since = None
                if now_m >= next_storage:
                    self._check_storage()
                    next_storage = now_m + self.config.storage.check_interval
                if now_m >= next_status:
                    self._report_status()
                    next_status = now_m + self.config.runtime.status_interval
            if pending is not None and (max_frames is None or self.frames_in < max_frames):
                self._process(pending)  # the last frame of the file, or the one in flight at stop
        finally:
            pool.shutdown(wait=True)
            self._shutdown()
        return self.status()

    def _forget_interrupted_downloads(self) -> None:
        """Remove the model downloads a crash or power loss cut off (`<data_dir>/bundles/.incoming`) at start,
        not at the first update_model, which may come weeks later."""
        if not (self.data_dir / "bundles" / ".incoming").is_dir():
            return  # no download was ever started here: nothing to import or clean
        from edgetl_device.ota import forget_interrupted_downloads

        forget_interrupted_downloads(self.data_dir / "bundles")

    def _prepare(self, frame: Frame, pool: ThreadPoolExecutor) -> Prepared:
        """Gate here (cheap); only frames that will be inferred get their model input made on the worker,
        so a static scene costs no thread hand-over at all."""
        gate = self.gate.check(frame.image, frame.timestamp)
        model = self.model
        tensor = pool.submit(model.preprocess, frame.image) if gate.run_inference else None
        return Prepared(frame, gate.run_inference, model, tensor)

    def _process(self, prepared: Prepared) -> None:
        frame = prepared.frame
        old = self.recorder
        # first frame, or reloaded recording settings: applied between clips (a reload may come mid-clip)
        if old is None or (old.cfg is not self.config.recording and not old.recording):
            self.recorder = Recorder(self.config.recording, self.clips_dir, self.camera.fps if self.camera else None,
                                     self.config.device_id, self.model.model_version)
            self.recorder.allowed = self.storage.recording_allowed
            self.recorder.manual_until = old.manual_until if old else None  # a manual recording outlives a reload
            if old is not None:  # the status counts clips since start, not since the last reload
                self.recorder.clips_written, self.recorder.clips_failed = old.clips_written, old.clips_failed
        self.frames_in += 1
        transitions: list[Transition] = []
        decision = None
        if prepared.run_inference:
            tensor = prepared.tensor.result() if prepared.model is self.model and prepared.tensor is not None \
                else self.model.preprocess(frame.image)
            t0 = time.perf_counter()
            out = self.model.infer(tensor)
            self.inference_ms.append((time.perf_counter() - t0) * 1000)
            self.frames_inferred += 1
            decision = self.last_decision = self.decider.decide(out.probabilities, out.embedding)
            transitions = self.decider.update(decision, frame.timestamp)
        else:
            self.frames_skipped += 1
        finished = self.recorder.push(frame, self.decider.active is not None)
        if self._manual_object is not None and self.recorder.manual_until is None:
            self._end_manual(frame.timestamp)  # a timed manual recording ran out: its event ends too
        if decision is not None and self.decider.active is not None and decision.trigger is not None:
            self.recorder.note(self.decider.active.object_id, decision.trigger, decision.score,
                               decision.unknown_score, frame)
        for t in transitions:
            self._publish_transition(t, frame.timestamp)
        if finished is not None:
            log.debug("clip %s complete", finished.clip_id)
        self._rate.append((time.monotonic(), self.frames_in, self.camera.frames_captured if self.camera else 0))

    def _publish_transition(self, t: Transition, now: float) -> None:
        obj = t.obj
        paths = self.recorder.expected_paths() if self.recorder else None
        d = t.decision
        self._publish_event(new_event(
            self.config.device_id, t.type, obj.object_id, obj.label,
            score=obj.best_score, unknown_score=d.unknown_score if d else obj.best_unknown_score,
            unknown=obj.unknown, start_time=obj.start_time, end_time=obj.end_time,
            clip_path=paths[0] if paths else None, snapshot_path=paths[1] if paths else None,
            model_version=self.model.model_version, classes=dict(obj.labels)))
        log.info("object %s %s: %s (score %.2f)", obj.object_id[:8], t.type, obj.label, obj.best_score)

    def _frame_time(self) -> float:
        """The newest frame's timestamp (the clock events and clips use), or now when there is no frame."""
        frame = self.camera.latest() if self.camera else None
        return frame.timestamp if frame is not None else time.time()

    def _end_objects(self) -> float:
        """Publish the end of every object in view (the decider is replaced, or the runtime stops)."""
        now = self._frame_time()
        for t in self.decider.finish(now):
            self._publish_transition(t, now)
        return now

    def _publish_event(self, event: dict[str, Any]) -> None:
        try:
            self.reporter.publish("event", event)
            self.events_published += 1
        except Exception:  # reporting must never stop the camera loop
            log.exception("could not publish event")

    def _publish_report(self, kind: str, payload: dict[str, Any]) -> None:
        try:
            self.reporter.publish(kind, payload)
        except Exception as exc:  # like events: a full disk under events.jsonl must not stop the camera loop
            log.warning("could not publish %s: %s", kind, exc)

    def _check_storage(self) -> None:
        changed = self.storage.check()
        if self.recorder is not None:
            self.recorder.allowed = self.storage.recording_allowed
            if not self.recorder.allowed and self.recorder.recording:
                self.recorder.finish("disk_low")  # close it cleanly before the disk fills
        self.disk_low = not self.storage.recording_allowed
        if changed:
            self._publish_report("status", {"state": "online", "model_version": self.model.model_version,
                                            "disk_low": self.disk_low,
                                            "disk_free_mb": round(self.storage.disk_free / MB, 1)})

    def _report_status(self) -> None:
        snapshot = self.status()
        try:
            write_json_atomic(self.data_dir / "status.json", snapshot)
        except OSError as exc:
            log.warning("cannot write status.json: %s", exc)
        if not hasattr(self.reporter, "telemetry_source"):  # MQTT publishes telemetry on its own clock
            self._publish_report("telemetry", {"schema": 1, "device_id": self.config.device_id,
                                               "time": time.time(), **self.telemetry()})
        log.info("status: fps in %.1f out %.1f, inference p50 %s ms, gate skipped %d, camera %s",
                 snapshot["fps_in"] or 0, snapshot["fps_out"] or 0, snapshot["inference_ms_p50"],
                 snapshot["frames_skipped_by_gate"], "online" if snapshot["camera_online"] else "offline")

    def _shutdown(self) -> None:
        with self._tasks_lock:
            self.state = "stopping"
        self._run_tasks()  # commands queued after the loop's last task run: apply and answer them, never wait
        now = self._end_objects()
        if self._manual_object is not None:
            self._end_manual(now)  # like the objects' events above: never left open
        if self.recorder is not None:
            self.recorder.finish("shutdown")
        if self.camera is not None:
            self.camera.stop()
        self.state = "stopped"
        self._report_status()  # a final snapshot: a short run must not end without any telemetry
        if self._own_reporter:
            try:
                self.reporter.stop()
            except Exception as exc:  # e.g. the last lines of events.jsonl on a full disk: the run itself ended well
                log.warning("could not stop the reporter cleanly: %s", exc)
        log.info("runtime stopped after %d frames (%d inferred)", self.frames_in, self.frames_inferred)

    def stop(self) -> None:
        """Ask the loop to finish (thread- and signal-safe)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Ask the loop to re-read the config file between frames (SIGHUP; only sets a flag: signal-safe)."""
        self._reload_requested = True

    def _reload_on_request(self) -> None:
        """`reload_config` on the loop thread; a bad file is logged and the running config kept."""
        log.info("SIGHUP: reloading the config from %s", self.config_path)
        try:
            self.reload_config()
        except DeviceError as exc:
            log.error("config reload refused, keeping the running config: %s", exc)
        except Exception:  # a reload must never stop the camera loop
            log.exception("config reload failed, keeping the running config")

    # ------------------------------------------------------------------ status
    def _fps(self, column: int = 1) -> float | None:
        """Frames per second over the last 64 frames: column 1 processed (out), 2 captured (in)."""
        if len(self._rate) < 2:
            return None
        first, last = self._rate[0], self._rate[-1]
        dt = last[0] - first[0]
        return (last[column] - first[column]) / dt if dt > 0 else None

    def status(self) -> dict[str, Any]:
        cam = self.camera.state() if self.camera else {"camera_online": False}
        cpu = time.process_time() - self._cpu_start
        return {
            "schema": 1,
            "device_id": self.config.device_id,
            "state": self.state,
            "time": time.time(),
            "version": __version__,
            "model_version": self.model.model_version,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "fps_in": _round(self._fps(2)),
            "fps_out": _round(self._fps()),
            "frames_in": self.frames_in,
            "frames_inferred": self.frames_inferred,
            "frames_skipped_by_gate": self.frames_skipped,
            "motion_skip_ratio": round(self.frames_skipped / self.frames_in, 3) if self.frames_in else 0.0,
            "inference_ms_p50": _round(percentile(self.inference_ms, 50)),
            "inference_ms_p95": _round(percentile(self.inference_ms, 95)),
            "cpu_s_per_frame": round(cpu / self.frames_in, 5) if self.frames_in else None,
            "recording": bool(self.recorder and self.recorder.recording),
            "clips_written": self.recorder.clips_written if self.recorder else 0,
            "active_object": self.decider.active.label if self.decider.active else None,
            "unknown_threshold": self.decider.threshold,
            "events_published": self.events_published,
            "disk_free_mb": round(self.storage.disk_free / MB, 1),
            "disk_low": self.disk_low,
            "clips_deleted": self.storage.deleted,
            **cam,
        }

    def telemetry(self) -> dict[str, Any]:
        """The runtime's fields of the telemetry message (see DEVELOPERS.md)."""
        return {
            "fps": _round(self._fps()),
            "inference_ms_p50": _round(percentile(self.inference_ms, 50)),
            "inference_ms_p95": _round(percentile(self.inference_ms, 95)),
            "motion_skip_ratio": round(self.frames_skipped / self.frames_in, 3) if self.frames_in else 0.0,
            "disk_free_mb": round(self.storage.disk_free / MB, 1),
            "model_version": self.model.model_version,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "camera_online": bool(self.camera and self.camera.online),
        }

    # ------------------------------------------------------------------ commands (CommandTarget)
    def _on_command(self, name: str, payload: bytes) -> None:
        try:
            from edgetl_device.commands import dispatch
        except ImportError:
            log.warning("command %r ignored: edgetl_device.commands is not installed", name)
            return
        dispatch(name, payload, target=self, reporter=self.reporter)

    def _run_tasks(self) -> None:
        while True:
            try:
                task = self._tasks.get_nowait()
            except queue.Empty:
                return
            try:
                task()
            except Exception:
                log.exception("queued command failed")

    def _between_frames(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run fn on the loop thread between frames (now, before the loop started); refused once it stops."""
        if threading.current_thread() is self._loop_thread:
            return fn()
        box: dict[str, Any] = {}
        done = threading.Event()

        def task() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        with self._tasks_lock:
            if self.state in ("stopping", "stopped"):  # run beside _shutdown it would race it (events never ended)
                raise DeviceError("the runtime is shutting down; the command was not applied")
            queued = self.state == "running"
            if queued:
                self._tasks.put(task)
        if not queued:
            return fn()  # the loop has not started: nothing to race
        if not done.wait(timeout):
            raise DeviceError("the frame loop did not pick up the command in time; is the camera stalled?")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def set_threshold(self, value: float) -> None:
        value = float(value)
        # Open-set scores (energy, Mahalanobis, combined) live on their own scales and may be negative.
        if not math.isfinite(value):
            raise DeviceError(f"threshold {value} must be a finite number")
        self._between_frames(lambda: setattr(self.decider, "threshold", value))
        log.info("unknown threshold set to %.4g", value)

    def take_snapshot(self) -> str:
        if not self.storage.recording_allowed:  # like recording: a snapshot must not be what fills the disk
            raise DeviceError("snapshots are stopped: the disk is low (free space or lower storage.max_total_mb)")
        frame = self.camera.latest() if self.camera else None
        if frame is None:
            raise DeviceError("no frame yet: the camera has not delivered any image")
        path = self.data_dir / "snapshots" / f"snapshot_{time.strftime('%Y%m%dT%H%M%S')}_{uuid.uuid4().hex[:6]}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jpeg_atomic(path, frame.image, self.config.recording.snapshot_quality)
        return str(path)

    def start_manual_recording(self, duration: float | None = None) -> str:
        if not self.storage.recording_allowed:
            raise DeviceError("recording is stopped: the disk is low (free space or lower storage.max_total_mb)")
        object_id = uuid.uuid4().hex

        def start() -> None:
            now = self._frame_time()
            if self.recorder is None:
                raise DeviceError("no frame yet: the camera has not delivered any image")
            self.recorder.start_manual(now, duration)
            self._manual_object = object_id
            self._publish_event(new_event(self.config.device_id, "start", object_id, "manual", 1.0,
                                          start_time=now, model_version=self.model.model_version, manual=True))

        self._between_frames(start)
        return object_id

    def stop_manual_recording(self) -> None:
        def stop() -> None:
            if self.recorder is not None:
                self.recorder.stop_manual()
            if self._manual_object is not None:
                self._end_manual(time.time())

        self._between_frames(stop)

    def _end_manual(self, end_time: float) -> None:
        """Publish the manual recording's end event, with the clip it is being recorded into."""
        paths = self.recorder.expected_paths() if self.recorder else None
        self._publish_event(new_event(self.config.device_id, "end", self._manual_object, "manual", 1.0,
                                      end_time=end_time, clip_path=paths[0] if paths else None,
                                      snapshot_path=paths[1] if paths else None,
                                      model_version=self.model.model_version, manual=True))
        self._manual_object = None

    def reload_config(self) -> None:
        """Re-read the config file; motion, decision, storage and ota settings apply at once, recording ones once
        an open clip has ended. Camera and model changes need a restart (or swap_model)."""
        if self.config_path is None:
            raise DeviceError("runtime was started without a config file; nothing to reload")
        new = load_config(self.config_path)
        if new.camera != self.config.camera or new.model != self.config.model:
            log.warning("camera/model changes in %s take effect after a restart", self.config_path)

        def apply() -> None:
            self._end_objects()  # as in swap_model: a new decider would leave their events open
            self.config.motion, self.config.decision = new.motion, new.decision
            self.config.recording, self.config.storage = new.recording, new.storage
            self.config.ota = new.ota  # read by commands.updater_for at the next update_model
            self.gate = MotionGate(new.motion)
            self.decider = Decider(self.model.labels, new.decision, self.decider.scorer,
                                   None if self.decider.scorer.__name__ == "max_prob_unknown" else
                                   self.decider.threshold)
            self.storage = Storage(self.clips_dir, new.storage.max_age_days, new.storage.max_total_mb,
                                   new.storage.min_free_mb, aged_dirs=self.storage.aged_dirs)
            self._check_storage()  # a new Storage allows recording until checked: a low disk must stay guarded

        self._between_frames(apply)
        log.info("config reloaded from %s", self.config_path)

    def swap_model(self, bundle_dir: Path) -> None:
        """Load a new bundle (verify, model, labels, scorer) then swap it in between frames.
        On any failure the old model keeps running and the error is raised."""
        cfg = self.config.model.model_copy(update={"bundle": Path(bundle_dir), "path": None, "labels": None})
        model, bundle = load_model(cfg, self.config.trusted_keys)
        scorer, threshold = scorer_for(bundle, model)

        def apply() -> None:
            self._end_objects()
            self.model, self.bundle = model, bundle
            self.decider = Decider(model.labels, self.config.decision, scorer, threshold)
            if self.recorder is not None:
                self.recorder.model_version = model.model_version

        self._between_frames(apply)
        self.reporter.publish("status", {"state": "online", "model_version": model.model_version})
        log.info("model swapped to %s (%s)", model.model_version, bundle_dir)


def _round(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(float(v), nd)


def install_signal_handlers(runtime: Runtime) -> None:
    """SIGTERM/SIGINT -> graceful stop (finish the clip, flush events); SIGHUP -> reload the config file
    (`systemctl reload`), done by the frame loop between frames, never inside the handler."""

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        runtime.stop()

    def reload_handler(_signum: int, _frame: Any) -> None:
        runtime.request_reload()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    if hasattr(signal, "SIGHUP"):  # not on Windows
        signal.signal(signal.SIGHUP, reload_handler)


def run_from_config(path: str | os.PathLike[str], max_frames: int | None = None) -> dict[str, Any]:
    config = load_config(path)
    runtime = Runtime(config, config_path=path)
    install_signal_handlers(runtime)
    return runtime.run(max_frames)


__all__ = ["Model", "Runtime", "install_signal_handlers", "make_reporter", "run_from_config"]
