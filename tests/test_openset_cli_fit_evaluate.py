"""`edgetl openset fit|evaluate|loco` on a real (tiny) run: files, metrics, plots, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgetl.cli import app


@pytest.fixture(scope="module")
def unknown_dir(tmp_path_factory):
    from tests.support.tiny_export_run import make_images

    d = tmp_path_factory.mktemp("unknown")
    rng = np.random.default_rng(5)
    imgs = make_images(rng, 0, 30)
    imgs[..., 1] = imgs[..., 0]  # yellow: no known class looks like it
    for i, img in enumerate(imgs):
        Image.fromarray(img).save(d / f"y{i:02d}.png")
    return d


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_fit_writes_scorer_threshold_and_plot(tiny_export_run, tmp_path):
    out = tmp_path / "os"
    r = invoke("openset", "fit", tiny_export_run, "--scorer", "knn", "--false-alarm", "0.1", "--out", out)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "openset.json").read_text())
    assert doc["scorer"] == "knn" and doc["file"] == "openset.npz" and doc["target_false_alarm"] == 0.1
    assert doc["val_false_alarm"] <= 0.1
    with np.load(out / "openset.npz") as z:
        assert z["bank"].dtype == np.float16 and len(z["bank"]) == 120  # the 120 training frames
    assert (out / "fit_scores.png").stat().st_size > 5000
    assert "threshold" in r.output


def test_evaluate_reports_auroc_fpr95_and_false_alarms(tiny_export_run, unknown_dir, tmp_path):
    out = tmp_path / "os"
    assert invoke("openset", "fit", tiny_export_run, "--scorer", "relative_mahalanobis", "--out", out).exit_code == 0
    r = invoke("openset", "evaluate", tiny_export_run, "--unknown", unknown_dir, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    (row,) = json.loads((out / "evaluate.json").read_text())  # the same rows --json prints
    assert row["scorer"] == "relative_mahalanobis" and row["source"] == "saved"
    assert row["n_unknown"] == 30 and row["known_split"] == "val"
    assert row["auroc"] > 0.95 and row["fpr95"] < 0.2 and row["false_alarm_at_95_detection"] < 0.2
    assert 0.0 <= row["false_alarm"] <= 0.15
    assert (out / "evaluate_relative_mahalanobis.png").is_file()


def test_fit_with_the_background_in_the_whitened_space(tiny_export_run, unknown_dir, tmp_path):
    out = tmp_path / "os"
    r = invoke("openset", "fit", tiny_export_run, "--scorer", "relative_mahalanobis", "--background", "whitened",
               "--out", out)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "openset.json").read_text())
    assert doc["params"] == {"background_space": "whitened"}
    with np.load(out / "openset.npz") as z:
        r_ = z["whiten"].shape[1]
        assert z["background_whiten"].shape == (r_, r_) and z["background_mean"].shape == (r_,)
    r = invoke("openset", "evaluate", tiny_export_run, "--unknown", unknown_dir, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    (row,) = json.loads((out / "evaluate.json").read_text())
    assert row["source"] == "saved" and row["auroc"] > 0.9
    r = invoke("openset", "fit", tiny_export_run, "--background", "pixels", "--out", out)
    assert r.exit_code == 2 and "--background" in r.output and "whitened" in r.output


def test_evaluate_all_and_auto(tiny_export_run, unknown_dir, tmp_path):
    r = invoke("openset", "evaluate", tiny_export_run, "--unknown", unknown_dir, "--scorer", "all",
               "--out", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "evaluate.json").read_text())
    assert {x["scorer"] for x in rows} >= {"msp", "knn", "mahalanobis", "combined"}
    r = invoke("openset", "fit", tiny_export_run, "--out", tmp_path / "auto")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "auto/openset.json").read_text())
    assert set(doc["auto_loco_auroc"]) >= {"msp", "knn", "combined"}


def test_leave_one_class_out_table(tiny_export_run, tmp_path):
    r = invoke("openset", "loco", tiny_export_run, "--scorer", "cosine", "--scorer", "knn", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "loco.json").read_text())
    assert set(res["scorers"]["knn"]["per_class"]) == {"red", "green", "blue"}
    assert (tmp_path / "loco.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["--unknown", "/nonexistent/folder"], "does not exist"),
    (["--unknown", "{empty}"], "no images"),
    (["--unknown", "{unknown}", "--scorer", "vim"], "unknown scorer"),
])
def test_bad_input_is_one_clear_line(tiny_export_run, unknown_dir, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.format(empty=tmp_path / "empty", unknown=unknown_dir) for a in args]
    r = invoke("openset", "evaluate", tiny_export_run, *args, "--out", tmp_path)
    assert r.exit_code == 2
    assert message in r.output


def test_fit_refuses_a_missing_run_and_a_missing_tflite(tmp_path, tiny_export_run):
    r = invoke("openset", "fit", tmp_path / "nope")
    assert r.exit_code == 2 and "does not exist" in r.output
    r = invoke("openset", "fit", tiny_export_run, "--tflite", tmp_path / "model.tflite")
    assert r.exit_code == 2 and "edgetl export" in r.output


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan"])
def test_shrinkage_outside_0_1_is_refused(tiny_export_run, tmp_path, value):
    # above 1 the "shrunk" covariance has negative eigenvalues along the main class directions: they were
    # clamped to 1e-12 and the detector silently scored by numerical noise (fit exited 0)
    r = invoke("openset", "fit", tiny_export_run, "--scorer", "mahalanobis", "--shrinkage", value,
               "--out", tmp_path)
    assert r.exit_code == 2, r.output
    assert "--shrinkage" in r.output and "between 0 and 1" in r.output
    assert not (tmp_path / "openset.json").exists()
