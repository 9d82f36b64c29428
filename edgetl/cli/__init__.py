"""The `edgetl` command line: a thin typer shell over the Python API.

Each area owns one module here; heavy imports (TensorFlow) happen inside the
commands so that `edgetl --help` stays fast.
"""

from __future__ import annotations

import typer

from edgetl.cli import data, demo, export, fleet, openset, train, visualize
from edgetl.cli._errors import wrap_user_errors
from edgetl_device.logs import setup_logging

app = typer.Typer(
    name="edgetl",
    help="Transfer learning to TFLite for smart cameras: train, quantize, sign, deploy, detect the unknown.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    setup_logging(verbose)


data.register(app)
train.register(app)
export.register(app)
openset.register(app)
visualize.register(app)
fleet.register(app)
demo.register(app)
wrap_user_errors(app)


def main() -> None:
    app()
