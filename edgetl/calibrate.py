"""Calibration sets for int8 quantization: representative, stratified, de-duplicated.

int8 ranges are fixed from what the calibration images make each layer output, so the set must
look like deployment (see calibration/README.md): every class, no near-duplicates wasting slots,
and ideally frames from the target camera (`extra`).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.atomic import in_the_way, replacing_dir
from edgetl.errors import EdgetlError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
EXTRA_LABEL = "_camera"


@dataclass(frozen=True)
class Candidate:
    path: Path
    label: str
    frame: int | None = None  # frame number when taken from a video


def dhash(image_rgb: np.ndarray, bits: int = 8) -> int:
    """Difference hash: robust to resizing/re-encoding, so re-saved copies collide."""
    import cv2

    gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (bits + 1, bits), interpolation=cv2.INTER_AREA)
    diff = small[:, 1:] > small[:, :-1]
    return int("".join("1" if v else "0" for v in diff.flatten()), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _source_samples(data: str | os.PathLike[str]) -> list[Candidate]:
    """Training samples of a run folder, or all samples of a dataset (folder or CSV)."""
    from edgetl.data import load_dataset

    path = Path(data)
    if (path / "split.csv").is_file() and (path / "labels.txt").is_file():
        from edgetl.run import Run

        samples = Run(path).samples("train")
    else:
        ds = load_dataset(path)
        samples = ds.splits.get("train") or ds.all_samples()
    if not samples:
        raise EdgetlError(f"{data} has no images to calibrate with")
    return [Candidate(Path(s.path), s.label) for s in samples]


def _extra_candidates(extra: str | os.PathLike[str]) -> list[Candidate]:
    """Camera captures: images in a folder (recursively) and evenly spaced video frames."""
    from edgetl.data import IMAGE_EXTENSIONS

    root = Path(extra)
    if not root.is_dir():
        raise EdgetlError(f"--extra {root} is not a folder of camera frames (images or videos)")
    out: list[Candidate] = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        ext = p.suffix.lower()
        if ext in IMAGE_EXTENSIONS:
            out.append(Candidate(p.resolve(), EXTRA_LABEL))
        elif ext in VIDEO_EXTENSIONS:
            import cv2

            cap = cv2.VideoCapture(str(p))
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            cap.release()
            step = max(1, n // 50)  # at most ~50 candidates per clip: neighbouring frames are near-duplicates
            out.extend(Candidate(p.resolve(), EXTRA_LABEL, f) for f in range(0, max(n, 0), step))
    if not out:
        raise EdgetlError(f"--extra {root} has no images or videos")
    return out


def _read_frame(c: Candidate) -> np.ndarray:
    """Full-resolution RGB frame `c.frame` of a video."""
    import cv2

    cap = cv2.VideoCapture(str(c.path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, c.frame)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise EdgetlError(f"{c.path}: cannot read frame {c.frame}")
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _load(c: Candidate, size: int) -> np.ndarray:
    from edgetl.data import load_image

    if c.frame is None:
        return load_image(c.path, size)
    import cv2

    return cv2.resize(_read_frame(c), (size, size), interpolation=cv2.INTER_AREA)


def stratified_quota(counts: dict[str, int], total: int) -> dict[str, int]:
    """Per-class quotas summing to min(total, available): equal shares, leftovers to larger classes."""
    quota = {k: 0 for k in counts}
    remaining = min(total, sum(counts.values()))
    open_classes = sorted(counts)
    while remaining > 0 and open_classes:
        share = max(1, remaining // len(open_classes))
        for k in list(open_classes):
            take = min(share, counts[k] - quota[k], remaining)
            quota[k] += take
            remaining -= take
            if quota[k] >= counts[k]:
                open_classes.remove(k)
            if remaining == 0:
                break
    return quota


def select(candidates: list[Candidate], n: int, seed: int, image_size: int = 64, max_distance: int = 4,
           taken: list[tuple[Candidate, np.ndarray]] | None = None,
           ) -> tuple[list[tuple[Candidate, np.ndarray]], int]:
    """Up to n candidates, stratified by label, skipping near-duplicates (dHash within max_distance),
    also of the images already `taken` (e.g. the camera frames picked first).

    Returns [(candidate, image)], duplicates skipped.
    """
    by_label: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_label[c.label].append(c)
    rng = random.Random(seed)
    for items in by_label.values():
        rng.shuffle(items)
    quota = stratified_quota({k: len(v) for k, v in by_label.items()}, n)
    chosen: list[tuple[Candidate, np.ndarray]] = []
    hashes: list[int] = [dhash(img) for _, img in taken or []]
    dupes = 0
    for label in sorted(by_label):
        got = 0
        for c in by_label[label]:
            if got >= quota[label]:
                break
            try:
                img = _load(c, image_size)
            except EdgetlError as exc:
                log.warning("calibration: skipping %s", exc)
                continue
            h = dhash(img)
            if any(hamming(h, o) <= max_distance for o in hashes):
                dupes += 1
                continue
            hashes.append(h)
            chosen.append((c, img))
            got += 1
    return chosen, dupes


def build(data: str | os.PathLike[str], out: str | os.PathLike[str], size: int = 300,
          extra: str | os.PathLike[str] | None = None, extra_fraction: float = 0.3, seed: int = 0,
          overwrite: bool = False) -> dict[str, Any]:
    """Write a calibration set folder: images/<label>/<n>_<name> plus manifest.json."""
    if size < 1:
        raise EdgetlError("--size must be at least 1 (100-500 images is typical)")
    if not 0.0 <= extra_fraction <= 1.0:
        raise EdgetlError("--extra-fraction must be between 0 and 1")
    out = Path(out)
    for src in [Path(data)] + ([Path(extra)] if extra is not None else []):
        # --overwrite empties --out, and images copied inside a dataset folder become a new class of it
        inside = src.is_dir() and src.resolve() in out.resolve().parents and not (src / "split.csv").is_file()
        if out.resolve() == src.resolve() or out.resolve() in src.resolve().parents or inside:
            raise EdgetlError(f"--out {out} overlaps {src}; write the calibration set to a separate folder "
                              "(e.g. calibration/NAME)")
    blocked = in_the_way(out)  # before any image is read: a file here said "[Errno 20] Not a directory"
    if blocked:
        p, what = blocked
        where = f"--out {out}" if p == out else f"--out {out}: {p}"
        raise EdgetlError(f"{where} is {what}; give a folder for the calibration set (e.g. calibration/NAME)")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise EdgetlError(f"{out} already exists; choose another name or pass --overwrite")
        # replaced only once the new set is complete (below): a full disk or a kill keeps the previous set
    source = _source_samples(data)
    picked: list[tuple[Candidate, np.ndarray]] = []
    dupes = 0
    if extra is not None:
        cam = _extra_candidates(extra)
        picked, dupes = select(cam, int(round(size * extra_fraction)), seed)
    rest, d2 = select(source, size - len(picked), seed, taken=picked)
    picked += rest
    dupes += d2
    # Built in a hidden folder beside OUT that takes OUT's place only when complete: a half-copied set would
    # otherwise pass for a plain image folder (calibration_files reads those when there is no manifest).
    with replacing_dir(out) as stage:
        images = stage / "images"
        images.mkdir(parents=True, exist_ok=True)
        entries = []
        for i, (c, _) in enumerate(picked):
            label_dir = images / c.label
            label_dir.mkdir(exist_ok=True)
            if c.frame is None:
                name = f"{i:04d}_{c.path.name}"
                shutil.copyfile(c.path, label_dir / name)
            else:
                import cv2

                name = f"{i:04d}_{c.path.stem}_f{c.frame}.png"
                if not cv2.imwrite(str(label_dir / name), cv2.cvtColor(_read_frame(c), cv2.COLOR_RGB2BGR)):
                    raise EdgetlError(f"cannot write {out / 'images' / c.label / name} (is the disk full?)")
            entries.append({"file": f"images/{c.label}/{name}", "label": c.label, "source": str(c.path),
                            "frame": c.frame, "camera": c.label == EXTRA_LABEL})
        counts: dict[str, int] = defaultdict(int)
        for e in entries:
            counts[e["label"]] += 1
        manifest = {
            "schema_version": 1, "source": str(Path(data).resolve()),
            "extra": str(Path(extra).resolve()) if extra else None,
            "requested": size, "count": len(entries), "per_label": dict(sorted(counts.items())),
            "duplicates_skipped": dupes, "seed": seed, "files": entries,
        }
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if len(entries) < size:
        log.warning("calibration set has %d images (asked for %d): not enough distinct images", len(entries), size)
    log.info("calibration set %s: %d images %s, %d near-duplicates skipped", out, len(entries),
             dict(counts), dupes)
    return manifest


def calibration_files(calibration_dir: str | os.PathLike[str]) -> list[Path]:
    """Images of a calibration set (its manifest), or every image in a plain folder."""
    from edgetl.data import IMAGE_EXTENSIONS

    root = Path(calibration_dir)
    if not root.is_dir():
        raise EdgetlError(f"calibration set {root} not found; build one with `edgetl calibrate build`")
    mf = root / MANIFEST
    if mf.is_file():
        files = [root / e["file"] for e in json.loads(mf.read_text())["files"]]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise EdgetlError(f"calibration set {root} lists missing files ({', '.join(missing[:3])}); rebuild it")
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise EdgetlError(f"calibration set {root} has no images")
    return files
