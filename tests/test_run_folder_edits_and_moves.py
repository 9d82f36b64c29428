"""A run folder that was hand-edited (Windows labels.txt, broken config.json) or moved to another machine
(split.csv's absolute image paths no longer exist) gives clear errors, not tracebacks."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from edgetl.errors import EdgetlError
from edgetl.evaluate import evaluate
from edgetl.run import Run


def _copy(run, dest):
    shutil.copytree(run, dest)
    return dest


def test_labels_saved_by_windows_notepad_with_bom_and_crlf_read_the_same(tiny_export_run, tmp_path):
    run = _copy(tiny_export_run, tmp_path / "run")
    labels = Run(run).labels
    (run / "labels.txt").write_bytes("\r\n".join(labels).encode("utf-8-sig") + b"\r\n\r\n")
    assert Run(run).labels == labels


@pytest.mark.parametrize("text", ['{"size": 32', "[]", "{}"])
def test_broken_or_incomplete_config_is_a_clear_error(tiny_export_run, tmp_path, text):
    run = _copy(tiny_export_run, tmp_path / "run")
    (run / "config.json").write_text(text)
    with pytest.raises(EdgetlError, match="config.json"):
        evaluate(run)


def test_evaluate_on_a_moved_run_says_the_images_moved(tiny_export_run, tmp_path):
    run = _copy(tiny_export_run, tmp_path / "run")
    rows = list(csv.DictReader((run / "split.csv").open(newline="")))
    with (run / "split.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "split"])
        w.writeheader()
        w.writerows({**r, "path": str(tmp_path / "elsewhere" / r["label"] / "x.png")} for r in rows)
    with pytest.raises(EdgetlError, match="--data"):
        evaluate(run)
    assert Run(run).labels and json.loads((run / "config.json").read_text())["size"]  # the rest still reads


def test_a_bundle_given_as_run_is_named_as_a_bundle(tiny_export_run, tmp_path):
    bundle = tmp_path / "export"
    bundle.mkdir()
    shutil.copy(tiny_export_run / "labels.txt", bundle)
    (bundle / "manifest.json").write_text("{}")
    with pytest.raises(EdgetlError, match="bundle, not a run folder"):
        Run(bundle)
