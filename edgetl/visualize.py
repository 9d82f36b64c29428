"""See what the network sees: feature maps layer by layer, Grad-CAM heatmaps, misclassified sheets.

Works on a run's classifier (whose backbone is a nested sub-model) and on bare Keras backbones.
Layers are named either plainly (`block3_conv3`, searched through nested models) or by path
(`mobilenetv2_0.35_224/block_3_expand_relu`). TensorFlow/Keras are imported inside functions so that
importing this module stays cheap.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.atomic import replacing
from edgetl.errors import EdgetlError
from edgetl.plots import save_figure

log = logging.getLogger(__name__)

# Layers whose outputs are plumbing rather than features worth looking at.
_SKIP_KINDS = ("InputLayer", "ZeroPadding2D", "Dropout", "SpatialDropout2D", "Rescaling", "Normalization",
               "Lambda", "Reshape", "Cropping2D", "RandomFlip", "RandomRotation", "RandomZoom",
               "RandomTranslation", "RandomContrast", "RandomBrightness")
_POOL_KINDS = ("MaxPooling2D", "AveragePooling2D")

BACKBONES = ("vgg16", "mobilenet", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")


# ----------------------------------------------------------------------------------------------------------
# Layers in nested models


@dataclass(frozen=True)
class LayerRef:
    """A layer reached through zero or more nested sub-models: `path[-1]` is the layer itself."""

    path: tuple[Any, ...]

    @property
    def layer(self) -> Any:
        return self.path[-1]

    @property
    def name(self) -> str:
        return "/".join(layer.name for layer in self.path)

    @property
    def output_shape(self) -> tuple | None:
        try:
            return tuple(self.layer.output.shape)
        except (AttributeError, ValueError, RuntimeError):
            return None


def _is_model(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def iter_layers(model: Any, _prefix: tuple = ()) -> list[LayerRef]:
    """Every layer in execution order, descending into nested models (the sub-model itself is listed too)."""
    refs: list[LayerRef] = []
    for layer in model.layers:
        path = (*_prefix, layer)
        refs.append(LayerRef(path))
        if _is_model(layer):
            refs.extend(iter_layers(layer, path))
    return refs


def find_layer(model: Any, name: str) -> LayerRef:
    """A layer by path (`sub/layer`) or plain name searched through nested models; clear error otherwise."""
    refs = iter_layers(model)
    exact = [r for r in refs if r.name == name]
    if exact:
        return exact[0]
    plain = [r for r in refs if r.layer.name == name]
    if len(plain) == 1:
        return plain[0]
    if len(plain) > 1:
        raise EdgetlError(f"layer name {name!r} is ambiguous: use one of {[r.name for r in plain]}")
    conv = [r.name for r in feature_layers(model)]
    raise EdgetlError(
        f"no layer {name!r} in the model; feature-map layers are: {', '.join(conv[:40])}"
        + (" ..." if len(conv) > 40 else "")
    )


def _spatial(ref: LayerRef) -> tuple[int, int, int] | None:
    """(H, W, C) when the layer outputs a single image-like tensor."""
    shape = ref.output_shape
    if shape is None or len(shape) != 4 or any(d is None for d in shape[1:]):
        return None
    return int(shape[1]), int(shape[2]), int(shape[3])


def feature_layers(model: Any) -> list[LayerRef]:
    """Layers with a 4-D output worth showing: not input/padding/dropout/preprocessing, more than 3 channels."""
    out = []
    for ref in iter_layers(model):
        kind = type(ref.layer).__name__
        if _is_model(ref.layer) or kind in _SKIP_KINDS:
            continue
        hwc = _spatial(ref)
        # > 3 channels: not an image; > 1x1: not a squeeze-excite gate
        if hwc is not None and hwc[2] > 3 and hwc[0] * hwc[1] > 1:
            out.append(ref)
    return out


def default_feature_layers(model: Any) -> list[LayerRef]:
    """One layer per block: the last feature layer at each spatial resolution (VGG16: blockN_convM)."""
    by_size: dict[tuple[int, int], LayerRef] = {}
    for ref in feature_layers(model):
        if type(ref.layer).__name__ in _POOL_KINDS:
            continue  # the pooled map is the next block's input; show the block's own last conv
        hwc = _spatial(ref)
        assert hwc is not None
        by_size.pop(hwc[:2], None)  # keep insertion order = order of the *last* layer at this size
        by_size[hwc[:2]] = ref
    if not by_size:
        raise EdgetlError("the model has no convolutional layers to show feature maps of")
    return list(by_size.values())


def default_gradcam_layer(model: Any) -> LayerRef:
    """The last convolutional feature map (before global pooling): the usual Grad-CAM target."""
    layers = [r for r in feature_layers(model) if type(r.layer).__name__ not in _POOL_KINDS]
    if not layers:
        raise EdgetlError("the model has no convolutional layer for Grad-CAM")
    return layers[-1]


# ----------------------------------------------------------------------------------------------------------
# Tapping: one model that returns chosen inner activations (through nested models) plus its outputs


def _call(layer: Any, args: tuple, kwargs: dict) -> Any:
    return layer(*args, **kwargs)


def tap_model(model: Any, refs: Sequence[LayerRef], tap_head_input: bool = False) -> Any:
    """`keras.Model(model.inputs, [*activations of refs, *model.outputs (, head input)])` sharing weights.

    A nested sub-model's inner tensors live in its own graph, so they cannot be outputs of the outer
    model directly: the nested model is replaced, while re-calling the outer graph, by a tapped copy
    of itself that also returns the wanted inner tensors. With `tap_head_input`, the input of the last
    layer is appended too (Grad-CAM uses it to recompute pre-softmax logits).
    """
    import keras

    direct: dict[int, list[int]] = {}  # id(layer) -> indices into refs
    nested: dict[int, list[tuple[int, LayerRef]]] = {}
    for i, ref in enumerate(refs):
        head, rest = ref.path[0], ref.path[1:]
        if rest:
            nested.setdefault(id(head), []).append((i, LayerRef(rest)))
        else:
            direct.setdefault(id(head), []).append(i)
    tapped_subs = {}
    for sub_id, items in nested.items():
        sub = next(layer for layer in model.layers if id(layer) == sub_id)
        tapped_subs[sub_id] = (tap_model(sub, [r for _, r in items]), [i for i, _ in items])

    captured: dict[int, Any] = {}
    last = model.layers[-1]
    head_input: list[Any] = []

    def call_function(layer: Any, *args: Any, **kwargs: Any) -> Any:
        if layer is last and tap_head_input:
            head_input.append(args[0])
        if id(layer) in tapped_subs:
            sub_model, indices = tapped_subs[id(layer)]
            outs = sub_model(*args, **kwargs)
            for i, t in zip(indices, outs[: len(indices)], strict=True):
                captured[i] = t
            rest = outs[len(indices):]
            result = rest[0] if len(rest) == 1 else rest
        else:
            result = layer(*args, **kwargs)
        for i in direct.get(id(layer), []):
            captured[i] = result
        return result

    if isinstance(model, keras.Sequential):
        inp = keras.Input(shape=tuple(model.inputs[0].shape[1:]))
        x = inp
        for layer in model.layers:
            x = call_function(layer, x)
        inputs, outputs = [inp], [x]
    else:
        clone = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call_function)
        inputs, outputs = list(clone.inputs), list(clone.outputs)
    missing = [refs[i].name for i in range(len(refs)) if i not in captured]
    if missing:
        raise EdgetlError(f"could not reach layers {missing} from the model's input")
    extra = [head_input[0]] if tap_head_input and head_input else []
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs,
                       [captured[i] for i in range(len(refs))] + outputs + extra)


# ----------------------------------------------------------------------------------------------------------
# Feature maps


def feature_maps(model: Any, image: np.ndarray, layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Activations (H, W, C float32) of the chosen layers for one image (pixels as the model takes them)."""
    refs = [find_layer(model, n) for n in layers] if layers else default_feature_layers(model)
    for ref in refs:
        if _spatial(ref) is None:
            raise EdgetlError(f"layer {ref.name} has no image-like output ({ref.output_shape}); "
                              "pick a convolutional layer")
    tapped = tap_model(model, refs)
    outs = tapped(_batch(image), training=False)
    return {ref.name: np.asarray(outs[i])[0].astype(np.float32) for i, ref in enumerate(refs)}


