"""int8 bias correction: the mean error that rounding the weights puts on each output channel is cancelled.

Real TFLite conversions of small conv models with coarse per-channel weight scales (one large weight per
channel), calibrated on inputs with a non-zero mean: the int8 model's per-channel output mean must move to the
float model's when the correction is on."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from edgetl.export import convert, correct_weight_quantization_bias, export_run  # noqa: E402


def _model(kind: str, seed: int):
    rng = np.random.default_rng(seed)
    inp = keras.Input((12, 12, 8), batch_size=1)
    x = keras.layers.Rescaling(1 / 64)(inp)  # pixels in, as exported models take them
    if kind == "conv+bn":
        conv = keras.layers.Conv2D(16, 3, use_bias=False)
        x = keras.layers.BatchNormalization()(conv(x))
    elif kind == "depthwise+bn":
        conv = keras.layers.DepthwiseConv2D(3, use_bias=False)
        x = keras.layers.BatchNormalization()(conv(x))
    else:  # conv with its own bias (VGG-style)
        conv = keras.layers.Conv2D(16, 3)
        x = conv(x)
    model = keras.Model(inp, x)
    kernel = rng.normal(0, 0.05, conv.kernel.shape)
    # One large weight per output channel makes its int8 scale coarse, so the small weights round badly. A
    # conv's large weight reads input channel 0, which the data keeps at 0, so it does not widen the outputs.
    if kind.startswith("depthwise"):
        kernel[0, 0] = 2.0
    else:
        kernel[0, 0, 0] = 1.0
    conv.kernel.assign(kernel.astype(np.float32))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.1, n).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
    return model


def _int8_channel_means(model, calib: np.ndarray, path) -> np.ndarray:
    """Per-channel output mean of the int8 TFLite conversion of `model` over the calibration images."""
    from edgetl_device.interpreter import load_interpreter

    path.write_bytes(convert(model, "int8", "float32", calib))
    it = load_interpreter(path, num_threads=1, delegate="none")
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for x in calib:
        it.set_tensor(inp["index"], x[None])
        it.invoke()
        outs.append(it.get_tensor(out["index"])[0])
    return np.mean(outs, axis=(0, 1, 2))


@pytest.mark.parametrize("kind", ["conv+bn", "depthwise+bn", "conv+bias"])
def test_correction_moves_the_int8_channel_means_to_the_float_ones(kind, tmp_path):
    rng = np.random.default_rng(1)
    # pixels with a different non-zero mean per channel (0.5..4 after the model's rescaling); channel 0 is 0
    calib = np.round(rng.uniform(0, 64, (64, 12, 12, 8)) + np.linspace(32, 190, 8)).astype(np.float32)
    calib[..., 0] = 0.0
    model = _model(kind, seed=2)
    float_means = np.asarray(model(calib)).mean(axis=(0, 1, 2))
    plain_error = np.abs(_int8_channel_means(model, calib, tmp_path / "plain.tflite") - float_means).mean()

    info = correct_weight_quantization_bias(model, calib)
    assert info["layers"] == 1 and info["largest_shift"] > 0
    corrected_error = np.abs(_int8_channel_means(model, calib, tmp_path / "corrected.tflite") - float_means).mean()
    assert plain_error > 0.01, "the test model should have a visible rounding bias to remove"
    assert corrected_error < 0.25 * plain_error, (plain_error, corrected_error)


def test_nothing_to_correct_without_convolutions():
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(3)(inp))
    assert correct_weight_quantization_bias(model, np.ones((2, 4), np.float32)) == {"layers": 0}


def test_export_records_the_correction_and_leaves_the_run_alone(tiny_export_run, tmp_path):
    import hashlib

    def digest():
        return hashlib.sha256((tiny_export_run / "model.keras").read_bytes()).hexdigest()

    before = digest()
    on = export_run(tiny_export_run, tmp_path / "on", quant="int8")
    off = export_run(tiny_export_run, tmp_path / "off", quant="int8", bias_correction=False)
    assert on.manifest["quantization"]["bias_correction"]["layers"] >= 1
    assert off.manifest["quantization"]["bias_correction"] is None
    assert digest() == before  # the correction works on a copy; parity compares with the model as trained
    assert on.parity["float_accuracy"] == off.parity["float_accuracy"] and on.parity["passed"]
