"""`edgetl demo`: the whole story in one call, on a fresh offline machine.

dataset (synthetic camera scenes, or the user's `--data`) -> train (MobileNetV2 0.35) ->
int8 export -> unknown-object detector fitted on the int8 model's own embeddings ->
signed bundle -> a test video (known objects pass, then an unknown one) -> the device
runtime on that video, events to an MQTT broker when one is reachable, else to the local
event log -> a summary a person (and a test) can read.

Every step calls the other areas' Python APIs; nothing here re-implements them. What
the summary says is read back from what the device produced (its events, its clips, its
own per-frame decisions), never from what the script intended.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgetl import scenes
from edgetl.errors import EdgetlError

log = logging.getLogger(__name__)

DEVICE_ID = "demo-camera"
MARKER = ".edgetl-demo"  # marks an output folder this command may clear and reuse
SHARED_WEIGHTS = ("weights", "mobilenet_v2_0.35_224_no_top.h5")
EMPTY_NAMES = {"empty", "background", "none", "nothing", "_background_"}
ALPHA = 0.35


@dataclass(frozen=True)
class Profile:
    """How big each step is. Quick is for CI; the default is still a few minutes on 2 cores."""

    n_per_class: int
    image_size: scenes.Size  # dataset images (the camera's 4:3 frame, downscaled)
    frame_size: scenes.Size  # the test video
    model_size: int
    epochs: int
    fine_tune_epochs: int
    fps: float
    quick: bool


QUICK = Profile(n_per_class=50, image_size=(160, 120), frame_size=(320, 240), model_size=96, epochs=15,
                fine_tune_epochs=0, fps=10.0, quick=True)
FULL = Profile(n_per_class=150, image_size=(160, 120), frame_size=(320, 240), model_size=128, epochs=20,
               fine_tune_epochs=2, fps=10.0, quick=False)


@dataclass
class DemoOptions:
    out: Path = Path("edgetl-demo")
    data: Path | None = None
    weights: Path | None = None
    broker: str | None = None
    video: Path | None = None
    quick: bool = False
    seed: int = 0
    scorer: str = "combined"  # near (relative Mahalanobis) + far (kNN) evidence: best separation here
    target_false_alarm: float = 0.05
    report: bool = True


@dataclass
class DemoResult:
    out: Path
    synthetic: bool
    data: str
    weights: str
    weights_note: str
    run_dir: Path
    val_accuracy: float
    bundle_dir: Path
    parity: dict[str, Any]
    unknown_detector: dict[str, Any]
    key_id: str
    video: Path
    truth: list[dict[str, Any]]
    transport: str  # "mqtt://host:port" or "local event log"
    classes_seen: dict[str, list[int]]  # label -> [first, last, frames] of its main run, + frames elsewhere
    unknown_frames: list[int]  # frames the device's scorer flagged
    events: list[dict[str, Any]]
    events_sent: int
    events_delivered: int
    unknown_starts: list[int]  # frame of each unknown object's start event
    clips: list[dict[str, Any]]
    report: Path | None
    status: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class WeightsChoice:
    value: str  # what the trainer gets: a file path, or "none"
    source: str  # "--weights" | "keras cache" | "shared data" | "none"
    note: str


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights ($KERAS_HOME/models, default ~/.keras/models)."""
    home = os.environ.get("KERAS_HOME")
    return (Path(home) if home else Path.home() / ".keras") / "models"


