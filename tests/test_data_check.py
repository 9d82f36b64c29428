"""`edgetl data check`: counts, sizes, detail, corrupt files, duplicates/leakage, imbalance; table and --json."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgetl.cli import app
from edgetl.data import check_dataset, detail_ratio, hamming_matrix, perceptual_hash
from tests.support.runs import draw_shape, make_image_dataset
from tests.support.shared import shared_data_or_none


@pytest.fixture
def messy(tmp_path):
    """Split folders with a corrupt file, a truncated JPEG, a train/val leak and a near duplicate."""
    root = tmp_path / "messy"
    make_image_dataset(root / "train", ("circle", "square"), n=12, size=64)
    make_image_dataset(root / "train", ("triangle",), n=3, size=64, seed=5)  # tiny class
    make_image_dataset(root / "val", ("circle", "square", "triangle"), n=3, size=64, seed=9)
    (root / "train" / "circle" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    jpg = root / "train" / "square" / "truncated.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)).save(jpg)
    jpg.write_bytes(jpg.read_bytes()[:300])
    leaked = root / "train" / "square" / "square_000.png"
    shutil.copy(leaked, root / "val" / "square" / "leaked_copy.png")  # exact duplicate across splits
    # near duplicate: the same picture, resized and recompressed as JPEG, in the same split
    Image.open(root / "train" / "circle" / "circle_001.png").resize((80, 80)).save(
        root / "train" / "circle" / "circle_001_resized.jpg", quality=85)
    return root


def test_check_reports_everything(messy):
    r = check_dataset(messy, tiny_class=7)
    assert r["counts"]["train"] == {"circle": 14, "square": 13, "triangle": 3}
    assert r["counts"]["val"] == {"circle": 3, "square": 4, "triangle": 3}
    assert r["total"] == 40 and r["readable"] == 38
    assert sorted(b["path"].rsplit("/", 1)[1] for b in r["unreadable"]) == ["corrupt.png", "truncated.jpg"]
    exact = [d for d in r["duplicates"] if d["kind"] == "exact"]
    assert len(exact) == 1 and exact[0]["cross_split"] and exact[0]["splits"] == ["train", "val"]
    near = [d for d in r["duplicates"] if d["kind"] == "near"]
    assert any(any(p.endswith("circle_001_resized.jpg") for p in d["paths"]) for d in near)
    text = " ".join(r["warnings"])
    assert "leakage" in text and "unreadable" in text and "'triangle' has only 6" in text
    assert r["sizes"]["width"]["min"] == 64 and r["sizes"]["width"]["max"] == 80


def test_imbalance_warning(tmp_path):
    make_image_dataset(tmp_path, ("many",), n=30, size=32)
    make_image_dataset(tmp_path, ("few",), n=4, size=32, seed=3)
    r = check_dataset(tmp_path, tiny_class=2)
    assert any("imbalance" in w for w in r["warnings"])


def test_clean_dataset_has_no_warnings(tmp_path):
    make_image_dataset(tmp_path, ("circle", "square"), n=10, size=64)
    r = check_dataset(tmp_path, tiny_class=5)
    assert r["warnings"] == [] and r["duplicates"] == []


def test_perceptual_hash_tolerates_resizing_but_separates_different_pictures():
    rng = np.random.default_rng(0)
    a = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    a = np.asarray(Image.fromarray(a).resize((16, 16)).resize((128, 128)))  # smooth, structured picture
    b = np.asarray(Image.fromarray(a).resize((97, 97)))
    c = np.ascontiguousarray(a[::-1])
    d = hamming_matrix([perceptual_hash(a), perceptual_hash(b), perceptual_hash(c)])
    assert d[0, 1] <= 4 and d[0, 2] > 10 and d[0, 0] == 0


def test_cli_prints_table_and_json(messy):
    runner = CliRunner()
    res = runner.invoke(app, ["data", "check", str(messy)])
    assert res.exit_code == 0, res.output
    assert "circle" in res.output and "LEAK" in res.output
    res = runner.invoke(app, ["data", "check", str(messy), "--json"])
    assert res.exit_code == 0
    payload = json.loads(res.stdout[res.stdout.index("{"):])
    assert payload["readable"] == 38


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    res = CliRunner().invoke(app, ["data", "check", str(tmp_path / "missing")])
    assert res.exit_code == 2
    assert "does not exist" in res.output and len(res.output.strip().splitlines()) == 1


def test_csv_rows_with_missing_files_are_reported_not_fatal(tmp_path):
    make_image_dataset(tmp_path / "imgs", ("a", "b"), n=3, size=32)
    manifest = tmp_path / "m.csv"
    lines = ["path,label"] + [f"imgs/{p.parent.name}/{p.name},{p.parent.name}" for p in
                              sorted((tmp_path / "imgs").rglob("*.png"))] + ["imgs/a/gone.png,a"]
    manifest.write_text("\n".join(lines) + "\n")
    r = check_dataset(manifest)
    assert r["total"] == 7 and r["readable"] == 6
    assert r["unreadable"][0]["path"].endswith("gone.png")


def _textured(rng: np.random.Generator, size: int) -> np.ndarray:
    """A sharp picture: pixel-level colour noise, every channel."""
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _enlarged_thumbnail(rng: np.random.Generator, thumb: int, size: int) -> Image.Image:
    """A `thumb` px photo-like texture (detail down to about a pixel) enlarged to `size` px."""
    import cv2

    small = cv2.GaussianBlur(_textured(rng, thumb), (0, 0), 0.7)
    return Image.fromarray(small).resize((size, size), Image.BICUBIC)


def test_detail_ratio_tells_enlarged_thumbnails_from_sharp_pictures():
    rng = np.random.default_rng(0)
    sharp = _textured(rng, 128)
    assert detail_ratio(sharp) == 1.0
    assert detail_ratio(np.asarray(_enlarged_thumbnail(rng, 32, 128))) == 0.25  # it holds 32 px of detail
    # a hard-edged drawing on a smooth background is sharp, though most of it is flat
    assert detail_ratio(draw_shape("circle", 96, rng)) == 1.0


def test_check_warns_when_most_images_are_enlarged_thumbnails(tmp_path):
    rng = np.random.default_rng(1)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(6):
            _enlarged_thumbnail(rng, 24, 96).save(tmp_path / label / f"{i}.jpg", quality=95)
    r = check_dataset(tmp_path, tiny_class=2)
    assert r["sizes"]["detail"]["upscaled"] == 12 and r["sizes"]["detail"]["median_px"] == 24
    assert any("px of detail" in w for w in r["warnings"])
    res = CliRunner().invoke(app, ["data", "check", str(tmp_path)])
    assert res.exit_code == 0 and "detail: about" in res.output


def test_flowers5_thumbnails_are_recognised_as_such():
    root = shared_data_or_none("datasets", "flowers5")
    if root is None:
        pytest.skip("shared data absent: flowers5 (set EDGETL_SHARED_DATA)")
    r = check_dataset(root)
    assert r["sizes"]["detail"]["median_px"] == 32  # 128 px files enlarged from ~32 px thumbnails
    assert any("px of detail" in w for w in r["warnings"])


def _png_claiming_size(path, width: int, height: int) -> None:
    """A valid 4x4 PNG whose header is rewritten to claim width x height (what Image.open reads)."""
    import struct
    import zlib

    Image.new("L", (4, 4)).save(path)
    b = bytearray(path.read_bytes())
    b[16:24] = struct.pack(">II", width, height)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    path.write_bytes(bytes(b))


def test_files_with_broken_or_huge_headers_are_reported_not_a_crash(tmp_path):
    make_image_dataset(tmp_path, ("a", "b"), n=3, size=32)
    _png_claiming_size(tmp_path / "a" / "huge.png", 30000, 30000)  # 900 MP: PIL's bomb guard
    png = (tmp_path / "b" / "b_000.png").read_bytes()
    (tmp_path / "b" / "bad_header.png").write_bytes(png[:20])  # PIL raises ValueError: truncated IHDR
    r = check_dataset(tmp_path, tiny_class=1)
    assert r["readable"] == 6
    errors = {b["path"].rsplit("/", 1)[1]: b["error"] for b in r["unreadable"]}
    assert sorted(errors) == ["bad_header.png", "huge.png"] and "too large" in errors["huge.png"]
    res = CliRunner().invoke(app, ["data", "check", str(tmp_path)])
    assert res.exit_code == 0 and "unreadable" in res.output


def test_near_pairs_in_blocks_match_the_full_distance_matrix():
    from edgetl.data import near_pairs

    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=40, dtype=np.uint64)
    flips = rng.integers(0, 64, size=(120, 3))
    # near copies: each hash with up to 3 bits flipped, so there are many pairs within 6 bits
    hashes = [int(base[i % 40]) ^ int(sum(1 << int(b) for b in set(f[: i % 4]))) for i, f in enumerate(flips)]
    full = hamming_matrix(hashes)
    ii, jj = np.nonzero(np.triu(full <= 6, k=1))
    expected = [(a, b, int(full[a, b])) for a, b in zip(ii.tolist(), jj.tolist(), strict=True)]
    assert len(expected) > 100
    for block in (1, 7 * 120, 10_000, 4_000_000):  # a row at a time, 7 rows, uneven blocks, one block
        assert sorted(near_pairs(hashes, 6, block_elements=block)) == expected
