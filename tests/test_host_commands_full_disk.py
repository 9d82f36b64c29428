"""A full disk in the middle of a host command: one clear line, the previous result intact, no half result
that a later command would take for a whole one.

The disk fills for real (no mocks): the command runs in a child process whose file-size limit is below what it
has to write (RLIMIT_FSIZE, SIGXFSZ ignored), so a write fails with EFBIG, as ENOSPC would on a full disk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.runs import make_image_dataset

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import resource, signal, sys
limit = int(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = ["edgetl"] + sys.argv[2:]
from edgetl.cli import main
main()
"""


def run_limited(limit: int, *args) -> subprocess.CompletedProcess:
    """`edgetl ARGS` in a child that cannot write a file past `limit` bytes."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", _CHILD, str(limit), *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env=env)


def assert_clear_disk_full_error(r: subprocess.CompletedProcess, where: Path) -> None:
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr[-3000:]
    line = errors[0].lower()
    assert "disk" in line and ("full" in line or "space" in line), errors[0]
    assert str(where) in errors[0], f"the message should say where ({where}): {errors[0]}"


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder` (hidden leftovers included)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "partial" in p.name or p.name.endswith(".tmp"))


@pytest.fixture
def export_run_copy(tiny_export_run, tmp_path) -> Path:
    """A private copy of the tiny run (its split.csv points at the shared fixture's images)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_export_run, run, ignore=shutil.ignore_patterns("export", "openset", "report.html"))
    return run


def test_export_on_a_full_disk_keeps_the_previous_export(export_run_copy):
    from edgetl.bundle import read_manifest, stale_files
    from edgetl.export import export_run

    run = export_run_copy
    export_run(run, quant="float32")
    before = snapshot(run / "export")

    # The converter's scratch SavedModel (tens of kB) no longer fits: conversion fails on the full disk.
    r = run_limited(12_000, "export", run, "--quant", "float32", "--overwrite")
    assert r.returncode != 0
    assert snapshot(run / "export") == before, "the previous export was deleted or changed"
    assert stale_files(run / "export", read_manifest(run / "export")) == []
    assert leftovers(run) == []
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and ("no space" in err[0].lower() or "disk" in err[0].lower()), r.stderr[-3000:]
    assert "cannot be quantized" not in err[0]


def test_calibrate_build_on_a_full_disk(tmp_path):
    from edgetl.calibrate import build, calibration_files
    from edgetl.errors import EdgetlError

    data = make_image_dataset(tmp_path / "data", n=6, size=96)
    sizes = sorted(p.stat().st_size for p in data.rglob("*.png"))
    limit = sizes[len(sizes) // 2]  # about half of the copies fit: a half-written set

    fresh = tmp_path / "calibration" / "fresh"
    r = run_limited(limit, "calibrate", "build", data, "--out", fresh, "--size", "18")
    with pytest.raises(EdgetlError):  # a half-built set must not pass for a (manifest-less) image folder
        calibration_files(fresh)
    assert_clear_disk_full_error(r, fresh)

    old = tmp_path / "calibration" / "old"
    build(data, old, size=9, seed=1)
    before = snapshot(old)
    r = run_limited(limit, "calibrate", "build", data, "--out", old, "--size", "18", "--overwrite")
    assert snapshot(old) == before, "the previous calibration set was deleted or changed"
    assert leftovers(tmp_path / "calibration") == []
    assert_clear_disk_full_error(r, old)


def test_data_split_on_a_full_disk_keeps_the_previous_manifest(tmp_path):
    from edgetl.data import split_manifest

    data = make_image_dataset(tmp_path / "data", n=15, size=32)
    manifest = tmp_path / "manifest.csv"
    split_manifest(data, manifest, seed=0)
    before = manifest.read_bytes()
    r = run_limited(len(before) // 2, "data", "split", data, "--out", manifest, "--seed", "1")
    assert manifest.read_bytes() == before, "the previous manifest was truncated"
    assert leftovers(tmp_path) == []
    assert_clear_disk_full_error(r, manifest)


@pytest.fixture
def signed_bundle(tmp_path):
    """A real signed bundle folder: many files, so that its manifest is tens of kB."""
    from edgetl.bundle import generate_keys, sign_bundle, write_manifest

    b = tmp_path / "bundle"
    b.mkdir()
    (b / "model.tflite").write_bytes(np.random.default_rng(0).bytes(40_000))
    (b / "labels.txt").write_text("a\nb\n")
    for i in range(200):
        (b / f"extra_{i:03d}.json").write_text(f'{{"i": {i}}}\n')
    write_manifest(b, {"model_version": "1"})
    key, pub = generate_keys(tmp_path / "k")
    sign_bundle(b, key)
    return b, key, pub


def test_bundle_sign_refresh_on_a_full_disk_keeps_the_signed_bundle(signed_bundle):
    from edgetl.bundle import verify

    b, key, pub = signed_bundle
    (b / "labels.txt").write_text("a\nb\nc\n")  # an edit that needs --refresh
    (b / "labels.txt").write_text("a\nb\n")  # ...undone: the files match the signed manifest again
    before = snapshot(b)
    r = run_limited((b / "manifest.json").stat().st_size // 2, "bundle", "sign", b, "--key", key, "--refresh")
    assert snapshot(b) == before, "the signed manifest was truncated or the signature dropped"
    verify(b, [pub])
    assert_clear_disk_full_error(r, b)


def test_bundle_pack_on_a_full_disk_keeps_the_previous_archive(signed_bundle, tmp_path):
    from edgetl.bundle import pack_bundle, verify

    b, _, pub = signed_bundle
    archive = tmp_path / "out" / "b.tar.gz"
    pack_bundle(b, archive)
    before = archive.read_bytes()
    r = run_limited(len(before) // 2, "bundle", "pack", b, "--out", archive)
    assert archive.read_bytes() == before
    assert leftovers(archive.parent) == []
    verify(archive, [pub])
    assert_clear_disk_full_error(r, archive)


def test_openset_fit_on_a_full_disk_keeps_the_previous_detector(export_run_copy):
    from edgetl.openset import fit_run, load_openset

    run = export_run_copy
    fit_run(run, scorer="mahalanobis")
    before = snapshot(run / "openset")
    # the knn arrays (~60 kB) no longer fit; the plot (~45 kB) still does
    r = run_limited(50_000, "openset", "fit", run, "--scorer", "knn")
    after = snapshot(run / "openset")
    for name in ("openset.json", "openset.npz"):
        assert after[name] == before[name], f"the previous detector's {name} was overwritten"
    doc, _ = load_openset(run / "openset")
    assert doc["scorer"] == "mahalanobis"
    assert leftovers(run / "openset") == []
    assert_clear_disk_full_error(r, run / "openset")


def test_train_overwrite_on_a_full_disk_keeps_the_previous_run(export_run_copy, tmp_path):
    from edgetl.run import Run

    data = make_image_dataset(tmp_path / "data", ("a", "b"), n=6, size=32)
    fast = ["--size", "32", "--weights", "none", "--epochs", "1", "--fine-tune-epochs", "0", "--no-augment",
            "--batch-size", "8", "--no-report"]
    # the previous run (with its export) stays whole; the new model.keras (MobileNetV2, MBs) does not fit
    run = export_run_copy
    (run / "export").mkdir()
    (run / "export" / "model.tflite").write_bytes(b"previous bundle")
    before = snapshot(run)
    r = run_limited(300_000, "train", data, "--out", run, "--overwrite", *fast)
    assert snapshot(run) == before, "the previous run was deleted or changed"
    assert leftovers(run) == [] and leftovers(tmp_path) == []
    assert_clear_disk_full_error(r, run)
    assert Run(run).labels == ["red", "green", "blue"]

    fresh = tmp_path / "fresh"
    r = run_limited(300_000, "train", data, "--out", fresh, *fast)
    assert_clear_disk_full_error(r, fresh)
    assert not fresh.exists() or not any(fresh.iterdir())


def test_report_on_a_full_disk_keeps_the_previous_report(export_run_copy):
    from edgetl.report import write_report

    run = export_run_copy
    report = write_report(run, misclassified=0)
    before = report.read_bytes()
    r = run_limited(len(before) // 2, "report", run, "--misclassified", "0")
    assert report.read_bytes() == before
    assert leftovers(run) == [], "a temporary report file was left behind"
    assert_clear_disk_full_error(r, report)
