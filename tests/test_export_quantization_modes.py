"""Each quantization mode converts a real Keras run into a TFLite model of the expected kind."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.edgetpu import read_tflite
from edgetl.errors import EdgetlError
from edgetl.export import export_run, float_ops
from edgetl_device.bundle import open_bundle
from edgetl_device.interpreter import load_interpreter


def _constant_dtypes(path) -> set[str]:
    return {t.dtype for t in read_tflite(path).tensors if t.constant}


@pytest.mark.parametrize("quant", ["int8", "float16", "dynamic", "float32"])
def test_every_mode_exports_a_working_bundle(tiny_export_run, tmp_path, quant):
    res = export_run(tiny_export_run, tmp_path / quant, quant=quant)
    m = res.manifest
    assert m["quantization"]["mode"] == quant
    assert res.parity["passed"] and res.parity["tflite_accuracy"] >= 0.9
    # outputs identified by name, whatever order the converter chose
    outs = {o["name"]: o for o in m["outputs"]}
    assert outs["probabilities"]["shape"] == [1, 3] and outs["embedding"]["shape"] == [1, 96]
    it = load_interpreter(res.model_path, delegate="none")
    assert [int(x) for x in it.get_input_details()[0]["shape_signature"]] == [1, 32, 32, 3]  # static for Edge TPU
    assert it.get_output_details()[outs["probabilities"]["index"]]["shape"].tolist() == [1, 3]
    # bundle is readable by the device code (unsigned until `edgetl bundle sign`)
    b = open_bundle(res.out_dir, None, allow_unsigned=True)
    assert b.labels == ["red", "green", "blue"] and b.output_index("embedding") == outs["embedding"]["index"]
    consts = _constant_dtypes(res.model_path)
    if quant == "int8":
        assert m["input"]["dtype"] == "uint8" and m["input"]["quantization"] == [1.0, 0]
        assert float_ops(res.model_path, "uint8") == []
        assert "FLOAT32" not in consts and "INT8" in consts
        # the normalisation is int8 MUL/SUM/RSQRT, not L2_NORMALIZATION with its fixed 1/128 output scale:
        # the embedding's scale is calibrated to its own range (finer than 1/128 for 96 components)
        assert "L2_NORMALIZATION" not in res.summary["op_counts"] and "RSQRT" in res.summary["op_counts"]
        scale = it.get_output_details()[outs["embedding"]["index"]]["quantization"][0]
        assert 0 < scale < 1 / 128
    elif quant == "float16":
        assert "FLOAT16" in consts
    elif quant == "dynamic":
        assert "INT8" in consts and m["input"]["dtype"] == "float32"
    else:
        assert consts <= {"FLOAT32", "INT32"}


def test_int8_with_int8_io_and_unit_norm_embedding(tiny_export_run, tmp_path):
    from edgetl.export import predict_tflite
    from tests.support.tiny_export_run import make_images

    res = export_run(tiny_export_run, tmp_path / "e", quant="int8", io="int8")
    assert res.manifest["input"]["dtype"] == "int8" and res.manifest["input"]["quantization"] == [1.0, -128]
    imgs = make_images(np.random.default_rng(5), 1, 8)
    probs, emb = predict_tflite(res.model_path, imgs, 3)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=0.03)
    assert np.allclose(probs.sum(1), 1.0, atol=0.03) and (probs.argmax(1) == 1).mean() >= 0.75


def test_device_feeds_an_int8_io_export_exactly_like_the_host(tiny_export_run, tmp_path):
    # The CPU-only recommendation (--io int8): the device writes pixel ^ 0x80 with no float round trip; it must
    # give the parity check's probabilities bit for bit.
    from edgetl.export import predict_tflite
    from edgetl_device.inference import Model
    from tests.support.tiny_export_run import make_images

    res = export_run(tiny_export_run, tmp_path / "e", quant="int8", io="int8")
    imgs = np.concatenate([make_images(np.random.default_rng(6), c, 2) for c in range(3)])
    host_probs, host_emb = predict_tflite(res.model_path, imgs, 3)
    device = Model(res.model_path, num_threads=1, manifest=res.manifest)
    assert device.input_dtype == np.int8
    for img, probs, emb in zip(imgs, host_probs, host_emb, strict=True):
        out = device.run(img[..., ::-1])  # the camera's BGR
        assert np.array_equal(out.probabilities, probs) and np.array_equal(out.embedding, emb)


def test_float_io_with_float_quant_only(tiny_export_run, tmp_path):
    with pytest.raises(EdgetlError, match="--io uint8 needs --quant int8"):
        export_run(tiny_export_run, tmp_path / "x", quant="float16", io="uint8")
    with pytest.raises(EdgetlError, match="--quant"):
        export_run(tiny_export_run, tmp_path / "y", quant="int4")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_existing_export_is_not_overwritten_silently(tiny_export_run, tmp_path):
    export_run(tiny_export_run, tmp_path / "e", quant="float32")
    with pytest.raises(EdgetlError, match="--overwrite"):
        export_run(tiny_export_run, tmp_path / "e", quant="float32")
    assert export_run(tiny_export_run, tmp_path / "e", quant="float32", overwrite=True).parity["passed"]


def test_op_without_int8_kernel_is_a_clear_failure():
    import keras
    import tensorflow as tf

    from edgetl.export import convert, export_graph

    class CumulativeSum(keras.layers.Layer):  # CUMSUM has no int8 kernel: the converter leaves it in float
        def call(self, x):
            return tf.math.cumsum(x, axis=-1)

    inp = keras.Input((16, 16, 3))
    emb = keras.layers.GlobalAveragePooling2D(name="embedding")(keras.layers.Conv2D(4, 3)(inp))
    out = keras.layers.Dense(2, activation="softmax", name="probabilities")(CumulativeSum()(emb))
    calib = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(EdgetlError, match="int8 model still computes in float: .*CUMSUM"):
        convert(export_graph(keras.Model(inp, out), 16), "int8", "uint8", calib)
    assert convert(export_graph(keras.Model(inp, out), 16), "float32", "float32")[4:8] == b"TFL3"