def normalize_channels(fmap: np.ndarray) -> np.ndarray:
    """Each channel min-max scaled to [0, 1] for display (a flat channel becomes 0)."""
    lo = fmap.min(axis=(0, 1), keepdims=True)
    span = fmap.max(axis=(0, 1), keepdims=True) - lo
    return np.where(span > 0, (fmap - lo) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


def channel_grid(fmap: np.ndarray, max_channels: int = 64, pad: int = 1) -> tuple[np.ndarray, list[int]]:
    """Tile the most active channels (by mean activation) into one 2-D image; returns channel ids.

    Values are in [0, 1]; separators and unused cells are NaN (drawn blank).
    """
    h, w, c = fmap.shape
    order = np.argsort(-fmap.mean(axis=(0, 1)), kind="stable")[: max(1, min(max_channels, c))]
    norm = normalize_channels(fmap[:, :, order])
    n = len(order)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad), np.nan, np.float32)  # NaN: blank
    for k in range(n):
        r, col = divmod(k, cols)
        grid[r * (h + pad): r * (h + pad) + h, col * (w + pad): col * (w + pad) + w] = norm[:, :, k]
    return grid, [int(i) for i in order]


def save_feature_maps(maps: dict[str, np.ndarray], image: np.ndarray, out_dir: Path,
                      max_channels: int = 64) -> list[Path]:
    """One PNG per layer (`NN_layer.png`, grid of its channels) plus `00_input.png`; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "00_input.png"]
    with replacing(paths[0]) as tmp:  # each picture all or nothing: a full disk leaves the previous one
        plt.imsave(tmp, np.clip(image, 0, 255).astype(np.uint8), format="png")
    for k, (name, fmap) in enumerate(maps.items(), start=1):
        grid, _ = channel_grid(fmap, max_channels)
        h, w, c = fmap.shape
        fig_w = 8.0
        fig, ax = plt.subplots(figsize=(fig_w, fig_w * grid.shape[0] / grid.shape[1] + 0.6))
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
        ax.imshow(grid, cmap=cmap, interpolation="nearest", vmin=0, vmax=1)
        shown = min(c, max_channels)
        ax.set_title(f"{name}  {h}x{w}x{c}  ({shown} most active channels)", fontsize=9)
        ax.axis("off")
        fig.tight_layout()
        path = out_dir / f"{k:02d}_{name.replace('/', '__')}.png"
        paths.append(save_figure(fig, path, dpi=100))
    if maps:
        paths.append(save_layers_overview(maps, image, out_dir / "layers.png"))
    return paths


def save_layers_overview(maps: dict[str, np.ndarray], image: np.ndarray, path: Path, per_layer: int = 8) -> Path:
    """The input, then one row per layer (its `per_layer` most active channels): shallow to deep at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(maps) + 1
    fig, axes = plt.subplots(rows, per_layer + 1, figsize=(1.3 * (per_layer + 1), 1.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 1].imshow(np.clip(image, 0, 255).astype(np.uint8))
    axes[0, 0].text(0.95, 0.5, "input", ha="right", va="center", fontsize=8, transform=axes[0, 0].transAxes)
    for r, (name, fmap) in enumerate(maps.items(), start=1):
        h, w, c = fmap.shape
        axes[r, 0].text(0.95, 0.5, f"{name.split('/')[-1]}\n{h}x{w}x{c}", ha="right", va="center", fontsize=7,
                        transform=axes[r, 0].transAxes)
        order = np.argsort(-fmap.mean(axis=(0, 1)), kind="stable")[:per_layer]
        norm = normalize_channels(fmap[:, :, order])
        for k in range(len(order)):
            axes[r, k + 1].imshow(norm[:, :, k], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


# ----------------------------------------------------------------------------------------------------------
# Grad-CAM


@dataclass
class GradCam:
    heatmap: np.ndarray  # (H, W) in [0, 1] at the image's size
    class_index: int
    probabilities: np.ndarray
    layer: str


def _batch(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image, dtype=np.float32)
    return arr[None] if arr.ndim == 3 else arr


def _resize(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    return cv2.resize(arr.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def gradcam_model(model: Any, layer: str | None = None) -> tuple[Any, LayerRef]:
    """A tapped model returning (conv map, probabilities, head input) to reuse across many images."""
    ref = find_layer(model, layer) if layer else default_gradcam_layer(model)
    if _spatial(ref) is None:
        raise EdgetlError(f"layer {ref.name} has no image-like output; pick a convolutional layer")
    return tap_model(model, [ref], tap_head_input=True), ref


def grad_cam(model: Any, image: np.ndarray, class_index: int | None = None, layer: str | None = None,
             _tapped: tuple[Any, LayerRef] | None = None) -> GradCam:
    """Grad-CAM (Selvaraju et al.): ReLU of the conv map weighted by the mean gradient of the class score.

    The class score is the pre-softmax logit when the last layer is a softmax Dense (recomputed from its
    input, so saturated probabilities do not kill the gradient), else the log-probability.
    """
    import keras
    import tensorflow as tf

    tapped, ref = _tapped or gradcam_model(model, layer)
    head = model.layers[-1]
    x = tf.convert_to_tensor(_batch(image))
    with tf.GradientTape() as tape:
        conv, probs, head_in = tapped(x, training=False)
        tape.watch(conv)
        probs_np = np.asarray(probs)[0]
        idx = int(np.argmax(probs_np)) if class_index is None else int(class_index)
        if not 0 <= idx < probs_np.shape[-1]:
            raise EdgetlError(f"class index {idx} out of range: the model has {probs_np.shape[-1]} classes")
        if isinstance(head, keras.layers.Dense) and head.activation is keras.activations.softmax:
            score = tf.matmul(head_in, head.kernel)[:, idx] + head.bias[idx]
        else:
            score = tf.math.log(probs[:, idx] + 1e-12)
    grads = tape.gradient(score, conv)
    if grads is None:
        raise EdgetlError(f"no gradient flows from the output to layer {ref.name}; pick another layer")
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * conv, axis=-1))[0].numpy()
    img = np.asarray(image)
    heat = np.maximum(_resize(cam, img.shape[0], img.shape[1]), 0.0)
    if heat.max() > 0:  # scaled after upsampling so the hottest displayed pixel is exactly 1
        heat = heat / heat.max()
    return GradCam(heat.astype(np.float32), idx, probs_np, ref.name)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heatmap (jet colours) blended over the RGB image; uint8 RGB."""
    from matplotlib import colormaps

    rgb = np.clip(np.asarray(image, np.float32), 0, 255)
    heat = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255.0
    return np.clip((1 - alpha) * rgb + alpha * heat, 0, 255).astype(np.uint8)


def save_gradcam(image: np.ndarray, cam: GradCam, labels: Sequence[str], path: Path) -> Path:
    """Image | heatmap overlay side by side, titled with the class and its probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7, 3.8))
    axes[0].imshow(np.clip(image, 0, 255).astype(np.uint8))
    axes[0].set_title("input", fontsize=9)
    axes[1].imshow(overlay(image, cam.heatmap))
    name = labels[cam.class_index] if cam.class_index < len(labels) else str(cam.class_index)
    # parse_math=False: class names like "$1_$5" are not TeX (matplotlib raised at savefig)
    axes[1].set_title(f"Grad-CAM: {name} (p={cam.probabilities[cam.class_index]:.2f})", fontsize=9,
                      parse_math=False)
    fig.suptitle(f"layer {cam.layer}", fontsize=8, parse_math=False)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=100)


