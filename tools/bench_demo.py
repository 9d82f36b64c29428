"""How reliably does `edgetl demo` tell its story? Runs it for several seeds and prints a table.

For each seed: accuracy (float / int8), when the device flagged the unknown against the
frames the drone was really in view, false unknown objects (started outside that range),
known objects the device never recognised, clips, events sent / delivered, and the time
each step took. Not a test: run it by hand, e.g.

    python tools/bench_demo.py --seeds 0 1 2 --quick
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def one(seed: int, quick: bool, broker: str | None, root: Path) -> dict:
    from edgetl.demo import DemoOptions, run_demo

    r = run_demo(DemoOptions(out=root / f"seed{seed}", quick=quick, seed=seed, broker=broker, report=False),
                 echo=lambda _line: None)
    unknown = [a for a in r.truth if not a["known"]]
    lo, hi = (unknown[0]["first_frame"], unknown[0]["last_frame"]) if unknown else (-1, -1)
    missed = [a["kind"] for a in r.truth if a["known"] and a["kind"] not in r.classes_seen]
    return {
        "seed": seed,
        "val_acc": f"{r.val_accuracy:.3f}",
        "int8_acc": f"{r.parity['tflite_accuracy']:.3f}",
        "drone_frames": f"{lo}-{hi}",
        "unknown_at": ",".join(map(str, r.unknown_starts)) or "never",
        "false_unknown": sum(1 for f in r.unknown_starts if not lo <= f <= hi),
        "known_missed": ",".join(missed) or "-",
        "clips": len(r.clips),
        "sent/delivered": f"{r.events_sent}/{r.events_delivered}",
        "train_s": f"{r.timings['train_s']:.0f}",
        "export_s": f"{r.timings['export_s']:.0f}",
        "device_s": f"{r.timings['device_s']:.1f}",
        "total_s": f"{r.timings['total_s']:.0f}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="the CI-sized demo")
    ap.add_argument("--broker", default=None, help="mqtt://host:port (default: the local event log)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the outputs in this folder")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = args.keep or Path(tempfile.mkdtemp(prefix="edgetl-bench-demo-"))
    rows = [one(s, args.quick, args.broker or "none", root) for s in args.seeds]
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print(f"edgetl demo {'--quick' if args.quick else '(default)'}, {len(rows)} seeds, outputs in {root}")
    print(" | ".join(c.ljust(width[c]) for c in cols))
    print("-+-".join("-" * width[c] for c in cols))
    for r in rows:
        print(" | ".join(str(r[c]).ljust(width[c]) for c in cols))


if __name__ == "__main__":
    main()
