"""Benchmark: how long seeing what the network sees takes, per backbone, on this host's CPU.

For each backbone at 224 px (shared ImageNet weights where the project has them, random otherwise):
- feature maps: the default one-layer-per-block maps of one real photo (median of a few calls,
  after a first call that builds the tapped model);
- PNGs: writing those maps as channel grids (64 channels per layer);
- Grad-CAM: the backbone under a random 5-class softmax head, nested as a sub-model the way a run's
  classifier holds it, heatmap of the last conv layer (median, after a first call);
and optionally `write_report` on a run folder (`--run RUN`), end to end.

    python tools/bench_visualize.py [--repeats 5] [--run RUN] [--backbones vgg16,mobilenet_v2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgetl import visualize as viz  # noqa: E402
from tests.support.shared import shared_data_dir  # noqa: E402

# name, alpha, weights file in shared data (None: random init, the only choice offline)
CASES = {
    "vgg16": (None, None),
    "mobilenet_v2": (0.35, "mobilenet_v2_0.35_224_no_top.h5"),
    "mobilenet": (0.25, "mobilenet_v1_0.25_224_no_top.h5"),
    "mobilenet_v3_small": (1.0, None),
}


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(first call s, median of the next `repeats` calls s)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def _classifier(backbone):
    import keras

    inp = keras.Input(backbone.inputs[0].shape[1:])
    x = keras.layers.GlobalAveragePooling2D(name="embedding")(backbone(inp))
    out = keras.layers.Dense(5, activation="softmax", name="probabilities")(x)
    return keras.Model(inp, out)


def bench_backbone(name: str, repeats: int, image_path: Path, size: int = 224) -> dict:
    alpha, weights_file = CASES[name]
    weights = shared_data_dir() / "weights" / weights_file if weights_file else None
    if weights is not None and not weights.is_file():
        weights = None
    model = viz.build_backbone(name, weights, size, alpha)
    image = viz.load_rgb(image_path, size)
    layers = [r.name for r in viz.default_feature_layers(model)]
    maps_first, maps_med = _timed(lambda: viz.feature_maps(model, image, layers), repeats)
    maps = viz.feature_maps(model, image, layers)
    with tempfile.TemporaryDirectory() as tmp:
        _, png_med = _timed(lambda: viz.save_feature_maps(maps, image, Path(tmp)), max(1, repeats // 2))
    clf = _classifier(model)
    tapped = viz.gradcam_model(clf)
    cam_first, cam_med = _timed(lambda: viz.grad_cam(clf, image, _tapped=tapped), repeats)
    return {"backbone": f"{name}{f' a={alpha}' if alpha else ''}", "weights": "ImageNet" if weights else "random",
            "layers": len(layers), "params_M": model.count_params() / 1e6,
            "maps_first_s": maps_first, "maps_ms": maps_med * 1000, "pngs_s": png_med,
            "gradcam_first_s": cam_first, "gradcam_ms": cam_med * 1000, "cam_layer": tapped[1].name.split("/")[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backbones", default=",".join(CASES))
    ap.add_argument("--run", type=Path, help="also time write_report on this run folder")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    image = shared_data_dir() / "images" / "grace_hopper.bmp"
    rows = [bench_backbone(b.strip(), args.repeats, image) for b in args.backbones.split(",") if b.strip()]

    header = ("backbone", "weights", "params M", "layers", "maps 1st s", "maps ms", "PNGs s", "CAM 1st s",
              "CAM ms", "CAM layer")
    print(f"\nvisualize benchmark, 224 px, 1 image, median of {args.repeats} after a first call (CPU)")
    fmt = "{:<25} {:<8} {:>8} {:>6} {:>10} {:>8} {:>7} {:>9} {:>7}  {}"
    print(fmt.format(*header))
    for r in rows:
        print(fmt.format(r["backbone"], r["weights"], f"{r['params_M']:.2f}", r["layers"],
                         f"{r['maps_first_s']:.2f}", f"{r['maps_ms']:.0f}", f"{r['pngs_s']:.2f}",
                         f"{r['gradcam_first_s']:.2f}", f"{r['gradcam_ms']:.0f}", r["cam_layer"]))
    if args.run:
        from edgetl.report import write_report

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            out = write_report(args.run, Path(tmp) / "report.html")
            took = time.perf_counter() - t0
            print(f"\nwrite_report({args.run}): {took:.1f} s, {out.stat().st_size / 1024:.0f} kB")


if __name__ == "__main__":
    main()
