"""Output locations are checked before the work: a file where a folder goes is one clear line, not an errno.

`openset fit RUN --out FILE` computed every embedding and then said "[Errno 17] File exists";
`calibrate build DATA --out FILE` said "[Errno 20] Not a directory"; `evaluate RUN --plot missing_dir/x.png`
ran the whole inference and then said "[Errno 2] No such file or directory" (now the folder is created, as
every other command does for its outputs), and `--plot x.txt` ended in a matplotlib traceback.

The real `edgetl` CLI through typer's CliRunner on the seconds-to-train export run; nothing mocked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgetl.cli import app
from tests.support.runs import make_image_dataset

PROGRESS = "it/s"  # tqdm's bar: embeddings or inference ran before the error


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _user_error(result) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.output
    assert "Errno" not in result.output and "Traceback" not in result.output, result.output
    assert PROGRESS not in result.output, f"failed only after computing: {result.output}"
    return lines[-1]


@pytest.fixture
def a_file(tmp_path) -> Path:
    f = tmp_path / "notes.txt"
    f.write_text("not a folder\n")
    return f


@pytest.mark.parametrize("command", [["fit"], ["loco"], ["evaluate", "--unknown", "{unknown}"]])
@pytest.mark.parametrize("where", ["file", "under-file"])
def test_openset_out_that_is_a_file_is_refused_before_the_embeddings(tiny_export_run, a_file, command, where):
    out = a_file if where == "file" else a_file / "openset"
    unknown = tiny_export_run.parent / "data" / "val" / "red"
    args = [a.format(unknown=unknown) for a in command]
    line = _user_error(invoke("openset", args[0], tiny_export_run, *args[1:], "--out", out))
    assert "--out" in line and f"{a_file} is a file" in line and "folder" in line
    assert a_file.read_text() == "not a folder\n"


def test_openset_fit_bundle_that_is_not_a_bundle_is_refused_before_the_embeddings(tiny_export_run, tmp_path):
    (tmp_path / "nobundle").mkdir()
    line = _user_error(invoke("openset", "fit", tiny_export_run, "--bundle", tmp_path / "nobundle",
                              "--out", tmp_path / "os"))
    assert "not a bundle folder" in line and "edgetl export" in line
    assert not (tmp_path / "os" / "openset.json").exists()


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_calibrate_build_out_that_is_a_file_is_refused(tmp_path, a_file, where):
    data = make_image_dataset(tmp_path / "data", ("x", "y"), n=4, size=32)
    out = a_file if where == "file" else a_file / "calib"
    line = _user_error(invoke("calibrate", "build", data, "--out", out, "--size", "4"))
    assert "--out" in line and f"{a_file} is a file" in line and "calibration/NAME" in line
    assert a_file.read_text() == "not a folder\n"
    line = _user_error(invoke("calibrate", "build", data, "--out", out, "--size", "4", "--overwrite"))
    assert f"{a_file} is a file" in line and a_file.read_text() == "not a folder\n"


def test_evaluate_plot_in_a_missing_folder_creates_it(tiny_export_run, tmp_path):
    plot = tmp_path / "missing_dir" / "deeper" / "cm.png"
    r = invoke("evaluate", tiny_export_run, "--json", "--plot", plot)
    assert r.exit_code == 0, (r.output, r.exception)
    assert plot.stat().st_size > 1000


@pytest.mark.parametrize("plot, message", [
    ("{file}/cm.png", "{file} is a file"),
    ("{file}/sub/cm.png", "{file} is a file"),
    ("{tmp}/cm.txt", ".png"),
])
def test_evaluate_plot_that_cannot_be_written_is_refused_before_inference(tiny_export_run, tmp_path, a_file, plot,
                                                                           message):
    plot, message = (s.format(file=a_file, tmp=tmp_path) for s in (plot, message))
    line = _user_error(invoke("evaluate", tiny_export_run, "--plot", plot))
    assert "--plot" in line and message in line
    assert not Path(plot).exists()