def keras_cache_weights(alpha: float = ALPHA, models_dir: Path | None = None) -> Path | None:
    """A cached MobileNetV2 no-top ImageNet file for `alpha` (any input size; 224 preferred)."""
    d = models_dir or keras_models_dir()
    if not d.is_dir():
        return None
    found = sorted(d.glob(f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha:g}_*_no_top.h5"))
    found = [p for p in found if p.is_file() and p.stat().st_size > 0]
    preferred = [p for p in found if p.name.endswith("_224_no_top.h5")]
    return (preferred or found or [None])[0]


def shared_data_dirs() -> list[Path]:
    """$EDGETL_SHARED_DATA, else ../shared/data next to the project (and next to the current folder)."""
    env = os.environ.get("EDGETL_SHARED_DATA")
    if env:
        return [Path(env)]
    project = Path(__file__).resolve().parents[1]
    return [project.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]


def resolve_weights(weights: Path | None, alpha: float = ALPHA, models_dir: Path | None = None,
                    shared_dirs: list[Path] | None = None) -> WeightsChoice:
    """--weights PATH; else the Keras cache; else the shared data file; else from scratch (said clearly)."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise EdgetlError(f"--weights {path} not found; give a MobileNetV2 (alpha {alpha:g}) no-top .h5 file")
        return WeightsChoice(str(path.resolve()), "--weights", f"ImageNet weights from {path}")
    cached = keras_cache_weights(alpha, models_dir)
    if cached is not None:
        return WeightsChoice(str(cached), "keras cache", f"ImageNet weights from the Keras cache: {cached}")
    for d in shared_dirs if shared_dirs is not None else shared_data_dirs():
        p = d.joinpath(*SHARED_WEIGHTS)
        if p.is_file():
            return WeightsChoice(str(p.resolve()), "shared data", f"ImageNet weights from the shared data: {p}")
    return WeightsChoice("none", "none", "NOTE: no ImageNet weights found (Keras cache, shared data); training "
                         "the whole network FROM SCRATCH: in a demo's few minutes expect a much weaker model "
                         "(about 0.7 accuracy instead of 0.95+) and unreliable unknown detection. "
                         "Pass --weights PATH to a MobileNetV2 (alpha 0.35) no-top "
                         ".h5 file for the real thing.")


# ---------------------------------------------------------------------------- broker
@dataclass(frozen=True)
class Broker:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def reachable(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_broker(url: str | None, default: Broker | None = Broker("127.0.0.1", 1883),
                   probe_timeout: float = 0.3) -> Broker | None:
    """--broker URL (must answer); "none": the local event log; else the default local broker if it
    answers, else None (the local event log)."""
    if url and url.strip().lower() == "none":
        return None
    if url:
        from edgetl.fleet.topics import parse_broker_url

        parsed = parse_broker_url(url)
        if parsed.tls or parsed.username:
            raise EdgetlError(f"the demo talks plain MQTT without a login; give mqtt://host:port (got {url})")
        if not reachable(parsed.host, parsed.port, 3.0):
            raise EdgetlError(f"no MQTT broker answers at {parsed.host}:{parsed.port}; start one (e.g. mosquitto "
                              "-p PORT) or leave out --broker to keep events in the local event log")
        return Broker(parsed.host, parsed.port)
    if default is not None and reachable(default.host, default.port, probe_timeout):
        return default
    return None


class EventCollector:
    """Subscribes to the device's events topic and keeps every payload that arrives (QoS 1)."""

    def __init__(self, broker: Broker, topic: str, timeout: float = 10.0) -> None:
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.payloads: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgetl-demo-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, _u, _f, rc, _p: None if rc.is_failure else c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        try:
            self.client.connect(broker.host, broker.port, keepalive=30)
        except OSError as exc:
            raise EdgetlError(f"cannot connect to the MQTT broker {broker.url}: {exc}") from exc
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise EdgetlError(f"the MQTT broker {broker.url} did not confirm the subscription to {topic}")

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        try:
            payload = json.loads(message.payload)
        except ValueError:
            log.warning("ignoring a non-JSON message on %s", message.topic)
            return
        with self._lock:
            self.payloads.append(payload)

    def event_ids(self) -> set[str]:
        with self._lock:
            return {p.get("event_id") for p in self.payloads}

    def wait_for(self, ids: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ids <= self.event_ids():
                return True
            time.sleep(0.05)
        return ids <= self.event_ids()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class CountingReporter:
    """Passes everything to the real reporter and keeps a copy of each event it was given."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.events: list[dict[str, Any]] = []
        # The runtime publishes telemetry itself only when its reporter has no telemetry clock of its own.
        if hasattr(inner, "telemetry_source"):
            self.telemetry_source = inner.telemetry_source

    def publish(self, kind: str, payload: dict[str, Any]) -> None:
        self.inner.publish(kind, payload)
        if kind == "event":
            self.events.append(dict(payload))

    def subscribe(self, on_command: Callable[[str, bytes], None]) -> None:
        self.inner.subscribe(on_command)

    def stop(self) -> None:
        self.inner.stop()


# ---------------------------------------------------------------------------- steps
def prepare_out(out: Path) -> Path:
    """An empty output folder; a previous demo's folder (with our marker) is cleared, anything else refused."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise EdgetlError(f"--out {out} is a file; give a folder")
        if any(out.iterdir()):
            if not (out / MARKER).is_file():
                raise EdgetlError(f"--out {out} is not empty and was not made by `edgetl demo`; choose another folder")
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `edgetl demo`; safe to delete\n")
    return out


def empty_like(labels: list[str]) -> list[str]:
    return [c for c in labels if c.strip().lower() in EMPTY_NAMES]


def render_real_data_video(path: Path, run: Any, profile: Profile, seed: int) -> list[dict[str, Any]]:
    """For --data: the run's held-out images of each class (1 s each), then a scene the model never saw
    (the synthetic yard with a drone crossing), then known images again. Returns the ground truth."""
    import cv2

    from edgetl.data import load_image

    w, h = profile.frame_size
    hold = int(round(profile.fps))
    held = run.samples("test") or run.samples("val")
    by_class: dict[str, list[Any]] = {}
    for s in held:
        by_class.setdefault(s.label, []).append(s)
    order = [c for c in run.labels if c in by_class]
    rng = np.random.default_rng(seed)
    frames: list[np.ndarray] = []
    truth: list[dict[str, Any]] = []

    def show(label: str, known: bool, images: list[np.ndarray]) -> None:
        start = len(frames)
        frames.extend(images)
        truth.append({"kind": label, "known": known, "first_frame": start, "last_frame": len(frames) - 1})

    for c in order:
        s = by_class[c][int(rng.integers(len(by_class[c])))]
        img = cv2.cvtColor(cv2.resize(load_image(s.path, max(w, h)), (w, h), interpolation=cv2.INTER_AREA),
                           cv2.COLOR_RGB2BGR)
        show(c, True, [img] * hold)
    crossing = scenes.Pass("drone", start=0, frames=int(2.5 * profile.fps), base=0.47)
    synthetic = [scenes.render_scene((w, h), [p] if (p := scenes.pass_placement(crossing, i, w / h)) else [],
                                     scenes.Lighting(noise=2.5), rng) for i in range(crossing.frames)]
    show("unknown: synthetic yard with a drone", False, synthetic)
    if order:
        show(order[0], True, frames[:hold])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), profile.fps, (w, h))
    if not writer.isOpened():
        raise EdgetlError(f"OpenCV cannot write {path}")
    for f in frames:
        writer.write(f)
    writer.release()
    return truth


