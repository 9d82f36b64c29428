"""The shared image loader: every common pixel format becomes uint8 RGB; broken files raise clearly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgetl.data import load_image, load_images
from edgetl.errors import EdgetlError


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("mode,ext", [("L", ".png"), ("CMYK", ".jpg"), ("RGBA", ".png"), ("LA", ".png"),
                                      ("P", ".png"), ("I;16", ".png"), ("RGB", ".bmp"), ("RGB", ".webp")])
def test_any_mode_loads_as_rgb_uint8(tmp_path, mode, ext):
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, 30:] = (200, 100, 50)
    img = Image.fromarray(rgb).convert(mode) if mode != "I;16" else Image.fromarray(
        rgb[..., 0].astype(np.uint16) * 257)
    out = load_image(_save(img, tmp_path / f"img{ext}"), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out[:, 24:].mean() > out[:, :8].mean() + 40  # content survives the conversion


def test_transparent_pixels_become_black_not_garbage(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 255  # white but fully transparent
    out = load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "t.png"), 16)
    assert out.max() == 0


def test_resize_is_area_interpolated_without_crop(tmp_path):
    wide = np.zeros((100, 400, 3), np.uint8)
    wide[:, :100] = 255  # left quarter white
    out = load_image(_save(Image.fromarray(wide), tmp_path / "w.png"), 40)
    assert out[:, :10].min() == 255 and out[:, 10:].max() == 0  # whole width kept, squeezed


def test_center_crop_keeps_the_middle_square_as_the_device_does(tmp_path):
    import cv2

    from edgetl_device.inference import center_crop, resize_area

    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, :100] = 255  # left third white: outside the centred 100 x 100 square
    wide[:, 100:200, 1] = 200  # the middle third green
    path = _save(Image.fromarray(wide), tmp_path / "w.png")
    out = load_image(path, 40, center_crop=1.0)
    assert out[..., 0].max() == 0 and out[..., 1].min() == 200  # only the middle square, not squeezed
    half = load_image(path, 40, center_crop=0.5)
    assert half[..., 1].min() == 200
    batch, ok, _ = load_images([path], 40, center_crop=1.0)
    assert ok == [0] and np.array_equal(batch[0], out)
    # the device (centre crop from the bundle manifest, then area resize) prepares the same pixels
    frame = cv2.cvtColor(wide, cv2.COLOR_RGB2BGR)
    device = cv2.cvtColor(resize_area(center_crop(frame, 1.0), (40, 40)), cv2.COLOR_BGR2RGB)
    assert np.abs(device.astype(int) - out.astype(int)).max() <= 1


def test_very_large_jpeg_loads(tmp_path):
    big = np.full((6000, 8000, 3), 120, np.uint8)  # 48 MP
    out = load_image(_save(Image.fromarray(big), tmp_path / "big.jpg", quality=70), 64)
    assert out.shape == (64, 64, 3) and abs(int(out.mean()) - 120) <= 2


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n broken"])
def test_garbage_files_raise_a_clear_error(tmp_path, content):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(EdgetlError, match="unreadable or corrupt"):
        load_image(p, 32)


def test_truncated_jpeg_raises(tmp_path):
    p = _save(Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)),
              tmp_path / "t.jpg")
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(EdgetlError, match="bad|corrupt|truncated"):
        load_image(p, 32)


def test_batch_loader_skips_bad_files_and_reports_them(tmp_path):
    good = _save(Image.fromarray(np.full((8, 8, 3), 9, np.uint8)), tmp_path / "g.png")
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"junk")
    x, ok, failures = load_images([good, bad, good], 8)
    assert x.shape == (2, 8, 8, 3) and ok == [0, 2]
    assert failures[0][0] == bad and "b.jpg" in failures[0][1]
