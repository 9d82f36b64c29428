"""The `edgetl-device` command line (run, check, classify)."""

from __future__ import annotations

import logging

import typer

app = typer.Typer(
    name="edgetl-device",
    help="edgetl device runtime: camera -> classify -> unknown decision -> clips -> events.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    app()