class DecisionLog:
    """Records the device's own per-frame decisions (label, unknown flag) by frame index.

    Wraps `Runtime.decider.update`, the one call every inferred frame goes through; the
    runtime still decides everything itself. Frame timestamps of a video file are
    t0 + index / fps, so the index is recovered from the timestamp once t0 is known
    (from the camera's last frame, else the first inferred frame).
    """

    def __init__(self, runtime: Any, fps: float) -> None:
        self.fps = fps
        self.t0: float | None = None
        self._raw: list[tuple[float, str, bool]] = []
        decider = getattr(runtime, "decider", None)
        self.available = decider is not None and hasattr(decider, "update")
        if self.available:
            original = decider.update

            def update(decision: Any, now: float) -> Any:
                self._raw.append((now, str(decision.label), bool(decision.unknown)))
                return original(decision, now)

            decider.update = update

    def anchor(self, runtime: Any) -> None:
        """Fix t0 from the camera's newest frame (timestamp and index) after the run."""
        camera = getattr(runtime, "camera", None)
        if camera is not None and getattr(camera, "fps", None):
            self.fps = float(camera.fps)  # the rate the camera stamped frames with
        last = camera.latest() if camera is not None and hasattr(camera, "latest") else None
        if last is not None and getattr(last, "index", None) is not None:
            self.t0 = float(last.timestamp) - int(last.index) / self.fps
        elif self._raw:
            self.t0 = self._raw[0][0]  # the first frame is always inferred (nothing to difference against)

    def frame(self, timestamp: float) -> int:
        return int(round((timestamp - (self.t0 if self.t0 is not None else timestamp)) * self.fps))

    @property
    def rows(self) -> list[tuple[int, str, bool]]:
        return [(self.frame(t), label, unknown) for t, label, unknown in self._raw]

    def classes_seen(self, ignore: list[str], max_gap: int = 3) -> dict[str, list[int]]:
        """label -> [first, last, frames] of its longest run of frames (gaps up to max_gap), plus the
        number of that label's frames outside the run (a car's last sliver taken for a dog)."""
        frames: dict[str, list[int]] = {}
        for frame, label, unknown in self.rows:
            if not unknown and label not in ignore:
                frames.setdefault(label, []).append(frame)
        seen: dict[str, list[int]] = {}
        for label, fs in frames.items():
            runs: list[list[int]] = []
            for f in sorted(fs):
                if runs and f - runs[-1][-1] <= max_gap:
                    runs[-1].append(f)
                else:
                    runs.append([f])
            best = max(runs, key=len)
            seen[label] = [best[0], best[-1], len(best), len(fs) - len(best)]
        return seen

    def unknown_frames(self) -> list[int]:
        return [f for f, _, unknown in self.rows if unknown]


