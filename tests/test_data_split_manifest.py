"""`edgetl data split`: a stratified, seeded manifest (no copies) that training reads back."""

from __future__ import annotations

import csv
from collections import Counter

from typer.testing import CliRunner

from edgetl.cli import app
from edgetl.data import load_dataset, split_manifest, train_val_test
from tests.support.runs import make_image_dataset


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_manifest_is_stratified_seeded_and_points_at_the_originals(tmp_path):
    data = make_image_dataset(tmp_path / "d", ("a", "b", "c"), n=20, size=32)
    counts = split_manifest(data, tmp_path / "m.csv", val=0.2, test=0.1, seed=4)
    assert counts == {"train": {"a": 14, "b": 14, "c": 14}, "val": {"a": 4, "b": 4, "c": 4},
                      "test": {"a": 2, "b": 2, "c": 2}}
    rows = _rows(tmp_path / "m.csv")
    assert list(rows[0]) == ["path", "label", "split"]
    assert all(r["path"].startswith(str(data)) for r in rows)  # nothing copied
    split_manifest(data, tmp_path / "again.csv", val=0.2, test=0.1, seed=4)
    assert _rows(tmp_path / "again.csv") == rows


def test_manifest_split_column_is_honoured_when_training_reads_it(tmp_path):
    data = make_image_dataset(tmp_path / "d", ("a", "b"), n=10, size=32)
    split_manifest(data, tmp_path / "m.csv", val=0.3, test=0.0, seed=0)
    splits = train_val_test(load_dataset(tmp_path / "m.csv"), 0.5, seed=99)  # val_split ignored: manifest wins
    assert Counter(s.label for s in splits["val"]) == {"a": 3, "b": 3}
    assert "test" not in splits


def test_cli_split(tmp_path):
    data = make_image_dataset(tmp_path / "d", ("a", "b"), n=10, size=32)
    res = CliRunner().invoke(app, ["data", "split", str(data), "--out", str(tmp_path / "m.csv"), "--val", "0.2",
                                   "--test", "0.2"])
    assert res.exit_code == 0, res.output
    assert "train 12, val 4, test 4" in res.output
    res = CliRunner().invoke(app, ["data", "split", str(data), "--out", str(tmp_path / "m.csv"), "--val", "0.7",
                                   "--test", "0.5"])
    assert res.exit_code == 2 and "--val and --test" in res.output
