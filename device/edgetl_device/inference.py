"""Classify camera frames with a TFLite model: preprocessing from the model's input details.

Quantized models take camera pixels as they are: uint8 is written straight into
the input tensor, int8 is the same bytes shifted by 128 (no float round trip).
Outputs are dequantized to float32. Which output is which comes from the bundle
manifest's `outputs`, else tensor names containing "prob"/"embed", else the
single output is the probabilities.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from edgetl_device.errors import DeviceError
from edgetl_device.interpreter import load_interpreter

log = logging.getLogger(__name__)

__all__ = ["Class", "Model", "Output", "get_classes", "load_interpreter", "read_labels"]


class Class(NamedTuple):
    id: int
    score: float


class Output(NamedTuple):
    probabilities: np.ndarray  # float32 [C]
    embedding: np.ndarray | None  # float32 [D] or None


def read_labels(path: str | os.PathLike[str]) -> list[str]:
    """One class per line, line number = index. Also accepts pycoral's `index label` lines."""
    path = Path(path)
    if not path.is_file():
        raise DeviceError(f"labels file not found: {path} (one class name per line)")
    # utf-8-sig: a byte-order mark (Windows editors) would otherwise stick to the first label / hide its index
    lines = [ln.rstrip("\r\n") for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    while lines and not lines[-1].strip():
        lines.pop()
    pairs = [ln.split(maxsplit=1) for ln in lines if ln.strip()]  # blank lines carry no index in `index label`
    if pairs and all(len(p) == 2 and p[0].isdigit() for p in pairs):
        table = {int(i): name.strip() for i, name in pairs}
        return [table.get(i, str(i)) for i in range(max(table) + 1)]
    return [ln.strip() for ln in lines]


def get_classes(probs: np.ndarray, top_k: int = 1, threshold: float = 0.0) -> list[Class]:
    """The top_k classes with score >= threshold, best first (like pycoral.adapters.classify)."""
    probs = np.asarray(probs).ravel()
    top_k = min(max(int(top_k), 0), probs.size)
    if top_k == 0:
        return []
    idx = np.argpartition(-probs, top_k - 1)[:top_k]
    idx = idx[np.argsort(-probs[idx], kind="stable")]
    return [Class(int(i), float(probs[i])) for i in idx if probs[i] >= threshold]


def _dequantize(raw: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if raw.dtype in (np.uint8, np.int8, np.int16, np.int32) and scale:
        return ((raw.astype(np.float32) - zero) * scale).astype(np.float32)
    return raw.astype(np.float32, copy=False)


class Model:
    """A loaded classifier: `run(frame_bgr) -> Output`."""

    def __init__(self, model_path: str | os.PathLike[str], labels: list[str] | None = None,
                 num_threads: int | None = None, delegate: str = "auto", center_crop: float | None = None,
                 input_mean: float = 0.0, input_std: float = 1.0, manifest: dict[str, Any] | None = None,
                 resize: str = "area") -> None:
        self.path = Path(model_path)
        self.manifest = manifest or {}
        if resize not in ("area", "fast"):
            raise DeviceError(f"resize must be 'area' or 'fast', not {resize!r}")
        self.resize = resize
        try:
            self.interpreter = load_interpreter(self.path, num_threads=num_threads, delegate=delegate)
        except DeviceError as exc:
            if "Edge TPU" in str(exc) or "not found" in str(exc):
                raise
            detail = " ".join(str(exc).split())
            raise DeviceError(f"{detail} -- the model is broken or needs ops this runtime lacks: re-export it "
                              "or deploy another model") from exc
        details = self.interpreter.get_input_details()
        if len(details) != 1:
            raise DeviceError(f"{self.path.name}: expected one image input, found {len(details)}")
        self._input = details[0]
        shape = self._input["shape"]
        if len(shape) != 4 or shape[-1] != 3:
            raise DeviceError(f"{self.path.name}: input shape {list(shape)} is not [1, H, W, 3] (an RGB image)")
        self.height, self.width = int(shape[1]), int(shape[2])
        self.input_dtype = np.dtype(self._input["dtype"])
        spec = self.manifest.get("input", {}) if isinstance(self.manifest.get("input"), dict) else {}
        crop = spec.get("center_crop", center_crop)
        self.center_crop = None if crop in (None, False, 0) else (1.0 if crop is True else float(crop))
        norm = _NORMALIZATIONS.get(str(spec.get("normalization")), (input_mean, input_std))
        self.mean = float(spec.get("mean", norm[0]))
        self.std = float(spec.get("std", norm[1]))
        self._lut = _input_lut(self._input, self.input_dtype, self.mean, self.std) if "normalization" in spec \
            else None
        self._prob_index, self._embed_index = self._identify_outputs()
        n_classes = int(np.prod(self._outputs[self._prob_index]["shape"]))
        self.labels = labels if labels is not None else [str(i) for i in range(n_classes)]
        if len(self.labels) != n_classes:
            raise DeviceError(f"{self.path.name} has {n_classes} outputs but the labels file has "
                              f"{len(self.labels)} lines: use the labels file that belongs to this model")
        self.model_version = str(self.manifest.get("model_version") or self.path.stem)

    # -- outputs
    def _identify_outputs(self) -> tuple[int, int | None]:
        outs = self._outputs = self.interpreter.get_output_details()
        names = [str(d.get("name", "")).lower() for d in outs]
        signature: dict[str, int] = {}
        try:
            runner = self.interpreter.get_signature_runner()
            signature = {k: int(v["index"]) for k, v in runner.get_output_details().items()}
        except (ValueError, KeyError, RuntimeError, AttributeError):
            pass  # no signature in this model

        def find(role: str, keyword: str) -> int | None:
            for spec in self.manifest.get("outputs", []) or []:
                if not isinstance(spec, dict) or spec.get("name") != role:
                    continue
                tensor = str(spec.get("tensor_name", "")).lower()
                if tensor and tensor in names:
                    return names.index(tensor)
                by_tensor = [i for i, d in enumerate(outs) if d["index"] == spec.get("tensor_index")]
                if by_tensor:
                    return by_tensor[0]
                if isinstance(spec.get("index"), int) and 0 <= spec["index"] < len(outs):
                    return spec["index"]
            hits = [i for i, n in enumerate(names) if keyword in n]
            if len(hits) == 1:
                return hits[0]
            for sig_name, tensor_index in signature.items():  # converter keeps names only in the signature
                if keyword in sig_name.lower():
                    return next((i for i, d in enumerate(outs) if d["index"] == tensor_index), None)
            return None

        prob = find("probabilities", "prob")
        embed = find("embedding", "embed")
        if prob is None:
            if len(outs) == 1:
                prob = 0
            elif len(outs) == 2 and embed is not None:
                prob = 1 - embed
            else:
                raise DeviceError(f"{self.path.name}: cannot tell which of {len(outs)} outputs holds the "
                                  "probabilities; name it 'probabilities' or list it in the manifest's outputs")
        if embed == prob:
            embed = None
        return prob, embed

    # -- preprocessing
    def preprocess(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Camera frame (H, W, 3) BGR uint8 -> input tensor [1, h, w, 3] of the model's dtype."""
        if frame_bgr is None or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
            raise DeviceError(f"expected a BGR image (H, W, 3), got shape {getattr(frame_bgr, 'shape', None)}")
        img = frame_bgr
        if self.center_crop is not None:
            img = center_crop(img, self.center_crop)
        img = resize_area(img, (self.width, self.height)) if self.resize == "area" else \
            resize_fast(img, (self.width, self.height))
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)  # after the resize: fewer pixels to convert
        if self._lut is not None:  # a manifest-declared normalization that is not the identity: one lookup
            return cv2.LUT(rgb, self._lut).view(self.input_dtype)[np.newaxis]
        if self.input_dtype == np.uint8:
            return rgb[np.newaxis]
        if self.input_dtype == np.int8:
            return (rgb ^ np.uint8(0x80)).view(np.int8)[np.newaxis]  # pixel - 128 without floats
        return ((rgb.astype(np.float32) - self.mean) / self.std)[np.newaxis].astype(self.input_dtype)

    def run(self, frame_bgr: np.ndarray) -> Output:
        return self.infer(self.preprocess(frame_bgr))

    def infer(self, tensor: np.ndarray) -> Output:
        """Run on an already preprocessed input (lets the runtime preprocess the next frame meanwhile)."""
        self.interpreter.set_tensor(self._input["index"], tensor)
        try:
            self.interpreter.invoke()
        except (RuntimeError, ValueError) as exc:
            raise DeviceError(f"{self.path.name}: inference failed: {exc}. The model file is broken; "
                              "re-export it or deploy another bundle") from exc
        return self._read_outputs()

    def _read_outputs(self) -> Output:
        pd = self._outputs[self._prob_index]
        probs = _dequantize(self.interpreter.get_tensor(pd["index"]), pd).ravel()
        emb = None
        if self._embed_index is not None:
            ed = self._outputs[self._embed_index]
            emb = _dequantize(self.interpreter.get_tensor(ed["index"]), ed).ravel()
        return Output(probs, emb)

    def classify(self, frame_bgr: np.ndarray, top_k: int = 1, threshold: float = 0.0) -> list[Class]:
        return get_classes(self.run(frame_bgr).probabilities, top_k, threshold)


# manifest input.normalization -> (mean, std) so that real = (pixel - mean) / std
_NORMALIZATIONS = {"raw_0_255": (0.0, 1.0), "0_1": (0.0, 255.0), "minus1_1": (127.5, 127.5)}


def _input_lut(detail: dict[str, Any], dtype: np.dtype, mean: float, std: float) -> np.ndarray | None:
    """A 256-entry pixel -> quantized-byte table, or None when the fast path (raw / xor 0x80) is exact."""
    scale, zero = detail.get("quantization", (0.0, 0))
    if dtype not in (np.uint8, np.int8) or not scale:
        return None
    info = np.iinfo(dtype)
    real = (np.arange(256, dtype=np.float64) - mean) / std
    q = np.clip(np.round(real / scale + zero), info.min, info.max).astype(dtype).view(np.uint8)
    fast = np.arange(256, dtype=np.uint8) if dtype == np.uint8 else np.arange(256, dtype=np.uint8) ^ 0x80
    return None if np.array_equal(q, fast) else q


def resize_area(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pixel-area resampling (what edgetl's training data loader uses)."""
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def resize_fast(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A close, cheaper stand-in for `resize_area`: bilinear to k times the target, then OpenCV's exact k x k
    box average (its integer-factor fast path), with k the rounded downscale factor. Each output pixel
    averages about as many source pixels as an area resize would (so no aliasing), at about a third of
    the cost of INTER_AREA at non-integer scales; camera frames land within 0.5 levels of it on average."""
    h, w = img.shape[:2]
    k = round(min(w / size[0], h / size[1]))
    if k < 2:  # (nearly) the target size already, or an enlargement
        return cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    big = cv2.resize(img, (size[0] * k, size[1] * k), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(big, size, interpolation=cv2.INTER_AREA)


def center_crop(img: np.ndarray, fraction: float) -> np.ndarray:
    """The centred square whose side is `fraction` of the shorter side (a view, no copy)."""
    h, w = img.shape[:2]
    side = max(1, int(round(min(h, w) * fraction)))
    y, x = (h - side) // 2, (w - side) // 2
    return img[y:y + side, x:x + side]


def load_model(model_cfg: Any, trusted_keys: list[Path] | None = None) -> tuple[Model, Any]:
    """Build a Model from a ModelConfig; returns (model, bundle or None)."""
    if model_cfg.bundle is not None:
        try:
            from edgetl_device.bundle import open_bundle
        except ImportError as exc:
            raise DeviceError("this runtime cannot read bundles yet (edgetl_device.bundle missing); "
                              "use model.path + model.labels") from exc
        bundle = open_bundle(model_cfg.bundle, trusted_keys or [])
        model_path = bundle.model_path
        delegate = model_cfg.delegate
        if delegate != "none" and getattr(bundle, "edgetpu_model_path", None) is not None:
            if delegate == "edgetpu" or _tpu_available():
                model_path = bundle.edgetpu_model_path
        labels = list(bundle.labels)
        model = Model(model_path, labels, model_cfg.num_threads, delegate, manifest=bundle.manifest,
                      resize=model_cfg.resize)
        return model, bundle
    labels = read_labels(model_cfg.labels) if model_cfg.labels is not None else None
    model = Model(model_cfg.path, labels, model_cfg.num_threads, model_cfg.delegate, model_cfg.center_crop,
                  model_cfg.input_mean, model_cfg.input_std, resize=model_cfg.resize)
    return model, None


def _tpu_available() -> bool:
    from edgetl_device.interpreter import backend_module, load_edgetpu_delegate

    try:
        load_edgetpu_delegate(backend_module()[1])
        return True
    except Exception:  # any failure means: no usable TPU here
        return False
