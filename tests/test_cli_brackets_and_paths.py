"""Data printed by the CLIs is shown verbatim, and wrong kinds of paths get messages that say what is wrong.

`[...]` in a class name, a folder, a model version or a device id is data, not rich markup: it used to vanish
from the tables of export, bench, bundle inspect, evaluate, openset and fleet. A file given where a folder is
expected (and the reverse) used to read "does not exist" / "not found" or a bare errno.

Runs the real `edgetl` / `edgetl-device` CLIs through typer's CliRunner on the seconds-to-train export run.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgetl.cli import app as host_app
from edgetl_device.cli import app as device_app

WIDE = {"COLUMNS": "250", "NO_COLOR": "1", "TERMINAL_WIDTH": "250"}
RENAME = {"red": "red [old]", "green": "green", "blue": "blue [x]"}
VERSION = "v1 [rc]"


def _flat(text: str) -> str:
    """Output without whitespace or table rules: rich may wrap a long cell over lines."""
    return "".join(c for c in text if not c.isspace() and c not in "│┃┏┓┗┛┡┩└┘━─╇╋┳┻┼┬┴╭╮╰╯║═")


def _ok(result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return _flat(result.stdout)


def _user_error(result) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.output
    return lines[-1]


@pytest.fixture(scope="module")
def bracket_run(tiny_export_run, tmp_path_factory) -> Path:
    """The tiny export run copied into `runs [v2]/run`, with classes `red [old]`, `green`, `blue [x]`."""
    run = tmp_path_factory.mktemp("brackets") / "runs [v2]" / "run"
    shutil.copytree(tiny_export_run, run)
    (run / "labels.txt").write_text("".join(RENAME[c] + "\n" for c in ("red", "green", "blue")))
    lines = (run / "split.csv").read_text().splitlines()
    rows = [line.rsplit(",", 2) for line in lines[1:]]
    (run / "split.csv").write_text("\n".join([lines[0], *(f"{p},{RENAME[c]},{s}" for p, c, s in rows)]) + "\n")
    return run


@pytest.fixture(scope="module")
def export_result(bracket_run):
    return CliRunner().invoke(host_app, ["export", str(bracket_run), "--quant", "float32", "--version", VERSION],
                              env=WIDE)


@pytest.fixture(scope="module")
def bracket_bundle(bracket_run, export_result) -> Path:
    assert export_result.exit_code == 0, export_result.output
    return bracket_run / "export"


@pytest.fixture(scope="module")
def unknown_folder(bracket_run) -> Path:
    from PIL import Image

    folder = bracket_run.parent / "unknown [v1]"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


# ------------------------------------------------------------------ brackets are data, not markup


def test_export_table_shows_bracketed_paths_and_version(export_result):
    out = _ok(export_result)
    assert "runs[v2]" in out and "v1[rc]" in out, export_result.stdout  # the bundle row and the title


def test_bench_table_shows_a_bracketed_version(bracket_bundle):
    out = _ok(CliRunner().invoke(host_app, ["bench", str(bracket_bundle), "--runs", "3", "--warmup", "1"],
                                 env=WIDE))
    assert "v1[rc]" in out


def test_bundle_inspect_shows_bracketed_path_and_classes(bracket_bundle):
    out = _ok(CliRunner().invoke(host_app, ["bundle", "inspect", str(bracket_bundle)], env=WIDE))
    assert "runs[v2]" in out and "red[old]" in out and "blue[x]" in out and "v1[rc]" in out


def test_evaluate_tables_show_bracketed_class_names(bracket_run):
    out = _ok(CliRunner().invoke(host_app, ["evaluate", str(bracket_run)], env=WIDE))
    assert out.count("red[old]") >= 3 and out.count("blue[x]") >= 3  # per-class row, matrix column and row


def test_openset_evaluate_and_loco_show_bracketed_paths_and_classes(bracket_run, unknown_folder):
    runner = CliRunner()
    out = _ok(runner.invoke(host_app, ["openset", "evaluate", str(bracket_run), "--unknown", str(unknown_folder),
                                       "--scorer", "msp"], env=WIDE))
    assert "unknown[v1]" in out and "runs[v2]" in out  # title and the plot path
    out = _ok(runner.invoke(host_app, ["openset", "loco", str(bracket_run), "--scorer", "msp"], env=WIDE))
    assert "red[old]" in out and "blue[x]" in out


def test_fleet_events_table_shows_bracketed_device_and_class(tmp_path):
    from edgetl.fleet.store import Message, open_store
    from edgetl_device.events import new_event

    db = tmp_path / "fleet [a].sqlite3"
    now = time.time()
    e = new_event("cam [a]", "start", "o1", "cat [old]", 0.8, clip_path="/clips [b]/o1.avi")
    with open_store(db) as store:
        store.write_batch([Message("cam [a]", "events", {**e, "seq": 1, "time": now}, now)])
    out = _ok(CliRunner().invoke(host_app, ["fleet", "events", "--db", str(db)], env=WIDE))
    assert "cam[a]" in out and "cat[old]" in out and "/clips[b]/o1.avi" in out


def test_fleet_command_results_table_shows_bracketed_answers(capsys, monkeypatch):
    """`fleet command`/`fleet deploy` print the devices' answers and error texts as given."""
    from edgetl.cli.fleet import _print_results
    from edgetl.fleet.deploy import CommandResult

    monkeypatch.setenv("COLUMNS", "250")
    _print_results([CommandResult("cam1", "r1", "snapshot", True, {"path": "/snaps [day]/1.jpg"}),
                    CommandResult("cam2", "r2", "snapshot", False, "cannot write /snaps [day]: read-only")],
                   "snapshot on 2 [test] device(s)")
    out = _flat(capsys.readouterr().out)
    assert out.count("/snaps[day]") == 2 and "2[test]device(s)" in out, out


