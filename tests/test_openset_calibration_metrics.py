"""Threshold calibration meets the false-alarm target on fresh data; AUROC/FPR95 match their definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgetl.errors import EdgetlError
from edgetl.openset import (
    FitData,
    auroc,
    calibrate_threshold,
    false_alarm_at_detection,
    false_alarm_rate,
    fit_scorer,
    fpr_at_tpr,
)
from edgetl_device.openset import l2_normalise


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(3)
    known = np.round(rng.normal(0, 1, 60), 1)  # rounding makes ties
    unknown = np.round(rng.normal(1, 1, 40), 1)
    pairs = [1.0 if u > k else 0.5 if u == k else 0.0 for k, u in itertools.product(known, unknown)]
    assert auroc(known, unknown) == pytest.approx(np.mean(pairs))
    assert auroc(known, known + 100) == 1.0
    assert auroc(known + 100, known) == 0.0


def test_fpr95_counts_unknowns_accepted_at_95_percent_known_accepted():
    known = np.arange(100, dtype=float)  # 95 % of known accepted at threshold 94/95
    unknown = np.array([10.0, 50.0, 94.0, 96.0, 200.0])
    assert fpr_at_tpr(known, unknown) == pytest.approx(3 / 5)
    assert fpr_at_tpr(known, known + 1000) == 0.0


def test_false_alarm_at_detection_counts_known_flagged_when_95_percent_of_unknowns_caught():
    unknown = np.arange(100, dtype=float)  # a threshold of 5 catches 95 of them
    known = np.array([1.0, 4.0, 5.0, 30.0, -3.0])
    assert false_alarm_at_detection(known, unknown) == pytest.approx(2 / 5)
    assert false_alarm_at_detection(unknown - 1000, unknown) == 0.0
    # the two FPR95 conventions read different ROC points of the same scores
    rng = np.random.default_rng(0)
    k, u = rng.normal(0, 1, 500), rng.normal(1, 2, 500)
    assert fpr_at_tpr(k, u) != pytest.approx(false_alarm_at_detection(k, u), abs=0.01)


def test_threshold_flags_target_fraction_of_calibration_frames():
    s = np.arange(1000, dtype=float)
    t = calibrate_threshold(s, 0.05)
    assert false_alarm_rate(s, t) == pytest.approx(0.05)
    with pytest.raises(EdgetlError, match="between 0 and 1"):
        calibrate_threshold(s, 5)
    with pytest.raises(EdgetlError, match="validation"):
        calibrate_threshold(np.array([]), 0.05)


@pytest.mark.parametrize("name", ["knn", "relative_mahalanobis", "energy"])
def test_calibrated_threshold_holds_on_held_out_known_frames(name):
    rng = np.random.default_rng(7)
    d, c = 24, 3
    centers = np.linalg.qr(rng.standard_normal((d, d)))[0][:c]

    def draw(n):
        y = rng.integers(0, c, n)
        return l2_normalise(centers[y] + 0.2 * rng.standard_normal((n, d))), y

    e_tr, y_tr = draw(600)
    e_cal, _ = draw(1000)
    e_test, _ = draw(4000)
    scorer = fit_scorer(name, FitData(np.ones((600, c)) / c, e_tr, y_tr, c))
    for target in (0.01, 0.05, 0.2):
        t = calibrate_threshold(scorer.score_batch(None, e_cal), target)
        got = false_alarm_rate(scorer.score_batch(None, e_test), t)
        # binomial noise of a 1000-frame calibration set: sd = sqrt(p(1-p)/1000) <= 0.013
        assert abs(got - target) < 3 * np.sqrt(target * (1 - target) / 1000) + 0.005, (name, target, got)
