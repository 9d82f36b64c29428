"""Procedural camera scenes: a fixed yard seen by a fixed camera, with objects passing by.

Synthetic data for the demo and for tests that need a whole pipeline on a fresh,
offline machine. The camera never moves, so the background is the same in every
image and video frame (drawn from a fixed seed); what varies is the object (kind,
position, size, colour, pose) and the light (gain, colour cast, a sun gradient,
sensor noise). Known kinds have distinctive silhouettes and colours so that a small
MobileNetV2 learns them in about a minute; unknown kinds (never trained on) look
clearly different, so an embedding-distance scorer flags them.

Only numpy and OpenCV: no TensorFlow here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from edgetl.errors import EdgetlError

log = logging.getLogger(__name__)

EMPTY = "Empty"
KNOWN_KINDS: tuple[str, ...] = ("car", "person", "dog")
UNKNOWN_KINDS: tuple[str, ...] = ("drone", "bicycle")
BACKGROUND_SEED = 20240611  # the camera's view: fixed, independent of the dataset seed
CANVAS_HEIGHT = 480

Size = tuple[int, int]  # (width, height)
Point = tuple[float, float]


@dataclass(frozen=True)
class Placement:
    """One object in a scene. Lengths are fractions of the frame height, x of the frame width."""

    kind: str
    x: float  # centre, fraction of frame width (may be a little outside 0..1: partly visible)
    base: float  # y of the object's lowest point (ground contact), fraction of frame height
    height: float  # object height, fraction of frame height
    flip: bool = False  # facing left instead of right
    hue_shift: float = 0.0  # colour variation, degrees on OpenCV's 0..180 hue circle
    phase: float = 0.0  # gait / rotor phase in radians


@dataclass(frozen=True)
class Lighting:
    gain: float = 1.0  # overall brightness (time of day, exposure)
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # B, G, R multipliers (colour cast)
    gradient: float = 0.0  # left-to-right brightness slope (low sun)
    noise: float = 3.0  # sensor noise standard deviation in grey levels


@dataclass(frozen=True)
class Pass:
    """One object crossing the frame in a video script."""

    kind: str
    start: int  # first frame the object is (partly) in view
    frames: int  # frames it takes to cross
    base: float = 0.86
    height: float | None = None  # default: the kind's typical size
    leftward: bool = False  # direction of travel


@dataclass(frozen=True)
class Appearance:
    """Ground truth for one pass in a rendered video (frame indices inclusive)."""

    kind: str
    known: bool
    first_frame: int  # first frame with any part of the object in view
    last_frame: int  # last frame with any part in view
    full_first: int  # first frame with the whole object in view (-1 if never)
    full_last: int


@dataclass
class DatasetInfo:
    root: Path
    classes: list[str]
    counts: dict[str, int]
    size: Size
    seed: int
    unknown_root: Path | None = None
    unknown_counts: dict[str, int] = field(default_factory=dict)


# Typical (min, max) object heights as a fraction of frame height, and where the object's base may be.
_HEIGHTS = {"car": (0.26, 0.38), "person": (0.50, 0.70), "dog": (0.25, 0.36),
            "drone": (0.22, 0.30), "bicycle": (0.32, 0.44)}
_BASES = {"drone": (0.34, 0.58)}  # drones fly; everything else stands on the road
_ROAD_BASES = (0.78, 0.95)
# Object width / height, so a placement can be kept mostly in view.
_ASPECT = {"car": 2.35, "person": 0.42, "dog": 1.55, "drone": 2.0, "bicycle": 1.9}


def kinds() -> tuple[str, ...]:
    """Every kind the generator can draw, known first."""
    return KNOWN_KINDS + UNKNOWN_KINDS


def is_known(kind: str) -> bool:
    return kind in KNOWN_KINDS or kind == EMPTY


def _check_size(size: int | Size) -> Size:
    w, h = (size, size) if isinstance(size, int) else size
    if w < 32 or h < 32:
        raise EdgetlError(f"scene size {w}x{h} is too small; use at least 32x32 pixels")
    return int(w), int(h)


# ---------------------------------------------------------------------------- background


def _canvas_size(width: int, height: int) -> Size:
    """The resolution scenes are drawn at before resizing to the requested size.

    Drawing at one canonical resolution (480 lines, same aspect) makes a 160x120 training
    image and a 320x240 video frame the same picture at two sizes, as with a real camera.
    """
    ch = max(CANVAS_HEIGHT, height)
    return max(32, int(round(ch * width / height))), ch


@lru_cache(maxsize=8)
def _canvas_background(width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(BACKGROUND_SEED)
    img = np.zeros((height, width, 3), np.float32)
    horizon = int(0.52 * height)
    # Sky: a vertical gradient from deep to pale blue (BGR).
    t = np.linspace(0.0, 1.0, horizon, dtype=np.float32)[:, None]
    img[:horizon] = (1 - t)[..., None] * np.array([225, 165, 110], np.float32) + t[..., None] * np.array(
        [245, 225, 200], np.float32)
    # Grass with a low-frequency texture that stays the same in every frame.
    img[horizon:] = np.array([70, 135, 85], np.float32)
    tex = cv2.resize(rng.normal(0, 1, (max(2, height // 12), max(2, width // 12))).astype(np.float32),
                     (width, height), interpolation=cv2.INTER_CUBIC)
    img[horizon:] += 14 * tex[horizon:, :, None]
    # The road band where things pass, with a dashed centre line.
    road_top, road_bot = int(0.74 * height), int(0.97 * height)
    img[road_top:road_bot] = np.array([105, 108, 112], np.float32)
    img[road_top:road_bot] += 6 * tex[road_top:road_bot, :, None]
    y_mid = (road_top + road_bot) // 2
    dash = max(4, width // 16)
    for x0 in range(0, width, 2 * dash):
        cv2.rectangle(img, (x0, y_mid - max(1, height // 160)), (x0 + dash, y_mid + max(1, height // 160)),
                      (205, 215, 220), -1)
    # A house on the left: walls, roof, door and windows.
    hx0, hx1, hy0, hy1 = int(0.04 * width), int(0.30 * width), int(0.30 * height), int(0.70 * height)
    cv2.rectangle(img, (hx0, hy0), (hx1, hy1), (160, 195, 215), -1)
    roof = np.array([[hx0 - width // 50, hy0], [(hx0 + hx1) // 2, int(0.16 * height)], [hx1 + width // 50, hy0]])
    cv2.fillPoly(img, [roof], (50, 60, 135), lineType=cv2.LINE_AA)
    cv2.rectangle(img, (int(0.08 * width), int(0.40 * height)), (int(0.14 * width), int(0.50 * height)),
                  (120, 90, 60), -1)
    cv2.rectangle(img, (int(0.20 * width), int(0.50 * height)), (int(0.25 * width), hy1), (40, 65, 100), -1)
    # A tree on the right and a fence along the back of the road.
    tx, ty = int(0.84 * width), int(0.70 * height)
    cv2.rectangle(img, (tx - width // 60, int(0.42 * height)), (tx + width // 60, ty), (35, 60, 90), -1)
    cv2.circle(img, (tx, int(0.34 * height)), int(0.14 * height), (45, 110, 50), -1, cv2.LINE_AA)
    cv2.circle(img, (tx - int(0.07 * height), int(0.40 * height)), int(0.09 * height), (40, 100, 45), -1,
               cv2.LINE_AA)
    for x in range(int(0.34 * width), int(0.78 * width), max(3, width // 40)):
        cv2.line(img, (x, int(0.64 * height)), (x, int(0.73 * height)), (170, 185, 190), max(1, width // 200))
    cv2.line(img, (int(0.34 * width), int(0.67 * height)), (int(0.78 * width), int(0.67 * height)),
             (170, 185, 190), max(1, height // 150))
    return img


@lru_cache(maxsize=8)
def _background(width: int, height: int) -> np.ndarray:
    return _downscale(_canvas_background(*_canvas_size(width, height)), (width, height))


def _downscale(img: np.ndarray, size: Size) -> np.ndarray:
    if img.shape[1] == size[0] and img.shape[0] == size[1]:
        return img
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def background(size: int | Size) -> np.ndarray:
    """The camera's fixed view with no object and neutral light (BGR float32, 0..255)."""
    w, h = _check_size(size)
    return _background(w, h).copy()


