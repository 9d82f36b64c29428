"""Backbones: which architectures, alphas and sizes are valid, how weights are loaded, and the
classifier built around them (raw pixels in, preprocessing inside, `embedding` and `probabilities`)."""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetl.errors import EdgetlError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    alphas: tuple[float, ...]
    min_size: int
    imagenet_sizes: tuple[int, ...]  # sizes Keras ships ImageNet weights for (others: user weights only)
    preprocessing: str  # "mobilenet" (x/127.5-1), "caffe" (BGR mean), or "builtin" (model includes it)


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec("mobilenet_v2", (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), 32,
                                 (96, 128, 160, 192, 224), "mobilenet"),
    "mobilenet_v1": BackboneSpec("mobilenet_v1", (0.25, 0.5, 0.75, 1.0), 32, (128, 160, 192, 224), "mobilenet"),
    "mobilenet_v3_small": BackboneSpec("mobilenet_v3_small", (0.75, 1.0), 32, (224,), "builtin"),
    "mobilenet_v3_large": BackboneSpec("mobilenet_v3_large", (0.75, 1.0), 32, (224,), "builtin"),
    "vgg16": BackboneSpec("vgg16", (1.0,), 32, (224,), "caffe"),
}
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# MobileNetV2 was published at 96-224 px for alpha <= 1.0, but only at 224 px for its widest two alphas.
_ONLY_224 = (("mobilenet_v2", 1.3), ("mobilenet_v2", 1.4))


def check_combination(backbone: str, alpha: float, size: int, weights: str) -> BackboneSpec:
    """Reject unsupported backbone/alpha/size/weights combinations before any work is done."""
    spec = BACKBONES.get(backbone)
    if spec is None:
        raise EdgetlError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if not any(abs(alpha - a) < 1e-9 for a in spec.alphas):
        raise EdgetlError(f"{backbone} does not support alpha {alpha}; supported: "
                          f"{', '.join(str(a) for a in spec.alphas)}")
    if size < spec.min_size:
        raise EdgetlError(f"{backbone} needs --size >= {spec.min_size} (got {size})")
    if weights == "imagenet" and size not in spec.imagenet_sizes:
        raise EdgetlError(f"ImageNet weights for {backbone} exist only for sizes "
                          f"{', '.join(map(str, spec.imagenet_sizes))}; pick one of those, or pass "
                          "--weights PATH / --weights none")
    if weights == "imagenet" and size != 224 and any(b == backbone and abs(alpha - a) < 1e-9 for b, a in _ONLY_224):
        # the file Keras would fetch does not exist: a 404 (or an "offline?" message) would hide the real cause
        raise EdgetlError(f"ImageNet weights for {backbone} alpha {alpha:g} exist only for size 224; pass --size 224, "
                          "a smaller --alpha, or --weights PATH / --weights none")
    return spec


def _constructor(name: str):
    import keras

    return {
        "mobilenet_v2": keras.applications.MobileNetV2,
        "mobilenet_v1": keras.applications.MobileNet,
        "mobilenet_v3_small": keras.applications.MobileNetV3Small,
        "mobilenet_v3_large": keras.applications.MobileNetV3Large,
        "vgg16": keras.applications.VGG16,
    }[name]


def _kwargs(spec: BackboneSpec, alpha: float) -> dict:
    kw: dict = {"include_top": False}
    if spec.name != "vgg16":
        kw["alpha"] = alpha
    if spec.preprocessing == "builtin":
        kw["include_preprocessing"] = True
    return kw


def _preprocess(spec: BackboneSpec, x):
    """Preprocessing as built-in Keras layers so the model reloads and converts without custom objects."""
    import keras

    if spec.preprocessing == "mobilenet":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(x)
    if spec.preprocessing == "caffe":
        # RGB->BGR and mean subtraction as a fixed 1x1 convolution (a permutation plus a bias).
        conv = keras.layers.Conv2D(3, 1, name="preprocess", trainable=False)
        y = conv(x)
        kernel = np.zeros((1, 1, 3, 3), np.float32)
        for out_c, in_c in enumerate((2, 1, 0)):
            kernel[0, 0, in_c, out_c] = 1.0
        conv.set_weights([kernel, -np.array(CAFFE_MEAN_BGR, np.float32)])
        return y
    return x


