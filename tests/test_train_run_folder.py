"""The run folder contract (DEVELOPERS.md) on a real tiny training run."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest
from PIL import Image

import edgetl
from edgetl.data import load_image
from edgetl.run import Run


@pytest.fixture(scope="module")
def model(tiny_run):
    return keras.models.load_model(tiny_run / "model.keras", compile=False)  # no custom objects needed


def test_contract_files_exist_and_are_consistent(tiny_run):
    for name in ("model.keras", "labels.txt", "config.json", "split.csv", "history.csv", "metrics.json",
                 "curves.png", "confusion_matrix.png"):
        assert (tiny_run / name).is_file(), name
    run = Run(tiny_run)
    assert run.labels == ["circle", "square", "triangle"]
    cfg = run.config
    assert (cfg["backbone"], cfg["alpha"], cfg["size"]) == ("mobilenet_v2", 0.35, 96)
    assert cfg["seed"] == 0 and "data" in cfg
    with (tiny_run / "split.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["split"] for r in rows} == {"train", "val"}
    assert all(r["path"].startswith("/") for r in rows)
    assert len(run.samples("train")) == 48 and len(run.samples("val")) == 12 and run.samples("test") == []
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert set(metrics["per_class"]) == set(run.labels)
    assert {"precision", "recall", "f1"} <= set(metrics["per_class"]["circle"])
    with (tiny_run / "history.csv").open() as f:
        history = list(csv.DictReader(f))
    assert {h["phase"] for h in history} == {"head", "fine_tune"}
    assert Image.open(tiny_run / "curves.png").size[0] > 300


def test_model_takes_raw_pixels_and_names_its_layers(tiny_run, model):
    assert model.input_shape == (None, 96, 96, 3)
    assert model.layers[-1].name == "probabilities"
    assert model.get_layer("embedding").output.shape[-1] == 1280
    run = Run(tiny_run)
    paths = [s.path for s in run.samples("val")]
    x = np.stack([load_image(p, 96) for p in paths]).astype(np.float32)  # raw 0..255, no preprocessing
    probs = model(x, training=False).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    labels = [run.labels.index(s.label) for s in run.samples("val")]
    acc = float(np.mean(probs.argmax(1) == labels))
    assert acc == run.metrics["val_accuracy"]  # the saved model is the evaluated one
    assert acc >= 0.75  # shapes are easy: far above chance (1/3)


def test_embedding_model_outputs_probabilities_and_unit_embeddings(tiny_run, model):
    run = Run(tiny_run)
    em = run.embedding_model(model)
    x = np.stack([load_image(s.path, 96) for s in run.samples("val")[:4]]).astype(np.float32)
    probs, emb = (t.numpy() for t in em(x, training=False))
    assert probs.shape == (4, 3) and emb.shape == (4, 1280)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(probs, model(x, training=False).numpy(), rtol=1e-4, atol=1e-6)
    assert len(run.load_model().layers) == len(model.layers)


def test_public_api_is_lazy_and_callable():
    assert callable(edgetl.train) and callable(edgetl.evaluate)
    assert edgetl.Run is Run
