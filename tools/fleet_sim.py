"""Simulate a fleet: N devices on the real `edgetl_device` MQTT reporter, for load tests and demos.

    python tools/fleet_sim.py --broker mqtt://127.0.0.1:1883 --devices 200 --telemetry-interval 5 \
        --rate 10 --duration 300 --summary sim.json

Each device has its own outbox, retained status + Last Will, telemetry and command handling
(`edgetl.fleet.sim.SimDevice`); events are spread at random over the devices at `--rate`
events per second in total. `--summary` writes what was sent (per device) for comparison
with what the fleet side received.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgetl.fleet.sim import SimDevice  # noqa: E402
from edgetl.fleet.topics import parse_broker_url  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--prefix", default="edgetl")
    ap.add_argument("--telemetry-interval", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=1.0, help="events per second, whole fleet")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of events")
    ap.add_argument("--workdir", type=Path, default=None, help="outboxes (default: a temporary folder)")
    ap.add_argument("--trusted-key", type=Path, action="append", default=[], help="for update_model")
    ap.add_argument("--summary", type=Path, default=None, help="write what was sent here (JSON)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-process", type=int, default=50,
                    help="devices per process (paho uses select(), limited to 1024 file descriptors)")
    ap.add_argument("--first-id", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.devices > args.per_process:
        return fan_out(args)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = parse_broker_url(args.broker)
    random.seed(args.seed)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edgetl-fleet-sim-"))
    devices = [SimDevice(f"sim{args.first_id + i:04d}", url.host, url.port, workdir, prefix=args.prefix,
                         trusted_keys=args.trusted_key, telemetry_interval=args.telemetry_interval)
               for i in range(args.devices)]
    connected = sum(d.wait_connected(30) for d in devices)
    print(f"{connected}/{len(devices)} devices connected to {args.broker}", file=sys.stderr, flush=True)
    start = time.monotonic()
    sent = 0
    try:
        while (elapsed := time.monotonic() - start) < args.duration:
            due = int(elapsed * args.rate)
            while sent < due:
                random.choice(devices).emit_event(unknown=random.random() < 0.1)
                sent += 1
            time.sleep(0.01)
    except KeyboardInterrupt:
        pass
    drained = all(d.reporter.wait_drained(30) for d in devices)
    summary = {"devices": len(devices), "connected": connected, "events_sent": sent, "drained": drained,
               "seconds": time.monotonic() - start,
               "per_device": {d.device_id: d.events_sent for d in devices}}
    with ThreadPoolExecutor(32) as pool:  # each stop() waits for its threads; do them side by side
        list(pool.map(SimDevice.stop, devices))
    if args.summary:
        args.summary.write_text(json.dumps(summary))
    print(f"sent {sent} events from {len(devices)} devices in {summary['seconds']:.0f}s; "
          f"all acknowledged by the broker: {drained}", file=sys.stderr)
    return 0


def fan_out(args: argparse.Namespace) -> int:
    """Run the fleet as several processes of at most --per-process devices, then merge their summaries."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edgetl-fleet-sim-"))
    workdir.mkdir(parents=True, exist_ok=True)
    procs = []
    for n, first in enumerate(range(0, args.devices, args.per_process)):
        count = min(args.per_process, args.devices - first)
        part = workdir / f"summary-{n}.json"
        cmd = [sys.executable, __file__, "--broker", args.broker, "--devices", str(count), "--prefix", args.prefix,
               "--telemetry-interval", str(args.telemetry_interval), "--rate", str(args.rate * count / args.devices),
               "--duration", str(args.duration), "--workdir", str(workdir), "--summary", str(part),
               "--seed", str(args.seed + n), "--first-id", str(first), "--per-process", str(args.per_process)]
        for key in args.trusted_key:
            cmd += ["--trusted-key", str(key)]
        procs.append((subprocess.Popen(cmd), part))
    codes = [p.wait() for p, _ in procs]
    parts = [json.loads(part.read_text()) for _, part in procs if part.exists()]
    summary = {"devices": sum(p["devices"] for p in parts), "connected": sum(p["connected"] for p in parts),
               "events_sent": sum(p["events_sent"] for p in parts), "drained": all(p["drained"] for p in parts),
               "seconds": max((p["seconds"] for p in parts), default=0.0), "processes": len(procs),
               "per_device": {k: v for p in parts for k, v in p["per_device"].items()}}
    if args.summary:
        args.summary.write_text(json.dumps(summary))
    print(f"{len(procs)} processes: sent {summary['events_sent']} events from {summary['connected']}/"
          f"{args.devices} connected devices", file=sys.stderr)
    return max(codes) if len(parts) == len(procs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