_CACHE_PREFIX = {"mobilenet_v2": "mobilenet_v2_weights", "mobilenet_v1": "mobilenet_",
                 "mobilenet_v3_small": "weights_mobilenet_v3_small", "mobilenet_v3_large": "weights_mobilenet_v3_large",
                 "vgg16": "vgg16_weights"}


def _keras_cache_has(spec: BackboneSpec) -> bool:
    """Whether some ImageNet file for this family is cached (Keras then loads it without the network)."""
    import os

    try:  # where Keras itself looks (KERAS_HOME at import time, else ~/.keras)
        from keras.src.backend.config import keras_home

        home = Path(keras_home()).expanduser() / "models"
    except ImportError:  # pragma: no cover - private path moved in another Keras version
        home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    return home.is_dir() and any(f.name.startswith(_CACHE_PREFIX[spec.name]) for f in home.iterdir())


def _can_reach(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_pretrained(spec: BackboneSpec, alpha: float, size: int, weights: str):
    """A standalone backbone with weights loaded, or None for weights='none'."""
    ctor = _constructor(spec.name)
    kw = _kwargs(spec, alpha)
    shape = (size, size, 3)
    if weights == "none":
        return None
    if weights == "imagenet":
        if not _keras_cache_has(spec) and not _can_reach("storage.googleapis.com"):
            raise EdgetlError(f"ImageNet weights for {spec.name} are not in the Keras cache (~/.keras/models) "
                              "and storage.googleapis.com is unreachable (offline?); pass --weights PATH with "
                              "a local weights file, or --weights none")
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(15)  # offline hosts should fail fast, not hang
        try:
            return ctor(input_shape=shape, weights="imagenet", **kw)
        except Exception as e:  # noqa: BLE001 - urllib/HTTP/OS errors all mean "could not fetch"
            raise EdgetlError(f"could not get ImageNet weights for {spec.name} (no Keras cache and no "
                              f"download: {type(e).__name__}: {str(e)[:120]}); pass --weights PATH with a "
                              "local weights file, or --weights none") from e
        finally:
            socket.setdefaulttimeout(old)
    path = Path(weights)
    if not path.is_file():
        raise EdgetlError(f"weights file {path} not found; pass --weights imagenet|none|PATH")
    _check_readable_weights(path)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # Keras warns instead of failing on partial loads
            return ctor(input_shape=shape, weights=str(path), **kw)
    except Exception as e:  # noqa: BLE001 - Keras raises ValueError/UserWarning/h5py errors
        alpha_txt = "" if spec.name == "vgg16" else f" alpha {alpha}"
        raise EdgetlError(f"weights file {path} does not fit {spec.name}{alpha_txt} without top "
                          f"({str(e).splitlines()[0][:160]}); give the matching --backbone/--alpha or "
                          "another file") from e


def _check_readable_weights(path: Path) -> None:
    """A file no weights could be read from is damaged: not a reason to change --backbone/--alpha."""
    import zipfile

    import h5py

    name = path.name.lower()
    if name.endswith(".keras"):
        readable = zipfile.is_zipfile(path)
    elif name.endswith((".h5", ".hdf5")):
        try:
            h5py.File(path, "r").close()
            readable = True
        except OSError:  # h5py: "file signature not found", "truncated file: eof = ..."
            readable = False
    else:  # other formats (sharded .weights.json, ...): Keras' own error says what it reads
        return
    if not readable:
        raise EdgetlError(f"weights file {path} cannot be read (truncated or corrupt, e.g. an interrupted download "
                          "or a saved error page); download or copy it again")


def build_backbone(backbone: str, alpha: float, size: int, weights: str):
    """Return (inputs, features, backbone_layers): a flat graph raw pixels -> preprocessing -> features.

    The backbone is built on our input tensor so its layers sit directly in the classifier (no nested
    model): Grad-CAM and TFLite conversion see every layer. Weights are loaded into a standalone copy
    and copied by layer name, which works for both legacy .h5 and Keras 3 .weights.h5 files.
    """
    import keras

    spec = check_combination(backbone, alpha, size, weights)
    pretrained = _load_pretrained(spec, alpha, size, weights)
    inputs = keras.Input((size, size, 3), name="pixels")
    x = _preprocess(spec, inputs)
    net = _constructor(spec.name)(input_tensor=x, weights=None, **_kwargs(spec, alpha))
    if pretrained is not None:
        for layer in pretrained.layers:
            if layer.weights:
                net.get_layer(layer.name).set_weights(layer.get_weights())
    own = {"pixels", "preprocess"}
    layers = [lyr for lyr in net.layers if lyr.name not in own and not isinstance(lyr, keras.layers.InputLayer)]
    return inputs, net.output, layers


_BLOCK_RE = re.compile(r"(?:block_?|conv_(?:dw|pw)_|expanded_conv_?)(\d+)")


def block_index(layer_name: str) -> int | None:
    m = _BLOCK_RE.search(layer_name)
    return int(m.group(1)) if m else None


def top_block_layers(layers: list, blocks: int) -> list:
    """The layers in the last `blocks` numbered blocks plus everything after them (e.g. Conv_1)."""
    if blocks <= 0:
        return []
    numbers = sorted({n for lyr in layers if (n := block_index(lyr.name)) is not None})
    if not numbers:
        return layers[-blocks * 8:]
    cutoff = numbers[-min(blocks, len(numbers))]
    start = next(i for i, lyr in enumerate(layers) if block_index(lyr.name) == cutoff)
    return layers[start:]


EMBEDDINGS = ("gap", "multiscale")


def mid_level_features(layers: list, features):
    """The last backbone output at twice the final resolution (stride 16 on stride-32 backbones), or None.

    Small objects in a wide fixed view (a ship on a board, a person far from the camera) cover a few
    cells of the 7x7 final map, so its average drowns them; a max over the 14x14 map keeps them."""
    h, w = features.shape[1], features.shape[2]
    for layer in reversed(layers):
        shape = layer.output.shape
        if len(shape) == 4 and shape[1] == 2 * h and shape[2] == 2 * w:
            return layer.output
    return None


def build_classifier(backbone: str, alpha: float, size: int, weights: str, num_classes: int,
                     dropout: float = 0.2, embedding: str = "gap"):
    """Raw pixels -> backbone -> `embedding` -> dropout -> `probabilities`.

    embedding "gap": global average pool of the final features. "multiscale": that plus a global max pool
    of the mid-level (stride 16) features, standardised by a `Normalization` layer named `embedding`
    whose mean/variance the trainer adapts on the training images (`adapt_embedding`)."""
    import keras

    if embedding not in EMBEDDINGS:
        raise EdgetlError(f"--embedding must be one of {', '.join(EMBEDDINGS)} (got {embedding!r})")
    inputs, features, layers = build_backbone(backbone, alpha, size, weights)
    if embedding == "gap":
        emb = keras.layers.GlobalAveragePooling2D(name="embedding")(features)
    else:
        mid = mid_level_features(layers, features)
        if mid is None:
            raise EdgetlError(f"{backbone} at {size} px has no mid-level feature map for --embedding multiscale; "
                              "use --embedding gap")
        pooled = [keras.layers.GlobalAveragePooling2D(name="pooled_final")(features),
                  keras.layers.GlobalMaxPooling2D(name="pooled_mid")(mid)]
        emb = keras.layers.Normalization(name="embedding")(keras.layers.Concatenate(name="pooled")(pooled))
    x = keras.layers.Dropout(dropout, name="dropout")(emb)
    out = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, out, name=f"edgetl_{backbone}")
    return model, layers


def embedding_statistics(pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per channel of pooled training features, std floored at a tenth of the median one:
    near-constant channels (a ReLU6 that is almost always 0 or 6) would otherwise be multiplied by
    thousands and blow up fine-tuning."""
    pooled = np.asarray(pooled, np.float64)
    std = pooled.std(axis=0)
    return pooled.mean(axis=0), np.maximum(std, 0.1 * float(np.median(std)) + 1e-6)


def adapt_embedding(model, pooled: np.ndarray) -> None:
    """Set a multiscale embedding's standardisation from pooled training features (no-op for "gap")."""
    import keras

    layer = model.get_layer("embedding")
    if not isinstance(layer, keras.layers.Normalization):
        return
    mean, std = embedding_statistics(pooled)
    layer.adapt_mean.assign(mean.astype(np.float32))
    layer.adapt_variance.assign((std**2).astype(np.float32))
    layer.finalize_state()
