"""Export a training run to a TFLite bundle: quantize, check parity against the float model, summarise.

The exported graph has a fixed batch of 1 (static shapes for the Edge TPU) and two outputs,
`probabilities` and the L2-normalised `embedding`. The normalisation is spelled x * rsqrt(sum(x * x) + eps):
MUL/SUM/ADD/RSQRT, all with int8 kernels and on the Edge TPU. Not tf.nn.l2_normalize: the converter turns
that into L2_NORMALIZATION, whose int8 output scale is fixed at 1/128, so a 1,000+-wide unit vector (components
~0.03) kept 3-4 levels per standard deviation (1 - cosine to the float embedding 0.0036 vs 0.00006 here), and
open-set scores on the int8 model drifted from the float model's. Not Keras' UnitNormalization: it lowers to a
float SQUARE.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.atomic import DiskFullError, is_no_space, replacing_dir
from edgetl.errors import EdgetlError

log = logging.getLogger(__name__)

QUANT_MODES = ("int8", "float16", "dynamic", "float32")
IO_TYPES = ("uint8", "int8", "float32")
OUTPUT_NAMES = ("probabilities", "embedding")
DEFAULT_CALIBRATION_SIZE = 300


class ParityError(EdgetlError):
    """The quantized model lost more accuracy than allowed (bundle written, but not signed)."""


@dataclass
class ExportResult:
    out_dir: Path
    model_path: Path
    manifest: dict[str, Any]
    parity: dict[str, Any]
    summary: dict[str, Any]


# ---------------------------------------------------------------- graph and conversion
def export_graph(model, size: int):
    """Batch-1 model: raw pixels -> {"probabilities", "embedding" (L2-normalised)}."""
    import keras
    import tensorflow as tf

    class L2Normalize(keras.layers.Layer):
        def call(self, x):
            # not tf.nn.l2_normalize / x * rsqrt(max(.., eps)): the converter fuses those into L2_NORMALIZATION
            return x * tf.math.rsqrt(tf.reduce_sum(x * x, axis=-1, keepdims=True) + 1e-12)

    try:
        probs, emb = model.get_layer("probabilities").output, model.get_layer("embedding").output
    except ValueError as exc:
        raise EdgetlError(f"model has no `embedding`/`probabilities` layer ({exc}); export needs a model "
                          "trained by `edgetl train`") from exc
    inner = keras.Model(model.input, [probs, emb], name="classifier")
    pixels = keras.Input((size, size, 3), batch_size=1, name="pixels")
    p, e = inner(pixels)
    return keras.Model(pixels, {"probabilities": p, "embedding": L2Normalize(name="embedding_l2")(e)},
                       name="edgetl_export")


def anchor_input_range(images: np.ndarray) -> np.ndarray:
    """Make sure the calibration data spans 0..255 so a uint8 input gets scale 1, zero point 0
    (the device writes camera pixels straight in). Touches two pixels of one image."""
    images = images.copy()
    if images.size and (images.min() > 0 or images.max() < 255):
        images[0, 0, 0, :] = 0
        images[0, 0, 1, :] = 255
    return images


def _conv_consumer_bn(model) -> dict[str, Any]:
    """conv layer name -> the BatchNormalization that directly follows it (the converter folds the pair)."""
    import keras

    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            source = getattr(getattr(layer.input, "_keras_history", None), "operation", None)
            if source is not None:
                out[source.name] = layer
    return out


def correct_weight_quantization_bias(model, calibration: np.ndarray, batch: int = 32) -> dict[str, Any]:
    """Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization"), in place, before int8 conversion.

    Rounding each conv's weights to per-channel int8 shifts every output channel by ΔW · E[x] on average, and the
    shifts add up through the network. With E[x] (each conv's mean input over the calibration images) and the
    exact weights TFLite will store (the batch-norm-folded kernel, symmetric per channel, -127..127), that shift
    is known: it is subtracted from the batch norm's beta, or from the conv's own bias when no batch norm follows.
    The float model changes slightly; the int8 model gets closer to the *original* float model."""
    import keras

    convs = [layer for layer in model.layers if type(layer) in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
             and layer.data_format == "channels_last" and getattr(layer, "groups", 1) == 1]
    bns = _conv_consumer_bn(model)
    # Where the shift can go: a following batch norm's beta, else the conv's own bias.
    targets = [c for c in convs if (c.name in bns and bns[c.name].center) or (c.name not in bns and c.use_bias)]
    if not targets or calibration is None or not len(calibration):
        return {"layers": 0}
    means_model = keras.Model(model.inputs, [keras.layers.GlobalAveragePooling2D()(c.input) for c in targets])
    sums = [np.zeros(c.input.shape[-1], np.float64) for c in targets]
    for i in range(0, len(calibration), batch):
        outs = means_model(calibration[i:i + batch].astype(np.float32), training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for k, o in enumerate(outs):
            sums[k] += np.asarray(o, np.float64).sum(axis=0)
    largest = 0.0
    for conv, total in zip(targets, sums, strict=True):
        mu = total / len(calibration)
        kernel = np.asarray(conv.kernel, np.float64)
        depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
        bn = bns.get(conv.name)
        fold = np.ones(kernel.shape[2] * kernel.shape[3] if depthwise else kernel.shape[3])
        if bn is not None:
            gamma = np.asarray(bn.gamma, np.float64) if bn.scale else 1.0
            fold = gamma / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
        if depthwise:  # (kh, kw, cin, multiplier); output channel c * multiplier + m
            folded = kernel * fold.reshape(1, 1, kernel.shape[2], kernel.shape[3])
            axes = (0, 1)
        else:  # (kh, kw, cin, cout)
            folded = kernel * fold.reshape(1, 1, 1, -1)
            axes = (0, 1, 2)
        scale = np.abs(folded).max(axis=axes, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        error = np.clip(np.round(folded / scale), -127, 127) * scale - folded
        if depthwise:
            shift = (error.sum(axis=(0, 1)) * mu[:, None]).reshape(-1)
        else:
            shift = np.einsum("hwio,i->o", error, mu)
        target = bn.beta if bn is not None else conv.bias
        target.assign((np.asarray(target, np.float64) - shift).astype(np.float32))
        largest = max(largest, float(np.abs(shift).max()))
    return {"layers": len(targets), "largest_shift": round(largest, 6)}


def convert(graph, quant: str, io: str, calibration: np.ndarray | None = None) -> bytes:
    """TFLite flatbuffer bytes for one quantization mode."""
    import tensorflow as tf

    if quant not in QUANT_MODES:
        raise EdgetlError(f"--quant {quant!r} is not one of {', '.join(QUANT_MODES)}")
    if io not in IO_TYPES:
        raise EdgetlError(f"--io {io!r} is not one of {', '.join(IO_TYPES)}")
    if quant != "int8" and io != "float32":
        raise EdgetlError(f"--io {io} needs --quant int8 (a {quant} model has float32 inputs and outputs)")
    conv = tf.lite.TFLiteConverter.from_keras_model(graph)
    if quant == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quant == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quant == "int8":
        if calibration is None or len(calibration) == 0:
            raise EdgetlError("int8 export needs calibration images (a run with a train split, or --calibration)")
        data = anchor_input_range(calibration)

        def representative():
            for img in data:
                yield [img[None].astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        # INT8 builtins only: the converter fails instead of silently leaving float ops behind.
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[io]
        conv.inference_output_type = conv.inference_input_type
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Keras prints "Saved artifact at ...": stdout is the user's
            flatbuffer = conv.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises ConverterError/RuntimeError/ValueError
        scratch = _scratch_space_error(graph)
        if scratch:
            raise DiskFullError(scratch) from exc
        first = next((ln for ln in str(exc).splitlines() if "error" in ln.lower()), str(exc).splitlines()[0])
        if quant == "int8":
            raise EdgetlError(f"int8 conversion failed: an op cannot be quantized to INT8 builtins ({first[:300]}); "
                              "replace that layer or export with --quant dynamic/float16") from exc
        raise EdgetlError(f"{quant} conversion failed: {first[:300]}") from exc
    if quant == "int8":
        # The converter may still leave an op without an int8 kernel in float between DEQUANTIZE/QUANTIZE.
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.tflite"
            path.write_bytes(flatbuffer)
            bad = float_ops(path, io)
        if bad:
            raise EdgetlError(f"int8 model still computes in float: {', '.join(bad[:5])}; these ops cannot be "
                              "quantized to INT8 builtins — replace them or export with --quant dynamic/float16")
    return flatbuffer


def _scratch_space_error(graph) -> str | None:
    """Why the converter failed when that was a full disk, else None. The converter first saves the model to a
    scratch folder and swallows that error (the conversion then fails with an unrelated message), so the save
    is retried here, where its error can be seen."""
    import tempfile

    scratch = tempfile.gettempdir()
    try:
        with tempfile.TemporaryDirectory(prefix="edgetl-convert-") as tmp:
            graph.export(tmp, verbose=False)
    except Exception as exc:  # noqa: BLE001 - TensorFlow's errors for a failed write vary (OSError, OutOfRange...)
        text = str(exc)
        if is_no_space(exc) or any(s in text for s in ("No space left", "File too large", "quota exceeded")):
            return (f"no space left on the disk for the converter's scratch files in {scratch}; free some space "
                    "there (or point TMPDIR at a disk with room) and run the command again")
    return None


def float_ops(path: Path, io: str) -> list[str]:
    """Ops of an int8 model that still compute in float (should be none)."""
    from edgetl.edgetpu import read_tflite

    m = read_tflite(path)
    io_tensors = set(m.inputs) | set(m.outputs)
    bad = []
    for op in m.ops:
        if op.name in ("QUANTIZE", "DEQUANTIZE") and io == "float32":
            continue
        for t in op.inputs + op.outputs:
            if t < 0 or t in io_tensors and io == "float32":
                continue
            info = m.tensors[t]
            if info.dtype in ("FLOAT32", "FLOAT16") and not info.constant:
                bad.append(f"{op.name} (tensor {info.name!r})")
                break
    return bad


# ---------------------------------------------------------------- running the .tflite
def identify_outputs(interpreter, num_classes: int) -> dict[str, dict[str, Any]]:
    """Output details keyed by `probabilities`/`embedding`, each with `position` in get_output_details().

    TFLite does not keep the output order; the signature names are used when present, else shapes.
    """
    details = interpreter.get_output_details()
    by_tensor = {d["index"]: (i, d) for i, d in enumerate(details)}
    found: dict[str, dict[str, Any]] = {}
    try:
        sig = interpreter.get_signature_runner().get_output_details()
        for name in OUTPUT_NAMES:
            if name in sig and sig[name]["index"] in by_tensor:
                pos, d = by_tensor[sig[name]["index"]]
                found[name] = {**d, "position": pos}
    except (ValueError, KeyError, RuntimeError):
        pass
    if len(found) < 2:
        found = {}
        if len(details) != 2:
            raise EdgetlError(f"expected 2 outputs (probabilities, embedding), the model has {len(details)}")
        for pos, d in enumerate(details):
            width = int(d["shape"][-1])
            name = "probabilities" if width == num_classes else "embedding"
            found[name] = {**d, "position": pos}
        if len(found) != 2:
            raise EdgetlError("cannot tell the probabilities output from the embedding output (same width)")
    return found


def _dequantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zp = detail["quantization"]
    if scale:
        return (x.astype(np.float32) - zp) * scale
    return x.astype(np.float32)


def _quantize_input(images: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return images.astype(np.float32)
    scale, zp = detail["quantization"]
    info = np.iinfo(dtype)
    q = np.round(images.astype(np.float32) / (scale or 1.0) + zp)
    return np.clip(q, info.min, info.max).astype(dtype)


def predict_tflite(path: str | os.PathLike[str], images: np.ndarray, num_classes: int,
                   num_threads: int | None = None, desc: str = "tflite") -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, embeddings) for uint8 RGB images, through the device's interpreter loader."""
    from tqdm.auto import tqdm

    from edgetl_device.errors import DeviceError
    from edgetl_device.interpreter import load_interpreter

    try:
        it = load_interpreter(path, num_threads=num_threads, delegate="none")
    except DeviceError as exc:
        raise EdgetlError(str(exc)) from exc
    inp = it.get_input_details()[0]
    outs = identify_outputs(it, num_classes)
    probs, embs = [], []
    for img in tqdm(images, desc=desc, leave=False, disable=len(images) < 50):
        it.set_tensor(inp["index"], _quantize_input(img[None], inp))
        it.invoke()
        probs.append(_dequantize(it.get_tensor(outs["probabilities"]["index"]), outs["probabilities"])[0])
        embs.append(_dequantize(it.get_tensor(outs["embedding"]["index"]), outs["embedding"])[0])
    return np.array(probs), np.array(embs)


def predict_keras(model, images: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    import keras

    both = keras.Model(model.input, [model.get_layer("probabilities").output, model.get_layer("embedding").output])
    probs, emb = both.predict(images.astype(np.float32), batch_size=batch, verbose=0)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return probs, emb


# ---------------------------------------------------------------- parity and summaries
def parity_report(labels: list[str], y_true: np.ndarray, float_probs: np.ndarray, tflite_probs: np.ndarray,
                  float_emb: np.ndarray, tflite_emb: np.ndarray, max_drop: float) -> dict[str, Any]:
    """Float vs TFLite accuracy (fractions), overall and per class; drop in percentage points."""
    fp, tp = float_probs.argmax(1), tflite_probs.argmax(1)
    per_class = {}
    for i, name in enumerate(labels):
        m = y_true == i
        n = int(m.sum())
        per_class[name] = {"n": n,
                           "float_accuracy": float((fp[m] == i).mean()) if n else None,
                           "tflite_accuracy": float((tp[m] == i).mean()) if n else None}
    fa, ta = float((fp == y_true).mean()), float((tp == y_true).mean())
    drop = round(100.0 * (fa - ta), 3)
    cos = np.sum(float_emb * tflite_emb, axis=1) / np.maximum(
        np.linalg.norm(float_emb, axis=1) * np.linalg.norm(tflite_emb, axis=1), 1e-12)
    return {
        "n": int(len(y_true)), "float_accuracy": fa, "tflite_accuracy": ta, "drop_points": drop,
        "max_drop_points": max_drop, "passed": bool(drop <= max_drop),
        "top1_agreement": float((fp == tp).mean()),
        "probability_mae": float(np.abs(float_probs - tflite_probs).mean()),
        "embedding_cosine_mean": float(cos.mean()), "embedding_cosine_min": float(cos.min()),
        "per_class": per_class,
    }


def summarize(path: Path) -> dict[str, Any]:
    """Size, op list and a per-tensor quantization summary of a .tflite file."""
    from edgetl.edgetpu import read_tflite

    m = read_tflite(path)
    dtypes: dict[str, int] = {}
    tensors = []
    for t in m.tensors:
        dtypes[t.dtype] = dtypes.get(t.dtype, 0) + 1
        tensors.append({"name": t.name, "dtype": t.dtype, "shape": t.shape, "constant": t.constant,
                        "scale": t.scale[:1] if len(t.scale) == 1 else (f"per-channel x{len(t.scale)}" if t.scale
                                                                         else None),
                        "zero_point": t.zero_point[:1] if len(t.zero_point) == 1 else None})
    # Where the bytes go: weight data vs per-channel quantization parameters (float32 scale + int64 zero
    # point each) vs tensor names; on narrow models (alpha 0.35) the parameters are a large share.
    params = sum(len(t.scale) for t in m.tensors)
    return {"file": path.name, "size_bytes": m.size_bytes, "constant_data_bytes": m.constant_bytes,
            "quantization_params": params, "quantization_params_bytes": 12 * params,
            "tensor_name_bytes": sum(len(t.name.encode()) for t in m.tensors), "ops": [op.name for op in m.ops],
            "op_counts": m.op_counts(), "tensor_dtypes": dtypes,
            "quantized_tensors": sum(1 for t in m.tensors if t.scale), "tensors": tensors}


# ---------------------------------------------------------------- data
def _labels_index(labels: list[str], samples) -> np.ndarray:
    idx = {name: i for i, name in enumerate(labels)}
    unknown = sorted({s.label for s in samples if s.label not in idx})
    if unknown:
        raise EdgetlError(f"validation labels {unknown} are not in the run's labels.txt; the run folder is "
                          "inconsistent")
    return np.array([idx[s.label] for s in samples])


def calibration_images(run, calibration: str | os.PathLike[str] | None, limit: int,
                       seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """uint8 images for int8 calibration: the given set, else a stratified pick from the run's train split."""
    from edgetl.calibrate import Candidate, calibration_files, select

    if calibration is not None:
        files = calibration_files(calibration)
        images, _, _ = run.load_images(files, desc="calibration images")
        return images, {"source": str(Path(calibration).resolve()), "count": int(len(images))}
    train = run.samples("train")
    if not train:
        raise EdgetlError(f"{run.path} has no train split to calibrate with; pass --calibration DIR")
    picked, dupes = select([Candidate(Path(s.path), s.label) for s in train], limit, seed)
    images, _, _ = run.load_images([c.path for c, _ in picked], desc="calibration images")
    return images, {"source": "run train split (stratified, de-duplicated)", "count": int(len(images)),
                    "duplicates_skipped": dupes}


# ---------------------------------------------------------------- the whole export
def _input_spec(detail: dict[str, Any], size: int, io: str, center_crop: float | None) -> dict[str, Any]:
    scale, zp = detail["quantization"]
    # center_crop: the trainer's (fraction of the shorter side), which the device applies before resizing
    return {"size": [size, size], "channels": "RGB", "dtype": io, "normalization": "raw_0_255",
            "quantization": [float(scale), int(zp)], "center_crop": center_crop or False,
            "index": int(detail["index"])}


def _outputs_spec(outs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": name, "index": int(d["position"]), "tensor_index": int(d["index"]),
             "shape": [int(x) for x in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
             "quantization": [float(d["quantization"][0]), int(d["quantization"][1])]}
            for name, d in sorted(outs.items(), key=lambda kv: kv[1]["position"])]


def _prepare_out(out: Path, overwrite: bool, protected: tuple[Path, ...] = (), check_only: bool = False) -> None:
    for p in protected:
        # --overwrite empties --out: never when that is (or holds) the run or the calibration set
        if out.resolve() == p.resolve() or out.resolve() in p.resolve().parents:
            raise EdgetlError(f"--out {out} is or contains {p}, which --overwrite would delete; choose a separate "
                              "folder (default RUN/export)")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise EdgetlError(f"{out} already holds an export; pass --overwrite or choose another --out")
        if check_only:
            return
        shutil.rmtree(out)
    if not check_only:
        out.mkdir(parents=True, exist_ok=True)


def export_run(run_path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, quant: str = "int8",
               io: str | None = None, calibration: str | os.PathLike[str] | None = None,
               calibration_size: int = DEFAULT_CALIBRATION_SIZE, edgetpu: bool = False,
               allow_cpu_ops: bool = False, max_drop: float = 1.0, key: str | os.PathLike[str] | None = None,
               model_version: str | None = None, num_threads: int | None = None,
               overwrite: bool = False, bias_correction: bool = True) -> ExportResult:
    """Convert RUN's model, write the bundle directory, and raise ParityError when the drop is too large."""
    from edgetl import bundle
    from edgetl.run import Run

    run = Run(run_path)
    if key is not None and not isinstance(key, bundle.Ed25519PrivateKey):
        key = bundle.load_private_key(key)  # a wrong --key fails now, not after the whole conversion
    io = io or ("uint8" if quant == "int8" else "float32")
    if quant != "int8" and io != "float32":
        raise EdgetlError(f"--io {io} needs --quant int8 (a {quant} model has float32 inputs and outputs)")
    if edgetpu and (quant != "int8" or io == "float32"):
        raise EdgetlError("--edgetpu needs --quant int8 with --io uint8 or int8 (the Edge TPU runs 8-bit only)")
    if math.isnan(max_drop):  # NaN compares false: every export would fail parity, after a full conversion
        raise EdgetlError(f"--max-drop must be a number of accuracy points (got {max_drop})")
    out = Path(out) if out is not None else run.path / "export"
    if out.exists() and not out.is_dir():
        raise EdgetlError(f"--out {out} is a file; give a folder for the bundle")
    labels, _ = run.labels, run.size  # a config.json without a valid size fails here, before the model loads
    val = run.samples("val") or run.samples("test")
    if not val:
        raise EdgetlError(f"{run.path} has no val/test split to check parity on; re-train with a validation split")
    protected = (run.path,) + ((Path(calibration),) if calibration is not None else ())
    _prepare_out(out, overwrite, protected, check_only=True)

    model = run.load_model()
    try:
        width = int(model.get_layer("probabilities").output.shape[-1])
    except ValueError as exc:
        raise EdgetlError(f"model has no `probabilities` layer ({exc}); export needs a model trained by "
                          "`edgetl train`") from exc
    if width != len(labels):  # the device refuses a bundle whose labels do not match the model's outputs
        raise EdgetlError(f"{run.path}: labels.txt has {len(labels)} classes but the model outputs {width}; "
                          "the run folder is inconsistent (restore the labels.txt written by `edgetl train`)")
    # Parity is checked on the run's own validation data against the model as trained: its float outputs are
    # taken first, because int8 bias correction then adjusts this same model in place before conversion.
    images, ok, failures = run.load_images([s.path for s in val], desc="validation images")
    if not ok:  # e.g. the dataset moved after training (split.csv holds absolute paths)
        raise EdgetlError(f"none of the {len(val)} validation images of {run.path} can be read ({failures[0][1]}); "
                          "was the dataset moved or deleted after training?")
    y = _labels_index(labels, [val[i] for i in ok])
    fprobs, femb = predict_keras(model, images)
    calib, calib_info = (None, None)
    if quant == "int8":
        calib, calib_info = calibration_images(run, calibration, calibration_size)
    _prepare_out(out, overwrite, protected, check_only=True)  # again: something may have appeared meanwhile
    # The bundle is written to a hidden folder beside OUT that replaces OUT (an older export included) only once
    # it is complete: a failed conversion, a full disk or a kill leaves the previous export as it was.
    with replacing_dir(out) as stage:
        manifest, parity, summary = _write_bundle(stage, run, model, images, y, fprobs, femb, calib, calib_info,
                                                  quant, io, bias_correction, edgetpu, allow_cpu_ops, max_drop,
                                                  model_version, num_threads)
    result = ExportResult(out, out / "model.tflite", manifest, parity, summary)
    if not parity["passed"]:
        raise ParityError(f"{quant} model accuracy {parity['tflite_accuracy']:.3f} vs float "
                          f"{parity['float_accuracy']:.3f}: drop {parity['drop_points']:.2f} points > --max-drop "
                          f"{max_drop}; bundle left UNSIGNED in {out}. Try a larger/more representative "
                          "--calibration set or --quant dynamic")
    if key is not None:
        bundle.sign_bundle(out, key)
    return result


def _write_bundle(out: Path, run, model, images, y, fprobs, femb, calib, calib_info, quant: str, io: str,
                  bias_correction: bool, edgetpu: bool, allow_cpu_ops: bool, max_drop: float,
                  model_version: str | None, num_threads: int | None):
    """Convert, check parity and write every bundle file into the (empty) folder `out`."""
    from edgetl import bundle

    size, labels = run.size, run.labels
    t0 = time.perf_counter()
    bias_info = correct_weight_quantization_bias(model, calib) if quant == "int8" and bias_correction else None
    tflite = convert(export_graph(model, size), quant, io, calib)
    conversion_s = time.perf_counter() - t0
    model_path = out / "model.tflite"
    model_path.write_bytes(tflite)
    log.info("converted %s (%s, io %s) in %.1f s: %.2f MB", run.path.name, quant, io, conversion_s, len(tflite) / 1e6)

    tprobs, temb = predict_tflite(model_path, images, len(labels), num_threads, desc="tflite parity")
    parity = parity_report(labels, y, fprobs, tprobs, femb, temb, max_drop)
    parity.update(quant=quant, io=io, split="val" if run.samples("val") else "test")

    from edgetl_device.interpreter import load_interpreter

    it = load_interpreter(model_path, delegate="none")
    outs = identify_outputs(it, len(labels))
    in_detail = it.get_input_details()[0]
    in_scale, in_zp = in_detail["quantization"]
    if io == "uint8" and (abs(in_scale - 1.0) > 0.02 or in_zp != 0):
        log.warning("uint8 input quantization is (%.4f, %d), not (1, 0): the device must rescale pixels", in_scale,
                    in_zp)

    summary = summarize(model_path)
    summary.update(conversion_s=round(conversion_s, 2), quant=quant, io=io)
    edgetpu_info: dict[str, Any] | None = None
    if edgetpu:
        edgetpu_info = _edgetpu_step(model_path, out, allow_cpu_ops)
        summary["edgetpu"] = edgetpu_info

    (out / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    (out / "parity.json").write_text(json.dumps(parity, indent=2) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    unknown = _copy_openset(run.path, out)
    cfg = run.config
    manifest = {
        "schema_version": bundle.SCHEMA_VERSION,
        # resolve(): RUN given as "." has an empty name
        "model_version": model_version or f"{run.path.resolve().name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}",
        "created": bundle.utc_now(),
        "backbone": {"name": cfg.get("backbone"), "alpha": cfg.get("alpha"), "weights": cfg.get("weights")},
        "input": _input_spec(in_detail, size, io, run.center_crop),
        "outputs": _outputs_spec(outs),
        "classes": labels,
        "quantization": {"mode": quant, "io": io, "calibration": calib_info, "bias_correction": bias_info},
        "unknown": unknown,
        "parity": {k: parity[k] for k in ("n", "float_accuracy", "tflite_accuracy", "drop_points", "passed",
                                          "top1_agreement", "embedding_cosine_mean")},
        "edgetpu": edgetpu_info,
        "size_bytes": len(tflite),
    }
    manifest = bundle.write_manifest(out, manifest)
    return manifest, parity, summary


def _copy_openset(run_dir: Path, out: Path) -> dict[str, Any] | None:
    """Carry the run's fitted unknown-object detector (openset/ from `edgetl openset fit`) into the bundle."""
    d = run_dir / "openset"
    if not (d / "openset.json").is_file():
        return None
    if (d / "openset.npz").is_file():
        shutil.copyfile(d / "openset.npz", out / "openset.npz")
    return json.loads((d / "openset.json").read_text())


def _edgetpu_step(model_path: Path, out: Path, allow_cpu_ops: bool) -> dict[str, Any]:
    from edgetl.edgetpu import check_edgetpu, compile_edgetpu, compiler_path, format_report

    report = check_edgetpu(model_path)
    info: dict[str, Any] = {"static": report.to_dict(), "compiled": False}
    if not report.compatible and not allow_cpu_ops:
        raise EdgetlError(format_report(report).replace("\n", "; ") + " (pass --allow-cpu-ops to accept)")
    if compiler_path() is None:
        log.warning("edgetpu_compiler not on PATH: static check only, no model_edgetpu.tflite in the bundle")
        return info
    res = compile_edgetpu(model_path, out, allow_cpu_ops)
    info.update(compiled=True, compiler_version=res.compiler_version, ops_on_tpu=res.ops_on_tpu,
                ops_on_cpu=res.ops_on_cpu, table=res.table)
    return info
