"""User errors raised anywhere in a command become one line on stderr and exit code 2."""

import typer
from typer.testing import CliRunner

from edgetl.cli._errors import wrap_user_errors
from edgetl.errors import EdgetlError
from edgetl_device.errors import DeviceError


def _app() -> typer.Typer:
    app = typer.Typer()
    sub = typer.Typer()

    @app.command()
    def host(fail: bool = False) -> None:
        if fail:
            raise EdgetlError("the data folder is empty; point DATA at a folder per class")
        typer.echo("fine")

    @sub.command()
    def device() -> None:
        raise DeviceError("camera 0 is not reachable")

    app.add_typer(sub, name="grp")
    wrap_user_errors(app)
    return app


def test_user_error_is_one_line_and_exit_2():
    result = CliRunner().invoke(_app(), ["host", "--fail"])
    assert result.exit_code == 2
    assert "error: the data folder is empty" in result.output
    assert "Traceback" not in result.output


def test_nested_group_errors_are_wrapped_and_success_untouched():
    app = _app()
    assert CliRunner().invoke(app, ["grp", "device"]).exit_code == 2
    ok = CliRunner().invoke(app, ["host"])
    assert ok.exit_code == 0 and "fine" in ok.output


def test_root_cli_help_runs():
    from edgetl.cli import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "edgetl" in result.output
