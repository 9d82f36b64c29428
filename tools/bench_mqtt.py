"""MQTT reporting benchmark against a real local Mosquitto: throughput, latency, and loss under faults.

    python tools/bench_mqtt.py                     # full run (10,000 events under faults)
    python tools/bench_mqtt.py --fault-events 2000 --quick

1. Throughput: N events published as fast as possible through the SQLite outbox at QoS 1;
   rate = events / time until the last PUBACK (every event acknowledged, outbox empty).
2. Latency: events at a steady rate while connected; trigger (publish call) -> arrival at a
   subscriber on the same host (same clock). Median and p95.
3. Faults: a device *process* (tools/event_publisher.py) sends events through a TCP proxy
   (tools/tcp_proxy.py) while the benchmark kills the broker (SIGKILL) and restarts it 3 times,
   SIGKILLs the device process and restarts it, and cuts the network for 10 s. The broker runs
   with persistence (autosave every second) and the consumer holds a persistent QoS 1 session,
   as in production; it de-duplicates by event_id and checks the seqs.

Targets (issue 5): 0 lost, 0 duplicates after dedup, 0 seq gaps; >= 500 events/s; median
latency <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "device"))

from edgetl_device.config import MqttConfig  # noqa: E402
from edgetl_device.events import new_event  # noqa: E402
from edgetl_device.mqtt import MqttReporter  # noqa: E402
from tests.support.mosquitto import MosquittoBroker  # noqa: E402
from tests.support.mqtt_collector import Collector, delivery_report  # noqa: E402
from tools.tcp_proxy import TcpProxy  # noqa: E402


def unique_count(sub: Collector, device_id: str) -> int:
    return len({e["event_id"] for e in sub.of("events") if e.get("device_id") == device_id})


def throughput(port: int, work: Path, count: int, sync: str) -> dict:
    with Collector(port, "edgetl/tp/#", qos=1) as sub:
        config = MqttConfig(port=port, outbox_path=work / f"tp-{sync}.sqlite3", telemetry_interval=3600,
                            outbox_sync=sync)
        reporter = MqttReporter(config, "tp")
        reporter.wait_connected(10)
        t0 = time.perf_counter()
        for i in range(count):
            reporter.publish("event", new_event("tp", "start", f"o{i}", "person", 0.9))
        t_stored = time.perf_counter() - t0
        reporter.wait_drained(120)
        t_acked = time.perf_counter() - t0
        sub.wait_for(lambda s: unique_count(s, "tp") >= count, 30)
        t_received = time.perf_counter() - t0
        reporter.stop()
        report = delivery_report([e for e in sub.of("events") if e["device_id"] == "tp"], count)
        sub.messages.clear()
    return {"events": count, "store_per_s": count / t_stored, "acked_per_s": count / t_acked,
            "received_per_s": count / t_received, "lost": report["lost"]}


def latency(port: int, work: Path, count: int, rate: float) -> dict:
    with Collector(port, "edgetl/lat/#", qos=1) as sub:
        reporter = MqttReporter(MqttConfig(port=port, outbox_path=work / "lat.sqlite3", telemetry_interval=3600),
                                "lat")
        reporter.wait_connected(10)
        t0 = time.monotonic()
        for i in range(count):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            reporter.publish("event", new_event("lat", "start", f"o{i}", "person", 0.9, trigger_time=time.time()))
        sub.wait_for(lambda s: unique_count(s, "lat") >= count, 30)
        reporter.stop()
        with sub._lock:
            ms = [(arrived - p["trigger_time"]) * 1000 for t, p, arrived in sub.messages if t.endswith("/events")]
    ms.sort()
    return {"events": len(ms), "rate": rate, "median_ms": statistics.median(ms),
            "p95_ms": ms[int(0.95 * (len(ms) - 1))], "max_ms": ms[-1]}


def faults(work: Path, count: int, rate: float, cut_s: float, sub_qos: int) -> dict:
    # Like device/mosquitto/mosquitto.conf: persistence on, so the consumer's persistent session
    # (its subscription and the QoS 1 messages queued for it) survives a broker restart. Without it
    # a restarted broker drops whatever a device re-sends before the consumer has re-subscribed.
    broker = MosquittoBroker(workdir=work / "fault-broker", persistence=True,
                             extra_config="autosave_interval 1").start()
    proxy = TcpProxy(broker.port).start()
    sub = Collector(broker.port, "edgetl/dev1/#", qos=sub_qos, client_id="bench-consumer",
                    clean_session=False).start()
    time.sleep(1.5)  # let the broker save the consumer's session once
    outbox = work / "dev1.sqlite3"
    cmd = [sys.executable, str(ROOT / "tools" / "event_publisher.py"), "--port", str(proxy.port),
           "--device-id", "dev1", "--outbox", str(outbox), "--count", str(count), "--rate", str(rate),
           "--report-every", "100", "--drain-timeout", "120"]
    log: list[str] = []
    t0 = time.monotonic()

    def note(what: str) -> None:
        log.append(f"{time.monotonic() - t0:6.1f}s {what} (received {unique_count(sub, 'dev1')})")
        print("   ", log[-1], flush=True)

    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)]
    threading.Thread(target=lambda p=procs[0]: [None for _ in p.stdout], daemon=True).start()
    try:
        for k in range(3):
            time.sleep(3.0)
            broker.kill()
            note(f"broker SIGKILL #{k + 1}")
            time.sleep(1.0)
            broker.start()
            note("broker restarted")
        time.sleep(3.0)
        procs[0].kill()
        procs[0].wait(10)
        note("device process SIGKILL")
        time.sleep(0.5)
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
        note("device process restarted")
        time.sleep(3.0)
        proxy.cut()
        note(f"network cut for {cut_s:.0f}s")
        time.sleep(cut_s)
        proxy.restore()
        note("network restored")
        out, _ = procs[1].communicate(timeout=300)
        note(f"device finished: {out.strip().splitlines()[-1] if out.strip() else '?'}")
        sub.wait_for(lambda s: unique_count(s, "dev1") >= count, 60)
        note("subscriber has everything" if unique_count(sub, "dev1") >= count else "subscriber timed out")
        report = delivery_report(sub.of("events"), count)
        if report["missing_ranges"]:
            note(f"missing seq ranges: {report['missing_ranges']}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        sub.stop()
        proxy.close()
        broker.stop()
    report["seconds"] = time.monotonic() - t0
    report["log"] = log
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--throughput-events", type=int, default=5000)
    p.add_argument("--latency-events", type=int, default=1000)
    p.add_argument("--latency-rate", type=float, default=100.0, help="events/s while measuring latency")
    p.add_argument("--fault-events", type=int, default=10_000)
    p.add_argument("--fault-rate", type=float, default=300.0, help="events/s from the device process")
    p.add_argument("--cut-seconds", type=float, default=10.0)
    p.add_argument("--subscriber-qos", type=int, default=1, choices=(0, 1))
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        work = Path(tmp)
        with MosquittoBroker(workdir=work / "broker") as broker:
            print("1/3 throughput ...", flush=True)
            tp = throughput(broker.port, work, args.throughput_events, "full")
            tp_normal = throughput(broker.port, work, args.throughput_events, "normal")
            print("2/3 latency ...", flush=True)
            lat = latency(broker.port, work, args.latency_events, args.latency_rate)
        print(f"3/3 faults: {args.fault_events} events at {args.fault_rate:.0f}/s ...", flush=True)
        ft = faults(work, args.fault_events, args.fault_rate, args.cut_seconds, args.subscriber_qos)

    rows = [
        ("throughput: stored in outbox (fsync each)", f"{tp['store_per_s']:.0f} events/s", ""),
        ("throughput: acknowledged (QoS 1)", f"{tp['acked_per_s']:.0f} events/s", ">= 500/s"),
        ("throughput: received by subscriber", f"{tp['received_per_s']:.0f} events/s", ""),
        ("throughput, outbox_sync=normal: acked", f"{tp_normal['acked_per_s']:.0f} events/s", ""),
        (f"latency median ({lat['rate']:.0f} events/s)", f"{lat['median_ms']:.1f} ms", "<= 50 ms"),
        ("latency p95 / max", f"{lat['p95_ms']:.1f} / {lat['max_ms']:.1f} ms", ""),
        ("faults: events sent", str(args.fault_events), ""),
        ("faults: messages received (before dedup)", str(ft["received"]), ""),
        ("faults: duplicates before dedup", str(ft["duplicates"]), "(re-sends)"),
        ("faults: unique events after dedup", str(ft["unique"]), str(args.fault_events)),
        ("faults: lost", str(ft["lost"]), "0"),
        ("faults: seq gaps", str(ft["seq_gaps"]), "0"),
        ("faults: wall time", f"{ft['seconds']:.1f} s", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'result':>22}  target")
    print("-" * (width + 34))
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>22}  {target}")
    ok = (ft["lost"] == 0 and ft["seq_gaps"] == 0 and ft["unique"] == args.fault_events
          and tp["acked_per_s"] >= 500 and lat["median_ms"] <= 50)
    print(f"\nfaults: broker SIGKILL x3, device SIGKILL x1, network cut {args.cut_seconds:.0f}s; "
          f"subscriber QoS {args.subscriber_qos}; all targets met: {ok}")
    if args.json:
        results = {"throughput": tp, "throughput_normal": tp_normal, "latency": lat, "faults": ft}
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
