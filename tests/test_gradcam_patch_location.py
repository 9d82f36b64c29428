"""Grad-CAM looks where the evidence is: on a task whose class is decided by a coloured patch at a known
place, the heatmap's peak falls inside that patch, for the predicted class and for a chosen class."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.errors import EdgetlError
from edgetl.visualize import grad_cam, gradcam_model, overlay
from tests.support.patch_task import _COLOURS, LABELS, PATCH, SIZE, make_images


def _peak(heatmap: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(y), int(x)


def _inside(point: tuple[int, int], box) -> bool:
    y0, x0, y1, x1 = (int(v) for v in box)
    return y0 <= point[0] < y1 and x0 <= point[1] < x1


def test_peak_of_predicted_class_falls_inside_the_patch(patch_model):
    model, _ = patch_model
    held_out = make_images(16, seed=99)  # never seen in training (seed 1) or validation (seed 2)
    tapped = gradcam_model(model)
    assert tapped[1].name == "tiny_backbone/conv3"  # last conv, found inside the nested backbone
    misses = []
    for img, label, box in zip(held_out.images, held_out.labels, held_out.boxes, strict=True):
        cam = grad_cam(model, img, _tapped=tapped)
        assert cam.class_index == label
        assert cam.heatmap.shape == (SIZE, SIZE)
        assert 0.0 <= cam.heatmap.min() and cam.heatmap.max() == pytest.approx(1.0)
        if not _inside(_peak(cam.heatmap), box):
            misses.append((_peak(cam.heatmap), box.tolist()))
    assert not misses, f"Grad-CAM peak outside the patch: {misses}"


def test_chosen_class_moves_the_peak_to_that_class_patch(patch_model):
    """One image, a red and a blue patch: each class's heatmap peaks on its own patch."""
    model, _ = patch_model
    rng = np.random.default_rng(5)
    tapped = gradcam_model(model)
    for trial in range(4):
        img = np.repeat(rng.uniform(70, 180, (SIZE, SIZE, 1)), 3, axis=2).astype(np.float32)
        ry, rx, by, bx = (int(v) for v in rng.integers(0, SIZE // 2 - PATCH, 4))
        by, bx = by + SIZE // 2, bx + SIZE // 2  # blue in the other quadrant
        if trial % 2:
            (ry, rx), (by, bx) = (by, bx), (ry, rx)
        img[ry:ry + PATCH, rx:rx + PATCH] = _COLOURS[LABELS.index("red")]
        img[by:by + PATCH, bx:bx + PATCH] = _COLOURS[LABELS.index("blue")]
        red = grad_cam(model, img, LABELS.index("red"), _tapped=tapped)
        blue = grad_cam(model, img, LABELS.index("blue"), _tapped=tapped)
        assert red.class_index == 0 and blue.class_index == 2
        assert _inside(_peak(red.heatmap), (ry, rx, ry + PATCH, rx + PATCH)), (trial, _peak(red.heatmap))
        assert _inside(_peak(blue.heatmap), (by, bx, by + PATCH, bx + PATCH)), (trial, _peak(blue.heatmap))


def test_earlier_layer_by_plain_name_and_overlay(patch_model):
    model, _ = patch_model
    data = make_images(1, seed=42)
    cam = grad_cam(model, data.images[0], layer="conv2")  # plain name, found in the nested backbone
    assert cam.layer == "tiny_backbone/conv2"
    assert cam.heatmap.shape == (SIZE, SIZE)
    over = overlay(data.images[0], cam.heatmap)
    assert over.shape == (SIZE, SIZE, 3) and over.dtype == np.uint8
    assert not np.array_equal(over, data.images[0].astype(np.uint8))


def test_bad_class_or_layer_is_a_clear_error(patch_model):
    model, _ = patch_model
    img = make_images(1, seed=3).images[0]
    with pytest.raises(EdgetlError, match="out of range"):
        grad_cam(model, img, class_index=7)
    with pytest.raises(EdgetlError, match="no layer 'nope'"):
        grad_cam(model, img, layer="nope")
    with pytest.raises(EdgetlError, match="no image-like output"):
        grad_cam(model, img, layer="embedding")
