"""Dataset sources and image loading shared by training, evaluation, export and visualisation.

Three input layouts are accepted everywhere:
- a folder per class (split into train/val by :func:`stratified_split`),
- a folder with ``train/``, ``val/`` (and ``test/``) subfolders, each holding a folder per class,
- a CSV manifest (path and label columns; optional split column; relative paths resolve against
  the CSV's folder; empty label cells can mean a named class such as "Empty").
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetl.errors import EdgetlError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SPLITS = ("train", "val", "test")
# Decoding beyond this many pixels risks exhausting memory on small hosts; PIL's own guard is 89 MP.
MAX_PIXELS = 250_000_000


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str


@dataclass(frozen=True)
class DataSpec:
    """Where a dataset lives and how to read it (a folder, or a CSV manifest)."""

    path: Path
    path_column: str = "path"
    label_column: str = "label"
    missing_label: str | None = None
    split_column: str | None = None

    @property
    def is_csv(self) -> bool:
        return self.path.suffix.lower() == ".csv"

    def describe(self) -> dict:
        d = {"path": str(self.path.resolve())}
        if self.is_csv:
            d.update(path_column=self.path_column, label_column=self.label_column,
                     missing_label=self.missing_label, split_column=self.split_column)
        return d


@dataclass
class Dataset:
    """Samples grouped by split. ``splits`` keys are among ``all``, ``train``, ``val``, ``test``."""

    splits: dict[str, list[Sample]] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return sorted({s.label for samples in self.splits.values() for s in samples})

    def all_samples(self) -> list[Sample]:
        return [s for samples in self.splits.values() for s in samples]


def as_spec(data: str | Path | DataSpec, **csv_options) -> DataSpec:
    if isinstance(data, DataSpec):
        return data
    return DataSpec(Path(data), **{k: v for k, v in csv_options.items() if v is not None})


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _image_files(folder: Path) -> list[Path]:
    """Images anywhere under folder. Symlinked subfolders are followed (Path.rglob skips them before Python
    3.13, silently dropping their images); a folder reached twice (a link loop) is walked once."""
    found: list[Path] = []
    walked: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in walked:
            dirnames[:] = []
            continue
        walked.add(real)
        found.extend(p for name in filenames if _is_image(p := Path(dirpath) / name))
    return sorted(found)


def _class_folder_samples(root: Path) -> list[Sample]:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise EdgetlError(f"{root} has no class folders: put images in one subfolder per class "
                          f"(e.g. {root}/cats/*.jpg, {root}/dogs/*.jpg) or pass a CSV manifest")
    samples: list[Sample] = []
    for d in class_dirs:
        images = _image_files(d)
        if not images:
            raise EdgetlError(f"class folder {d} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                              "add images or remove the folder")
        samples.extend(Sample(p.resolve(), d.name) for p in images)
    return samples


def _csv_path(base: Path, raw_path: str) -> Path:
    """A manifest path, absolute or relative to the CSV's folder; Windows backslashes work on POSIX too."""
    path = Path(raw_path)
    path = (path if path.is_absolute() else base / path).resolve()
    if "\\" in raw_path and not path.is_file():  # a manifest written on Windows: imgs\a\1.jpg
        alt = _csv_path(base, raw_path.replace("\\", "/"))
        if alt.is_file():
            return alt
    return path


