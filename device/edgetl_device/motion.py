"""Motion gate: skip inference when nothing in the picture moves.

Downscaled, blurred grey frames are differenced against the previous one; the
fraction of pixels that changed more than `pixel_threshold` (outside the masks)
opens the gate when it exceeds `min_area`; it stays open `hold_frames` more
frames so an object that walks in and stops still gets its k-of-n votes. A keep-alive forces an inference now
and then so a slow change (a parked car, the light) is still seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edgetl_device.config import MotionConfig


@dataclass(frozen=True)
class GateResult:
    run_inference: bool
    moving: bool
    changed: float  # fraction of changed pixels outside masks (0..1)


def mask_image(shape: tuple[int, int], masks: list[tuple[float, float, float, float]]) -> np.ndarray | None:
    """uint8 image: 255 where motion counts, 0 inside the mask rectangles (0..1 coordinates)."""
    if not masks:
        return None
    h, w = shape
    out = np.full((h, w), 255, np.uint8)
    for x, y, mw, mh in masks:
        x0, y0 = int(round(x * w)), int(round(y * h))
        x1, y1 = int(round((x + mw) * w)), int(round((y + mh) * h))
        out[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = 0
    return out


def changed_fraction(prev: np.ndarray, cur: np.ndarray, pixel_threshold: int, mask: np.ndarray | None) -> float:
    """Fraction of (unmasked) pixels whose grey level changed by more than pixel_threshold."""
    diff = cv2.absdiff(prev, cur)
    _, moving = cv2.threshold(diff, pixel_threshold, 255, cv2.THRESH_BINARY)
    if mask is not None:
        moving = cv2.bitwise_and(moving, mask)
        total = max(1, cv2.countNonZero(mask))
    else:
        total = moving.size
    return cv2.countNonZero(moving) / total


class MotionGate:
    """Call `check(frame, now)` on every frame; it says whether to run inference."""

    def __init__(self, cfg: MotionConfig) -> None:
        self.cfg = cfg
        self._prev: np.ndarray | None = None
        self._mask: np.ndarray | None = None
        self._last_inference = float("-inf")
        self._hold = 0
        self.frames_checked = 0
        self.frames_skipped = 0

    def small_grey(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        width = min(self.cfg.width, w)
        height = max(1, int(round(h * width / w)))
        # Linear, not area: ~10x cheaper, and the blur below does the anti-aliasing motion needs.
        small = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        k = self.cfg.blur | 1
        return cv2.GaussianBlur(grey, (k, k), 0) if k > 1 else grey

    def check(self, frame: np.ndarray, now: float) -> GateResult:
        self.frames_checked += 1
        if not self.cfg.enabled:
            self._last_inference = now
            return GateResult(True, True, 1.0)
        grey = self.small_grey(frame)
        if self._prev is None or self._prev.shape != grey.shape:
            self._prev = grey
            self._mask = mask_image(grey.shape, self.cfg.masks)
            self._last_inference = now
            self._hold = self.cfg.hold_frames
            return GateResult(True, True, 1.0)  # first frame: nothing to compare with, look at it
        changed = changed_fraction(self._prev, grey, self.cfg.pixel_threshold, self._mask)
        self._prev = grey
        moving_recently = False
        moving = changed > self.cfg.min_area
        if moving:
            self._hold = self.cfg.hold_frames
        elif self._hold > 0:
            self._hold -= 1
            moving_recently = True
        if now < self._last_inference:
            self._last_inference = now  # the wall clock stepped back: restart the keep-alive interval from here
        keepalive_due = self.cfg.keepalive > 0 and now - self._last_inference >= self.cfg.keepalive
        run = moving or moving_recently or keepalive_due
        if run:
            self._last_inference = now
        else:
            self.frames_skipped += 1
        return GateResult(run, moving, changed)

    @property
    def skip_ratio(self) -> float:
        return self.frames_skipped / self.frames_checked if self.frames_checked else 0.0