def video_fps(path: Path, default: float) -> float:
    """The file's frame rate as the device's camera reads it (same OpenCV property)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    return float(fps) if fps and fps > 0 else default


def completed_clips(clips_dir: Path) -> list[dict[str, Any]]:
    """The device's finished clips (a clip is complete once its JSON sidecar exists)."""
    out = []
    for sidecar in sorted(clips_dir.glob("*.json")):
        try:
            doc = json.loads(sidecar.read_text())
        except ValueError:
            continue
        video = clips_dir / str(doc.get("video", ""))
        if video.is_file():
            doc["video_path"] = str(video)
            out.append(doc)
    return out


# ---------------------------------------------------------------------------- the demo
def run_demo(opts: DemoOptions, echo: Callable[[str], None] = print) -> DemoResult:
    """Run every step; raises EdgetlError (with what to do) when a step cannot run."""
    profile = QUICK if opts.quick else FULL
    if opts.data is not None:
        # Photos carry detail the synthetic drawings do not: use the backbone's native 224 px.
        profile = dataclasses.replace(profile, model_size=224)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    # Everything a user can get wrong is checked before minutes of work, and before --out is touched.
    if opts.data is not None and not Path(opts.data).expanduser().is_dir():
        raise EdgetlError(f"--data {opts.data} is not a folder; give a folder with one subfolder per class")
    if opts.video is not None and not Path(opts.video).expanduser().is_file():
        raise EdgetlError(f"--video {opts.video} not found; give a video file OpenCV can read")
    choice = resolve_weights(opts.weights)
    broker = resolve_broker(opts.broker)
    out = prepare_out(opts.out).resolve()

    def step(n: int, text: str) -> float:
        echo(f"[{n}/7] {text}")
        return time.perf_counter()

    # 1. data
    t = step(1, "dataset")
    if opts.data is not None:
        data_root = Path(opts.data).expanduser().resolve()
        data_desc = f"your data: {data_root}"
        echo(f"      using {data_root}")
    else:
        info = scenes.make_dataset(out / "dataset", n_per_class=profile.n_per_class, size=profile.image_size,
                                   seed=opts.seed)
        data_root = info.root
        data_desc = (f"SYNTHETIC camera scenes made by edgetl.scenes (procedural drawings, not photos): "
                     f"{', '.join(info.classes)}; {profile.n_per_class} images each at "
                     f"{profile.image_size[0]}x{profile.image_size[1]}; unknown kind in the video: drone")
        echo(f"      {data_desc}")
        echo(f"      written to {data_root}")
    timings["dataset_s"] = time.perf_counter() - t

    # 2. train
    t = step(2, "train (MobileNetV2 0.35, transfer learning)")
    echo(f"      {choice.note}")
    from edgetl.train import train

    result = train(data_root, out / "run", backbone="mobilenet_v2", alpha=ALPHA, size=profile.model_size,
                   weights=choice.value, epochs=profile.epochs, fine_tune_epochs=profile.fine_tune_epochs,
                   fine_tune_blocks=1, augment=False, batch_size=32, learning_rate=5e-3, patience=0,
                   val_split=0.3, seed=opts.seed)
    run = result.run
    echo(f"      val accuracy {result.val_accuracy:.3f} ({len(run.labels)} classes: {', '.join(run.labels)})")
    timings["train_s"] = time.perf_counter() - t

    # 3. export int8, unknown detector, signed bundle
    t = step(3, "export int8, fit the unknown-object detector, sign the bundle")
    from edgetl import bundle as host_bundle
    from edgetl.export import export_run

    n_val = len(run.samples("val")) or 1
    # A demo tolerates 3 points (the default export gate is 1) or one validation image (100/n points),
    # whichever is larger; the summary prints the real drop.
    max_drop = max(3.0, 150.0 / n_val)
    with open(out / "export.log", "w") as export_log, contextlib.redirect_stdout(export_log):
        # Keras prints the whole traced signature while exporting; keep it out of the story.
        exported = export_run(run.path, out / "bundle", quant="int8", max_drop=max_drop, num_threads=2)
    bundle_dir = exported.out_dir
    parity = exported.parity
    echo(f"      int8 accuracy {parity['tflite_accuracy']:.3f} vs float {parity['float_accuracy']:.3f} "
         f"({exported.summary.get('size_bytes', exported.model_path.stat().st_size) / 1e6:.2f} MB)")
    from edgetl.openset import fit_run

    # Fitted and calibrated on the int8 model's own outputs, so the threshold holds on the device.
    detector = fit_run(run.path, opts.scorer, opts.target_false_alarm, tflite=exported.model_path, bundle=bundle_dir)
    echo(f"      unknown detector: {detector['scorer']}, threshold {detector['threshold']:.4g} "
         f"({detector['target_false_alarm']:.0%} of held-out known images flagged)")
    private, public = host_bundle.generate_keys(out / "keys" / "demo")
    host_bundle.sign_bundle(bundle_dir, private)
    from edgetl_device.bundle import key_id, load_public_key

    kid = key_id(load_public_key(public))
    echo(f"      bundle {bundle_dir} signed with a new key {kid} ({private.name} stays on this machine)")
    timings["export_s"] = time.perf_counter() - t

    # 4. the test video
    t = step(4, "test video")
    video = out / "video" / "camera.avi"
    video.parent.mkdir(parents=True, exist_ok=True)
    if opts.video is not None:
        video = Path(opts.video).expanduser().resolve()
        truth: list[dict[str, Any]] = []
        echo(f"      your video {video} (no ground truth)")
    elif opts.data is None:
        script = scenes.default_script(profile.fps, quick=profile.quick)
        truth = scenes.appearances_to_json(scenes.render_video(video, script, profile.fps, profile.frame_size,
                                                               seed=opts.seed))
        echo(f"      {video}: " + ", then ".join(
            f"{a['kind']}{'' if a['known'] else ' (UNKNOWN)'} frames {a['first_frame']}-{a['last_frame']}"
            for a in truth))
    else:
        truth = render_real_data_video(video, run, profile, opts.seed)
        echo(f"      {video}: held-out images of each class, then an unknown scene "
             f"(frames {truth[-2]['first_frame']}-{truth[-2]['last_frame']})" if len(truth) > 1 else f"      {video}")
    if opts.video is None:
        (video.parent / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    timings["video_s"] = time.perf_counter() - t

    # 5. the device
    t = step(5, "device runtime on the video")
    device = run_device(out, bundle_dir, public, video, broker, empty_like(run.labels), profile.fps, echo)
    timings["device_s"] = time.perf_counter() - t

    # 6. report
    report_path = None
    t = step(6, "report")
    if opts.report:
        try:
            from edgetl.report import write_report

            report_path = write_report(run.path, misclassified=4 if profile.quick else 12,
                                       latency_runs=5 if profile.quick else 20)
        except ImportError:
            echo("      report module not available; skipped")
    else:
        echo("      skipped (--no-report)")
    timings["report_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_all

    step(7, "summary")
    res = DemoResult(
        out=out, synthetic=opts.data is None, data=data_desc, weights=choice.value, weights_note=choice.note,
        run_dir=run.path.resolve(), val_accuracy=result.val_accuracy, bundle_dir=bundle_dir, parity={
            k: parity.get(k) for k in ("float_accuracy", "tflite_accuracy", "drop_points", "n")},
        unknown_detector={k: detector.get(k) for k in ("scorer", "threshold", "target_false_alarm",
                                                       "val_false_alarm", "n_val")},
        key_id=kid, video=video, truth=truth, report=report_path, timings=timings, **device)
    (out / "summary.json").write_text(json.dumps(_jsonable(asdict(res)), indent=2) + "\n")
    return res


def run_device(out: Path, bundle_dir: Path, public_key: Path, video: Path, broker: Broker | None,
               ignore: list[str], fps: float, echo: Callable[[str], None]) -> dict[str, Any]:
    """Run the real device runtime on the video; read back what it did."""
    from edgetl_device.config import (
        CameraConfig,
        DecisionConfig,
        DeviceConfig,
        ModelConfig,
        MqttConfig,
        RecordingConfig,
        StorageConfig,
    )
    from edgetl_device.reporting import read_jsonl
    from edgetl_device.runtime import Runtime, make_reporter

    data_dir = out / "device"
    mqtt = None
    if broker is not None:
        mqtt = MqttConfig(host=broker.host, port=broker.port, outbox_path=data_dir / "outbox.sqlite3",
                          stop_flush_timeout=10.0)
    config = DeviceConfig(
        device_id=DEVICE_ID,
        camera=CameraConfig(source=str(video)),
        model=ModelConfig(bundle=bundle_dir, num_threads=2),
        # A security camera: record when something unknown appears; "Empty" never triggers. 5 of 6 frames
        # (half a second) must agree: the last sliver of a car leaving the view is odd for a few frames.
        decision=DecisionConfig(ignore_classes=ignore, record_unknown=True, k=5, n=6),
        recording=RecordingConfig(pre_roll=1.0, post_roll=1.0, cooldown=1.0),
        storage=StorageConfig(data_dir=data_dir, min_free_mb=16.0),
        mqtt=mqtt,
        trusted_keys=[public_key],
    )
    topic = f"{mqtt.prefix if mqtt else 'edgetl'}/{DEVICE_ID}/events"
    collector = EventCollector(broker, topic) if broker is not None else None
    transport = f"{broker.url} (topic {topic})" if broker else f"local event log {data_dir / 'events.jsonl'}"
    echo(f"      events go to {transport}")
    holder: dict[str, Any] = {}
    from edgetl_device.bundle import read_manifest

    model_version = read_manifest(Path(bundle_dir))[1].get("model_version")  # the first "online" status names it
    reporter = CountingReporter(make_reporter(config, lambda: holder["rt"].telemetry() if "rt" in holder else {},
                                              model_version))
    try:
        runtime = Runtime(config, reporter=reporter)
        holder["rt"] = runtime
        decisions = DecisionLog(runtime, video_fps(video, fps))
        status = runtime.run()
        decisions.anchor(runtime)
    finally:
        reporter.stop()  # flushes: MQTT delivers what it can within stop_flush_timeout
    sent = reporter.events
    sent_ids = {e["event_id"] for e in sent}
    if collector is not None:
        collector.wait_for(sent_ids, timeout=10.0)
        arrived = collector.event_ids()
        collector.stop()
    else:
        arrived = {e.get("event_id") for e in read_jsonl(data_dir / "events.jsonl", "event")}
    delivered = len(sent_ids & arrived)
    unknown_starts = [decisions.frame(e["start_time"]) for e in sent if e.get("type") == "start" and e.get("unknown")]
    clips = completed_clips(data_dir / "clips")
    return {
        "transport": broker.url if broker else "local event log",
        "classes_seen": decisions.classes_seen(ignore) if decisions.available else {},
        "unknown_frames": decisions.unknown_frames() if decisions.available else [],
        "events": sent, "events_sent": len(sent), "events_delivered": delivered,
        "unknown_starts": unknown_starts, "clips": clips, "status": status,
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, np.generic):
        return x.item()
    return x


def summary_lines(r: DemoResult) -> list[str]:
    """The story, in lines a person reads and a test greps."""
    lines = ["", "edgetl demo: what happened", f"  data: {r.data}", f"  weights: {r.weights_note}",
             f"  model: val accuracy {r.val_accuracy:.3f}; int8 {r.parity.get('tflite_accuracy', float('nan')):.3f} "
             f"vs float {r.parity.get('float_accuracy', float('nan')):.3f} on {r.parity.get('n')} held-out images",
             f"  unknown detector: {r.unknown_detector.get('scorer')} (threshold "
             f"{r.unknown_detector.get('threshold', float('nan')):.4g})",
             f"  bundle: {r.bundle_dir} (signed, key {r.key_id})",
             f"  video: {r.video}"]
    for a in r.truth:
        lines.append(f"    truth: {a['kind']}{'' if a['known'] else ' (never trained on)'} in view frames "
                     f"{a['first_frame']}-{a['last_frame']}")
    seen = ", ".join(f"{k} (frames {v[0]}-{v[1]}{f', +{v[3]} frames elsewhere' if v[3] else ''})"
                     for k, v in sorted(r.classes_seen.items(), key=lambda kv: kv[1][0]))
    lines.append(f"  classes seen: {seen or 'none'}")
    if r.unknown_starts:
        for f in r.unknown_starts:
            lines.append(f"  unknown triggered at frame {f}")
    else:
        lines.append("  unknown triggered: never")
    lines.append(f"  clips: {len(r.clips)}")
    for c in r.clips:
        labels = ", ".join(sorted(c.get("classes", {}))) or "?"
        lines.append(f"    clip: {c['video_path']} ({c.get('frames')} frames, {labels})")
    lines.append(f"  events sent: {r.events_sent}, delivered: {r.events_delivered} (to {r.transport})")
    kinds = Counter(f"{e.get('type')}:{'unknown' if e.get('unknown') else e.get('label')}" for e in r.events)
    if kinds:
        lines.append("    " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())))
    lines.append(f"  report: {r.report if r.report else 'not written'}")
    lines.append(f"  everything is in {r.out} (summary.json); took {r.timings.get('total_s', 0):.0f} s")
    return lines
