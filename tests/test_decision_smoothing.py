"""Decision: unknown score, k-of-n smoothing with hysteresis, record/ignore rules."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl_device.config import DecisionConfig
from edgetl_device.decision import UNKNOWN, Decider, max_prob_unknown

LABELS = ["Empty", "person", "car"]


def probs(label: str | None, conf: float = 0.9) -> np.ndarray:
    """A probability vector confident in `label`, or flat (unknown) when label is None."""
    if label is None:
        return np.full(3, 1 / 3, np.float32)
    p = np.full(3, (1 - conf) / 2, np.float32)
    p[LABELS.index(label)] = conf
    return p


def feed(decider: Decider, seq: list[str | None], t0: float = 0.0) -> list[tuple[int, str, str]]:
    out = []
    for i, label in enumerate(seq):
        for t in decider.update(decider.decide(probs(label)), t0 + i):
            out.append((i, t.type, t.obj.label))
    return out


def test_unknown_score_defaults_to_one_minus_max_probability():
    d = Decider(LABELS, DecisionConfig(unknown_threshold=0.5))
    flat, sure = d.decide(probs(None)), d.decide(probs("car"))
    assert flat.unknown and flat.unknown_score == pytest.approx(2 / 3) and flat.trigger == UNKNOWN
    assert not sure.unknown and sure.label == "car" and sure.trigger is None  # car is not recorded
    assert max_prob_unknown(np.array([0.2, 0.8])) == pytest.approx(0.2)


def test_object_counts_only_when_k_of_n_agree():
    d = Decider(LABELS, DecisionConfig(k=3, n=5, record_classes=["person"]))
    # single-frame flickers never start an object
    assert feed(d, ["person", "Empty", "Empty", "person", "Empty", "Empty", "Empty", "person", "Empty"]) == []
    d = Decider(LABELS, DecisionConfig(k=3, n=5, record_classes=["person"]))
    events = feed(d, ["Empty", "person", "Empty", "person", "person", "person"])
    assert events == [(4, "start", "person")]  # 3rd agreeing frame within the window of 5


def test_trigger_latency_is_at_most_n_frames_for_a_persistent_object():
    for k, n in [(1, 1), (2, 3), (3, 5), (5, 8)]:
        d = Decider(LABELS, DecisionConfig(k=k, n=n, record_classes=["person"]))
        events = feed(d, ["Empty"] * 10 + ["person"] * 20)
        assert events[0][1] == "start" and events[0][0] - 10 == k - 1 <= n + 1


def test_hysteresis_keeps_the_object_through_short_dropouts_then_ends_it():
    d = Decider(LABELS, DecisionConfig(k=3, n=5, k_end=1, record_classes=["person"]))
    seq = ["person"] * 4 + ["Empty", "Empty", "person"] + ["Empty"] * 6
    events = feed(d, seq)
    assert events == [(2, "start", "person"), (11, "end", "person")]  # ends after n frames without it


def test_ignore_classes_and_unknown_switch():
    cfg = DecisionConfig(k=2, n=3, record_unknown=False, record_classes=["car"], ignore_classes=["Empty"])
    d = Decider(LABELS, cfg)
    assert feed(d, [None] * 5) == []  # unknowns are not recorded here
    assert feed(d, ["Empty"] * 5) == []
    assert feed(d, ["car"] * 3)[0][1:] == ("start", "car")


def test_min_score_and_custom_scorer():
    cfg = DecisionConfig(k=1, n=1, record_classes=["person"], min_score=0.8)
    d = Decider(LABELS, cfg)
    assert d.decide(probs("person", 0.7)).trigger is None
    assert d.decide(probs("person", 0.9)).trigger == "person"
    # an open-set scorer (higher = more unknown) with its own threshold replaces the default
    d = Decider(LABELS, cfg, unknown_scorer=lambda p, e: 5.0, unknown_threshold=4.0)
    assert d.decide(probs("person", 0.99)).unknown


def test_finish_ends_the_active_object():
    d = Decider(LABELS, DecisionConfig(k=1, n=1, record_classes=["person"]))
    feed(d, ["person"])
    ended = d.finish(10.0)
    assert [t.type for t in ended] == ["end"] and ended[0].obj.end_time == 10.0 and d.active is None
