"""`edgetl export` refuses runs and --out folders that would give a broken bundle or destroy the run."""

from __future__ import annotations

import shutil

import pytest

from edgetl.errors import EdgetlError
from edgetl.export import export_run


def _copy(run, dest):
    shutil.copytree(run, dest)
    return dest


@pytest.mark.parametrize("where", ["run", "parent"])
def test_out_that_is_or_holds_the_run_is_refused_and_the_run_survives(tiny_export_run, tmp_path, where):
    run = _copy(tiny_export_run, tmp_path / "work" / "run")
    out = run if where == "run" else run.parent
    with pytest.raises(EdgetlError, match="--out"):
        export_run(run, out, quant="float32", overwrite=True)
    assert (run / "model.keras").is_file() and (run / "labels.txt").is_file()


def test_out_that_holds_the_calibration_set_is_refused(tiny_export_run, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    shutil.copyfile(next((tiny_export_run.parent / "data" / "train" / "red").glob("*.png")), calib / "a.png")
    with pytest.raises(EdgetlError, match="--out"):
        export_run(tiny_export_run, calib, quant="int8", calibration=calib, overwrite=True)
    assert (calib / "a.png").is_file()


def test_labels_txt_disagreeing_with_the_model_is_refused(tiny_export_run, tmp_path):
    # The device refuses such a bundle at load time (label count != probabilities width): catch it at export.
    run = _copy(tiny_export_run, tmp_path / "run")
    (run / "labels.txt").write_text("red\ngreen\nblue\npurple\n")
    with pytest.raises(EdgetlError, match="labels.txt has 4 .* 3"):
        export_run(run, tmp_path / "out", quant="float32")


def test_unreadable_validation_images_are_a_clear_error(tiny_export_run, tmp_path):
    # e.g. the dataset was moved after training: split.csv points nowhere
    run = _copy(tiny_export_run, tmp_path / "run")
    rows = (run / "split.csv").read_text().splitlines()
    rows = [rows[0]] + [r.replace("/data/val/", "/moved/val/") for r in rows[1:]]
    (run / "split.csv").write_text("\n".join(rows) + "\n")
    old = tmp_path / "out"
    old.mkdir()
    (old / "keep.txt").write_text("an earlier export")
    with pytest.raises(EdgetlError, match="validation images"):
        export_run(run, old, quant="float32", overwrite=True)
    assert (old / "keep.txt").is_file()  # nothing was replaced by a failed export


def test_default_model_version_names_the_run_when_exported_from_inside_it(tiny_export_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_export_run)  # `cd RUN && edgetl export . --out ...`: Path(".").name is ""
    res = export_run(".", tmp_path / "out", quant="float32")
    assert res.manifest["model_version"].startswith(f"{tiny_export_run.name}-")


def test_max_drop_must_be_a_number_of_points(tiny_export_run, tmp_path):
    # NaN compares false with everything: every export would fail parity after a full conversion
    with pytest.raises(EdgetlError, match="--max-drop must be"):
        export_run(tiny_export_run, tmp_path / "out", quant="float32", max_drop=float("nan"))


def test_out_that_is_a_file_is_a_clear_error(tiny_export_run, tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(EdgetlError, match="is a file"):
        export_run(tiny_export_run, tmp_path / "out", quant="float32")


def test_pack_refuses_an_archive_inside_the_bundle(tiny_export_run, tmp_path):
    from edgetl.bundle import pack_bundle

    res = export_run(tiny_export_run, tmp_path / "bundle", quant="float32")
    with pytest.raises(EdgetlError, match="inside the bundle"):
        pack_bundle(res.out_dir, res.out_dir / "b.tar.gz")
    assert pack_bundle(res.out_dir, tmp_path / "b.tar.gz").is_file()


def test_truncated_model_keras_is_a_clear_error_naming_it(tiny_export_run, tmp_path):
    run = _copy(tiny_export_run, tmp_path / "run")
    data = (run / "model.keras").read_bytes()
    (run / "model.keras").write_bytes(data[: len(data) // 3])  # a copy cut short
    with pytest.raises(EdgetlError, match="cannot load .*model.keras"):
        export_run(run, tmp_path / "out", quant="float32")


def test_missing_signing_key_fails_before_the_conversion(tiny_export_run, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(EdgetlError, match="private key not found"):
        export_run(tiny_export_run, out, quant="float32", key=tmp_path / "nope.key")
    assert not out.exists()  # refused up front: no bundle was converted and left unsigned


def test_export_cli_keeps_stdout_for_its_own_output(tiny_export_run, tmp_path):
    from typer.testing import CliRunner

    from edgetl.cli import app

    r = CliRunner().invoke(app, ["export", str(tiny_export_run), "--quant", "float32", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "Saved artifact" not in r.stdout  # Keras' export chatter belongs on stderr
