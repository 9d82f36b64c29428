"""A training run folder (see DEVELOPERS.md "Run folder"): what export, open-set, visualisation and
evaluation read."""

from __future__ import annotations

import csv
import json
from functools import cached_property
from pathlib import Path

from edgetl.data import Sample, load_images
from edgetl.errors import EdgetlError

MODEL_FILE = "model.keras"
REQUIRED = (MODEL_FILE, "labels.txt", "config.json")


def write_split_csv(path: Path, splits: dict[str, list[Sample]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for split, samples in splits.items():
            for s in samples:
                w.writerow([str(Path(s.path).resolve()), s.label, split])


def write_history_csv(path: Path, history: list[dict]) -> None:
    """One row per epoch: `epoch`, `phase`, then every metric Keras logged (sorted)."""
    keys = ["epoch", "phase"] + sorted({k for row in history for k in row} - {"phase"})
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for i, row in enumerate(history, start=1):
            w.writerow({"epoch": i, **row})


def read_split_csv(path: Path) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["split"], []).append(Sample(Path(row["path"]), row["label"]))
    return out


class Run:
    """Read access to a run folder written by `edgetl train`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_file():
            raise EdgetlError(f"run folder {self.path} is a file; give the run folder written by `edgetl train`")
        if not self.path.is_dir():
            raise EdgetlError(f"run folder {self.path} does not exist; train one with `edgetl train DATA --out RUN`")
        missing = [f for f in REQUIRED if not (self.path / f).is_file()]
        if missing and (self.path / "manifest.json").is_file():  # "re-run train" would send them the wrong way
            raise EdgetlError(f"{self.path} is an exported model bundle, not a run folder; give the run folder "
                              f"it was exported from (the one holding {MODEL_FILE} and config.json)")
        if missing:
            raise EdgetlError(f"{self.path} is not a complete run folder (missing {', '.join(missing)}); "
                              "re-run `edgetl train`")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @cached_property
    def labels(self) -> list[str]:
        # utf-8-sig: labels.txt saved by Windows Notepad starts with a BOM that would glue onto the first class
        text = (self.path / "labels.txt").read_text(encoding="utf-8-sig")
        return [ln.strip() for ln in text.splitlines() if ln.strip()]

    @cached_property
    def config(self) -> dict:
        # a hand-edited or truncated config.json must name the file, not surface as a JSON/KeyError traceback
        try:
            cfg = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise EdgetlError(f"{self.path / 'config.json'} is not readable JSON ({exc}); restore the config.json "
                              "written by `edgetl train`") from exc
        if not isinstance(cfg, dict):
            raise EdgetlError(f"{self.path / 'config.json'} is not a JSON object; restore the config.json "
                              "written by `edgetl train`")
        return cfg

    @property
    def size(self) -> int:
        try:
            return int(self.config["size"])
        except (KeyError, TypeError, ValueError) as exc:  # the model's input size: nothing works without it
            raise EdgetlError(f"{self.path / 'config.json'} has no valid `size` (the model's input size); "
                              "restore the config.json written by `edgetl train`") from exc

    @property
    def center_crop(self) -> float | None:
        """The trainer's centre crop (fraction of the shorter side) or None (whole frame); runs from
        before the option have none."""
        crop = self.config.get("center_crop")
        return None if crop is None else float(crop)

    def load_images(self, paths, desc: str = "loading images"):
        """`edgetl.data.load_images` prepared as this run's model was trained (size, centre crop)."""
        return load_images(paths, self.size, desc=desc, center_crop=self.center_crop)

    @cached_property
    def metrics(self) -> dict:
        p = self.path / "metrics.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def samples(self, split: str) -> list[Sample]:
        """The exact samples of `split` (train/val/test) the run used; [] when the run had none."""
        p = self.path / "split.csv"
        if not p.is_file():
            raise EdgetlError(f"{self.path} has no split.csv; re-run `edgetl train`")
        return read_split_csv(p).get(split, [])

    def load_model(self):
        import keras

        try:
            return keras.models.load_model(self.model_path, compile=False)
        except (OSError, ValueError) as exc:  # unreadable, truncated or not a Keras file: name it, no traceback
            first = (str(exc).splitlines() or [repr(exc)])[0][:200]
            raise EdgetlError(f"cannot load {self.model_path}: {first}; re-train the run (or restore its "
                              "model.keras)") from exc

    def embedding_model(self, model=None):
        """Raw pixels -> [probabilities, L2-normalised embedding] (the bundle's two outputs)."""
        import keras

        model = model or self.load_model()
        emb = model.get_layer("embedding").output
        norm = keras.layers.UnitNormalization(axis=-1, name="embedding_l2")(emb)
        return keras.Model(model.input, [model.get_layer("probabilities").output, norm],
                           name="probabilities_embedding")


def predict_batches(model, x, batch_size: int = 32, desc: str | None = None):
    """Run `model` over uint8/float pixels in batches through one compiled graph (5-10x faster than eager
    calls on CPU, and without `predict`'s per-call setup). Returns an array, or a list for multi-output."""
    import numpy as np
    import tensorflow as tf
    from tqdm.auto import tqdm

    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
    fn = tf.function(lambda t: model(t, training=False), input_signature=[spec])
    chunks = []
    for i in tqdm(range(0, len(x), batch_size), desc=desc or "predicting", leave=False,
                  disable=desc is None or len(x) < 4 * batch_size):
        out = fn(tf.convert_to_tensor(np.asarray(x[i:i + batch_size], dtype=np.float32)))
        chunks.append([o.numpy() for o in out] if isinstance(out, (list, tuple)) else out.numpy())
    if not chunks:
        shapes = model.output_shape if isinstance(model.output_shape, list) else [model.output_shape]
        empty = [np.zeros((0, *s[1:]), np.float32) for s in shapes]
        return empty if isinstance(model.output_shape, list) else empty[0]
    if isinstance(chunks[0], list):
        return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]
    return np.concatenate(chunks)