# ---------------------------------------------------------------------------- objects


class _Pen:
    """Maps object coordinates (u right, v up, in object heights from the base centre) to pixels."""

    def __init__(self, img: np.ndarray, p: Placement) -> None:
        h, w = img.shape[:2]
        self.img = img
        self.scale = p.height * h
        self.cx, self.by = p.x * w, p.base * h
        self.sign = -1.0 if p.flip else 1.0
        self.hue = p.hue_shift

    def pt(self, u: float, v: float) -> tuple[int, int]:
        # Fixed-point coordinates (shift=4) keep small shapes smooth at low resolution.
        return (int(round((self.cx + self.sign * u * self.scale) * 16)), int(round((self.by - v * self.scale) * 16)))

    def px(self, length: float) -> int:
        return max(1, int(round(length * self.scale)))

    def colour(self, bgr: tuple[int, int, int]) -> tuple[int, int, int]:
        if not self.hue:
            return bgr
        hsv = cv2.cvtColor(np.uint8([[bgr]]), cv2.COLOR_BGR2HSV).astype(np.int32)
        hsv[0, 0, 0] = (hsv[0, 0, 0] + int(round(self.hue))) % 180
        out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0]
        return int(out[0]), int(out[1]), int(out[2])

    def poly(self, pts: Sequence[Point], bgr: tuple[int, int, int], vary: bool = True) -> None:
        arr = np.array([self.pt(u, v) for u, v in pts], np.int32)
        cv2.fillPoly(self.img, [arr], self.colour(bgr) if vary else bgr, cv2.LINE_AA, 4)

    def circle(self, u: float, v: float, r: float, bgr: tuple[int, int, int], thickness: float = -1,
               vary: bool = True) -> None:
        t = -1 if thickness < 0 else self.px(thickness)
        cv2.circle(self.img, self.pt(u, v), int(round(r * self.scale * 16)), self.colour(bgr) if vary else bgr,
                   t, cv2.LINE_AA, 4)

    def ellipse(self, u: float, v: float, a: float, b: float, angle: float, bgr: tuple[int, int, int],
                vary: bool = True) -> None:
        axes = (int(round(a * self.scale * 16)), int(round(b * self.scale * 16)))
        cv2.ellipse(self.img, self.pt(u, v), axes, self.sign * angle, 0, 360,
                    self.colour(bgr) if vary else bgr, -1, cv2.LINE_AA, 4)

    def line(self, a: Point, b: Point, bgr: tuple[int, int, int], thickness: float, vary: bool = True) -> None:
        cv2.line(self.img, self.pt(*a), self.pt(*b), self.colour(bgr) if vary else bgr, self.px(thickness),
                 cv2.LINE_AA, 4)


