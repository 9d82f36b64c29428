"""Short real training runs on the shared datasets: accuracy well above chance (full runs: bench_train.py)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgetl.cli import app
from edgetl.train import train

pytestmark = pytest.mark.slow
SHORT = dict(backbone="mobilenet_v2", alpha=0.35, size=96, epochs=25, fine_tune_epochs=0, augment=False,
             patience=5, seed=0)


def test_find_the_ship_csv_with_empty_labels_set_a_to_set_b(shared_data, tmp_path):
    root = shared_data / "datasets" / "find-the-ship"
    out = tmp_path / "ship"
    res = CliRunner().invoke(app, [
        "train", "--csv", str(root / "set-A_train" / "image_labels.csv"), "--path-column", "Filename",
        "--label-column", "Ship", "--missing-label", "Empty", "--val", str(root / "set-B_test" / "image_labels.csv"),
        "--out", str(out), "--weights", str(shared_data / "weights" / "mobilenet_v2_0.35_224_no_top.h5"),
        "--size", "96", "--epochs", "25", "--fine-tune-epochs", "0", "--no-augment"])
    assert res.exit_code == 0, res.output
    labels = (out / "labels.txt").read_text().split()
    assert labels == sorted(["Empty", "Cruiser-1", "Cruiser-2", "Cruiser-3", "Fishing-1", "Fishing-2", "Freighter"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val"]["n"] == 400
    assert metrics["val_accuracy"] > 0.4  # 7 classes: chance 0.14, majority class (Empty) 0.19 at 96 px
    # evaluate on set-B through the CSV path gives the same number (same metric code, same images)
    res = CliRunner().invoke(app, ["evaluate", str(out), "--data", str(root / "set-B_test" / "image_labels.csv"),
                                   "--path-column", "Filename", "--label-column", "Ship", "--missing-label", "Empty",
                                   "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{"):])
    assert report["accuracy"] == pytest.approx(metrics["val_accuracy"])


def test_hymenoptera_split_folders(shared_data, tmp_path):
    result = train(shared_data / "datasets" / "hymenoptera", tmp_path / "hym",
                   weights=str(shared_data / "weights" / "mobilenet_v2_0.35_224_no_top.h5"), **SHORT)
    assert result.run.config["counts"] == {"train": 245, "val": 153}
    assert result.val_accuracy > 0.75  # two balanced classes: chance 0.5
