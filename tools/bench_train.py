"""Benchmark: transfer-learning accuracy and wall time on the shared datasets (prints a table).

    python tools/bench_train.py                 # all runs
    python tools/bench_train.py --only hymenoptera --only phase1-speed

Accuracy is measured on the held-out split named in the table; wall time per phase comes from the
run's timings. Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.shared import shared_data_dir  # noqa: E402

W035 = "weights/mobilenet_v2_0.35_224_no_top.h5"
WQAT = "weights/mobilenet_v2_1.0_224_coral_qat_no_top.weights.h5"
COMMON = dict(backbone="mobilenet_v2", size=224, augment=True, seed=0)
# edgetl.train.PRESETS, measured here: "photos" (small ImageNet-like data), "photos-large" (thousands of photos,
# or photos unlike ImageNet's) and "fixed-camera" (small objects)
PHOTOS = dict(COMMON, preset="photos")
PHOTOS_LARGE = dict(COMMON, preset="photos-large")
FIXED_CAMERA = dict(COMMON, preset="fixed-camera")


def runs(root: Path) -> dict[str, dict]:
    ds = root / "datasets"
    ship_csv = dict(path_column="Filename", label_column="Ship", missing_label="Empty")
    return {
        "hymenoptera": dict(split="train -> val", target=0.93, data=ds / "hymenoptera",
                            options=dict(PHOTOS, alpha=0.35, weights=str(root / W035))),
        "find-the-ship": dict(split="set-A -> set-B (CSV, Empty)", target=0.97,
                              data=ds / "find-the-ship/set-A_train/image_labels.csv",
                              val=ds / "find-the-ship/set-B_test/image_labels.csv", csv=ship_csv,
                              options=dict(FIXED_CAMERA, alpha=0.35, weights=str(root / W035))),
        "flowers5": dict(split="stratified 80/20, seed 0", target=0.85, data=ds / "flowers5",
                         options=dict(PHOTOS_LARGE, alpha=0.35, weights=str(root / W035))),
        "hymenoptera-qat": dict(split="train -> val (alpha 1.0 QAT)", target=0.95, data=ds / "hymenoptera",
                                options=dict(PHOTOS, alpha=1.0, weights=str(root / WQAT))),
    }


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from edgetl.train import train

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", help="run name (repeatable); 'phase1-speed' = cached vs not")
    p.add_argument("--fine-tune-epochs", type=int, help="override phase 2 epochs")
    p.add_argument("--out", type=Path, help="keep run folders here (default: a temp dir)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = shared_data_dir()
    if not root.is_dir():
        sys.exit(f"shared data not found at {root} (set EDGETL_SHARED_DATA)")
    out_root = args.out or Path(tempfile.mkdtemp(prefix="bench_train_"))
    plan = runs(root)
    names = args.only or ["hymenoptera", "find-the-ship", "hymenoptera-qat", "flowers5", "phase1-speed"]
    table = Table("dataset", "split", "recipe", "n train/val", "val acc", "target", "load s", "embed s", "phase 1 s",
                  "phase 2 s", "total s", title="edgetl train (MobileNetV2, 224 px, this machine)")
    rows = []
    for name in names:
        if name == "phase1-speed":
            continue
        spec = plan[name]
        opts = dict(spec["options"])
        if args.fine_tune_epochs is not None:
            opts["fine_tune_epochs"] = args.fine_tune_epochs
        t = time.perf_counter()
        r = train(spec["data"], out_root / name, val_data=spec.get("val"), csv_options=spec.get("csv"), overwrite=True,
                  **opts)
        tm = r.timings
        cfg = r.run.config  # the resolved options the run used (preset filled in)
        counts = cfg["counts"]
        recipe = (f"{cfg['preset'] or 'custom'}: {cfg['embedding']}, ft {cfg['fine_tune_blocks']} "
                  f"blocks x {cfg['fine_tune_epochs']} ep @ {cfg['fine_tune_learning_rate']:g}")
        rows.append([name, spec["split"], recipe, f"{counts['train']}/{counts['val']}", f"{r.val_accuracy:.3f}",
                     f">= {spec['target']}", _fmt(tm["load_s"]), _fmt(tm.get("embed_s")), _fmt(tm["phase1_s"]),
                     _fmt(tm["phase2_s"]), _fmt(time.perf_counter() - t)])
        print("  ".join(rows[-1]), flush=True)
    for row in rows:
        table.add_row(*row)
    Console(width=200).print(table)

    if "phase1-speed" in names:
        # Same head training (10 epochs, no early stop) with embeddings cached vs recomputed per epoch.
        speed = Table("phase 1 mode", "epochs", "phase 1 s", "val acc", title="phase 1: cached embeddings vs not")
        times = {}
        for mode, cached in (("cached embeddings", True), ("augmented, full forward", False)):
            opts = dict(plan["hymenoptera"]["options"], epochs=10, patience=0, fine_tune_epochs=0,
                        cache_embeddings=cached, augment=True)
            r = train(plan["hymenoptera"]["data"], out_root / f"speed-{cached}", overwrite=True, **opts)
            times[mode] = r.timings["phase1_s"]
            speed.add_row(mode, "10", _fmt(r.timings["phase1_s"]), f"{r.val_accuracy:.3f}")
        Console(width=200).print(speed)
        ratio = times["augmented, full forward"] / times["cached embeddings"]
        print(f"phase 1 speed-up with cached embeddings: {ratio:.1f}x (target >= 5x)")
    print(f"run folders: {out_root}")


if __name__ == "__main__":
    main()