# ----------------------------------------------------------------------------------------------------------
# Runs and images


def load_rgb(path: Path, size: int, center_crop: float | None = None) -> np.ndarray:
    """An image file as float32 RGB [0, 255] (what a run's model takes) via the trainer's one loader."""
    from edgetl.data import load_image

    if not Path(path).is_file():
        raise EdgetlError(f"image not found: {path}")
    return load_image(path, size, center_crop).astype(np.float32)


def open_run(path: Path) -> Any:
    """The run folder (`edgetl.run.Run`); clear error when it is not one."""
    from edgetl.run import Run

    return Run(path)


def build_backbone(name: str, weights: Path | None = None, size: int = 224, alpha: float | None = None) -> Any:
    """A bare ImageNet backbone (no top) taking raw RGB [0, 255]: its preprocessing sits inside as a layer.

    The backbone is nested as a sub-model, just like in a run's classifier.
    """
    import keras

    name = name.lower().replace("-", "_")
    if name not in BACKBONES:
        raise EdgetlError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if weights is not None and not Path(weights).is_file():
        raise EdgetlError(f"weights file not found: {weights}")
    w = str(weights) if weights else None
    shape = (size, size, 3)
    apps = keras.applications
    try:
        if name == "vgg16":
            bb, pre = apps.VGG16(include_top=False, weights=w, input_shape=shape), apps.vgg16.preprocess_input
        elif name == "mobilenet":
            bb = apps.MobileNet(include_top=False, weights=w, input_shape=shape, alpha=alpha or 1.0)
            pre = apps.mobilenet.preprocess_input
        elif name == "mobilenet_v2":
            bb = apps.MobileNetV2(include_top=False, weights=w, input_shape=shape, alpha=alpha or 1.0)
            pre = apps.mobilenet_v2.preprocess_input
        else:
            cls = apps.MobileNetV3Small if name.endswith("small") else apps.MobileNetV3Large
            bb = cls(include_top=False, weights=w, input_shape=shape, alpha=alpha or 1.0)
            pre = None  # MobileNetV3 has its preprocessing built in
    except (ValueError, OSError) as exc:
        raise EdgetlError(f"cannot build {name} with weights {weights}: {exc} "
                          "(the file must hold the no-top weights of this architecture and alpha)") from exc
    inp = keras.Input(shape=shape, name="rgb")
    x = keras.layers.Lambda(pre, name="preprocess")(inp) if pre is not None else inp
    return keras.Model(inp, bb(x), name=f"{name}_features")


