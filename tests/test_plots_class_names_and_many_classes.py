"""Pictures draw class names (folder names, CSV cells) literally, and stay a sane size with many classes.

Real matplotlib, real PNG files: a name with two `$` is not TeX to parse, and a 1,000-class confusion
matrix is not a 60,000-pixel-wide image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetl.openset import plot_loco, plot_scores
from edgetl.plots import plot_confusion_matrix
from edgetl.visualize import GradCam, Misclassified, save_contact_sheet, save_gradcam

# each of these is invalid mathtext: matplotlib raised ValueError at savefig
ODD_NAMES = ["$1_$5", "cash $$", "$%$", "<b>&amp;</b>", "Ünïcode ✓"]


def test_confusion_matrix_draws_dollar_names_literally(tmp_path):
    cm = np.arange(25).reshape(5, 5)
    path = tmp_path / "cm.png"
    plot_confusion_matrix(cm, ODD_NAMES, path, title="val $$ set")
    assert path.stat().st_size > 1000


def test_openset_plots_draw_dollar_names_literally(tmp_path):
    rng = np.random.default_rng(0)
    summary = {"knn": {"mean_auroc": 0.8, "per_class": {c: 0.8 for c in ODD_NAMES}}}
    assert plot_loco(summary, ODD_NAMES, tmp_path / "loco.png").stat().st_size > 1000
    title = "knn: val known vs $$unknowns_$x"  # the unknown folder's name is in the title
    assert plot_scores(rng.random(50), rng.random(50) + 0.5, 0.9, title, tmp_path / "s.png").stat().st_size > 1000


def test_gradcam_pictures_draw_dollar_names_literally(tmp_path):
    image = np.full((32, 32, 3), 128, np.float32)
    heat = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    cam = GradCam(heat, 0, np.array([0.9, 0.1], np.float32), "conv")
    assert save_gradcam(image, cam, ["$1_$5", "x"], tmp_path / "g.png").is_file()
    items = [Misclassified(Path("a$_$.png"), "cash $$", "$%$", 0.9, image, heat)]
    assert save_contact_sheet(items, tmp_path / "sheet.png").is_file()


@pytest.mark.parametrize("n", [100, 1000])
def test_confusion_matrix_of_many_classes_is_a_bounded_picture(tmp_path, n):
    # was 0.6 inch per class with every count written: 100 classes 6,200 px square (~25 s, 1.5 GB),
    # 1,000 classes 60,200 px square (a 14 GB canvas and a million text objects)
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 5, (n, n)) + 20 * np.eye(n, dtype=int)
    path = tmp_path / "cm.png"
    plot_confusion_matrix(cm, [f"class_{i:04d}" for i in range(n)], path, title=f"{n} classes")
    with Image.open(path) as im:
        assert max(im.size) <= 3000, im.size
    assert path.stat().st_size < 3_000_000