def _car(p: _Pen, phase: float) -> None:
    p.poly([(-1.15, 0.15), (1.15, 0.15), (1.17, 0.50), (0.75, 0.58), (-1.1, 0.58)], (30, 30, 200))
    p.poly([(-0.70, 0.57), (-0.42, 0.97), (0.42, 0.97), (0.72, 0.57)], (30, 30, 185))
    p.poly([(-0.58, 0.60), (-0.37, 0.89), (-0.05, 0.89), (-0.05, 0.60)], (235, 215, 170), vary=False)
    p.poly([(0.05, 0.60), (0.05, 0.89), (0.37, 0.89), (0.60, 0.60)], (235, 215, 170), vary=False)
    p.poly([(1.05, 0.38), (1.17, 0.38), (1.17, 0.48), (1.05, 0.48)], (80, 230, 250), vary=False)
    for u in (-0.68, 0.68):
        p.circle(u, 0.19, 0.19, (25, 25, 25), vary=False)
        p.circle(u, 0.19, 0.08, (175, 175, 175), vary=False)


def _person(p: _Pen, phase: float) -> None:
    swing = 0.12 * np.sin(phase)
    pants, shirt, skin = (70, 45, 40), (190, 110, 30), (140, 180, 225)
    p.line((0.0, 0.47), (swing, 0.0), pants, 0.085)
    p.line((0.0, 0.47), (-swing, 0.0), pants, 0.085)
    p.poly([(-0.12, 0.44), (0.12, 0.44), (0.13, 0.79), (-0.13, 0.79)], shirt)
    p.line((0.0, 0.76), (-swing * 0.9, 0.47), shirt, 0.06)
    p.line((0.0, 0.76), (swing * 0.9, 0.47), shirt, 0.06)
    p.circle(0.0, 0.89, 0.09, skin, vary=False)
    p.poly([(-0.09, 0.93), (0.09, 0.93), (0.08, 0.99), (-0.08, 0.99)], (30, 40, 60), vary=False)