# ------------------------------------------------------------------ evaluate --plot FOLDER


def test_evaluate_plot_into_an_existing_folder_writes_inside_it(bracket_run, tmp_path):
    plots = tmp_path / "plots"
    plots.mkdir()
    _ok(CliRunner().invoke(host_app, ["evaluate", str(bracket_run), "--plot", str(plots), "--json"]))
    assert (plots / "confusion_matrix.png").is_file()
    assert not (tmp_path / "plots.png").exists()


# ------------------------------------------------------------------ a file for a folder, a folder for a file


@pytest.fixture
def a_file(tmp_path) -> Path:
    f = tmp_path / "notes.txt"
    f.write_text("not a folder\n")
    return f


@pytest.mark.parametrize("command", [["export"], ["report"]])
def test_run_that_is_a_file_says_so(command, a_file):
    line = _user_error(CliRunner().invoke(host_app, [*command, str(a_file)]))
    assert "is a file" in line and "does not exist" not in line, line


@pytest.mark.parametrize("command", [["openset", "fit", "{run}", "--outliers", "{file}"],
                                     ["openset", "evaluate", "{run}", "--unknown", "{file}"]])
def test_openset_image_folder_that_is_a_file_says_so(command, bracket_run, a_file):
    args = [a.format(run=bracket_run, file=a_file) for a in command]
    line = _user_error(CliRunner().invoke(host_app, args))
    assert "is a file" in line and "does not exist" not in line, line


def test_from_video_folder_says_so(tmp_path):
    line = _user_error(CliRunner().invoke(host_app, ["data", "from-video", str(tmp_path), "-o", str(tmp_path / "o"),
                                                     "--class", "x", "--every", "5"]))
    assert "is a folder" in line and "not found" not in line, line


def test_device_classify_folder_for_model_or_image_says_so(bracket_bundle, tmp_path):
    from PIL import Image

    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    runner = CliRunner()
    for args in ([str(tmp_path), str(image)], [str(bracket_bundle / "model.tflite"), str(tmp_path)]):
        line = _user_error(runner.invoke(device_app, ["classify", *args]))
        assert "is a folder" in line and "not found" not in line, line


def test_data_split_out_folder_is_a_clear_error(tmp_path):
    from tests.support.runs import make_image_dataset

    data = make_image_dataset(tmp_path / "data", n=4, size=16)
    line = _user_error(CliRunner().invoke(host_app, ["data", "split", str(data), "-o", str(tmp_path)]))
    assert "is a folder" in line and "Errno" not in line, line


def test_bundle_pack_out_folder_is_a_clear_error(bracket_bundle, tmp_path):
    line = _user_error(CliRunner().invoke(host_app, ["bundle", "pack", str(bracket_bundle), "--out", str(tmp_path)]))
    assert "is a folder" in line and "Errno" not in line, line


def test_visualize_out_file_is_a_clear_error(bracket_run, a_file, tmp_path):
    from PIL import Image

    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    line = _user_error(CliRunner().invoke(host_app, ["visualize", str(bracket_run), str(image), "-o", str(a_file)]))
    assert "is a file" in line and "Errno" not in line, line
