"""Logging set-up shared by both CLIs.

The handler writes to whatever `sys.stderr` is *at emit time*: a handler bound to the stream
of one invocation would write into a closed file once that invocation ends (typer's CliRunner,
embedding the CLI in another program), and every later log line would fail.
"""

from __future__ import annotations

import logging
import sys

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class CurrentStderrHandler(logging.StreamHandler):
    """A StreamHandler that always targets the current `sys.stderr`."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns it; ignore
        pass


def setup_logging(verbose: bool = False, formatter: logging.Formatter | None = None) -> None:
    """Replace the root handlers with one current-stderr handler (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = CurrentStderrHandler()
    handler.setFormatter(formatter or logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
