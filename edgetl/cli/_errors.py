"""Turn user-facing errors into one line on stderr and exit code 2, for every command.

Exit codes of the `edgetl` commands: 0 success; 1 the command ran but what it checks failed (`data check
--strict`, `edgetpu check --strict`, `fleet command`/`fleet deploy`); 2 a user error (bad option, missing or
unreadable input, a bundle that fails `bundle verify`); 3 `export`'s int8 parity check failed.

Wrapping the callbacks (rather than `main`) makes the behaviour the same under
typer's CliRunner, the console script and `python -m edgetl`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

try:  # the device package is part of the same distribution, but keep the host CLI importable alone
    from edgetl_device.errors import DeviceError
except ImportError:  # pragma: no cover
    DeviceError = RuntimeError  # type: ignore[misc,assignment]

from edgetl.atomic import disk_full_message, is_no_space
from edgetl.errors import EdgetlError

USER_ERRORS: tuple[type[BaseException], ...] = (EdgetlError, DeviceError)


def one_line(message: object) -> str:
    """`message` with every run of whitespace, newlines included, as one space: `error: ...` stays one line."""
    return " ".join(str(message).split())


def _wrap(callback: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(callback, "_edgetl_wrapped", False):
        return callback

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except USER_ERRORS as exc:
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(2) from exc
        except OSError as exc:  # a full disk, a read-only or missing folder: one line, not a traceback
            message = disk_full_message(exc.filename or "the output", exc) if is_no_space(exc) else str(exc)
            typer.echo(f"error: {one_line(message)}", err=True)
            raise typer.Exit(2) from exc

    wrapper._edgetl_wrapped = True  # type: ignore[attr-defined]
    return wrapper


def wrap_user_errors(app: typer.Typer) -> None:
    """Wrap every command callback of `app` and its sub-apps (recursively)."""
    for command in app.registered_commands:
        if command.callback is not None:
            command.callback = _wrap(command.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            wrap_user_errors(group.typer_instance)