def _dog(p: _Pen, phase: float) -> None:
    fur, dark = (40, 100, 160), (25, 55, 95)
    swing = 0.1 * np.sin(phase)
    for u0 in (-0.42, 0.38):
        p.line((u0, 0.45), (u0 + swing, 0.0), fur, 0.09)
        p.line((u0 + 0.08, 0.45), (u0 + 0.08 - swing, 0.0), dark, 0.09)
    p.ellipse(0.0, 0.53, 0.58, 0.2, 0.0, fur)
    p.line((-0.55, 0.58), (-0.78, 0.86), fur, 0.07)
    p.circle(0.6, 0.78, 0.17, fur)
    p.ellipse(0.78, 0.72, 0.13, 0.07, 0.0, fur)
    p.circle(0.9, 0.74, 0.035, (20, 20, 20), vary=False)
    p.poly([(0.48, 0.86), (0.58, 1.0), (0.62, 0.88)], dark)
    p.circle(0.64, 0.82, 0.03, (10, 10, 10), vary=False)


def _drone(p: _Pen, phase: float) -> None:
    body, arm = (45, 45, 50), (70, 70, 75)
    for u, v in ((-0.8, 0.72), (0.8, 0.72), (-0.55, 0.38), (0.55, 0.38)):
        p.line((0.0, 0.55), (u, v), arm, 0.06, vary=False)
        p.line((u, v), (u, v + 0.12), arm, 0.05, vary=False)
        p.ellipse(u, v + 0.14, 0.28, 0.045, 8 * np.sin(phase + u), (200, 200, 205), vary=False)
        p.ellipse(u, v + 0.14, 0.12, 0.03, 0.0, (30, 30, 30), vary=False)
    p.ellipse(0.0, 0.55, 0.26, 0.14, 0.0, body, vary=False)
    p.circle(0.0, 0.43, 0.07, (20, 20, 20), vary=False)
    p.circle(-0.2, 0.55, 0.04, (40, 40, 255), vary=False)
    p.circle(0.2, 0.55, 0.04, (40, 255, 40), vary=False)
    p.line((-0.1, 0.36), (-0.35, 0.0), arm, 0.04, vary=False)
    p.line((0.1, 0.36), (0.35, 0.0), arm, 0.04, vary=False)


