"""A tiny real run folder (run-folder contract of DEVELOPERS.md) for export tests.

Real Keras model trained for a few seconds on generated colour images: three classes whose
dominant colour differs, so the float model is accurate and a broken quantization shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CLASSES = ("red", "green", "blue")
SIZE = 32


def make_images(rng: np.random.Generator, cls: int, n: int, size: int = SIZE) -> np.ndarray:
    base = rng.integers(20, 110, (n, size, size, 3))
    base[..., cls] += rng.integers(90, 140, (n, 1, 1))
    # bright and dark speckles so real pixel values cover the whole 0..255 range
    mask = rng.random((n, size, size)) < 0.02
    base[mask] = rng.choice([0, 255], size=(int(mask.sum()), 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def build_model(num_classes: int, size: int = SIZE):
    import keras

    inp = keras.Input((size, size, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(inp)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu6")(x)
    x = keras.layers.DepthwiseConv2D(3, activation="relu6")(x)
    # > 1024 weights, so dynamic-range quantization has something to quantize
    x = keras.layers.Conv2D(96, 1, activation="relu6")(x)
    emb = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    x = keras.layers.Dropout(0.1, name="dropout")(emb)
    out = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inp, out)


def make_run(root: Path, per_class_train: int = 40, per_class_val: int = 20, seed: int = 0) -> Path:
    """Write images + model.keras + labels.txt + config.json + split.csv under root."""
    import keras
    from PIL import Image

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    run = root / "run"
    run.mkdir(parents=True)
    rows, arrays = [], {"train": ([], []), "val": ([], [])}
    for split, n in (("train", per_class_train), ("val", per_class_val)):
        for c, name in enumerate(CLASSES):
            imgs = make_images(rng, c, n)
            d = root / "data" / split / name
            d.mkdir(parents=True)
            for i, img in enumerate(imgs):
                p = d / f"{i:03d}.png"
                Image.fromarray(img).save(p)
                rows.append(f"{p.resolve()},{name},{split}")
            arrays[split][0].append(imgs)
            arrays[split][1].append(np.full(n, c))
    x, y = np.concatenate(arrays["train"][0]).astype(np.float32), np.concatenate(arrays["train"][1])
    model = build_model(len(CLASSES))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    model.save(run / "model.keras")
    (run / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    (run / "config.json").write_text(json.dumps({"backbone": "tiny_test_cnn", "alpha": 1.0, "size": SIZE,
                                                 "weights": "none", "seed": seed}))
    (run / "split.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    return run
