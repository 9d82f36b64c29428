"""Dataset sources and image loading shared by training, evaluation, export and visualisation.

Three input layouts are accepted everywhere:
- a folder per class (split into train/val by :func:`stratified_split`),
- a folder with ``train/``, ``val/`` (and ``test/``) subfolders, each holding a folder per class,
- a CSV manifest (path and label columns; optional split column; relative paths resolve against
  the CSV's folder; empty label cells can mean a named class such as "Empty").
"""

from __future__ import annotations

import csv
import logging
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


def _class_folder_samples(root: Path) -> list[Sample]:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise EdgetlError(f"{root} has no class folders: put images in one subfolder per class "
                          f"(e.g. {root}/cats/*.jpg, {root}/dogs/*.jpg) or pass a CSV manifest")
    samples: list[Sample] = []
    for d in class_dirs:
        images = sorted(p for p in d.rglob("*") if _is_image(p))
        if not images:
            raise EdgetlError(f"class folder {d} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                              "add images or remove the folder")
        samples.extend(Sample(p.resolve(), d.name) for p in images)
    return samples


def _read_csv(spec: DataSpec) -> dict[str, list[Sample]]:
    base = spec.path.resolve().parent
    try:
        with spec.path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except OSError as e:
        raise EdgetlError(f"cannot read CSV {spec.path}: {e}") from e
    for col in (spec.path_column, spec.label_column):
        if col not in columns:
            raise EdgetlError(f"CSV {spec.path} has no column {col!r} (columns: {', '.join(columns)}); "
                              "choose with --path-column / --label-column")
    split_col = spec.split_column or ("split" if "split" in columns else None)
    if split_col and split_col not in columns:
        raise EdgetlError(f"CSV {spec.path} has no split column {split_col!r}")
    out: dict[str, list[Sample]] = defaultdict(list)
    missing_files: list[str] = []
    for i, row in enumerate(rows, start=2):
        raw_path = (row.get(spec.path_column) or "").strip()
        label = (row.get(spec.label_column) or "").strip()
        if not label:
            if spec.missing_label is None:
                raise EdgetlError(f"CSV {spec.path} line {i}: empty {spec.label_column!r}; pass "
                                  "--missing-label NAME to give empty cells a class (e.g. Empty)")
            label = spec.missing_label
        path = Path(raw_path)
        path = (path if path.is_absolute() else base / path).resolve()
        if not raw_path or not path.is_file():
            missing_files.append(f"line {i}: {raw_path or '(empty path)'}")
            continue
        split = (row.get(split_col) or "").strip().lower() if split_col else "all"
        if split not in (*SPLITS, "all"):
            raise EdgetlError(f"CSV {spec.path} line {i}: split {split!r} is not one of train/val/test")
        out[split].append(Sample(path, label))
    if missing_files:
        shown = "; ".join(missing_files[:5]) + (" ..." if len(missing_files) > 5 else "")
        raise EdgetlError(f"CSV {spec.path}: {len(missing_files)} row(s) point at missing files ({shown}); "
                          f"paths resolve against {base}; fix or remove those rows")
    if not out:
        raise EdgetlError(f"CSV {spec.path} has no rows")
    return dict(out)


def load_dataset(data: str | Path | DataSpec, **csv_options) -> Dataset:
    """Read a dataset in any of the supported layouts (no image is decoded here)."""
    spec = as_spec(data, **csv_options)
    if not spec.path.exists():
        raise EdgetlError(f"dataset {spec.path} does not exist")
    if spec.path.is_file():
        if not spec.is_csv:
            raise EdgetlError(f"{spec.path} is a file; give a folder of class folders or a .csv manifest")
        return Dataset(_read_csv(spec))
    split_dirs = {s: spec.path / s for s in SPLITS if (spec.path / s).is_dir()}
    if "train" in split_dirs:
        return Dataset({s: _class_folder_samples(d) for s, d in split_dirs.items()})
    return Dataset({"all": _class_folder_samples(spec.path)})


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


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Load an image as a uint8 RGB array of shape (size, size, 3): area-interpolated resize, no crop.

    This is the one loader used by training, evaluation, export calibration and visualisation, so the
    model always sees pixels prepared the same way. Raises EdgetlError for unreadable files.
    """
    import cv2

    arr = np.asarray(_open_rgb(Path(path), size))
    if arr.shape[0] != size or arr.shape[1] != size:
        arr = cv2.resize(arr, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def load_images(paths: Iterable[Path], size: int, desc: str = "loading images", workers: int = 4,
                ) -> tuple[np.ndarray, list[int], list[tuple[Path, str]]]:
    """Load many images in parallel. Returns (array N×size×size×3, indices loaded, failures)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    paths = list(paths)
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    ok: list[int] = []
    failures: list[tuple[Path, str]] = []

    def one(i: int):
        try:
            out[i] = load_image(paths[i], size)
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
