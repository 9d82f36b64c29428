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

# TensorFlow: the module that defines Interpreter and load_delegate (importing "tensorflow.lite" gives a package
# without them; tf.lite's names come from TensorFlow's generated API)
_BACKENDS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite.python.interpreter")
EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}[
    platform.system()
]
EDGETPU_OP_MARKER = b"edgetpu-custom-op"
# CPU extensions with 8-bit dot products (/proc/cpuinfo names). XNNPACK's int8 kernels beat its float32 ones
# with them; without them (x86 AVX2) int8 measured 0.5-0.8x the speed of float32 (README, export rows).
INT8_DOT_FLAGS = ("avx512_vnni", "avx512vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


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


def cpu_int8_dot(cpuinfo: str | None = None) -> list[str] | None:
    """The CPU's 8-bit dot-product extensions (INT8_DOT_FLAGS) from `cpuinfo` (default: /proc/cpuinfo);
    [] when it has none, None when unknown (no /proc/cpuinfo, or no flags line in it)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):  # x86 "flags", ARM "Features"
            flags.update(value.split())
    if not flags:
        return None
    return [f for f in INT8_DOT_FLAGS if f in flags]


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else platform.processor() or the machine type)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("model name", "model") and value.strip() and not value.strip().isdigit():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe_int8_dot(found: list[str] | None, machine: str | None = None) -> str:
    """One line for benchmark reports: does this CPU have what makes int8 fast?"""
    if found is None:
        return "unknown"
    if found:
        return ", ".join(found)
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "i686", "i386"):
        return "none (x86 without VNNI: int8 can be slower than float32 here)"
    return "none"


def is_edgetpu_model(path: str | os.PathLike[str]) -> bool:
    """True for a model compiled by edgetpu_compiler (name or embedded custom op)."""
    path = Path(path)
    if path.name.endswith("_edgetpu.tflite"):
        return True
    try:
        return EDGETPU_OP_MARKER in path.read_bytes()
    except OSError:
        return False


def load_edgetpu_delegate(module: Any) -> Any:
    """The Edge TPU delegate of a backend module; raises (OSError, ValueError, ...) when there is no TPU."""
    # Probe the shared library first: a failed load_delegate leaves a half-built Delegate whose destructor
    # raises (and prints a traceback) inside LiteRT.
    ctypes.CDLL(EDGETPU_LIBRARY)
    return module.load_delegate(EDGETPU_LIBRARY)


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
            delegates = [load_edgetpu_delegate(module)]
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
