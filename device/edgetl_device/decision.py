"""From probabilities to objects: per-frame decision, k-of-n smoothing with hysteresis, trigger rules.

Per inferred frame: the top class, its score and an unknown score (higher = more
unknown; default 1 - max probability, or the bundle's open-set scorer). A frame
"sees" a trigger label when it is unknown and unknowns are recorded, or its class
is listed in `record_classes`; `ignore_classes` never trigger. An object starts
when k of the last n inferred frames see the same trigger label, and ends when
fewer than `k_end` of the last n still see any trigger (hysteresis).
"""

from __future__ import annotations

import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgetl_device.config import DecisionConfig

UNKNOWN = "unknown"
UnknownScorer = Callable[[np.ndarray, "np.ndarray | None"], float]


def max_prob_unknown(probs: np.ndarray, embedding: np.ndarray | None = None) -> float:
    """Baseline open-set score: 1 - max probability."""
    return float(1.0 - float(np.max(probs)))


@dataclass(frozen=True)
class FrameDecision:
    class_id: int
    label: str
    score: float
    unknown_score: float
    unknown: bool
    trigger: str | None  # label this frame votes for ("unknown" or a recorded class), None: nothing


@dataclass
class TrackedObject:
    object_id: str
    label: str
    start_time: float
    unknown: bool
    best_score: float = 0.0
    best_unknown_score: float = 0.0
    labels: Counter = field(default_factory=Counter)
    last_seen: float = 0.0
    end_time: float | None = None


@dataclass(frozen=True)
class Transition:
    type: str  # "start" | "end"
    obj: TrackedObject
    decision: FrameDecision | None


class Decider:
    """Turns per-frame probabilities into object start/end transitions."""

    def __init__(self, labels: list[str], cfg: DecisionConfig, unknown_scorer: UnknownScorer | None = None,
                 unknown_threshold: float | None = None) -> None:
        self.labels = labels
        self.cfg = cfg
        self.scorer = unknown_scorer or max_prob_unknown
        self.threshold = cfg.unknown_threshold if unknown_threshold is None else float(unknown_threshold)
        self._window: deque[str | None] = deque(maxlen=cfg.n)
        self.active: TrackedObject | None = None

    def set_scorer(self, scorer: UnknownScorer | None, threshold: float | None) -> None:
        self.scorer = scorer or max_prob_unknown
        if threshold is not None:
            self.threshold = float(threshold)

    def decide(self, probs: np.ndarray, embedding: np.ndarray | None = None) -> FrameDecision:
        class_id = int(np.argmax(probs))
        score = float(probs[class_id])
        label = self.labels[class_id] if class_id < len(self.labels) else str(class_id)
        unknown_score = float(self.scorer(probs, embedding))
        unknown = unknown_score > self.threshold
        return FrameDecision(class_id, label, score, unknown_score, unknown, self._trigger(label, score, unknown))

    def _trigger(self, label: str, score: float, unknown: bool) -> str | None:
        if label in self.cfg.ignore_classes and not unknown:
            return None
        if unknown:
            return UNKNOWN if self.cfg.record_unknown else None
        if label in self.cfg.record_classes and score >= self.cfg.min_score:
            return label
        return None

    def update(self, d: FrameDecision, now: float) -> list[Transition]:
        """Feed one inferred frame; returns the object transitions it caused."""
        self._window.append(d.trigger)
        out: list[Transition] = []
        if self.active is not None:
            seen = sum(1 for t in self._window if t is not None)
            if d.trigger is not None:
                self._note(self.active, d, now)
            if seen < self.cfg.k_end:
                self.active.end_time = now
                out.append(Transition("end", self.active, d))
                self.active = None
                self._window.clear()  # a new object needs k fresh votes
            return out
        votes = Counter(t for t in self._window if t is not None)
        if votes:
            label, count = votes.most_common(1)[0]
            if count >= self.cfg.k:
                obj = TrackedObject(uuid.uuid4().hex, label, now, unknown=label == UNKNOWN)
                self._note(obj, d, now)
                self.active = obj
                out.append(Transition("start", obj, d))
        return out

    def finish(self, now: float) -> list[Transition]:
        """End the active object (shutdown)."""
        if self.active is None:
            return []
        self.active.end_time = now
        t = Transition("end", self.active, None)
        self.active = None
        self._window.clear()
        return [t]

    @staticmethod
    def _note(obj: TrackedObject, d: FrameDecision, now: float) -> None:
        obj.labels[d.trigger or d.label] += 1
        obj.best_score = max(obj.best_score, d.score)
        obj.best_unknown_score = max(obj.best_unknown_score, d.unknown_score)
        obj.last_seen = now
