"""What scripts rely on: help texts that render, one-line errors, documented exit codes, paths printed as given.

Runs the real `edgetl` / `edgetl-device` CLIs through typer's CliRunner on tiny generated data (no TensorFlow).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edgetl.cli import app as host_app
from edgetl_device.cli import app as device_app
from tests.support.runs import make_image_dataset

WIDE = {"COLUMNS": "250", "NO_COLOR": "1", "TERMINAL_WIDTH": "250"}


def _commands(app: typer.Typer):
    """(path, click command) for every leaf command of `app`."""
    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs is None:
            yield path, cmd
        for name, sub in (subs or {}).items():
            yield from walk(sub, [*path, name])
    yield from walk(typer.main.get_command(app), [])


ALL = [(app, path, cmd) for app in (host_app, device_app) for path, cmd in _commands(app)]


@pytest.mark.parametrize(("app", "path", "cmd"), ALL, ids=[" ".join(p) or "root" for _, p, _ in ALL])
def test_every_option_has_a_help_text(app, path, cmd):
    missing = [p.opts[0] for p in cmd.params if getattr(p, "param_type_name", "") == "option" and not p.help]
    assert not missing, f"{' '.join(path)}: options without help: {missing}"
    result = CliRunner().invoke(app, [*path, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output


def test_train_help_shows_the_bracketed_defaults():
    """`[default: 8]` written into a help text is rich markup unless escaped: it vanished from `train --help`."""
    from edgetl.train import TrainConfig

    out = CliRunner().invoke(host_app, ["train", "--help"], env=WIDE).output
    flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())
    d = TrainConfig()
    for fragment in (f"[default: {d.epochs}]", f"[default: {d.fine_tune_epochs}]", f"[default: {d.patience}]",
                     f"[default: {d.label_smoothing:g}]", f"[default: {d.embedding}]", "[default: whole frame]"):
        assert fragment in flat, fragment


def test_multi_line_error_is_printed_as_one_line(tmp_path):
    """tarfile's "could not be opened" message spans five lines; `error: ...` must stay one line on stderr."""
    not_a_bundle = tmp_path / "notes.txt"
    not_a_bundle.write_text("just text\n")
    for args in (["bundle", "inspect", str(not_a_bundle), "--json"],
                 ["bundle", "verify", str(not_a_bundle), "--trusted-key", str(not_a_bundle)]):
        result = CliRunner().invoke(host_app, args)
        assert result.exit_code == 2
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(not_a_bundle) in lines[0], result.stderr


@pytest.fixture
def broken_dataset(tmp_path) -> Path:
    data = make_image_dataset(tmp_path / "data", n=4, size=32)
    (data / "circle" / "IMG [copy].png").write_bytes(b"not a png")
    return data


def test_data_check_strict_exits_1_on_corrupt_files_and_still_prints_json(broken_dataset, tmp_path):
    runner = CliRunner()
    plain = runner.invoke(host_app, ["data", "check", str(broken_dataset), "--json"])
    assert plain.exit_code == 0  # a report: training skips unreadable files
    strict = runner.invoke(host_app, ["data", "check", str(broken_dataset), "--json", "--strict"])
    assert strict.exit_code == 1, strict.output
    assert json.loads(strict.stdout)["unreadable"]
    clean = make_image_dataset(tmp_path / "clean", n=4, size=32)
    assert runner.invoke(host_app, ["data", "check", str(clean), "--json", "--strict"]).exit_code == 0


def test_data_check_prints_paths_with_brackets_verbatim(broken_dataset):
    """File names like `IMG [copy].png` are data, not rich markup."""
    result = CliRunner().invoke(host_app, ["data", "check", str(broken_dataset)], env=WIDE)
    assert result.exit_code == 0, result.output
    flat = "".join(result.stdout.split())  # rich may wrap a long path over lines
    assert "IMG[copy].png" in flat, result.stdout
