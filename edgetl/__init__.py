"""edgetl: host-side SDK (transfer learning, evaluation, quantization, bundles).

The Python API is what the CLI wraps. TensorFlow is imported lazily, only by the
functions that need it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from edgetl.errors import EdgetlError

__all__ = ["EdgetlError", "Run", "__version__", "evaluate", "train"]

_LAZY = {"train": ("edgetl.train", "train"), "evaluate": ("edgetl.evaluate", "evaluate"), "Run": ("edgetl.run", "Run")}


def __getattr__(name: str):
    # Lazy so that `import edgetl` (and `edgetl --help`) never pulls TensorFlow.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'edgetl' has no attribute {name!r}")
