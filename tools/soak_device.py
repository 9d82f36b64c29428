"""Soak test of a real `edgetl-device run`: does a device that runs for weeks leak?

    python tools/soak_device.py [--minutes 10] [--interval 15] [--broker-restart] [--keep]

Starts its own Mosquitto (persistence on) on a free port and a subscriber with a persistent QoS 1 session,
then runs `edgetl-device run` as a subprocess on vtest.avi, looped and paced (10 fps, an 80 s loop) with the
Coral MobileNetV2-1.0 model, MQTT reporting through the SQLite outbox, recording on and small retention
limits. The decision records the ImageNet class "warplane, military plane", which vtest's hall triggers in
bursts several times per loop (k=2 of n=4, short post-roll and max_clip): clips and start/end events come
regularly, and retention (max_total_mb 3, checked every 5 s) deletes clips throughout the run.

Every --interval seconds it samples the device process: RSS (VmRSS), open file descriptors (/proc/PID/fd),
threads, the outbox's size on disk (main file + WAL + shm), the clips on disk (completed groups: video,
snapshot, sidecar) and their size, and the events the subscriber received so far. With --broker-restart
the broker is stopped (SIGTERM, it saves its state) at half time and started again 5 s later.

At the end the device gets SIGTERM (it flushes the outbox), and the tool prints the table and a summary:
growth per hour of RSS, fds and threads from a least-squares line over the second half of the samples (the
first half includes start-up, model load and the first clips), events published (the outbox's last seq,
read after the device exited) vs received (unique event ids and seqs at the subscriber), clips saved and
deleted by retention (from the device log).

"LEAK?" rule, printed next to a metric: over the second half, the fitted rise (slope x that half's length)
exceeds both a floor (RSS 2 MB, fds 2, threads 1: a clip writer open at a sample adds a thread and a few
fds) and 2x the standard deviation of the samples around the line (a steady climb, not a sawtooth); and
the last quarter's mean is above the third quarter's. A flag is a lead to investigate, not a verdict:
10 minutes cannot tell a slow leak from a cache still warming up; run longer (--minutes 60) to confirm.

Exit status: 1 when the device crashed (died before the end, or a non-zero exit after SIGTERM) or events
were lost (published seqs the subscriber never received); 0 otherwise. Leaks are reported, not failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "device"))

from edgetl_device.storage import list_clips  # noqa: E402
from tests.support.device_config import device_cli  # noqa: E402
from tests.support.mosquitto import MosquittoBroker, mosquitto_binary  # noqa: E402
from tests.support.mqtt_collector import Collector  # noqa: E402
from tests.support.shared import shared_data_dir  # noqa: E402

DEVICE_ID = "soak"
TRIGGER_CLASS = "warplane, military plane"  # vtest's hall reads as this ImageNet class in bursts
MB = 1024 * 1024
LEAK_FLOORS = {"rss_mb": 2.0, "fds": 2.0, "threads": 1.0}


@dataclass
class Sample:
    t: float  # seconds since the device started
    rss_mb: float
    fds: int
    threads: int
    clips: int
    clip_mb: float
    outbox_kb: float
    received: int


def device_config(shared: Path, work: Path, port: int) -> dict:
    return {
        "device_id": DEVICE_ID,
        "camera": {"source": str(shared / "videos/vtest.avi"), "loop": True, "paced": True},
        "model": {"path": str(shared / "models/mobilenet_v2_1.0_224_quant.tflite"),
                  "labels": str(shared / "models/imagenet_labels.txt"), "num_threads": 1},
        "decision": {"record_unknown": False, "unknown_threshold": 1.0, "record_classes": [TRIGGER_CLASS],
                     "k": 2, "n": 4, "k_end": 1},
        "recording": {"pre_roll": 2.0, "post_roll": 1.0, "max_clip": 10.0, "cooldown": 1.0, "buffer_mb": 16.0},
        "storage": {"data_dir": str(work / "data"), "max_total_mb": 3.0, "min_free_mb": 1, "check_interval": 5.0},
        "runtime": {"status_interval": 10.0},
        "mqtt": {"host": "127.0.0.1", "port": port, "telemetry_interval": 10.0, "outbox_sync": "normal"},
    }


def proc_stats(pid: int) -> tuple[float, int, int] | None:
    """(RSS MB, open fds, threads) of a live process, or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    rss_kb = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))
    return rss_kb / 1024, fds, threads


