"""The procedural camera-scene generator: deterministic, distinct classes, videos with known ground truth."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgetl import scenes
from edgetl.errors import EdgetlError


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.jpg"))}


def test_same_seed_writes_the_same_dataset_and_another_seed_does_not(tmp_path):
    a = scenes.make_dataset(tmp_path / "a", n_per_class=4, size=(96, 72), seed=5, progress=False)
    b = scenes.make_dataset(tmp_path / "b", n_per_class=4, size=(96, 72), seed=5, progress=False)
    c = scenes.make_dataset(tmp_path / "c", n_per_class=4, size=(96, 72), seed=6, progress=False)
    da, db, dc = _digest(a.root), _digest(b.root), _digest(c.root)
    assert len(da) == 4 * 4 and da == db
    assert set(da) == set(dc) and all(da[k] != dc[k] for k in da)


def test_dataset_is_folder_per_class_and_unknown_kinds_stay_out_of_it(tmp_path):
    info = scenes.make_dataset(tmp_path / "data", n_per_class=3, size=(80, 60), seed=0,
                               unknown_root=tmp_path / "unknown", n_unknown=2, progress=False)
    assert sorted(p.name for p in info.root.iterdir()) == sorted([scenes.EMPTY, *scenes.KNOWN_KINDS])
    assert sorted(p.name for p in (tmp_path / "unknown").iterdir()) == sorted(scenes.UNKNOWN_KINDS)
    assert info.counts == {c: 3 for c in info.classes} and info.unknown_counts == {k: 2 for k in scenes.UNKNOWN_KINDS}
    img = cv2.imread(str(next((info.root / "car").glob("*.jpg"))))
    assert img.shape == (60, 80, 3)


def _object_features(kind: str, rng: np.random.Generator, size=(160, 120)) -> np.ndarray:
    """Colour and shape of exactly the object's pixels (same light and noise with and without it),
    for a wholly visible object."""
    light = scenes.random_lighting(rng)
    p = scenes.random_placement(kind, rng, size[0] / size[1], partial=0.0)
    seed = int(rng.integers(1 << 30))
    with_obj = scenes.render_scene(size, [p], light, np.random.default_rng(seed)).astype(np.float32)
    without = scenes.render_scene(size, [], light, np.random.default_rng(seed)).astype(np.float32)
    mask = np.abs(with_obj - without).max(axis=2) > 0
    assert mask.sum() > 50, f"{kind} drew almost nothing"
    colour = with_obj[mask].mean(axis=0) / (light.gain * np.asarray(light.tint)) / 255.0
    ys, xs = np.nonzero(mask)
    aspect = (xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1)
    fill = mask.sum() / ((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
    return np.array([*colour, np.log(aspect), fill])


def test_each_kind_has_its_own_colour_and_silhouette():
    rng = np.random.default_rng(11)
    kinds = scenes.kinds()
    feats = {k: np.stack([_object_features(k, rng) for _ in range(24)]) for k in kinds}
    centroids = np.stack([feats[k][:12].mean(0) for k in kinds])
    for i, k in enumerate(kinds):
        held_out = feats[k][12:]
        nearest = np.linalg.norm(held_out[:, None] - centroids[None], axis=2).argmin(1)
        assert (nearest == i).mean() >= 0.9, f"{k} is confused with {[kinds[j] for j in nearest]}"


def test_the_background_is_fixed_and_only_light_and_noise_change_an_empty_scene():
    a = scenes.render_scene((96, 72), [], scenes.Lighting(noise=0), np.random.default_rng(1))
    b = scenes.render_scene((96, 72), [], scenes.Lighting(noise=0), np.random.default_rng(2))
    assert np.array_equal(a, b)
    dim = scenes.render_scene((96, 72), [], scenes.Lighting(gain=0.6, noise=0))
    assert dim.mean() < 0.7 * a.mean()


def _read_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_video_has_the_scripted_frames_and_the_unknown_enters_on_its_frame(tmp_path, suffix):
    size = (160, 120)
    script = scenes.default_script(fps=10, quick=True)
    truth = scenes.render_video(tmp_path / f"v{suffix}", script, fps=10, size=size, tail=5, progress=False)
    frames = _read_all(tmp_path / f"v{suffix}")
    assert len(frames) == scenes.script_length(script) + 5
    assert frames[0].shape == (size[1], size[0], 3)
    assert [a.kind for a in truth] == [*scenes.KNOWN_KINDS, "drone"]
    assert [a.known for a in truth] == [True, True, True, False]
    # Passes do not overlap: one object in view at a time, the unknown last.
    for prev, nxt in zip(truth, truth[1:], strict=False):
        assert prev.last_frame < nxt.first_frame
    assert all(a.first_frame <= a.full_first <= a.full_last <= a.last_frame for a in truth)

    assert truth[0].first_frame > 0
    empty = frames[0].astype(np.float32)  # before anything enters; has the same codec artefacts at edges

    def changed(i: int) -> int:  # pixels clearly unlike the empty scene (noise and codec stay below 60)
        return int((np.abs(frames[i].astype(np.float32) - empty).max(axis=2) > 60).sum())

    drone = truth[-1]
    assert changed(drone.first_frame - 1) == 0
    assert changed(drone.full_first) > 200
    assert changed(drone.last_frame + 1) == 0
    assert changed(truth[0].full_first) > 200


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(EdgetlError, match="unknown scene classes"):
        scenes.make_dataset(tmp_path / "d", classes=["car", "unicorn"], progress=False)
    with pytest.raises(EdgetlError, match=r"\.avi or \.mp4"):
        scenes.render_video(tmp_path / "v.mkv", progress=False)
    with pytest.raises(EdgetlError, match="too small"):
        scenes.background(8)
    with pytest.raises(EdgetlError, match="unknown kinds"):
        scenes.render_video(tmp_path / "v.avi", [scenes.Pass("unicorn", 0, 5)], progress=False)
