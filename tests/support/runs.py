"""Generated datasets and a tiny real training run (for tests of export, open-set, visualisation)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tests.support.shared import shared_data_or_none

DEFAULT_CLASSES = ("circle", "square", "triangle")
_COLOURS = {"circle": (220, 40, 40), "square": (40, 180, 60), "triangle": (40, 80, 220)}


def draw_shape(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A uint8 RGB picture of one coloured shape on a noisy background, random position and scale."""
    import cv2

    img = rng.integers(90, 160, size=(size, size, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (5, 5), 0)
    colour = _COLOURS.get(kind, tuple(int(c) for c in rng.integers(0, 255, 3)))
    r = int(size * rng.uniform(0.2, 0.32))
    cx, cy = (int(v) for v in rng.integers(r + 2, size - r - 2, 2))
    if kind == "circle":
        cv2.circle(img, (cx, cy), r, colour, -1)
    elif kind == "square":
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), colour, -1)
    elif kind == "triangle":
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(img, [pts], colour)
    else:  # any other class name: a stripe pattern in a class-specific colour
        for y in range(0, size, 8):
            cv2.line(img, (0, y), (size, y + r // 2), colour, 3)
    return img


def make_image_dataset(root: Path, classes: Sequence[str] = DEFAULT_CLASSES, n: int = 20, size: int = 96,
                       seed: int = 0, ext: str = ".png") -> Path:
    """A class-folder dataset of generated shape images: root/<class>/<i>.png."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for c in classes:
        d = root / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(draw_shape(c, size, rng)).save(d / f"{c}_{i:03d}{ext}")
    return root


def tiny_weights() -> str:
    """The shared MobileNetV2-0.35 weights when present (realistic features), else random init."""
    p = shared_data_or_none("weights", "mobilenet_v2_0.35_224_no_top.h5")
    return str(p) if p else "none"


def make_tiny_run(out_dir: Path, **overrides) -> Path:
    """A real (tiny) run folder trained through edgetl.train: 3 shape classes, 96 px, MobileNetV2 0.35."""
    from edgetl.train import train

    out_dir = Path(out_dir)
    data = make_image_dataset(out_dir / "data", n=20, size=96)
    options = dict(backbone="mobilenet_v2", alpha=0.35, size=96, weights=tiny_weights(), epochs=8,
                   fine_tune_epochs=1, fine_tune_blocks=1, augment=False, batch_size=16, seed=0,
                   learning_rate=5e-3, patience=0)
    options.update(overrides)
    result = train(data, out_dir / "run", **options)
    return result.path
