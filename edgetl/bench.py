"""Invoke-latency benchmark of a .tflite model or bundle, through the device's own interpreter loader.

No TensorFlow import here, so peak RSS reflects what the device would use (run it in a fresh
process, `python -m edgetl.bench MODEL --json`, when comparing several models).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import EdgetlError


def _peak_rss_mb() -> float:
    # Linux: VmHWM of this process image. ru_maxrss survives execve, so a child forked from a big
    # parent (a training process) would report the parent's peak.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def resolve_model(path: str | os.PathLike[str], edgetpu: bool = False) -> tuple[Path, dict[str, Any] | None]:
    """A .tflite file, or the model inside a bundle directory (manifest read, signature not checked)."""
    path = Path(path)
    if path.is_dir():
        mf = path / "manifest.json"
        if not mf.is_file():
            raise EdgetlError(f"{path} is neither a .tflite file nor a bundle (no manifest.json)")
        manifest = json.loads(mf.read_text())
        model = path / ("model_edgetpu.tflite" if edgetpu else "model.tflite")
        if not model.is_file():
            raise EdgetlError(f"bundle {path} has no {model.name}")
        return model, manifest
    if not path.is_file():
        raise EdgetlError(f"model not found: {path}")
    if path.suffix != ".tflite":
        raise EdgetlError(f"{path} is not a .tflite file or bundle directory (unpack archives with "
                          "`edgetl bundle verify ARCHIVE --extract-to DIR` first)")
    return path, None


def percentile_ms(samples_ns: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(samples_ns, dtype=np.float64), q) / 1e6)


def bench(path: str | os.PathLike[str], threads: int | None = None, runs: int = 100, warmup: int = 10,
          delegate: str = "auto", edgetpu: bool = False, seed: int = 0) -> dict[str, Any]:
    """Latency percentiles (ms), throughput, model size and peak RSS of invoking the model `runs` times."""
    from edgetl_device.errors import DeviceError
    from edgetl_device.interpreter import (
        backend_module,
        cpu_int8_dot,
        describe_int8_dot,
        is_edgetpu_model,
        load_interpreter,
    )

    if runs < 1 or warmup < 0:
        raise EdgetlError("--runs must be >= 1 and --warmup >= 0")
    model, manifest = resolve_model(path, edgetpu)
    rss_before = _peak_rss_mb()
    t0 = time.perf_counter()
    try:
        it = load_interpreter(model, num_threads=threads, delegate=delegate)
    except DeviceError as exc:
        raise EdgetlError(str(exc)) from exc
    load_ms = (time.perf_counter() - t0) * 1e3
    rng = np.random.default_rng(seed)
    for d in it.get_input_details():
        shape, dtype = d["shape"], d["dtype"]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            x = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
        else:
            x = rng.uniform(0, 255, size=shape).astype(dtype)
        it.set_tensor(d["index"], x)
    try:
        for _ in range(warmup):
            it.invoke()
        times = []
        for _ in range(runs):
            s = time.perf_counter_ns()
            it.invoke()
            times.append(time.perf_counter_ns() - s)
    except (RuntimeError, ValueError) as exc:
        raise EdgetlError(f"invoking {model} failed: {exc}") from exc
    tpu = delegate == "edgetpu" or (delegate == "auto" and is_edgetpu_model(model))
    backend, _ = backend_module()
    p50 = percentile_ms(times, 50)
    return {
        "model": str(model), "model_version": (manifest or {}).get("model_version"),
        "size_bytes": model.stat().st_size, "backend": backend,
        "delegate": "edgetpu" if tpu else "cpu (XNNPACK)", "threads": threads or os.cpu_count(),
        "runs": runs, "warmup": warmup, "load_ms": round(load_ms, 2),
        "p50_ms": round(p50, 3), "p90_ms": round(percentile_ms(times, 90), 3),
        "p99_ms": round(percentile_ms(times, 99), 3), "mean_ms": round(float(np.mean(times)) / 1e6, 3),
        "fps_p50": round(1000.0 / p50, 1) if p50 > 0 else None,
        "peak_rss_mb": round(_peak_rss_mb(), 1), "rss_before_load_mb": round(rss_before, 1),
        "cpu_int8_dot": describe_int8_dot(cpu_int8_dot()),
    }


def bench_in_subprocess(path: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
    """bench() in a fresh interpreter so peak RSS is this model's alone."""
    import subprocess

    args = [sys.executable, "-m", "edgetl.bench", str(path), "--json"]
    for k, v in options.items():
        if v is not None:
            args += [f"--{k.replace('_', '-')}", str(v)]
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=err, text=True)
        if proc.returncode != 0:
            err.seek(0)
            raise EdgetlError(f"benchmark of {path} failed: {err.read().strip()[-300:]}")
    return json.loads(proc.stdout)


def _main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="benchmark one .tflite (used by bench_in_subprocess)")
    ap.add_argument("model")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--delegate", default="auto")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    try:
        res = bench(a.model, a.threads, a.runs, a.warmup, a.delegate)
    except EdgetlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