def _read_csv(spec: DataSpec, strict: bool = True) -> dict[str, list[Sample]]:
    base = spec.path.resolve().parent
    try:
        with spec.path.open(newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as e:
        raise EdgetlError(f"cannot read CSV {spec.path}: {e}") from e
    except UnicodeDecodeError as e:  # Excel's plain "CSV" is cp1252: say so instead of a traceback
        raise EdgetlError(f"CSV {spec.path} is not UTF-8 ({e}); save it as UTF-8 (Excel: 'CSV UTF-8')") from e
    # Excel writes ';' (or a tab) where ',' is the decimal mark: take the first that yields the needed columns.
    for delimiter in (",", ";", "\t"):
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        columns = reader.fieldnames or []
        if spec.path_column in columns and spec.label_column in columns:
            break
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = reader.fieldnames or []
    rows = list(reader)
    for col in (spec.path_column, spec.label_column):
        if col not in columns:
            raise EdgetlError(f"CSV {spec.path} has no column {col!r} (columns: {', '.join(columns)}); "
                              "choose with --path-column / --label-column")
    split_col = spec.split_column or ("split" if "split" in columns else None)
    if split_col and split_col not in columns:
        raise EdgetlError(f"CSV {spec.path} has no split column {split_col!r}")
    out: dict[str, list[Sample]] = defaultdict(list)
    missing_files: list[str] = []
    seen: dict[Path, tuple[int, str, str]] = {}
    for i, row in enumerate(rows, start=2):
        raw_path = (row.get(spec.path_column) or "").strip()
        label = (row.get(spec.label_column) or "").strip()
        if not label:
            if spec.missing_label is None:
                raise EdgetlError(f"CSV {spec.path} line {i}: empty {spec.label_column!r}; pass "
                                  "--missing-label NAME to give empty cells a class (e.g. Empty)")
            label = spec.missing_label
        path = _csv_path(base, raw_path)
        if not raw_path or not path.is_file():
            missing_files.append(f"line {i}: {raw_path or '(empty path)'}")
            if strict or not raw_path:
                continue
        split = (row.get(split_col) or "").strip().lower() if split_col else "all"
        if split not in (*SPLITS, "all"):
            raise EdgetlError(f"CSV {spec.path} line {i}: split {split!r} is not one of train/val/test")
        if path in seen:
            first, first_label, first_split = seen[path]
            if (label, split) == (first_label, first_split):
                continue  # a repeated row would count the image twice and can put it in train and val (leakage)
            if strict:
                raise EdgetlError(f"CSV {spec.path} line {i}: {raw_path} (label {label!r}, split {split}) is also on "
                                  f"line {first} (label {first_label!r}, split {first_split}); an image can have only "
                                  "one label and one split: fix or remove one row")
        else:
            seen[path] = (i, label, split)
        out[split].append(Sample(path, label))
    if missing_files and strict:
        shown = "; ".join(missing_files[:5]) + (" ..." if len(missing_files) > 5 else "")
        raise EdgetlError(f"CSV {spec.path}: {len(missing_files)} row(s) point at missing files ({shown}); "
                          f"paths resolve against {base}; fix or remove those rows")
    if not out:
        raise EdgetlError(f"CSV {spec.path} has no rows")
    return dict(out)


def load_dataset(data: str | Path | DataSpec, strict: bool = True, **csv_options) -> Dataset:
    """Read a dataset in any of the supported layouts (no image is decoded here).

    strict=False keeps CSV rows whose file is missing (so `data check` can report them)."""
    spec = as_spec(data, **csv_options)
    if not spec.path.exists():
        raise EdgetlError(f"dataset {spec.path} does not exist")
    if spec.path.is_file():
        if not spec.is_csv:
            raise EdgetlError(f"{spec.path} is a file; give a folder of class folders or a .csv manifest")
        return _no_case_clashes(Dataset(_read_csv(spec, strict)))
    split_dirs = {s: spec.path / s for s in SPLITS if (spec.path / s).is_dir()}
    for alias in ("valid", "validation"):  # Roboflow exports train/valid/test: don't silently ignore valid/
        if "val" not in split_dirs and (spec.path / alias).is_dir():
            split_dirs["val"] = spec.path / alias
    if "train" in split_dirs:
        return _no_case_clashes(Dataset({s: _class_folder_samples(d) for s, d in split_dirs.items()}))
    return _no_case_clashes(Dataset({"all": _class_folder_samples(spec.path)}))


def _no_case_clashes(dataset: Dataset) -> Dataset:
    """Refuse class names that differ only in case: one folder on macOS/Windows/FAT cards, and usually a typo."""
    by_folded: dict[str, list[str]] = defaultdict(list)
    for c in dataset.classes:
        by_folded[c.casefold()].append(c)
    clashes = ["/".join(names) for names in by_folded.values() if len(names) > 1]
    if clashes:
        raise EdgetlError(f"class names {', '.join(clashes)} differ only in case (one folder on macOS, Windows and "
                          "FAT cards, and usually a typo): rename or merge them")
    return dataset


def stratified_split(samples: Sequence[Sample], fractions: dict[str, float], seed: int) -> dict[str, list[Sample]]:
    """Split per class with a seeded shuffle; every split gets at least one sample of each class
    that has enough samples. ``fractions`` maps split name -> fraction; the first key takes the rest."""
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: (s.label, str(s.path))):
        by_class[s.label].append(s)
    rng = random.Random(seed)
    names = list(fractions)
    out: dict[str, list[Sample]] = {n: [] for n in names}
    for label in sorted(by_class):
        items = by_class[label][:]
        rng.shuffle(items)
        n = len(items)
        start = 0
        for name in names[1:]:
            k = int(round(n * fractions[name]))
            if fractions[name] > 0 and n - start > 1:
                k = max(1, k)
            k = min(k, n - start - 1)  # the first split always keeps at least one
            out[name].extend(items[start:start + k])
            start += k
        out[names[0]].extend(items[start:])
    return out


