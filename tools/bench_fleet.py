"""Fleet load benchmark: do the monitor and the event store keep up with a big fleet?

    python tools/bench_fleet.py                      # 200 devices, telemetry every 5 s, 10 events/s, 5 min
    python tools/bench_fleet.py --duration 60        # shorter run on a busy machine
    python tools/bench_fleet.py --db postgresql://postgres@127.0.0.1:5432/test

Runs a real Mosquitto, `edgetl fleet`'s recorder and monitor in their own processes, and
`tools/fleet_sim.py` (real `edgetl_device` MQTT reporters). At the end every event the
simulated devices sent is looked up in the store and in the monitor's counts; CPU time and
peak RSS of each process come from psutil sampling. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------------------------- child roles
def run_role(role: str, broker: str, db: str, stop_file: Path, out: Path, table_prefix: str) -> None:
    from edgetl.fleet.mqtt import BrokerOptions, close

    opts = BrokerOptions(url=broker)
    if role == "recorder":
        from edgetl.fleet.recorder import Recorder
        from edgetl.fleet.store import open_store

        store = open_store(db, table_prefix)
        with Recorder(store, opts, client_id="bench-recorder") as rec:
            _wait_for(stop_file)
            rec.wait_idle(60)
        t = rec.stats.totals
        result = {"messages": rec.stats.received, "events_new": t.events_new, "duplicates": t.events_duplicate,
                  "telemetry": t.telemetry, "status": t.status, "rejected": t.rejected}
        store.close()
    else:
        from edgetl.fleet.monitor import FleetState, listen, render_table

        state = FleetState(default_interval=5.0)
        client = listen(opts, state)
        from rich.console import Console

        console = Console(file=open(os.devnull, "w"), width=200)  # noqa: SIM115 - render as a terminal would
        while not stop_file.exists():
            console.print(render_table(state, limit=40))  # the table is redrawn each second, like `monitor`
            time.sleep(1.0)
        close(client)
        devices = state.snapshot()
        result = {"messages": state.messages, "events": state.events, "gaps": sum(d.gaps for d in devices),
                  "duplicates": sum(d.duplicates for d in devices), "devices": len(devices),
                  "max_seq": {d.device_id: d.max_seq for d in devices}}
    out.write_text(json.dumps(result))


def _wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.2)


# ---------------------------------------------------------------------------------- driver
class Sampler:
    """CPU seconds and peak RSS of a process and its children, sampled every half second.

    CPU is the last value seen per process (so it misses at most half a second of a child's end);
    peak RSS is the largest sum over the process tree at one sample.
    """

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.peak_rss = 0
        self._cpu: dict[int, float] = {}

    @property
    def cpu(self) -> float:
        return sum(self._cpu.values())

    def sample(self) -> None:
        import psutil

        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        rss = 0
        for p in procs:
            try:
                with p.oneshot():
                    rss += p.memory_info().rss
                    t = p.cpu_times()
                    self._cpu[p.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        self.peak_rss = max(self.peak_rss, rss)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--telemetry-interval", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=10.0, help="events per second, whole fleet")
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--db", default=None, help="store (default: a SQLite file in a temp folder)")
    ap.add_argument("--role", choices=["recorder", "monitor"], help=argparse.SUPPRESS)
    ap.add_argument("--broker", help=argparse.SUPPRESS)
    ap.add_argument("--stop-file", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--table-prefix", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role:
        run_role(args.role, args.broker, args.db, args.stop_file, args.out, args.table_prefix)
        return 0

    from tests.support.mosquitto import MosquittoBroker

    work = Path(tempfile.mkdtemp(prefix="edgetl-bench-fleet-"))
    db = args.db or str(work / "fleet.sqlite3")
    table_prefix = f"bench{os.getpid()}_" if db.startswith("postgres") else ""
    stop = work / "stop"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with MosquittoBroker(workdir=work / "broker") as broker:
        children = {}
        for role in ("recorder", "monitor"):
            children[role] = subprocess.Popen(
                [sys.executable, __file__, "--role", role, "--broker", broker.url, "--db", db,
                 "--stop-file", str(stop), "--out", str(work / f"{role}.json"), "--table-prefix", table_prefix],
                env=env)
        time.sleep(3)  # both subscribed before the devices start
        sim = subprocess.Popen(
            [sys.executable, str(ROOT / "tools" / "fleet_sim.py"), "--broker", broker.url, "--devices",
             str(args.devices), "--telemetry-interval", str(args.telemetry_interval), "--rate", str(args.rate),
             "--duration", str(args.duration), "--workdir", str(work / "devices"), "--summary",
             str(work / "sim.json")], env=env)
        samplers = {name: Sampler(p.pid) for name, p in children.items()}
        samplers["simulator"] = Sampler(sim.pid)
        samplers["mosquitto"] = Sampler(broker.process.pid)
        t0 = time.monotonic()
        while sim.poll() is None:
            for s in samplers.values():
                s.sample()
            time.sleep(0.5)
        for _ in range(10):  # let the last events through, still sampling
            for s in samplers.values():
                s.sample()
            time.sleep(0.5)
        wall = time.monotonic() - t0
        for name in ("recorder", "monitor", "mosquitto"):
            samplers[name].sample()
        stop.touch()
        for p in children.values():
            p.wait(120)
    sim_out = json.loads((work / "sim.json").read_text())
    rec = json.loads((work / "recorder.json").read_text())
    mon = json.loads((work / "monitor.json").read_text())

    from edgetl.fleet.store import open_store

    with open_store(db, table_prefix) as store:
        stored = store.count_events()
        per_device = {d["device_id"]: d["events"] for d in store.devices()}
        if table_prefix:
            store.drop()
    sent = sim_out["events_sent"]
    lost_store = sum(max(0, n - per_device.get(dev, 0)) for dev, n in sim_out["per_device"].items())
    lost_monitor = sum(max(0, n - mon["max_seq"].get(dev, 0)) for dev, n in sim_out["per_device"].items())

    print(f"\nfleet benchmark: {args.devices} devices, telemetry every {args.telemetry_interval:g} s, "
          f"{args.rate:g} events/s in total, {args.duration:g} s of load ({wall:.0f} s measured); "
          f"store {'PostgreSQL' if table_prefix else 'SQLite'}; {os.cpu_count()} CPUs")
    print(f"simulator: {sim_out['connected']}/{sim_out['devices']} devices connected, {sent} events sent, "
          f"all acknowledged by the broker: {sim_out['drained']}\n")
    header = f"{'process':<11} {'msgs in':>8} {'events':>7} {'lost':>5} {'gaps':>5} {'dups':>5} " \
             f"{'CPU s':>7} {'CPU %':>6} {'peak MB':>8}"
    print(header)
    print("-" * len(header))

    def row(name: str, msgs: str, events: str, lost: str, gaps: str, dups: str) -> None:
        s = samplers[name]
        print(f"{name:<11} {msgs:>8} {events:>7} {lost:>5} {gaps:>5} {dups:>5} {s.cpu:>7.1f} "
              f"{100 * s.cpu / wall:>6.1f} {s.peak_rss / 2**20:>8.1f}")

    row("recorder", str(rec["messages"]), str(stored), str(lost_store), "-", str(rec["duplicates"]))
    row("monitor", str(mon["messages"]), str(mon["events"]), str(lost_monitor), str(mon["gaps"]),
        str(mon["duplicates"]))
    row("simulator", "-", str(sent), "-", "-", "-")
    row("mosquitto", "-", "-", "-", "-", "-")
    ok = stored == sent and lost_store == 0 and lost_monitor == 0 and mon["gaps"] == 0 and mon["events"] == sent
    print(f"\n{'PASS' if ok else 'FAIL'}: 0 events lost is the target (store {sent - stored}, monitor "
          f"{sent - mon['events']})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
