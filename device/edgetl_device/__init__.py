"""edgetl_device: the runtime flashed to a Raspberry Pi or Coral board.

Never imports TensorFlow or the host `edgetl` package.
"""

__version__ = "0.1.0"
