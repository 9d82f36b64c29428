"""A synthetic task whose class is decided by a coloured patch at a known place, and a run folder of it.

Images are grey noise with one square patch at a random position; its colour (red/green/blue) is the
class. Where the model looks is therefore known exactly, which is what the Grad-CAM test checks. The
run folder follows the trainer's contract (DEVELOPERS.md), built with a real (small) trained Keras
model and metrics computed from its real predictions, for the visualise/report tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELS = ("red", "green", "blue")
SIZE = 64
PATCH = 16
_COLOURS = np.array([[230, 30, 30], [30, 210, 30], [40, 40, 230]], np.float32)


@dataclass
class PatchImages:
    images: np.ndarray  # (N, SIZE, SIZE, 3) float32 in [0, 255]
    labels: np.ndarray  # (N,) int
    boxes: np.ndarray  # (N, 4) y0, x0, y1, x1 of the patch (exclusive ends)


def make_images(n: int, seed: int, faint: float = 0.0) -> PatchImages:
    """`n` images; a fraction `faint` have a low-contrast patch (hard examples the model may get wrong)."""
    rng = np.random.default_rng(seed)
    imgs = rng.uniform(70, 180, size=(n, SIZE, SIZE, 1)).repeat(3, axis=3).astype(np.float32)
    labels = rng.integers(0, len(LABELS), size=n)
    boxes = np.zeros((n, 4), np.int64)
    for i in range(n):
        y, x = rng.integers(0, SIZE - PATCH + 1, size=2)
        strength = rng.uniform(0.12, 0.3) if rng.random() < faint else 1.0
        grey = imgs[i, y:y + PATCH, x:x + PATCH].mean()
        imgs[i, y:y + PATCH, x:x + PATCH] = (1 - strength) * grey + strength * _COLOURS[labels[i]]
        boxes[i] = (y, x, y + PATCH, x + PATCH)
    return PatchImages(imgs, labels, boxes)


def write_unknown_images(folder: Path, n: int = 20, seed: int = 21) -> Path:
    """Images of an object the model was never taught: a yellow patch (for open-set evaluation)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = np.repeat(rng.uniform(70, 180, (SIZE, SIZE, 1)), 3, axis=2)
        y, x = rng.integers(0, SIZE - PATCH + 1, size=2)
        img[y:y + PATCH, x:x + PATCH] = (230, 220, 30)
        Image.fromarray(img.astype(np.uint8)).save(folder / f"yellow_{i:03d}.png")
    return folder


def build_model():
    """Raw RGB [0, 255] in; a nested conv 'backbone' sub-model; `embedding` GAP; `probabilities` softmax."""
    import keras

    keras.utils.set_random_seed(0)
    bb_in = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(bb_in)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv3")(x)
    backbone = keras.Model(bb_in, x, name="tiny_backbone")

    inp = keras.Input((SIZE, SIZE, 3), name="rgb")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(inp)
    x = backbone(x)
    emb = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    x = keras.layers.Dropout(0.1)(emb)
    out = keras.layers.Dense(len(LABELS), activation="softmax", name="probabilities")(x)
    model = keras.Model(inp, out, name="patch_classifier")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def train_model(epochs: int = 4):
    """A model trained on 600 clean images; returns (model, keras History)."""
    data = make_images(600, seed=1)
    val = make_images(90, seed=2)
    model = build_model()
    hist = model.fit(data.images, data.labels, validation_data=(val.images, val.labels), epochs=epochs,
                     batch_size=32, verbose=0)
    return model, hist


def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)


def write_run(root: Path, model, history) -> Path:
    """A run folder per the trainer's contract, written with the trainer's own helpers (split.csv,
    metrics schema, plots) from a trained model; metrics come from its real predictions on val."""
    from PIL import Image

    from edgetl.data import Sample
    from edgetl.metrics import classification_report
    from edgetl.plots import plot_confusion_matrix, plot_curves
    from edgetl.run import write_history_csv, write_split_csv

    root.mkdir(parents=True, exist_ok=True)
    img_dir = root / "images"
    img_dir.mkdir(exist_ok=True)
    splits: dict[str, list] = {}
    arrays = {}
    # val has faint patches too, so the model makes some real mistakes for the report to show
    for split, n, seed, faint in (("train", 30, 11, 0.0), ("val", 48, 12, 0.3), ("test", 12, 13, 0.0)):
        d = make_images(n, seed, faint)
        arrays[split] = d
        splits[split] = []
        for i in range(n):
            p = img_dir / f"{split}_{i:03d}_{LABELS[d.labels[i]]}.png"
            Image.fromarray(d.images[i].astype(np.uint8)).save(p)
            splits[split].append(Sample(p, LABELS[d.labels[i]]))
    write_split_csv(root / "split.csv", splits)
    (root / "labels.txt").write_text("".join(c + "\n" for c in LABELS))
    (root / "config.json").write_text(json.dumps({"backbone": "tiny_cnn", "alpha": None, "size": SIZE,
                                                  "weights": None, "seed": 0, "data": "synthetic patches"}))
    rows = [{"phase": "head", **{k: float(v[e]) for k, v in history.history.items()}}
            for e in range(len(next(iter(history.history.values()))))]
    write_history_csv(root / "history.csv", rows)
    metrics: dict = {"labels": list(LABELS)}
    for split in ("val", "test"):
        # the images as saved (uint8), exactly what a reader of split.csv gets
        x = arrays[split].images.astype(np.uint8).astype(np.float32)
        metrics[split] = classification_report(arrays[split].labels, np.asarray(model(x, training=False)),
                                                list(LABELS))
        metrics[f"{split}_accuracy"] = metrics[split]["accuracy"]
    metrics["per_class"] = metrics["val"]["per_class"]
    (root / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_curves(rows, root / "curves.png")
    plot_confusion_matrix(np.array(metrics["val"]["confusion_matrix"]), list(LABELS), root / "confusion_matrix.png")
    model.save(root / "model.keras")
    return root
