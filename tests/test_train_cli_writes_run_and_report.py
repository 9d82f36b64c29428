"""`edgetl train` from the command line writes the run folder and its report.html."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from edgetl.cli import app
from tests.support.runs import make_image_dataset, tiny_weights


def test_train_cli_writes_run_folder_and_report(tmp_path):
    data = make_image_dataset(tmp_path / "data", n=12, size=64)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", str(data), "--out", str(run), "--size", "96", "--weights", tiny_weights(),
        "--epochs", "3", "--fine-tune-epochs", "0", "--no-augment", "--patience", "0",
    ])
    assert result.exit_code == 0, result.output
    assert "val_accuracy" in result.output and f"report: {run / 'report.html'}" in result.output
    for name in ("model.keras", "labels.txt", "config.json", "split.csv", "history.csv", "metrics.json",
                 "curves.png", "confusion_matrix.png", "report.html"):
        assert (run / name).stat().st_size > 0, name
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    html = (run / "report.html").read_text()
    assert "<html" in html.lower() and "data:image/png;base64," in html
