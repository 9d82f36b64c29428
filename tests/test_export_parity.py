"""The parity check compares the .tflite with the float Keras model and catches large drops."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgetl.bundle import generate_keys
from edgetl.export import ParityError, export_run, parity_report
from edgetl_device.bundle import open_bundle


def test_parity_report_counts_per_class_and_drop():
    labels = ["a", "b"]
    y = np.array([0, 0, 1, 1])
    fp = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8]])  # 4/4
    tp = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])  # 3/4, one "a" lost
    emb = np.eye(4)[:, :2] + 0.1
    r = parity_report(labels, y, fp, tp, emb, emb, max_drop=1.0)
    assert r["float_accuracy"] == 1.0 and r["tflite_accuracy"] == 0.75 and r["drop_points"] == 25.0
    assert not r["passed"] and r["top1_agreement"] == 0.75
    assert r["per_class"]["a"] == {"n": 2, "float_accuracy": 1.0, "tflite_accuracy": 0.5}
    assert r["per_class"]["b"]["tflite_accuracy"] == 1.0
    assert r["embedding_cosine_mean"] == pytest.approx(1.0)


def test_int8_parity_on_generated_data_writes_parity_json_and_signs(tiny_export_run, tmp_path):
    priv, pub = generate_keys(tmp_path / "k")
    res = export_run(tiny_export_run, tmp_path / "e", key=priv, model_version="7.0")
    parity = json.loads((res.out_dir / "parity.json").read_text())
    assert parity["passed"] and abs(parity["drop_points"]) <= 1.0
    assert set(parity["per_class"]) == {"red", "green", "blue"}
    assert all(v["n"] == 20 for v in parity["per_class"].values())
    assert parity["embedding_cosine_mean"] > 0.98
    summary = json.loads((res.out_dir / "summary.json").read_text())
    assert summary["size_bytes"] == res.model_path.stat().st_size and summary["conversion_s"] > 0
    b = open_bundle(res.out_dir, [pub])
    assert b.model_version == "7.0" and b.manifest["parity"]["tflite_accuracy"] == parity["tflite_accuracy"]


def _low_confidence_copy(run, dest):
    """The same classifier with logits shrunk 100000x: identical float argmax, near-uniform probabilities,
    which an 8-bit output (steps of 1/256) can no longer tell apart."""
    import shutil

    import keras

    shutil.copytree(run, dest)
    model = keras.models.load_model(dest / "model.keras", compile=False)
    layer = model.get_layer("probabilities")
    layer.set_weights([w * 1e-5 for w in layer.get_weights()])
    model.save(dest / "model.keras")
    return dest


def test_large_int8_drop_is_caught_and_not_signed(tiny_export_run, tmp_path):
    run = _low_confidence_copy(tiny_export_run, tmp_path / "run")
    priv, _ = generate_keys(tmp_path / "k")
    with pytest.raises(ParityError, match="drop .* points > --max-drop"):
        export_run(run, tmp_path / "e", key=priv)
    parity = json.loads((tmp_path / "e" / "parity.json").read_text())
    assert parity["float_accuracy"] >= 0.9 and parity["drop_points"] > 20 and not parity["passed"]
    assert not (tmp_path / "e" / "manifest.sig").exists()  # a failed model is never signed
    # the same model in float32 keeps its accuracy: the drop is the quantization's
    assert export_run(run, tmp_path / "f", quant="float32").parity["passed"]


def test_openset_parameters_travel_into_the_bundle(tiny_export_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_export_run, run)
    (run / "openset").mkdir()
    (run / "openset" / "openset.json").write_text(json.dumps({"scorer": "cosine", "threshold": 0.42}))
    np.savez(run / "openset" / "openset.npz", centroids=np.ones((3, 96), np.float32))
    res = export_run(run, quant="float32")
    assert res.out_dir == run / "export"
    b = open_bundle(res.out_dir, None, allow_unsigned=True)
    assert b.unknown == {"scorer": "cosine", "threshold": 0.42} and b.openset_path.name == "openset.npz"


def test_export_uses_a_built_calibration_set(tiny_export_run, tmp_path):
    from edgetl.calibrate import build

    build(tiny_export_run, tmp_path / "calib", size=30)  # a run folder: its train split
    res = export_run(tiny_export_run, tmp_path / "e", calibration=tmp_path / "calib")
    calib = res.manifest["quantization"]["calibration"]
    assert calib == {"source": str((tmp_path / "calib").resolve()), "count": 30}
    assert res.parity["passed"] and res.manifest["input"]["quantization"] == [1.0, 0]