def _bicycle(p: _Pen, phase: float) -> None:
    frame = (170, 200, 20)
    for u in (-0.58, 0.58):
        p.circle(u, 0.3, 0.3, (20, 20, 20), thickness=0.045, vary=False)
        p.line((u, 0.3), (u + 0.28 * np.cos(phase), 0.3 + 0.28 * np.sin(phase)), (150, 150, 150), 0.015,
               vary=False)
    p.line((-0.58, 0.3), (-0.05, 0.3), frame, 0.05)
    p.line((-0.05, 0.3), (-0.2, 0.72), frame, 0.05)
    p.line((-0.58, 0.3), (-0.2, 0.72), frame, 0.05)
    p.line((-0.2, 0.72), (0.42, 0.72), frame, 0.05)
    p.line((-0.05, 0.3), (0.42, 0.72), frame, 0.05)
    p.line((0.58, 0.3), (0.45, 0.85), frame, 0.05)
    p.line((0.38, 0.9), (0.56, 0.86), (30, 30, 30), 0.05, vary=False)
    p.line((-0.3, 0.8), (-0.1, 0.8), (30, 30, 30), 0.06, vary=False)


_DRAW: dict[str, Callable[[_Pen, float], None]] = {
    "car": _car, "person": _person, "dog": _dog, "drone": _drone, "bicycle": _bicycle,
}


def draw_object(img: np.ndarray, placement: Placement) -> None:
    """Draw one object onto a BGR image, in place."""
    if placement.kind not in _DRAW:
        raise EdgetlError(f"unknown scene object kind {placement.kind!r}; choose from {', '.join(_DRAW)}")
    _DRAW[placement.kind](_Pen(img, placement), placement.phase)


def object_box(placement: Placement, size: int | Size) -> tuple[int, int, int, int]:
    """Approximate pixel box (x0, y0, x1, y1) of a placement, possibly outside the frame."""
    w, h = _check_size(size)
    half = 0.5 * _ASPECT[placement.kind] * placement.height * h
    x0, x1 = placement.x * w - half, placement.x * w + half
    y1 = placement.base * h
    return int(np.floor(x0)), int(np.floor(y1 - placement.height * h)), int(np.ceil(x1)), int(np.ceil(y1))


# ---------------------------------------------------------------------------- scenes