# ----------------------------------------------------------------------------------------------------------
# Misclassified contact sheet


@dataclass
class Misclassified:
    path: Path
    true_label: str
    predicted: str
    probability: float
    image: np.ndarray
    heatmap: np.ndarray


def predict_split(model: Any, run: Any, split: str = "val", batch: int = 32,
                  progress: bool = False) -> tuple[list[tuple[Path, str]], np.ndarray]:
    """Probabilities for every image of a split; rows are (path, label) in `run.samples(split)` order."""
    from tqdm import tqdm

    rows = [(Path(s.path), s.label) for s in run.samples(split)]
    probs = []
    for start in tqdm(range(0, len(rows), batch), desc=f"predict {split}", disable=not progress):
        imgs = np.stack([load_rgb(p, run.size, run.center_crop) for p, _ in rows[start:start + batch]])
        probs.append(np.asarray(model(imgs, training=False)))
    return rows, (np.concatenate(probs) if probs else np.zeros((0, len(run.labels)), np.float32))


def pick_examples(rows: Sequence[tuple[Path, str]], probs: np.ndarray, labels: Sequence[str]
                  ) -> tuple[list[int], list[int]]:
    """(wrong rows, most confident first; the most confident correct row of each class, in class order)."""
    index = {name: i for i, name in enumerate(labels)}
    pred = probs.argmax(axis=1) if len(rows) else np.zeros(0, int)
    truth = np.array([index.get(lab, -1) for _, lab in rows], int)
    conf = probs[np.arange(len(rows)), pred] if len(rows) else np.zeros(0)
    wrong = sorted(np.flatnonzero(truth != pred).tolist(), key=lambda i: (-float(conf[i]), i))
    correct = []
    for c in range(len(labels)):
        hits = np.flatnonzero((truth == c) & (pred == c))
        if len(hits):
            correct.append(int(hits[np.argmax(conf[hits])]))
    return wrong, correct


