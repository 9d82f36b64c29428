"""`edgetl calibrate build` picks a stratified, de-duplicated set, optionally with camera frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgetl.calibrate import build, calibration_files, stratified_quota
from edgetl.cli import app
from edgetl.errors import EdgetlError


def _dataset(root, counts: dict[str, int], dup_of_first: int = 0):
    rng = np.random.default_rng(0)
    for label, n in counts.items():
        d = root / label
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(d / f"{i}.png")
        first = np.asarray(Image.open(d / "0.png"))
        for j in range(dup_of_first):  # re-saved near-copies (JPEG) of the first image
            Image.fromarray(first).save(d / f"dup{j}.jpg", quality=90)
    return root


def test_quota_is_stratified_and_uses_leftovers():
    assert stratified_quota({"a": 100, "b": 100, "c": 100}, 30) == {"a": 10, "b": 10, "c": 10}
    assert stratified_quota({"a": 3, "b": 100}, 20) == {"a": 3, "b": 17}
    assert sum(stratified_quota({"a": 2, "b": 2}, 10).values()) == 4


def test_build_is_stratified_and_deduplicated(tmp_path):
    data = _dataset(tmp_path / "data", {"ants": 30, "bees": 10}, dup_of_first=5)
    m = build(data, tmp_path / "calib", size=20)
    assert m["per_label"] == {"ants": 10, "bees": 10} and m["count"] == 20
    files = calibration_files(tmp_path / "calib")
    assert len(files) == 20 and all(f.is_file() for f in files)
    # the 5 re-saved copies of one image never both make it in
    copies = [f for f in files if f.parent.name == "bees" and f.name.split("_", 1)[1].startswith(("0.", "dup"))]
    assert len(copies) <= 1


def test_all_near_duplicates_are_skipped(tmp_path):
    d = tmp_path / "data" / "only"
    d.mkdir(parents=True)
    img = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for i in range(8):
        Image.fromarray(img).save(d / f"{i}.jpg", quality=95 - i)
    m = build(tmp_path / "data", tmp_path / "calib", size=8)
    assert m["count"] == 1 and m["duplicates_skipped"] == 7


def test_camera_frames_are_mixed_in_from_images_and_video(tmp_path, shared_data):
    data = _dataset(tmp_path / "data", {"a": 20, "b": 20})
    extra = tmp_path / "camera"
    extra.mkdir()
    (extra / "clip.avi").symlink_to(shared_data / "videos" / "vtest.avi")
    m = build(data, tmp_path / "calib", size=20, extra=extra, extra_fraction=0.25)
    cam = [e for e in m["files"] if e["camera"]]
    assert len(cam) == 5 and all(e["frame"] is not None for e in cam)
    assert m["per_label"]["a"] + m["per_label"]["b"] == 15
    assert all((tmp_path / "calib" / e["file"]).is_file() for e in m["files"])


def test_cli_build_and_bad_input(tmp_path):
    data = _dataset(tmp_path / "data", {"x": 6, "y": 6})
    r = CliRunner().invoke(app, ["calibrate", "build", str(data), "--out", str(tmp_path / "c"), "--size", "6"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["count"] == 6
    r = CliRunner().invoke(app, ["calibrate", "build", str(data), "--out", str(tmp_path / "c"), "--size", "6"])
    assert r.exit_code == 2 and "--overwrite" in r.stderr
    with pytest.raises(EdgetlError, match="not a folder"):
        build(data, tmp_path / "d", size=4, extra=tmp_path / "nope")


@pytest.mark.parametrize("where", ["data", "parent", "inside"])
def test_out_that_would_destroy_or_pollute_the_dataset_is_refused(tmp_path, where):
    data = _dataset(tmp_path / "ds" / "data", {"x": 4, "y": 4})
    out = {"data": data, "parent": data.parent, "inside": data / "calib"}[where]
    with pytest.raises(EdgetlError, match="--out"):
        build(data, out, size=4, overwrite=True)
    # the dataset is intact and did not gain a `calib` class folder
    assert sorted(p.name for p in data.iterdir()) == ["x", "y"] and len(list((data / "x").iterdir())) == 4


def test_camera_frames_that_duplicate_dataset_images_are_not_picked_twice(tmp_path):
    data = _dataset(tmp_path / "data", {"a": 6, "b": 6})
    extra = tmp_path / "camera"
    extra.mkdir()
    for p in sorted(data.rglob("[0-2].png")):  # the camera folder holds re-saved copies of 6 dataset images
        Image.open(p).save(extra / f"{p.parent.name}_{p.stem}.jpg", quality=95)
    m = build(data, tmp_path / "calib", size=12, extra=extra, extra_fraction=0.5)
    files = [tmp_path / "calib" / e["file"] for e in m["files"]]
    from edgetl.calibrate import dhash, hamming
    from edgetl.data import load_image

    hashes = [dhash(load_image(f, 64)) for f in files]
    close = [(i, j) for i in range(len(hashes)) for j in range(i) if hamming(hashes[i], hashes[j]) <= 4]
    assert close == [] and m["count"] == 12
