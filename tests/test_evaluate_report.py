"""Metrics (pure numpy) and `edgetl evaluate`, which shares them with training's final report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgetl.cli import app
from edgetl.errors import EdgetlError
from edgetl.evaluate import evaluate
from edgetl.metrics import (
    classification_report,
    confusion_matrix,
    expected_calibration_error,
    per_class,
    top_k_accuracy,
)
from tests.support.runs import make_image_dataset


def test_confusion_and_per_class_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    pc = per_class(cm, ["a", "b", "c"])
    assert pc["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3}
    assert pc["b"]["precision"] == 0.5 and pc["c"]["recall"] == 1.0


def test_class_never_predicted_has_zero_precision_not_nan():
    pc = per_class(confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2), ["a", "b"])
    assert pc["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_top_k():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3]])
    y = np.array([1, 2, 0])
    assert top_k_accuracy(y, probs, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(y, probs, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(y, probs, 5) == 1.0


def test_ece_perfectly_calibrated_is_zero_and_overconfident_is_not():
    # 10 predictions at confidence 0.8, 8 correct: calibrated
    probs = np.tile([0.8, 0.2], (10, 1))
    y = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(y, probs) == pytest.approx(0.0, abs=1e-9)
    # always 0.99 confident, 50% right: ECE = 0.49
    probs = np.tile([0.99, 0.01], (10, 1))
    y = np.array([0] * 5 + [1] * 5)
    assert expected_calibration_error(y, probs) == pytest.approx(0.49)


def test_report_keys():
    r = classification_report([0, 1, 1], np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]]), ["x", "y"])
    assert r["accuracy"] == pytest.approx(2 / 3) and r["n"] == 3
    assert r["top_2_accuracy"] == 1.0 and r["confusion_matrix"] == [[1, 0], [1, 1]]
    assert set(r["per_class"]) == {"x", "y"} and "ece" in r and "macro_f1" in r


def test_evaluate_reproduces_training_report(tiny_run):
    import json as _json

    report = evaluate(tiny_run)  # default: the run's own validation split
    trained = _json.loads((tiny_run / "metrics.json").read_text())["val"]
    assert report["accuracy"] == trained["accuracy"]
    assert report["confusion_matrix"] == trained["confusion_matrix"]
    assert report["ece"] == pytest.approx(trained["ece"], abs=1e-6)


def test_cli_json_and_plot_on_a_new_dataset(tiny_run, tmp_path):
    data = make_image_dataset(tmp_path / "fresh", n=6, size=120, seed=42)  # unseen images, other size
    res = CliRunner().invoke(app, ["evaluate", str(tiny_run), "--data", str(data), "--json", "--plot",
                                   str(tmp_path / "cm.png")])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout[res.stdout.index("{"):])
    assert payload["n"] == 18 and payload["accuracy"] > 0.6  # chance is 1/3
    assert (tmp_path / "cm.png").stat().st_size > 1000
    res = CliRunner().invoke(app, ["evaluate", str(tiny_run), "--data", str(data)])
    assert res.exit_code == 0 and "precision" in res.output and "confusion matrix" in res.output


def test_unknown_classes_and_missing_run_are_errors(tiny_run, tmp_path):
    data = make_image_dataset(tmp_path / "other", ("circle", "hexagon"), n=2, size=32)
    with pytest.raises(EdgetlError, match="hexagon"):
        evaluate(tiny_run, data)
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "no_run")])
    assert res.exit_code == 2 and "edgetl train" in res.output


@pytest.mark.parametrize("k", ["0", "-1"])
def test_top_k_below_one_is_an_error_not_a_made_up_metric(tiny_run, k):
    # k=0 reported top_0_accuracy 0.0; k=-1 reported the top-(n-1) accuracy as "top_-1_accuracy"
    res = CliRunner().invoke(app, ["evaluate", str(tiny_run), "--top-k", k, "--json"])
    assert res.exit_code == 2 and "--top-k must be >= 1" in res.output and "Traceback" not in res.output
