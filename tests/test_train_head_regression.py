"""Phase 1 on cached embeddings: a softmax regression solved to convergence, its L2 strength cross-validated."""

from __future__ import annotations

import numpy as np

from edgetl.linear_head import DEFAULT_L2, L2_GRID, _solve, fit_softmax_head, softmax


def _blobs(n_per_class: int, dims: int, classes: int, spread: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, dims))
    y = np.repeat(np.arange(classes), n_per_class)
    return centres[y] + spread * rng.normal(0, 1, (len(y), dims)), y


def test_fewer_rows_than_features_solves_the_same_problem():
    """The row-space shortcut (n < d) must give the kernel a direct solve in all d dimensions gives."""
    x, y = _blobs(20, 300, 3, 2.0)
    fit = fit_softmax_head(x, y, 3, l2_grid=(0.01,))
    assert fit.l2 == 0.01 and fit.kernel.shape == (300, 3)
    targets = np.eye(3)[y]
    kernel, bias = _solve(x.astype(np.float32), targets, np.ones(len(y)), 0.01, None)
    np.testing.assert_allclose(softmax(x @ fit.kernel + fit.bias), softmax(x @ kernel + bias), atol=2e-3)
    assert (softmax(x @ fit.kernel + fit.bias).argmax(1) == y).mean() == 1.0


def test_cross_validation_picks_a_weak_penalty_for_clean_data_and_the_strongest_for_noise():
    x, y = _blobs(60, 40, 3, 0.3)
    clean = fit_softmax_head(x, y, 3)
    assert clean.l2 <= 1e-2, clean.cv
    rng = np.random.default_rng(1)
    noise = fit_softmax_head(rng.normal(0, 1, (180, 40)), rng.integers(0, 3, 180), 3)
    assert noise.l2 == max(L2_GRID), noise.cv
    # the path stops a few strengths past the minimum instead of fitting every strength
    assert len(noise.cv) < len(L2_GRID)


def test_an_image_and_its_mirror_never_sit_on_both_sides_of_a_fold():
    """Random labels, each row duplicated (a stand-in for the mirrored view). If the copies were split
    across folds, cross-validation would score memorised copies and choose a weaker penalty."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(0, 1, (120, 60)), rng.permutation(np.repeat([0, 1], 60))
    doubled, labels, groups = np.concatenate([x, x]), np.tile(y, 2), np.tile(np.arange(120), 2)
    leaky = fit_softmax_head(doubled, labels, 2)
    grouped = fit_softmax_head(doubled, labels, 2, groups=groups)
    # the failure the groups prevent is real: random labels "predicted" from the copies
    assert max(row["cv_accuracy"] for row in leaky.cv) > 0.7 and leaky.l2 < grouped.l2
    assert grouped.l2 == max(L2_GRID) and max(row["cv_accuracy"] for row in grouped.cv) < 0.62


def test_one_image_per_class_skips_cross_validation_and_still_fits():
    x, y = _blobs(1, 16, 4, 0.1)
    fit = fit_softmax_head(x, y, 4)
    assert fit.l2 == DEFAULT_L2 and fit.cv == []
    assert (softmax(x @ fit.kernel + fit.bias).argmax(1) == y).all()


def test_class_weights_and_label_smoothing_shape_the_solution():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 100)
    x = (y - 0.5)[:, None] + rng.normal(0, 1, (200, 2))  # two overlapping classes
    plain = fit_softmax_head(x, y, 2, l2_grid=(1e-3,))
    favour_1 = fit_softmax_head(x, y, 2, l2_grid=(1e-3,), sample_weight=np.where(y == 1, 5.0, 1.0))
    predicted_1 = [(softmax(x @ f.kernel + f.bias).argmax(1) == 1).sum() for f in (plain, favour_1)]
    assert predicted_1[1] > predicted_1[0]
    smoothed = fit_softmax_head(x, y, 2, l2_grid=(1e-3,), smoothing=0.2)
    assert softmax(x @ smoothed.kernel + smoothed.bias).max() < softmax(x @ plain.kernel + plain.bias).max()
