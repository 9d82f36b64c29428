"""edgetl: host-side SDK (transfer learning, evaluation, quantization, bundles).

The Python API is what the CLI wraps. TensorFlow is imported lazily, only by the
functions that need it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from edgetl.errors import EdgetlError

__all__ = ["EdgetlError", "__version__"]
