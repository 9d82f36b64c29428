"""A device-side event publisher process, for fault tests and tools/bench_mqtt.py.

Publishes events through `MqttReporter` until the outbox has assigned `--count` seqs,
so a process SIGKILLed mid-burst and started again with the same outbox continues where
the last one stopped (the outbox's last seq counts what was already stored). Each event
carries `trigger_time` (wall clock at publish) for latency. Prints `stored <seq>` lines
every `--report-every` events and `done` after the outbox drained (or the timeout).

    python tools/event_publisher.py --port 1883 --device-id cam1 --outbox /tmp/o.db --count 1000
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "device"))

from edgetl_device.config import MqttConfig  # noqa: E402
from edgetl_device.events import new_event  # noqa: E402
from edgetl_device.mqtt import MqttReporter  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--device-id", required=True)
    p.add_argument("--outbox", required=True, type=Path)
    p.add_argument("--count", type=int, required=True, help="total events over all runs with this outbox")
    p.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    p.add_argument("--report-every", type=int, default=50)
    p.add_argument("--drain-timeout", type=float, default=60.0)
    p.add_argument("--keepalive", type=int, default=5)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s publisher %(levelname)s %(message)s")

    config = MqttConfig(host=args.host, port=args.port, outbox_path=args.outbox, keepalive=args.keepalive,
                        telemetry_interval=3600, stop_flush_timeout=0)
    reporter = MqttReporter(config, args.device_id)
    seq = reporter.outbox.last_seq
    print(f"started {seq}", flush=True)
    t0 = time.monotonic()
    n = 0
    while seq < args.count:
        if args.rate > 0:
            delay = t0 + n / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        event = new_event(args.device_id, "start", object_id=f"o{seq + 1}", label="person", score=0.9,
                          trigger_time=time.time())
        reporter.publish("event", event)
        seq = reporter.outbox.last_seq
        n += 1
        if seq % args.report_every == 0:
            print(f"stored {seq}", flush=True)
    drained = reporter.wait_drained(args.drain_timeout)
    print(f"{'done' if drained else 'undrained'} {reporter.outbox.depth}", flush=True)
    reporter.stop()
    return 0 if drained else 1


if __name__ == "__main__":
    sys.exit(main())