def outbox_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


def received_events(sub: Collector) -> dict[str, dict]:
    return {e["event_id"]: e for e in sub.of("events") if e.get("device_id") == DEVICE_ID and "event_id" in e}


def fit_per_hour(ts: list[float], ys: list[float]) -> tuple[float, float, float]:
    """(slope per hour, fitted rise over the span, residual std) of a least-squares line."""
    t, y = np.asarray(ts, float), np.asarray(ys, float)
    if len(t) < 3 or np.ptp(t) == 0:
        return 0.0, 0.0, 0.0
    slope, icept = np.polyfit(t, y, 1)
    resid = y - (slope * t + icept)
    return float(slope * 3600), float(slope * np.ptp(t)), float(np.std(resid))


def leak_flag(ts: list[float], ys: list[float], floor: float) -> bool:
    """The documented rule: a steady climb over the second half, beyond a floor and beyond the noise."""
    if len(ys) < 4:
        return False
    _, rise, noise = fit_per_hour(ts, ys)
    q = len(ys) // 2
    return rise > floor and rise > 2 * noise and float(np.mean(ys[q:])) > float(np.mean(ys[:q]))


def read_outbox(path: Path) -> tuple[int, int, int]:
    """(last seq, pending, dropped) of the outbox, read after the device exited."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        pending = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        db.close()
    return int(meta.get("last_seq", 0)), int(pending), int(meta.get("dropped", 0))


def stop_device(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            return -9
    return proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the device runs")
    ap.add_argument("--interval", type=float, default=15.0, help="seconds between samples")
    ap.add_argument("--broker-restart", action="store_true", help="stop and restart the broker at half time")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (device log, clips, outbox)")
    args = ap.parse_args()
    if mosquitto_binary() is None:
        print("mosquitto is not installed (apt-get install -y mosquitto)", file=sys.stderr)
        return 2
    shared = shared_data_dir()
    work = Path(tempfile.mkdtemp(prefix="edgetl-soak-"))
    broker = MosquittoBroker(workdir=work / "broker", persistence=True, extra_config="autosave_interval 1")
    sub: Collector | None = None
    proc: subprocess.Popen | None = None
    log_file = None
    samples: list[Sample] = []
    notes: list[str] = []
    crashed = False
    try:
        broker.start()
        # A persistent session: events queued for the subscriber survive the broker restart.
        sub = Collector(broker.port, f"edgetl/{DEVICE_ID}/#", qos=1, client_id="soak-consumer",
                        clean_session=False).start()
        cfg_path = work / "device.yaml"
        cfg_path.write_text(yaml.safe_dump(device_config(shared, work, broker.port), sort_keys=False))
        data_dir = work / "data"
        clips_dir, outbox = data_dir / "clips", data_dir / "outbox.sqlite3"
        log_path = work / "device.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - the child's stderr for the whole run
        proc = subprocess.Popen([*device_cli(), "run", "--config", str(cfg_path)], stdout=log_file,
                                stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                    [str(ROOT / "device"), os.environ.get("PYTHONPATH", "")])})
        t0 = time.monotonic()
        duration = args.minutes * 60
        restart_at = duration / 2 if args.broker_restart else None
        next_sample = min(args.interval, 5.0)  # the first sample once the process is up (not mid-exec)
        print(f"soak: device pid {proc.pid}, broker port {broker.port}, {args.minutes:g} min, work {work}",
              flush=True)
        while True:
            now = time.monotonic() - t0
            if proc.poll() is not None:
                crashed = True
                notes.append(f"device exited with {proc.returncode} after {now:.0f} s")
                break
            if restart_at is not None and now >= restart_at:
                broker.stop()
                notes.append(f"{now:5.0f} s broker stopped")
                time.sleep(5.0)
                broker.start()
                notes.append(f"{time.monotonic() - t0:5.0f} s broker started again")
                restart_at = None
                continue
            if now >= next_sample:
                stats = proc_stats(proc.pid)
                if stats is not None:
                    clips = list_clips(clips_dir)
                    s = Sample(now, *stats, len(clips), sum(c.size for c in clips) / MB,
                               outbox_bytes(outbox) / 1024, len(received_events(sub)))
                    samples.append(s)
                    print(f"  {s.t:6.0f} s  rss {s.rss_mb:6.1f} MB  fds {s.fds:3d}  threads {s.threads:3d}  "
                          f"clips {s.clips:3d} ({s.clip_mb:4.1f} MB)  outbox {s.outbox_kb:6.1f} KB  "
                          f"events {s.received}", flush=True)
                next_sample += args.interval
            if now >= duration:
                break
            time.sleep(min(0.5, max(0.05, next_sample - now)))
        if not crashed:
            rc = stop_device(proc)
            if rc != 0:
                crashed = True
                notes.append(f"device exited with {rc} after SIGTERM")
        last_seq, pending, dropped = read_outbox(outbox) if outbox.exists() else (0, 0, 0)
        sub.wait_for(lambda s: len({e.get("seq") for e in received_events(s).values()}) >= last_seq, 15)
        got = received_events(sub)
        seqs = {e.get("seq") for e in got.values()}
        lost = sum(1 for q in range(1, last_seq + 1) if q not in seqs)
        duplicates = len([e for e in sub.of("events") if e.get("device_id") == DEVICE_ID]) - len(got)
        log_text = log_path.read_text(errors="replace")
        saved = len(re.findall(r"clip \S+ saved", log_text))
        deleted = len(re.findall(r"retention: deleted clip", log_text))
        reconnects = log_text.count("MQTT connected to") - 1
        errors = [ln for ln in log_text.splitlines() if " ERROR " in ln or "Traceback" in ln]
    finally:
        if proc is not None and proc.poll() is None:
            stop_device(proc)
        if log_file is not None:
            log_file.close()
        if sub is not None:
            sub.stop()
        broker.stop()

    head = ("time", "RSS MB", "fds", "threads", "clips", "clip MB", "outbox KB", "events received")
    rows = [(f"{int(s.t) // 60:d}:{int(s.t) % 60:02d}", f"{s.rss_mb:.1f}", str(s.fds), str(s.threads), str(s.clips),
             f"{s.clip_mb:.2f}", f"{s.outbox_kb:.1f}", str(s.received)) for s in samples]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print()
    print(f"edgetl-device soak: vtest.avi looped and paced, Coral MobileNetV2-1.0 (1 thread), records "
          f"{TRIGGER_CLASS!r}, retention 3 MB; {args.minutes:g} min, sample every {args.interval:g} s, "
          f"cpus={os.cpu_count()}")
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    half = [s for s in samples if s.t >= samples[-1].t / 2] if samples else []
    parts = []
    for key, unit in (("rss_mb", "MB"), ("fds", ""), ("threads", "")):
        ts, ys = [s.t for s in half], [float(getattr(s, key)) for s in half]
        per_hour, _, _ = fit_per_hour(ts, ys)
        flag = " LEAK?" if leak_flag(ts, ys, LEAK_FLOORS[key]) else ""
        parts.append(f"{key.split('_')[0].upper() if key == 'rss_mb' else key} {per_hour:+.1f}{unit}/h{flag}")
    for n in notes:
        print(f"note: {n}")
    print(f"device log: {saved} clips saved, {deleted} deleted by retention, {reconnects} MQTT reconnect(s), "
          f"{len(errors)} error line(s)" + (f"; first: {errors[0][:160]}" if errors else ""))
    print(f"summary: growth over the second half: {', '.join(parts)}; events published {last_seq}, received "
          f"{len(got)} unique ({duplicates} duplicates), lost {lost}, left in outbox {pending}, dropped {dropped}"
          + ("; DEVICE CRASHED" if crashed else ""))
    if args.keep or crashed or lost:
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if crashed or lost else 0


if __name__ == "__main__":
    sys.exit(main())
