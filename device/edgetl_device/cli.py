"""The `edgetl-device` command line (run, check, classify)."""

from __future__ import annotations

import functools
import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import typer

from edgetl_device import logs
from edgetl_device.errors import DeviceError

app = typer.Typer(
    name="edgetl-device",
    help="edgetl device runtime: camera -> classify -> unknown decision -> clips -> events.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
log = logging.getLogger("edgetl_device")


class JsonFormatter(logging.Formatter):
    """One JSON object per line (journald / log shippers)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(verbose: bool = False, fmt: str = "text") -> None:
    logs.setup_logging(verbose, JsonFormatter() if fmt == "json" else None)


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """DeviceError -> one line on stderr, exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DeviceError as exc:
            typer.echo("error: " + " ".join(str(exc).split()), err=True)  # one line, always
            raise typer.Exit(2) from exc

    return wrapper


_state = {"verbose": False}


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    _state["verbose"] = verbose
    setup_logging(verbose)


@app.command()
@_user_errors
def run(config: Path = typer.Option(..., "--config", "-c", help="Device config (YAML or TOML)."),
        max_frames: int | None = typer.Option(None, help="Stop after this many frames (testing).")) -> None:
    """Run the camera -> classify -> record -> report service until SIGTERM/SIGINT."""
    from edgetl_device.config import load_config
    from edgetl_device.runtime import Runtime, install_signal_handlers

    early_reload: list[int] = []  # a `systemctl reload` while the model loads must not kill the service
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda signum, _frame: early_reload.append(signum))
    cfg = load_config(config)
    setup_logging(_state["verbose"], cfg.runtime.log_format)
    try:
        runtime = Runtime(cfg, config_path=config)
        install_signal_handlers(runtime)
        if early_reload:
            runtime.request_reload()
        status = runtime.run(max_frames)
    except DeviceError:
        raise
    except Exception as exc:  # through the log handler: with log_format json a bare traceback is not JSON lines
        log.exception("runtime failed: %s: %s", type(exc).__name__, exc)
        raise typer.Exit(1) from exc
    log.info("final status: %s", json.dumps(status))


@app.command()
@_user_errors
def check(config: Path = typer.Option(..., "--config", "-c", help="Device config (YAML or TOML)."),
          camera_timeout: float = typer.Option(10.0, help="Seconds to wait for a camera frame.")) -> None:
    """Validate the config, model/bundle (signature), camera and disk; exit 2 if anything fails."""
    results = run_checks(config, camera_timeout)
    for r in results:
        typer.echo(f"{'ok  ' if r.ok else 'FAIL'} {r.name}: {r.detail}")
    failed = [r for r in results if not r.ok]
    if failed:
        raise DeviceError(f"{len(failed)} check(s) failed: " + "; ".join(f"{r.name}: {r.detail}" for r in failed))


@app.command()
@_user_errors
def classify(model: Path = typer.Argument(..., help="A .tflite classifier."),
             image: Path = typer.Argument(..., help="An image file."),
             labels: Path | None = typer.Option(None, "--labels", "-l", help="Labels file, one per line."),
             top_k: int = typer.Option(1, "--top-k", "-k", min=1, help="How many classes to print."),
             threshold: float = typer.Option(0.0, "--threshold", "-t", help="Minimum score to print."),
             threads: int | None = typer.Option(None, "--threads", help="Interpreter threads."),
             center_crop: float | None = typer.Option(None, "--center-crop", min=0.0, max=1.0,
                                                    help="Centre crop fraction (0-1]."),  # >1 crops a corner
             count: int = typer.Option(1, "--count", "-c", min=1, help="Repeat inference and print timings.")
             ) -> None:
    """Classify one image: prints `index label score` per class, best first (like pycoral's classify)."""
    import cv2

    from edgetl_device.inference import Model, read_labels

    for what, path, give in (("model", model, "a .tflite file"), ("image", image, "an image file")):
        if path.is_dir():
            raise DeviceError(f"{what} {path} is a folder; give {give}")
    if not image.is_file():
        raise DeviceError(f"image not found: {image}")
    frame = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if frame is None:
        raise DeviceError(f"cannot decode image {image}: use a JPEG, PNG or BMP file")
    names = read_labels(labels) if labels is not None else None
    m = Model(model, names, num_threads=threads, center_crop=center_crop)
    for _ in range(count):
        t0 = time.perf_counter()
        out = m.run(frame)
        if count > 1:
            typer.echo(f"{(time.perf_counter() - t0) * 1000:.2f} ms", err=True)
    from edgetl_device.inference import get_classes

    for c in get_classes(out.probabilities, top_k, threshold):
        typer.echo(f"{c.id} {m.labels[c.id]} {c.score:.5f}")


class CheckResult(NamedTuple):
    name: str
    ok: bool
    detail: str


def run_checks(config_path: Path, camera_timeout: float = 10.0) -> list[CheckResult]:
    """Config, model/bundle, camera and disk checks; each failure says what to fix."""
    import numpy as np

    from edgetl_device.camera import grab_one, redact_source
    from edgetl_device.config import load_config
    from edgetl_device.inference import load_model
    from edgetl_device.interpreter import cpu_int8_dot, describe_int8_dot, is_edgetpu_model
    from edgetl_device.runtime import scorer_for
    from edgetl_device.storage import MB, free_bytes

    try:
        cfg = load_config(config_path)
    except DeviceError as exc:
        return [CheckResult("config", False, str(exc))]
    results = [CheckResult("config", True, f"{config_path} (device {cfg.device_id})")]
    try:
        model, bundle = load_model(cfg.model, cfg.trusted_keys)
        model.run(np.zeros((model.height, model.width, 3), np.uint8))
        scorer_for(bundle, model)  # the bundle's open-set arrays must fit this model, as at `run`
        what = f"bundle {bundle.root} signed by {getattr(bundle, 'signed_by', None)}" if bundle else str(model.path)
        detail = (f"{what}: {len(model.labels)} classes, input {model.width}x{model.height} {model.input_dtype}, "
                  f"version {model.model_version}")
        if np.dtype(model.input_dtype).kind in "iu" and not is_edgetpu_model(model.path):
            # an int8 model on the CPU is only as fast as the CPU's 8-bit arithmetic
            detail += f"; CPU 8-bit dot product: {describe_int8_dot(cpu_int8_dot())}"
        results.append(CheckResult("model", True, detail))
    except DeviceError as exc:
        results.append(CheckResult("model", False, str(exc)))
    try:
        img = grab_one(cfg.camera, camera_timeout)
        results.append(CheckResult("camera", True,
                                   f"{redact_source(cfg.camera.source)}: {img.shape[1]}x{img.shape[0]} frame"))
    except DeviceError as exc:
        results.append(CheckResult("camera", False, str(exc)))
    free = free_bytes(cfg.storage.data_dir)
    need = cfg.storage.min_free_mb * MB
    results.append(CheckResult("disk", free >= need,
                               f"{free / MB:.0f} MB free at {cfg.storage.data_dir}, storage.min_free_mb "
                               f"{cfg.storage.min_free_mb:.0f}" + ("" if free >= need else
                                                                   ": free space or lower storage.min_free_mb")))
    return results


def main() -> None:
    app()


if __name__ == "__main__":
    main()
