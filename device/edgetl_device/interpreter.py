"""Load a TFLite model with the best interpreter available on this machine.

Order: ai-edge-litert (LiteRT), then tflite-runtime, then TensorFlow's tf.lite
(only as a last resort on a development host; the device never needs it).
Edge TPU models (`*_edgetpu.tflite`, or containing the `edgetpu-custom-op`)
get the `libedgetpu` delegate; without a TPU they fail with a clear message.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import platform
from pathlib import Path
from typing import Any

from edgetl_device.errors import DeviceError

log = logging.getLogger(__name__)

_BACKENDS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")
EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}[
    platform.system()
]
EDGETPU_OP_MARKER = b"edgetpu-custom-op"


def backend_module() -> tuple[str, Any]:
    """The first importable interpreter module and its name."""
    for name in _BACKENDS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        return name, module
    raise DeviceError(
        "no TFLite interpreter installed: `pip install ai-edge-litert` (or tflite-runtime on old boards)"
    )


def is_edgetpu_model(path: str | os.PathLike[str]) -> bool:
    """True for a model compiled by edgetpu_compiler (name or embedded custom op)."""
    path = Path(path)
    if path.name.endswith("_edgetpu.tflite"):
        return True
    try:
        return EDGETPU_OP_MARKER in path.read_bytes()
    except OSError:
        return False


def load_interpreter(path: str | os.PathLike[str], num_threads: int | None = None,
                     delegate: str = "auto") -> Any:
    """An allocated interpreter for `path`.

    delegate: "auto" uses the Edge TPU for Edge TPU models, "none" forces the CPU,
    "edgetpu" requires the TPU.
    """
    path = Path(path)
    if not path.is_file():
        raise DeviceError(f"model file not found: {path}")
    name, module = backend_module()
    Interpreter = module.Interpreter
    want_tpu = delegate == "edgetpu" or (delegate == "auto" and is_edgetpu_model(path))
    delegates = []
    if want_tpu:
        try:
            # Probe the shared library first: a failed load_delegate leaves a half-built Delegate whose
            # destructor raises inside LiteRT.
            ctypes.CDLL(EDGETPU_LIBRARY)
            delegates = [module.load_delegate(EDGETPU_LIBRARY)]
        except (ValueError, OSError, RuntimeError) as exc:
            raise DeviceError(
                f"{path.name} is compiled for the Edge TPU but no Edge TPU is available "
                f"({EDGETPU_LIBRARY} could not load: {exc}). Plug in the Coral device and install "
                "libedgetpu1-std, or deploy the CPU model (model.tflite) instead."
            ) from exc
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads,
                                  experimental_delegates=delegates or None)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise DeviceError(f"cannot load TFLite model {path}: {exc}") from exc
    log.debug("loaded %s with %s (threads=%s, edgetpu=%s)", path.name, name, num_threads, bool(delegates))
    return interpreter