def explain_rows(model: Any, run: Any, rows: Sequence[tuple[Path, str]], probs: np.ndarray,
                 indices: Sequence[int]) -> list[Misclassified]:
    """Grad-CAM of the predicted class for the chosen rows (one tapped model reused)."""
    if not indices:
        return []
    tapped = gradcam_model(model)
    out = []
    for i in indices:
        img = load_rgb(rows[i][0], run.size, run.center_crop)
        pred = int(probs[i].argmax())
        cam = grad_cam(model, img, pred, _tapped=tapped)
        out.append(Misclassified(rows[i][0], rows[i][1], run.labels[pred], float(probs[i, pred]), img, cam.heatmap))
    return out


def find_misclassified(model: Any, run: Any, n: int, split: str = "val",
                       progress: bool = False) -> tuple[list[Misclassified], int]:
    """The `n` most confidently wrong images of a split with Grad-CAM of the predicted class; and the total."""
    rows, probs = predict_split(model, run, split, progress=progress)
    wrong, _ = pick_examples(rows, probs, run.labels)
    return explain_rows(model, run, rows, probs, wrong[:n]), len(wrong)


def save_contact_sheet(items: Sequence[Misclassified], path: Path, cols: int = 4) -> Path:
    """A grid of Grad-CAM overlays titled `true → predicted (p)`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not items:
        raise EdgetlError("no misclassified images to show")
    cols = min(cols, len(items))
    rows = math.ceil(len(items) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, it in zip(axes.flat, items, strict=False):
        ax.imshow(overlay(it.image, it.heatmap))
        ax.set_title(f"{it.true_label} → {it.predicted} ({it.probability:.2f})\n{it.path.name[:28]}", fontsize=8,
                     parse_math=False)  # class and file names are not TeX: "$1_$5" raised at savefig
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=90)