def train_val_test(dataset: Dataset, val_split: float, seed: int, val_data: Dataset | None = None,
                   ) -> dict[str, list[Sample]]:
    """Resolve a dataset into explicit train/val(/test) lists."""
    if not 0.0 < val_split < 1.0:
        raise EdgetlError(f"--val-split must be between 0 and 1 (got {val_split})")
    splits = dict(dataset.splits)
    if val_data is not None:
        train = splits.get("train", []) + splits.get("all", [])
        val = val_data.splits.get("val") or val_data.all_samples()
        out = {"train": train, "val": val}
        if "test" in splits:
            out["test"] = splits["test"]
        return out
    if "train" in splits and "val" in splits:
        return {k: v for k, v in splits.items() if k in SPLITS}
    pool = splits.get("train", []) + splits.get("all", [])
    parts = stratified_split(pool, {"train": 1 - val_split, "val": val_split}, seed)
    if "test" in splits:
        parts["test"] = splits["test"]
    return parts


def validate_classes(splits: dict[str, list[Sample]]) -> list[str]:
    """Check the training set is trainable; return the sorted class list."""
    train = splits.get("train", [])
    counts = Counter(s.label for s in train)
    if len(counts) < 2:
        found = ", ".join(counts) or "none"
        raise EdgetlError(f"training needs at least 2 classes; found {len(counts)} ({found}). "
                          "Add a folder per class (a 'background'/'empty' class counts)")
    classes = sorted(counts)
    for name in ("val", "test"):
        unknown = sorted({s.label for s in splits.get(name, [])} - set(classes))
        if unknown:
            raise EdgetlError(f"{name} set has classes missing from training: {', '.join(unknown)}")
    return classes


# ---------------------------------------------------------------- image loading