def apply_lighting(img: np.ndarray, light: Lighting, rng: np.random.Generator) -> np.ndarray:
    """Light a float BGR scene and add sensor noise; returns uint8."""
    h, w = img.shape[:2]
    ramp = 1.0 + light.gradient * np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :, None]
    out = img * (light.gain * np.asarray(light.tint, np.float32))[None, None, :] * ramp
    if light.noise > 0:
        out = out + rng.normal(0.0, light.noise, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def render_scene(size: int | Size, placements: Sequence[Placement] = (), light: Lighting = Lighting(),
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """One camera frame: the fixed background, the objects, then light and noise (uint8 BGR)."""
    w, h = _check_size(size)
    if placements:
        canvas = _canvas_background(*_canvas_size(w, h)).copy()
        for p in placements:
            draw_object(canvas, p)
        img = _downscale(canvas, (w, h))
    else:
        img = _background(w, h)  # not modified below: apply_lighting makes a new array
    return apply_lighting(img, light, rng if rng is not None else np.random.default_rng(0))


def random_lighting(rng: np.random.Generator) -> Lighting:
    return Lighting(
        gain=float(rng.uniform(0.6, 1.25)),
        tint=tuple(float(t) for t in rng.uniform(0.9, 1.1, 3)),  # type: ignore[arg-type]
        gradient=float(rng.uniform(-0.15, 0.15)),
        noise=float(rng.uniform(1.0, 5.0)),
    )


def random_placement(kind: str, rng: np.random.Generator, aspect: float = 4 / 3, partial: float = 0.4
                     ) -> Placement:
    """A random pose for `kind`; a `partial` share of poses are partly out of view (up to 70% of the
    object), like one entering or leaving, so that a classifier knows a car's front half is still a car.

    `aspect` is the frame's width/height, so horizontal limits are right at any frame shape.
    """
    if kind not in _DRAW:
        raise EdgetlError(f"unknown scene object kind {kind!r}; choose from {', '.join(_DRAW)}")
    height = float(rng.uniform(*_HEIGHTS[kind]))
    half_w = 0.5 * _ASPECT[kind] * height / aspect  # half width as a fraction of frame width
    slack = 0.7 * 2 * half_w if rng.random() < partial else 0.0
    lo, hi = half_w - slack, 1.0 - half_w + slack
    x = float(rng.uniform(lo, hi)) if lo < hi else 0.5
    return Placement(kind=kind, x=x, base=float(rng.uniform(*_BASES.get(kind, _ROAD_BASES))), height=height,
                     flip=bool(rng.random() < 0.5), hue_shift=float(rng.uniform(-8, 8)),
                     phase=float(rng.uniform(0, 2 * np.pi)))


def random_scene(kind: str, size: int | Size, rng: np.random.Generator) -> np.ndarray:
    """One labelled sample: `kind` (or EMPTY for the bare scene) under random light."""
    w, h = _check_size(size)
    placements = [] if kind == EMPTY else [random_placement(kind, rng, w / h)]
    return render_scene((w, h), placements, random_lighting(rng), rng)


# ---------------------------------------------------------------------------- datasets


def make_dataset(root: str | os.PathLike[str], n_per_class: int = 60, size: int | Size = (160, 120),
                 seed: int = 0, classes: Sequence[str] = (EMPTY, *KNOWN_KINDS),
                 unknown_root: str | os.PathLike[str] | None = None, n_unknown: int | None = None,
                 progress: bool = True) -> DatasetInfo:
    """Write a folder-per-class JPEG dataset of synthetic camera scenes.

    `root/<class>/<class>_0000.jpg`: the known classes (default: the empty scene plus
    the known kinds). When `unknown_root` is given, images of the unknown kinds go
    there (never in `root`, so nothing trains on them), for evaluating open-set
    detection. Same seed, same bytes.
    """
    if n_per_class < 1:
        raise EdgetlError(f"n_per_class must be at least 1, got {n_per_class}")
    bad = [c for c in classes if c != EMPTY and c not in _DRAW]
    if bad:
        raise EdgetlError(f"unknown scene classes {bad}; choose from {EMPTY}, {', '.join(_DRAW)}")
    w, h = _check_size(size)
    root = Path(root)
    jobs = [(root, c, n_per_class) for c in classes]
    if unknown_root is not None:
        jobs += [(Path(unknown_root), k, n_unknown or max(1, n_per_class // 2)) for k in UNKNOWN_KINDS]
    total = sum(n for _, _, n in jobs)
    bar = _progress(total, "scenes", progress)
    counts: dict[str, int] = {}
    unknown_counts: dict[str, int] = {}
    for i, (base, cls, n) in enumerate(jobs):
        folder = base / cls
        folder.mkdir(parents=True, exist_ok=True)
        # One stream per class: adding a class does not change the others' images.
        rng = np.random.default_rng([seed, i, w, h])
        for j in range(n):
            img = random_scene(cls, (w, h), rng)
            path = folder / f"{cls}_{j:04d}.jpg"
            if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 92]):
                raise EdgetlError(f"could not write {path}; check that the folder is writable and has space")
            bar.update(1)
        (counts if base == root else unknown_counts)[cls] = n
    bar.close()
    log.info("wrote %d synthetic scenes to %s", total, root)
    return DatasetInfo(root=root, classes=list(classes), counts=counts, size=(w, h), seed=seed,
                       unknown_root=Path(unknown_root) if unknown_root is not None else None,
                       unknown_counts=unknown_counts)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, unit: str, enabled: bool):  # noqa: ANN202 - tqdm or a no-op
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a host extra; the generator itself does not need it
        return _NoBar()
    return tqdm(total=total, unit=unit, desc="rendering", leave=False)


# ---------------------------------------------------------------------------- videos


def default_script(fps: float = 10.0, quick: bool = False) -> list[Pass]:
    """Known objects pass one at a time, then an unknown drone crosses; quiet gaps between them."""
    cross = int(round((2.2 if quick else 3.5) * fps))
    gap = int(round((1.0 if quick else 2.0) * fps))
    script, t = [], gap
    for kind in (*KNOWN_KINDS, "drone"):
        base = 0.47 if kind == "drone" else 0.87
        script.append(Pass(kind=kind, start=t, frames=cross, base=base, leftward=kind == "person"))
        t += cross + gap
    return script


def script_length(script: Sequence[Pass], tail: int = 0) -> int:
    return max((p.start + p.frames for p in script), default=0) + tail


def pass_placement(p: Pass, frame: int, aspect: float) -> Placement | None:
    """Where the object of pass `p` is on `frame` (None when the pass is not under way)."""
    k = frame - p.start
    if k < 0 or k >= p.frames:
        return None
    height = p.height if p.height is not None else float(np.mean(_HEIGHTS[p.kind]))
    half_w = 0.5 * _ASPECT[p.kind] * height / aspect
    # Enter with the leading edge at the frame border on frame 0, leave fully at the last frame.
    t = k / max(1, p.frames - 1)
    x = -half_w + t * (1.0 + 2 * half_w) * (1 - 1e-3) + 1e-3
    if p.leftward:
        x = 1.0 - x
    return Placement(kind=p.kind, x=x, base=p.base, height=height, flip=p.leftward, phase=0.9 * k)


def render_video(path: str | os.PathLike[str], script: Sequence[Pass] | None = None, fps: float = 10.0,
                 size: int | Size = (320, 240), light: Lighting = Lighting(gain=1.0, noise=2.5), seed: int = 0,
                 tail: int | None = None, progress: bool = True) -> list[Appearance]:
    """Render a fixed-camera video where the script's objects cross the frame.

    Codec from the extension: `.avi` MJPG, `.mp4` mp4v. Returns, per pass, the
    frames where the object is in view (partly and wholly), the ground truth a
    runtime's detections can be checked against.
    """
    script = list(script) if script is not None else default_script(fps)
    if not script:
        raise EdgetlError("the video script is empty; give at least one Pass")
    bad = [p.kind for p in script if p.kind not in _DRAW]
    if bad:
        raise EdgetlError(f"unknown kinds in the video script: {bad}; choose from {', '.join(_DRAW)}")
    w, h = _check_size(size)
    path = Path(path)
    codec = {".avi": "MJPG", ".mp4": "mp4v"}.get(path.suffix.lower())
    if codec is None:
        raise EdgetlError(f"video path {path} must end in .avi or .mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    n = script_length(script, int(round(2 * fps)) if tail is None else tail)  # default: 2 s of empty scene
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*codec), float(fps), (w, h))
    if not writer.isOpened():
        raise EdgetlError(f"OpenCV cannot write {codec} video to {path}; try the other extension (.avi/.mp4)")
    rng = np.random.default_rng([seed, 7919])
    bar = _progress(n, "frames", progress)
    try:
        for frame in range(n):
            placements = [pl for p in script if (pl := pass_placement(p, frame, w / h)) is not None]
            writer.write(render_scene((w, h), placements, light, rng))
            bar.update(1)
    finally:
        writer.release()
        bar.close()
    return [_appearance(p, (w, h)) for p in script]


def _appearance(p: Pass, size: Size) -> Appearance:
    w, _ = size
    visible, full = [], []
    for frame in range(p.start, p.start + p.frames):
        pl = pass_placement(p, frame, size[0] / size[1])
        assert pl is not None
        x0, _, x1, _ = object_box(pl, size)
        if x1 > 0 and x0 < w:
            visible.append(frame)
        if x0 >= 0 and x1 <= w:
            full.append(frame)
    return Appearance(kind=p.kind, known=is_known(p.kind), first_frame=visible[0], last_frame=visible[-1],
                      full_first=full[0] if full else -1, full_last=full[-1] if full else -1)


def appearances_to_json(appearances: Sequence[Appearance]) -> list[dict]:
    return [asdict(a) for a in appearances]
