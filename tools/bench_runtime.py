"""Benchmark the device runtime against the issue's targets and print a table.

    python tools/bench_runtime.py [--threads 1] [--frames 400] [--skip-build]

Models: the Coral `mobilenet_v2_1.0_224_quant.tflite` (shared data) and a MobileNetV2-0.35 int8 model
(uint8 io) built here once with TensorFlow from the shared ImageNet weights plus an untrained 5-class
head (speed and memory do not depend on the head's weights), cached under ~/.cache/edgetl/bench.

Rows:
- pipeline throughput: Runtime on vtest.avi (unpaced file, motion gate off, nothing recording) vs bare
  `invoke()` of the same model and threads, with model.resize area (as in training) and fast; target >= 0.90x.
  The runtime uses three threads (decode, preprocess, invoke); on a busy shared host the scheduler's
  per-thread fairness can even favour it over the one-thread bare loop, so the CPU rows (bare CPU per
  invoke / pipeline CPU per frame) are printed too: that ratio is the throughput bound on a single core.
  The "beside decoding" row times bare `invoke()` while a camera thread decodes vtest on the other core:
  where decoding slows the model down (shared caches, memory, a busy host) that, not the runtime, is the
  ceiling of the pipeline row.
- static scene: process CPU seconds per frame (decode + gate + inference) with the gate vs without;
  target <= 0.10x. The decode-only row is the floor: the camera thread's own cost.
- peak RSS of a real `edgetl-device run` subprocess with the 0.35 model, recording clips; target <= 150 MB.
- trigger latency: frames from an object's entry to its start event, for k-of-n windows; target <= n+1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "device"))

from edgetl_device.config import DeviceConfig  # noqa: E402
from edgetl_device.inference import Model  # noqa: E402
from edgetl_device.interpreter import cpu_int8_dot, cpu_model, describe_int8_dot  # noqa: E402
from edgetl_device.runtime import Runtime  # noqa: E402
from tests.support.shared import shared_data_dir  # noqa: E402

CACHE = Path(os.environ.get("EDGETL_BENCH_CACHE", Path.home() / ".cache" / "edgetl" / "bench"))
log = logging.getLogger("bench_runtime")


# ------------------------------------------------------------------ models
def build_mnv2_035(shared: Path, out: Path) -> Path:
    """MobileNetV2(alpha=0.35) + 5-class head, full int8 with uint8 io (edgetl's own export path)."""
    if out.is_file():
        return out
    from edgetl.backbones import build_classifier
    from edgetl.export import convert, export_graph

    print("building the MobileNetV2-0.35 int8 model once (TensorFlow)...", file=sys.stderr)
    model, _ = build_classifier("mobilenet_v2", 0.35, 224, str(shared / "weights/mobilenet_v2_0.35_224_no_top.h5"), 5)
    files = sorted((shared / "datasets/flowers5").rglob("*.jpg"))[::40][:100]
    calib = np.stack([cv2.cvtColor(cv2.resize(cv2.imread(str(f)), (224, 224), interpolation=cv2.INTER_AREA),
                                   cv2.COLOR_BGR2RGB) for f in files])
    data = convert(export_graph(model, 224), "int8", "uint8", calib)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    (out.with_suffix(".labels.txt")).write_text("\n".join(f"class{i}" for i in range(5)) + "\n")
    return out


def labels_for(model: Path, shared: Path) -> Path:
    own = model.with_suffix(".labels.txt")
    return own if own.is_file() else shared / "models/imagenet_labels.txt"


# ------------------------------------------------------------------ measurements
def bare_invoke_fps(model_path: Path, threads: int, frame: np.ndarray, seconds: float = 3.0,
                    decode: Path | None = None) -> tuple[float, float]:
    """(invokes per wall second, CPU seconds per invoke). With `decode`, a camera thread decodes that video
    (looped) and a consumer thread takes its frames meanwhile: invoke's speed on a machine whose other core
    is busy with the camera, which is the most any pipeline can reach there."""
    from edgetl_device.camera import Camera
    from edgetl_device.config import CameraConfig

    m = Model(model_path, None, num_threads=threads)
    it, idx = m.interpreter, m._input["index"]
    it.set_tensor(idx, m.preprocess(frame))
    for _ in range(5):
        it.invoke()
    cam, stop = None, threading.Event()
    if decode is not None:
        cam = Camera(CameraConfig(source=str(decode), loop=True)).start()

        def take_frames() -> None:
            while not stop.is_set():
                cam.read(timeout=1.0)

        threading.Thread(target=take_frames, daemon=True).start()
        time.sleep(0.3)
    try:
        n, t0, c0 = 0, time.perf_counter(), time.thread_time()
        while time.perf_counter() - t0 < seconds:
            it.invoke()
            n += 1
        return n / (time.perf_counter() - t0), (time.thread_time() - c0) / n
    finally:
        stop.set()
        if cam is not None:
            cam.stop()


def config(shared: Path, model_path: Path, video: Path, data_dir: Path, threads: int, **over) -> DeviceConfig:
    data = {"device_id": "bench", "camera": {"source": str(video)},
            "model": {"path": str(model_path), "labels": str(labels_for(model_path, shared)), "num_threads": threads},
            "storage": {"data_dir": str(data_dir), "min_free_mb": 1},
            "runtime": {"status_interval": 3600}}
    for k, v in over.items():
        data[k] = {**data.get(k, {}), **v}
    return DeviceConfig.model_validate(data)


def pipeline_fps(shared: Path, model: Path, threads: int, frames: int, tmp: Path, resize: str
                 ) -> tuple[float, float]:
    """(frames per wall second, CPU seconds per frame) of the whole runtime."""
    cfg = config(shared, model, shared / "videos/vtest.avi", tmp / "pipe", threads, motion={"enabled": False},
                 decision={"record_unknown": False}, model={"resize": resize})
    rt = Runtime(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    status = rt.run(max_frames=frames)
    return status["frames_in"] / (time.perf_counter() - t0), (time.process_time() - c0) / status["frames_in"]


def static_video(shared: Path, path: Path, n: int = 300) -> Path:
    bg = cv2.imread(str(shared / "datasets/find-the-ship/set-A_train/20171105_185402_Empty.jpg"))
    bg = cv2.resize(bg, (640, 480), interpolation=cv2.INTER_LINEAR)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, (640, 480))
    for _ in range(n):
        w.write(bg)
    w.release()
    return path


def decode_cpu_per_frame(video: Path) -> float:
    """CPU per frame of the camera thread alone (decode + hand-over): the floor of any gated pipeline."""
    from edgetl_device.camera import Camera
    from edgetl_device.config import CameraConfig

    c0, n = time.process_time(), 0
    with Camera(CameraConfig(source=str(video))) as cam:
        while cam.read(timeout=5) is not None:
            n += 1
    return (time.process_time() - c0) / n


def cpu_per_frame(shared: Path, model: Path, threads: int, video: Path, tmp: Path, gate: bool) -> float:
    cfg = config(shared, model, video, tmp / f"static{gate}", threads, motion={"enabled": gate},
                 decision={"record_unknown": False})
    rt = Runtime(cfg)
    c0 = time.process_time()
    status = rt.run()
    return (time.process_time() - c0) / status["frames_in"]


def peak_rss_mb(shared: Path, model: Path, threads: int, tmp: Path) -> tuple[float, int]:
    """Peak RSS of a real `edgetl-device run` (vtest, clips recorded on unknowns with the untrained head)."""
    cfg = {"device_id": "bench-rss", "camera": {"source": str(shared / "videos/vtest.avi")},
           "model": {"path": str(model), "labels": str(labels_for(model, shared)), "num_threads": threads},
           "decision": {"record_unknown": True, "unknown_threshold": 0.3},
           "recording": {"pre_roll": 3.0, "post_roll": 2.0, "max_clip": 20.0},
           "storage": {"data_dir": str(tmp / "rss"), "min_free_mb": 1}}
    path = tmp / "rss.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "edgetl_device.cli", "run", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "device")})
    # VmHWM (peak RSS since exec) polled until exit. Not ru_maxrss: that also counts the pages the child
    # shared with this (big) benchmark process between fork and exec.
    peak_kb = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak_kb = max(peak_kb, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError):
            pass
        time.sleep(0.02)
    clips = len(list((tmp / "rss/clips").glob("*.mp4")))
    return peak_kb / 1024, clips


class _Recorder:
    """A Reporter that remembers at which frame each start event was published."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.starts: list[int] = []

    def publish(self, kind: str, payload: dict) -> None:
        if kind == "event" and payload["type"] == "start" and self.runtime is not None:
            self.starts.append(self.runtime.frames_in - 1)  # 0-based index of the triggering frame

    def subscribe(self, on_command) -> None:
        pass

    def stop(self) -> None:
        pass


def trigger_latency(shared: Path, tmp: Path, k: int, n: int, entry: int = 30) -> int | None:
    bg = cv2.imread(str(shared / "datasets/find-the-ship/set-A_train/20171105_185402_Empty.jpg"))
    parrot = cv2.resize(cv2.imread(str(shared / "images/parrot.jpg")), (200, 200), interpolation=cv2.INTER_AREA)
    fg = bg.copy()
    fg[20:220, 60:260] = parrot
    video = tmp / f"entry_{k}_{n}.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(entry + 40):
        w.write(fg if i >= entry else bg)
    w.release()
    cfg = config(shared, shared / "models/mobilenet_v2_1.0_224_quant.tflite", video, tmp / f"lat{k}{n}", 1,
                 decision={"k": k, "n": n, "record_unknown": False, "record_classes": ["macaw"]})
    rep = _Recorder()
    rt = Runtime(cfg, reporter=rep)
    rep.runtime = rt
    rt.run()
    return rep.starts[0] - entry + 1 if rep.starts else None  # frames of presence until the trigger


# ------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=400, help="frames of vtest.avi for the throughput rows")
    ap.add_argument("--rounds", type=int, default=3, help="best of this many interleaved throughput runs")
    ap.add_argument("--static-frames", type=int, default=900, help="length of the static-scene video (15 fps)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    shared = shared_data_dir()
    coral = shared / "models/mobilenet_v2_1.0_224_quant.tflite"
    small = build_mnv2_035(shared, CACHE / "mobilenet_v2_0.35_224_int8_uint8io.tflite")
    frame = cv2.imread(str(shared / "images/grace_hopper.bmp"))
    vtest = shared / "videos/vtest.avi"
    rows: list[tuple[str, str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        video = static_video(shared, tmp / "static.mp4", args.static_frames)
        for name, model in (("coral mnv2-1.0 uint8", coral), ("mnv2-0.35 int8", small)):
            # best of `rounds`, interleaved: on a shared host the load changes under a single measurement
            bare, bare_cpu, pipes = 0.0, float("inf"), {"area": (0.0, float("inf")), "fast": (0.0, float("inf"))}
            beside_decode = 0.0
            for _ in range(args.rounds):
                fps, cpu = bare_invoke_fps(model, args.threads, frame, seconds=2.0)
                bare, bare_cpu = max(bare, fps), min(bare_cpu, cpu)
                fps, _ = bare_invoke_fps(model, args.threads, frame, seconds=2.0, decode=vtest)
                beside_decode = max(beside_decode, fps)
                for resize, (best_fps, best_cpu) in pipes.items():
                    fps, cpu = pipeline_fps(shared, model, args.threads, args.frames, tmp, resize)
                    pipes[resize] = (max(best_fps, fps), min(best_cpu, cpu))
            for resize, (pipe, pipe_cpu) in pipes.items():
                rows.append((f"throughput pipeline/bare ({resize})", name, f"{pipe:.1f} / {bare:.1f} fps",
                             f"{pipe / bare:.2f}x", "ok" if pipe / bare >= 0.90 else "MISS (>= 0.90x)"))
                rows.append((f"  CPU/frame bare/pipeline ({resize})", name,
                             f"{bare_cpu * 1e3:.2f} / {pipe_cpu * 1e3:.2f} ms", f"{bare_cpu / pipe_cpu:.2f}x",
                             "1-core bound"))
            rows.append(("  bare invoke beside decoding/bare", name, f"{beside_decode:.1f} / {bare:.1f} fps",
                         f"{beside_decode / bare:.2f}x", "ceiling: the camera shares the machine"))
            gated = cpu_per_frame(shared, model, args.threads, video, tmp, True)
            ungated = cpu_per_frame(shared, model, args.threads, video, tmp, False)
            rows.append(("static CPU/frame gated/ungated", name, f"{gated * 1e3:.2f} / {ungated * 1e3:.2f} ms",
                         f"{gated / ungated:.3f}x", "ok" if gated / ungated <= 0.10 else "MISS (<= 0.10x)"))
        rows.append(("static CPU/frame, decode only", "-", f"{decode_cpu_per_frame(video) * 1e3:.2f} ms", "",
                     "floor of the gated row"))
        rows.append(("vtest.avi CPU/frame, decode only", "-",
                     f"{decode_cpu_per_frame(shared / 'videos/vtest.avi') * 1e3:.2f} ms", "",
                     "camera thread's share of the pipeline"))
        rss, clips = peak_rss_mb(shared, small, args.threads, tmp)
        rows.append(("peak RSS, edgetl-device run", "mnv2-0.35 int8", f"{rss:.1f} MB ({clips} clips)", "",
                     "ok" if rss <= 150 else "MISS (<= 150 MB)"))
        for k, n in ((1, 1), (3, 5), (5, 8)):
            lat = trigger_latency(shared, tmp, k, n)
            rows.append((f"trigger latency k={k} n={n}", "coral mnv2-1.0 uint8",
                         "no trigger" if lat is None else f"{lat} frames", f"bound {n + 1}",
                         "ok" if lat is not None and lat <= n + 1 else "MISS"))
    head = ("measure", "model", "value", "ratio", "target")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    print(f"CPU: {cpu_model()}; 8-bit dot-product extensions: {describe_int8_dot(cpu_int8_dot())}")
    print(f"threads={args.threads}, cpus={os.cpu_count()}, load (1 min) at the end={os.getloadavg()[0]:.2f}, "
          f"throughput best of {args.rounds}, static scene {args.static_frames} frames of 640x480 at 15 fps")
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    if args.json:
        args.json.write_text(json.dumps([dict(zip(head, r, strict=True)) for r in rows], indent=2))


if __name__ == "__main__":
    main()