def _open_rgb(path: Path, size: int | None):
    """Decode any common image to an RGB PIL image (grayscale, palette, CMYK, 16-bit and alpha handled)."""
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        img = Image.open(path)
        if size and img.format == "JPEG":
            img.draft("RGB", (size, size))  # decode huge JPEGs at reduced scale: much faster, same result
        img = ImageOps.exif_transpose(img)
        img.load()
    except Image.DecompressionBombError as e:
        raise EdgetlError(f"{path}: image too large ({e}); downscale it below {MAX_PIXELS} pixels") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise EdgetlError(f"{path}: unreadable or corrupt image ({e}); re-export or remove it") from e
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        img = Image.fromarray((arr * (255.0 / hi)).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        # Transparent pixels composite on black: what a camera never sees, and deterministic.
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def load_image(path: str | Path, size: int, center_crop: float | None = None) -> np.ndarray:
    """Load an image as a uint8 RGB array of shape (size, size, 3): area-interpolated resize.

    `center_crop` (0-1]: first cut the centred square whose side is that fraction of the shorter side
    (aspect kept, as ImageNet evaluation does); None squeezes the whole picture (a fixed camera's edges
    matter). The device applies the same crop from the bundle manifest (`edgetl_device.inference`).
    This is the one loader used by training, evaluation, export calibration and visualisation, so the
    model always sees pixels prepared the same way. Raises EdgetlError for unreadable files.
    """
    import cv2

    from edgetl_device.inference import center_crop as crop

    draft = size if not center_crop else int(np.ceil(size / center_crop))
    arr = np.asarray(_open_rgb(Path(path), draft))
    if center_crop:
        arr = crop(arr, center_crop)
    if arr.shape[0] != size or arr.shape[1] != size:
        arr = cv2.resize(arr, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def load_images(paths: Iterable[Path], size: int, desc: str = "loading images", workers: int = 4,
                center_crop: float | None = None) -> tuple[np.ndarray, list[int], list[tuple[Path, str]]]:
    """Load many images in parallel (`load_image` each). Returns (array N×size×size×3, indices loaded,
    failures)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    paths = list(paths)
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    ok: list[int] = []
    failures: list[tuple[Path, str]] = []

    def one(i: int):
        try:
            out[i] = load_image(paths[i], size, center_crop)
            return i, None
        except EdgetlError as e:
            return i, str(e)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, err in tqdm(pool.map(one, range(len(paths))), total=len(paths), desc=desc, leave=False,
                           disable=len(paths) < 50):
            if err is None:
                ok.append(i)
            else:
                log.warning("skipping %s", err)
                failures.append((paths[i], err))
    return out[ok] if len(ok) != len(paths) else out, ok, failures


# ---------------------------------------------------------------- split manifests

def split_manifest(data, out_csv: str | Path, val: float = 0.2, test: float = 0.1, seed: int = 0,
                   csv_options: dict | None = None) -> dict[str, dict[str, int]]:
    """Write a stratified, seeded train/val/test manifest (`path,label,split`); no files are copied.

    Existing splits in `data` are pooled and re-split, so the manifest alone defines the split.
    Returns counts per split and class.
    """
    from edgetl.atomic import replacing
    from edgetl.run import write_split_csv

    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise EdgetlError(f"--val and --test must be fractions in [0, 1) summing below 1 (got {val}, {test})")
    if Path(out_csv).is_dir():
        raise EdgetlError(f"--out {out_csv} is a folder; give the manifest's file name, "
                          f"e.g. {Path(out_csv) / 'split.csv'}")
    dataset = load_dataset(as_spec(data, **(csv_options or {})))
    fractions = {"train": 1 - val - test, "val": val, "test": test}
    parts = stratified_split(dataset.all_samples(), {k: v for k, v in fractions.items() if k == "train" or v > 0},
                             seed)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out_csv) as tmp:  # a full disk leaves the previous manifest, never a truncated one
        write_split_csv(tmp, parts)
    return {split: dict(sorted(Counter(s.label for s in samples).items())) for split, samples in parts.items()}


# ---------------------------------------------------------------- dataset check

def perceptual_hash(rgb: np.ndarray) -> int:
    """64-bit DCT perceptual hash: robust to resizing, recompression and small colour shifts."""
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])  # DC term excluded from the median: it only carries brightness
    return int(np.packbits(bits).view(">u8")[0])


def near_pairs(hashes: Sequence[int], max_distance: int, block_elements: int = 4_000_000,
               ) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every i < j whose 64-bit hashes differ in at most max_distance bits.

    Row blocks against the rest keep memory at block_elements distances (~32 MB) whatever the dataset size;
    the full n x n matrix took 4.7 GB and 26 s at 20k images (76 MB and 1.6 s this way)."""
    h = np.array(hashes, dtype=np.uint64)
    n = len(h)
    rows = max(1, block_elements // max(n, 1))
    out: list[tuple[int, int, int]] = []
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        dist = np.bitwise_count(h[start:stop, None] ^ h[None, start:])  # block x (n - start)
        ii, jj = np.nonzero(dist <= max_distance)
        keep = jj > ii  # column k is row start + k: only pairs with i < j, each once
        out.extend((start + a, start + k, int(dist[a, k])) for a, k in zip(ii[keep].tolist(), jj[keep].tolist(),
                                                                              strict=True))
    return out


def hamming_matrix(hashes: Sequence[int]) -> np.ndarray:
    """Pairwise Hamming distances between 64-bit hashes (n×n, int); near_pairs searches large sets."""
    h = np.array(hashes, dtype=np.uint64)
    return np.bitwise_count(h[:, None] ^ h[None, :]).astype(np.int32)


# An image holds no more detail than its thumbnail at ratio r when shrinking it to r of its size and enlarging
# it back changes 99 % of its pixels by at most DETAIL_TOLERANCE levels in every channel (upscaled web thumbnails
# do this; a sharp photo, or a hard-edged drawing, does not).
DETAIL_RATIOS = (1 / 8, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3)
DETAIL_TOLERANCE = 12.0


def detail_ratio(rgb: np.ndarray) -> float:
    """The smallest DETAIL_RATIOS fraction an image can be shrunk to and enlarged back from within
    DETAIL_TOLERANCE (1.0 when none can): how much of the stored resolution carries detail.

    Sharp photos give 1.0; the flowers5 thumbnails (128 px files) give 1/4: they hold about 32 px
    of detail, and a 224 px network fed them sees blur that no fine-tuning can sharpen."""
    import cv2

    img = np.asarray(rgb).astype(np.float32)
    h, w = img.shape[:2]
    for ratio in DETAIL_RATIOS:
        small = (max(1, round(w * ratio)), max(1, round(h * ratio)))
        if min(small) < 8:
            continue
        back = cv2.resize(cv2.resize(img, small, interpolation=cv2.INTER_AREA), (w, h),
                          interpolation=cv2.INTER_CUBIC)
        if np.percentile(np.abs(back - img).max(axis=-1), 99) <= DETAIL_TOLERANCE:
            return ratio
    return 1.0


def _inspect(path: Path) -> dict:
    """Decode one file fully (catches truncation) and describe it."""
    import hashlib

    from PIL import Image

    info: dict = {"path": str(path)}
    try:
        raw = path.read_bytes()
        info["sha1"] = hashlib.sha1(raw).hexdigest()
        rgb = np.asarray(_open_rgb(path, 256))  # first: it turns bad headers and decompression bombs into errors
        with Image.open(path) as im:
            info["width"], info["height"], info["mode"] = im.width, im.height, im.mode
        info["phash"] = perceptual_hash(rgb)
        info["detail"] = detail_ratio(rgb)
    except (EdgetlError, OSError, ValueError) as e:
        info["error"] = str(e)
    return info


def check_dataset(data, *, csv_options: dict | None = None, near_distance: int = 4, tiny_class: int = 10,
                  imbalance_ratio: float = 5.0, workers: int = 4) -> dict:
    """Classes, counts, image sizes and detail (`detail_ratio`), unreadable files, exact/near duplicates
    (flagging train/val/test leakage), class imbalance and tiny classes. Never raises on bad images: they
    are reported."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    dataset = load_dataset(as_spec(data, **(csv_options or {})), strict=False)
    entries = [(split, s) for split, samples in dataset.splits.items() for s in samples]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        infos = list(tqdm(pool.map(lambda e: _inspect(e[1].path), entries), total=len(entries),
                          desc="checking images", leave=False, disable=len(entries) < 50))
    for (split, s), info in zip(entries, infos, strict=True):
        info["split"], info["label"] = split, s.label
    bad = [{"path": i["path"], "split": i["split"], "label": i["label"], "error": i["error"]}
           for i in infos if "error" in i]
    good = [i for i in infos if "error" not in i]

    counts: dict[str, dict[str, int]] = {}
    for split, samples in dataset.splits.items():
        counts[split] = dict(sorted(Counter(s.label for s in samples).items()))
    widths = np.array([i["width"] for i in good]) if good else np.zeros(0)
    heights = np.array([i["height"] for i in good]) if good else np.zeros(0)
    sizes = {}
    if good:
        sizes = {"width": {"min": int(widths.min()), "median": int(np.median(widths)), "max": int(widths.max())},
                 "height": {"min": int(heights.min()), "median": int(np.median(heights)), "max": int(heights.max())},
                 "modes": dict(Counter(i["mode"] for i in good))}
        ratios = np.array([i["detail"] for i in good])
        detail_px = ratios * np.minimum(widths, heights)
        sizes["detail"] = {"median_ratio": round(float(np.median(ratios)), 3), "median_px": int(np.median(detail_px)),
                           "upscaled": int(np.sum(ratios <= 0.5))}

    # Exact duplicates (same bytes), then near duplicates (small perceptual-hash distance).
    groups: dict[str, list[dict]] = {}
    for i in good:
        groups.setdefault(i["sha1"], []).append(i)
    exact = [_dup_group(g, "exact", 0) for g in groups.values() if len(g) > 1]
    near = []
    if len(good) > 1:
        for a, b, d in near_pairs([i["phash"] for i in good], near_distance):
            if good[a]["sha1"] != good[b]["sha1"]:
                near.append(_dup_group([good[a], good[b]], "near", d))
    duplicates = exact + near
    warnings = []
    if bad:
        warnings.append(f"{len(bad)} unreadable/corrupt image(s) will be skipped")
    leaks = [d for d in duplicates if d["cross_split"]]
    if leaks:
        warnings.append(f"{len(leaks)} duplicate group(s) cross train/val/test (leakage inflates val accuracy)")
    within = [d for d in duplicates if not d["cross_split"]]
    if within:
        warnings.append(f"{len(within)} duplicate group(s) ({sum(d['kind'] == 'exact' for d in within)} exact): "
                        "remove them, or an automatic train/val split can leak them across splits")
    label_conflicts = [d for d in duplicates if d["conflicting_labels"]]
    if label_conflicts:
        warnings.append(f"{len(label_conflicts)} duplicate group(s) carry different labels")
    if sizes and sizes["detail"]["median_ratio"] <= 0.5:
        d = sizes["detail"]
        stored = min(sizes["width"]["median"], sizes["height"]["median"])
        warnings.append(f"most images hold about {d['median_px']} px of detail (median) though stored at {stored} "
                        "px (enlarged thumbnails or heavy blur): expect lower accuracy than on sharp photos, and a "
                        "larger --size will not help; use the original images if you have them")
    total = Counter(s.label for s in dataset.all_samples())
    if len(total) < 2:
        warnings.append(f"only {len(total)} class; training needs at least 2")
    for label, n in sorted(total.items()):
        if n < tiny_class:
            warnings.append(f"class {label!r} has only {n} image(s) (< {tiny_class}): collect more")
    if len(total) >= 2 and max(total.values()) / max(min(total.values()), 1) > imbalance_ratio:
        big, small = max(total, key=total.get), min(total, key=total.get)
        warnings.append(f"class imbalance: {big!r} has {total[big]} images, {small!r} only {total[small]} "
                        "(class weights are on by default in training)")
    return {"data": str(as_spec(data, **(csv_options or {})).path), "classes": sorted(total),
            "counts": counts, "total": len(entries), "readable": len(good), "sizes": sizes,
            "unreadable": bad, "duplicates": duplicates, "warnings": warnings}


def _dup_group(items: list[dict], kind: str, distance: int) -> dict:
    splits = sorted({i["split"] for i in items})
    return {"kind": kind, "distance": distance, "paths": [i["path"] for i in items], "splits": splits,
            "labels": sorted({i["label"] for i in items}),
            "cross_split": len(set(splits) - {"all"}) > 1, "conflicting_labels": len({i["label"] for i in items}) > 1}


# ---------------------------------------------------------------- frames from video

def frames_from_video(video: str | Path, out_dir: str | Path, label: str, *, every: int | None = None,
                      scene_threshold: float | None = None, max_frames: int | None = None,
                      size: int | None = None) -> list[Path]:
    """Save frames of `video` as JPEGs into out_dir/<label>/: every N-th frame, or whenever the picture
    changed by more than `scene_threshold` (mean absolute grey-level difference, 0-255, on a 64 px
    thumbnail) since the last saved frame. Returns the written paths."""
    import cv2
    from tqdm.auto import tqdm

    from edgetl.atomic import write_bytes

    video = Path(video)
    if (every is None) == (scene_threshold is None):
        raise EdgetlError("give exactly one of --every N or --scene-threshold T")
    if every is not None and every < 1:
        raise EdgetlError("--every must be >= 1")
    if not label or "/" in label or label.startswith("."):
        raise EdgetlError(f"invalid class name {label!r}")
    if video.is_dir():
        raise EdgetlError(f"video {video} is a folder; give a video file")
    if not video.is_file():
        raise EdgetlError(f"video {video} not found")
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise EdgetlError(f"OpenCV cannot open {video}; convert it to MP4 (H.264) or AVI")
    target = Path(out_dir) / label  # made at the first frame: an empty class folder would break the dataset
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    made_target = not target.exists()
    written: list[Path] = []
    last_thumb = None
    index = -1
    try:
        with tqdm(total=total, desc=f"frames from {video.name}", leave=False, unit="frame") as bar:
            while max_frames is None or len(written) < max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                index += 1
                bar.update(1)
                if every is not None:
                    keep = index % every == 0
                else:
                    thumb = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (64, 64),
                                       interpolation=cv2.INTER_AREA).astype(np.float32)
                    keep = last_thumb is None or float(np.abs(thumb - last_thumb).mean()) > scene_threshold
                    if keep:
                        last_thumb = thumb
                if not keep:
                    continue
                if size:
                    h, w = frame.shape[:2]
                    scale = size / max(h, w)
                    if scale < 1:
                        frame = cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
                target.mkdir(parents=True, exist_ok=True)
                path = target / f"{video.stem}_{index:06d}.jpg"
                # encoded in memory, then written all or nothing: a full disk (which cv2.imwrite may not even
                # report) leaves the previous frame or none, never a cut-off JPEG in the class folder
                encoded, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
                if not encoded:
                    raise EdgetlError(f"cannot encode frame {index} of {video} as JPEG")
                write_bytes(path, jpeg.tobytes())
                written.append(path)
    except BaseException:
        if made_target and not written:  # an empty class folder would break the dataset
            with contextlib.suppress(OSError):
                target.rmdir()
        raise
    finally:
        cap.release()
    if index < 0:
        raise EdgetlError(f"no frames could be decoded from {video}")
    return written
