"""Dataset layouts (class folders, split folders, CSV manifests) and the stratified seeded split."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from edgetl.data import Sample, load_dataset, stratified_split, train_val_test, validate_classes
from edgetl.errors import EdgetlError
from tests.support.runs import make_image_dataset


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_class_folders_are_one_unsplit_pool(tmp_path):
    make_image_dataset(tmp_path, ("a", "b"), n=5, size=32)
    ds = load_dataset(tmp_path)
    assert list(ds.splits) == ["all"]
    assert ds.classes == ["a", "b"]
    assert Counter(s.label for s in ds.splits["all"]) == {"a": 5, "b": 5}
    assert all(s.path.is_absolute() for s in ds.splits["all"])


def test_split_folders_keep_their_splits(tmp_path):
    make_image_dataset(tmp_path / "train", ("a", "b"), n=4, size=32)
    make_image_dataset(tmp_path / "val", ("a", "b"), n=2, size=32, seed=1)
    make_image_dataset(tmp_path / "test", ("a", "b"), n=1, size=32, seed=2)
    ds = load_dataset(tmp_path)
    assert sorted(ds.splits) == ["test", "train", "val"]
    splits = train_val_test(ds, 0.2, seed=0)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [8, 4, 2]


def test_csv_resolves_relative_paths_and_names_empty_labels(tmp_path):
    make_image_dataset(tmp_path / "imgs", ("x",), n=4, size=32)
    files = sorted((tmp_path / "imgs" / "x").iterdir())
    rows = [{"Filename": f"imgs/x/{f.name}", "Ship": "Cruiser" if i % 2 else ""} for i, f in enumerate(files)]
    manifest = _write_csv(tmp_path / "labels.csv", rows)
    with pytest.raises(EdgetlError, match="--missing-label"):
        load_dataset(manifest, path_column="Filename", label_column="Ship")
    ds = load_dataset(manifest, path_column="Filename", label_column="Ship", missing_label="Empty")
    assert Counter(s.label for s in ds.all_samples()) == {"Cruiser": 2, "Empty": 2}
    assert all(s.path.is_file() and s.path.is_absolute() for s in ds.all_samples())


def test_csv_rows_pointing_at_missing_files_are_an_error_naming_them(tmp_path):
    make_image_dataset(tmp_path / "imgs", ("x",), n=1, size=32)
    manifest = _write_csv(tmp_path / "m.csv", [{"path": "imgs/x/x_000.png", "label": "x"},
                                               {"path": "imgs/x/gone.png", "label": "x"}])
    with pytest.raises(EdgetlError, match=r"missing files.*gone\.png"):
        load_dataset(manifest)


def test_csv_with_unknown_column_says_which_columns_exist(tmp_path):
    manifest = _write_csv(tmp_path / "m.csv", [{"file": "a.png", "cls": "x"}])
    with pytest.raises(EdgetlError, match="columns: file, cls"):
        load_dataset(manifest)


def test_empty_class_folder_is_an_error(tmp_path):
    make_image_dataset(tmp_path, ("a",), n=3, size=32)
    (tmp_path / "b").mkdir()
    with pytest.raises(EdgetlError, match=r"class folder .*b has no images"):
        load_dataset(tmp_path)


def test_single_class_cannot_be_trained(tmp_path):
    make_image_dataset(tmp_path, ("only",), n=6, size=32)
    splits = train_val_test(load_dataset(tmp_path), 0.2, seed=0)
    with pytest.raises(EdgetlError, match="at least 2 classes"):
        validate_classes(splits)


def test_missing_dataset_and_plain_file_are_errors(tmp_path):
    with pytest.raises(EdgetlError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(EdgetlError, match="csv"):
        load_dataset(tmp_path / "x.txt")


def _samples(counts: dict[str, int]) -> list[Sample]:
    return [Sample(Path(f"/d/{c}/{i}.png"), c) for c, n in counts.items() for i in range(n)]


def test_stratified_split_keeps_class_proportions_and_every_class():
    samples = _samples({"big": 100, "mid": 30, "tiny": 3})
    parts = stratified_split(samples, {"train": 0.7, "val": 0.2, "test": 0.1}, seed=3)
    assert sum(len(v) for v in parts.values()) == len(samples)
    assert len({s.path for v in parts.values() for s in v}) == len(samples)  # disjoint
    val = Counter(s.label for s in parts["val"])
    assert val["big"] == 20 and val["mid"] == 6
    for name in parts:  # even a 3-image class appears in every split
        assert Counter(s.label for s in parts[name])["tiny"] >= 1


def test_stratified_split_is_seeded():
    samples = _samples({"a": 40, "b": 40})
    one = stratified_split(samples, {"train": 0.8, "val": 0.2}, seed=1)
    again = stratified_split(list(reversed(samples)), {"train": 0.8, "val": 0.2}, seed=1)
    other = stratified_split(samples, {"train": 0.8, "val": 0.2}, seed=2)
    assert one == again
    assert {s.path for s in one["val"]} != {s.path for s in other["val"]}


def test_val_split_must_be_a_fraction(tmp_path):
    make_image_dataset(tmp_path, ("a", "b"), n=4, size=32)
    with pytest.raises(EdgetlError, match="--val-split"):
        train_val_test(load_dataset(tmp_path), 1.5, seed=0)


def _csv_dataset(tmp_path: Path) -> list[str]:
    make_image_dataset(tmp_path / "imgs", ("a", "b"), n=5, size=32)
    return [f"imgs/{c}/{c}_{i:03d}.png" for c in "ab" for i in range(5)]


def test_repeated_csv_rows_do_not_put_one_image_in_two_splits(tmp_path):
    paths = _csv_dataset(tmp_path)
    rows = [{"path": p, "label": p.split("/")[1]} for p in paths]
    manifest = _write_csv(tmp_path / "m.csv", rows + [rows[0]] * 4)  # a row pasted five times
    ds = load_dataset(manifest)
    assert len(ds.all_samples()) == 10
    for seed in range(5):
        splits = train_val_test(ds, 0.4, seed=seed)
        assert not {s.path for s in splits["train"]} & {s.path for s in splits["val"]}
    conflicting = _write_csv(tmp_path / "c.csv", rows + [{"path": paths[0], "label": "b"}])
    with pytest.raises(EdgetlError, match=r"line 12.*imgs/a/a_000\.png.*line 2"):
        load_dataset(conflicting)


def test_csv_with_windows_backslash_paths(tmp_path):
    paths = _csv_dataset(tmp_path)
    manifest = _write_csv(tmp_path / "m.csv", [{"path": p.replace("/", "\\"), "label": p.split("/")[1]}
                                               for p in paths])
    ds = load_dataset(manifest)
    assert sorted(s.path for s in ds.all_samples()) == sorted((tmp_path / p).resolve() for p in paths)


def test_csv_with_semicolons_as_excel_writes_in_many_locales(tmp_path):
    paths = _csv_dataset(tmp_path)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path;label\n" + "".join(f"{p};{p.split('/')[1]}\n" for p in paths), encoding="utf-8-sig")
    ds = load_dataset(manifest)
    assert Counter(s.label for s in ds.all_samples()) == {"a": 5, "b": 5}


def test_class_names_differing_only_in_case_are_an_error(tmp_path):
    make_image_dataset(tmp_path, ("Cat", "cat", "dog"), n=2, size=32)
    with pytest.raises(EdgetlError, match="Cat.*cat.*case"):
        load_dataset(tmp_path)


def test_csv_saved_in_a_windows_code_page_is_a_clear_error(tmp_path):
    make_image_dataset(tmp_path / "café", ("a",), n=1, size=32)
    manifest = tmp_path / "m.csv"
    manifest.write_bytes("path,label\ncafé/a/a_000.png,a\n".encode("cp1252"))  # Excel's plain "CSV"
    with pytest.raises(EdgetlError, match="not UTF-8"):
        load_dataset(manifest)


def test_images_in_a_symlinked_subfolder_of_a_class_folder_count(tmp_path):
    make_image_dataset(tmp_path / "elsewhere", ("more_a",), n=3, size=32)
    make_image_dataset(tmp_path / "d", ("a", "b"), n=2, size=32, seed=1)
    (tmp_path / "d" / "a" / "batch2").symlink_to(tmp_path / "elsewhere" / "more_a", target_is_directory=True)
    (tmp_path / "d" / "b" / "loop").symlink_to(tmp_path / "d" / "b", target_is_directory=True)  # must not hang
    ds = load_dataset(tmp_path / "d")
    assert Counter(s.label for s in ds.all_samples()) == {"a": 5, "b": 2}


def test_a_valid_folder_beside_train_is_the_validation_split(tmp_path):
    make_image_dataset(tmp_path / "train", ("a", "b"), n=4, size=32)
    make_image_dataset(tmp_path / "valid", ("a", "b"), n=2, size=32, seed=1)  # Roboflow's export layout
    splits = train_val_test(load_dataset(tmp_path), 0.2, seed=0)
    assert len(splits["train"]) == 8 and len(splits["val"]) == 4
