"""Transfer learning: frozen-backbone head training (optionally on cached embeddings), then fine-tuning
of the top blocks with batch norm kept in inference mode. Writes a run folder (DEVELOPERS.md)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import types
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgetl import data as D
from edgetl.errors import EdgetlError
from edgetl.metrics import classification_report
from edgetl.run import Run, predict_batches, write_history_csv, write_split_csv

log = logging.getLogger(__name__)

STRATEGIES = ("default", "mirrored", "multiworker")

# Recipes measured by tools/bench_train.py on the shared datasets; options given explicitly override them.
PRESETS: dict[str, dict] = {
    # ImageNet-like photos, small data: frozen features are already good, phase 2 only nudges them
    # (hymenoptera: a larger fine-tuning rate overfits 245 images within a few epochs; with the
    # cross-validated head even this rate lowered validation and the guard kept the head, both widths).
    # The centre square, as ImageNet evaluation crops: squeezing 4:3 photos cost the frozen features 1.5-3 points
    # (hymenoptera, both backbones).
    "photos": dict(cache_embeddings=True, center_crop=1.0, epochs=60, patience=8, learning_rate=3e-3,
                   fine_tune_blocks=8, fine_tune_epochs=15, fine_tune_learning_rate=1e-5),
    # Thousands of photos, or photos far from ImageNet's (flowers5: 128 px files holding ~32 px of detail):
    # every block unfrozen at 3e-4 with a cosine decay. flowers5: 0.810-0.815 where the top 8 blocks at 1e-4 reach
    # 0.727; 1e-3 with frozen batch norm collapses (0.18).
    "photos-large": dict(cache_embeddings=True, epochs=60, patience=8, learning_rate=3e-3, fine_tune_blocks=17,
                         fine_tune_epochs=20, fine_tune_learning_rate=3e-4),
    # A fixed camera where objects cover a few cells of the final map: mid-level features and a deeper,
    # longer fine-tune (find-the-ship: 0.9775); augmentation keeps the head from memorising positions.
    # No label smoothing: it squeezes each class into a tight cluster and erases what the embedding knew
    # beyond the labels, which the unknown-object detector needs (find-the-ship leave-one-class-out, combined
    # scorer: near AUROC 0.927 without vs 0.910 with 0.1; unseen Fishing-1 0.82 vs 0.70).
    "fixed-camera": dict(cache_embeddings=True, embedding="multiscale", epochs=60, patience=16,
                         learning_rate=3e-3, fine_tune_blocks=12, fine_tune_epochs=16,
                         fine_tune_learning_rate=3e-4, label_smoothing=0.0),
}


@dataclass
class TrainConfig:
    backbone: str = "mobilenet_v2"
    alpha: float | None = None  # None: 0.35 for mobilenet_v2 (edgetl's default), else 1.0 (Keras')
    size: int = 224
    weights: str = "imagenet"  # imagenet | none | PATH
    epochs: int = 10  # phase 1 (head), augmented path; the cached path solves the head outright (0 = skip)
    fine_tune_epochs: int = 5  # phase 2; 0 = skip
    fine_tune_blocks: int = 6  # how many top backbone blocks to unfreeze in phase 2
    batch_size: int = 32
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    fine_tune_guard: bool = True  # revert phase 2 when it ends with worse val accuracy (loss on ties)
    dropout: float = 0.2
    embedding: str = "gap"  # gap | multiscale (adds mid-level max-pooled features; small objects)
    center_crop: float | None = None  # centred square, this fraction of the shorter side; None/0 = whole frame
    label_smoothing: float = 0.1
    class_weights: bool = True
    augment: bool = True
    cache_embeddings: bool = False
    patience: int = 3
    val_split: float = 0.2
    seed: int = 0
    strategy: str = "default"
    preset: str | None = None  # recorded only; the preset's values are already in the fields above

    def validate(self) -> None:
        from edgetl.backbones import EMBEDDINGS, check_combination

        if self.alpha is None:  # a backbone chosen without --alpha must not fail on another backbone's default
            self.alpha = 0.35 if self.backbone == "mobilenet_v2" else 1.0
        if self.weights not in ("imagenet", "none"):
            self.weights = str(Path(self.weights).resolve())
        check_combination(self.backbone, self.alpha, self.size, self.weights)
        if self.embedding not in EMBEDDINGS:
            raise EdgetlError(f"--embedding must be one of {', '.join(EMBEDDINGS)} (got {self.embedding!r})")
        if self.strategy not in STRATEGIES:
            raise EdgetlError(f"--strategy must be one of {', '.join(STRATEGIES)} (got {self.strategy!r})")
        for name in ("epochs", "fine_tune_epochs", "fine_tune_blocks", "patience"):
            if getattr(self, name) < 0:
                raise EdgetlError(f"--{name.replace('_', '-')} must be >= 0")
        if self.batch_size < 1:
            raise EdgetlError("--batch-size must be >= 1")
        if self.center_crop is not None and not 0 <= self.center_crop <= 1:
            raise EdgetlError(f"--center-crop must be in (0, 1] (got {self.center_crop}); 0 or leaving it out "
                              "uses the whole frame")
        self.center_crop = float(self.center_crop) if self.center_crop else None
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.dropout < 1:
            raise EdgetlError("--label-smoothing and --dropout must be in [0, 1)")


@dataclass
class TrainResult:
    run: Run
    metrics: dict
    timings: dict
    history: list[dict] = field(default_factory=list)

    @property
    def val_accuracy(self) -> float:
        return float(self.metrics["val_accuracy"])

    @property
    def path(self) -> Path:
        return self.run.path


# ---------------------------------------------------------------- pieces

def _strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        # Without TF_CONFIG this is a single local worker; with it, the cluster it describes.
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _augmenter(seed: int):
    import keras

    L = keras.layers
    return keras.Sequential([
        L.RandomFlip("horizontal", seed=seed),
        L.RandomRotation(0.05, fill_mode="reflect", seed=seed + 1),
        L.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2),
        L.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 3),
        L.RandomBrightness(0.15, value_range=(0, 255), seed=seed + 4),
        L.RandomContrast(0.15, value_range=(0, 255), seed=seed + 5),
    ], name="augment")


def _dataset(x: np.ndarray, y: np.ndarray, batch: int, shuffle: bool, seed: int, augment=None):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch).map(lambda a, b: (tf.cast(a, tf.float32), b), num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        ds = ds.map(lambda a, b: (tf.clip_by_value(augment(a, training=True), 0.0, 255.0), b),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _class_weight(y: np.ndarray, n: int) -> dict[int, float]:
    counts = np.bincount(y, minlength=n).astype(float)
    return {i: float(len(y) / (n * c)) if c else 0.0 for i, c in enumerate(counts)}


class _Progress:
    """An epoch-level tqdm bar (Keras' own per-step output is noisy in logs)."""

    def __new__(cls, total: int, desc: str):
        import keras
        from tqdm.auto import tqdm

        class Cb(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.bar = tqdm(total=total, desc=desc, unit="epoch", leave=False)

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                self.bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items() if k in ("loss", "val_accuracy")})
                self.bar.update(1)

            def on_train_end(self, logs=None):
                self.bar.close()

        return Cb()


def _fit(model, train_ds, val_ds, epochs: int, patience: int, class_weight, desc: str, phase: str) -> list[dict]:
    import keras

    callbacks = [_Progress(epochs, desc)]
    if patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                                       restore_best_weights=True))
    h = model.fit(train_ds, validation_data=val_ds, epochs=epochs, class_weight=class_weight,
                  callbacks=callbacks, verbose=0, shuffle=False)
    keys = list(h.history)
    return [{"phase": phase, **{k: float(h.history[k][i]) for k in keys}} for i in range(len(h.history[keys[0]]))]


def _loss(smoothing: float):
    import keras

    return keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)


def _embed(feature_model, x: np.ndarray, batch: int, desc: str) -> np.ndarray:
    return predict_batches(feature_model, x, batch, desc)


def _load_split(samples: list[D.Sample], size: int, name: str, center_crop: float | None):
    x, ok, failures = D.load_images([s.path for s in samples], size, desc=f"loading {name}", center_crop=center_crop)
    kept = [samples[i] for i in ok]
    return x, kept, failures


# ---------------------------------------------------------------- main entry

def train(data, out, *, val_data=None, csv_options: dict | None = None, preset: str | None = None,
          overwrite: bool = False, **options) -> TrainResult:
    """Train a classifier on `data` and write the run folder `out`.

    `data`/`val_data`: a class-folder dataset, a train/val(/test) folder, or a CSV manifest (path or
    DataSpec; `csv_options` = path_column/label_column/missing_label/split_column). `preset`: a name in
    PRESETS whose values fill the options not given. `overwrite`: replace the run (and its export/,
    openset/) that `out` already holds instead of refusing. `options` are TrainConfig fields. Returns a
    TrainResult; raises EdgetlError on bad input.
    """
    import keras

    t_start = time.perf_counter()
    unknown = set(options) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise EdgetlError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    if preset is not None:
        if preset not in PRESETS:
            raise EdgetlError(f"--preset must be one of {', '.join(PRESETS)} (got {preset!r})")
        options = {**PRESETS[preset], **options, "preset": preset}
    cfg = TrainConfig(**options)
    cfg.validate()
    csv_options = csv_options or {}
    spec = D.as_spec(data, **csv_options)
    dataset = D.load_dataset(spec)
    val_spec = D.as_spec(val_data, **csv_options) if val_data is not None else None
    val_dataset = D.load_dataset(val_spec) if val_spec else None
    splits = D.train_val_test(dataset, cfg.val_split, cfg.seed, val_dataset)
    classes = D.validate_classes(splits)
    _check_class_names(classes)
    if not splits.get("val"):
        raise EdgetlError("no validation images; use more images per class or pass --val DATA")
    out = Path(out)
    _check_out(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    index = {c: i for i, c in enumerate(classes)}
    timings: dict[str, float] = {}

    # Load pixels once; unreadable files are reported and skipped, never fatal.
    t = time.perf_counter()
    arrays, skipped = {}, []
    for name in list(splits):
        x, kept, failures = _load_split(splits[name], cfg.size, name, cfg.center_crop)
        skipped += [{"path": str(p), "error": e} for p, e in failures]
        splits[name] = kept
        arrays[name] = (x, np.array([index[s.label] for s in kept], dtype=np.int64))
    classes_after = D.validate_classes(splits)
    if classes_after != classes:
        raise EdgetlError(f"after skipping unreadable images, classes {set(classes) - set(classes_after)} "
                          "have no images left; fix those files")
    timings["load_s"] = time.perf_counter() - t
    counts = Counter(s.label for s in splits["train"])
    log.info("training %s on %d images (%s), validating on %d; %d skipped", cfg.backbone,
             len(splits["train"]), ", ".join(f"{c}={counts[c]}" for c in classes), len(splits["val"]),
             len(skipped))

    keras.utils.set_random_seed(cfg.seed)
    strategy = _strategy(cfg.strategy)
    n = len(classes)
    xtr, ytr = arrays["train"]
    xva, yva = arrays["val"]
    ytr1, yva1 = np.eye(n, dtype=np.float32)[ytr], np.eye(n, dtype=np.float32)[yva]
    class_weight = _class_weight(ytr, n) if cfg.class_weights else None
    augment = _augmenter(cfg.seed) if cfg.augment else None
    history: list[dict] = []

    from edgetl.backbones import build_classifier, top_block_layers

    # Without pretrained weights there is nothing worth freezing: a random frozen backbone stays at chance.
    # Then the whole network (batch norm included, in training mode) learns in phase 1 and phase 2 is moot.
    from_scratch = cfg.weights == "none"
    if from_scratch:
        log.warning("no pretrained weights: training the whole %s from scratch; expect far lower accuracy "
                    "than transfer learning (give --weights PATH or imagenet)", cfg.backbone)
    with strategy.scope():
        model, backbone_layers = build_classifier(cfg.backbone, cfg.alpha, cfg.size, cfg.weights, n, cfg.dropout,
                                                  cfg.embedding)
        for layer in backbone_layers:
            layer.trainable = from_scratch
            if from_scratch and isinstance(layer, keras.layers.BatchNormalization):
                # MobileNet's 0.999 momentum leaves the moving statistics at their init after a short run,
                # so inference-mode outputs stay at chance although the training loss falls.
                layer.momentum = 0.9

    # Phase 1: the head on a frozen backbone (or everything, from scratch).
    t = time.perf_counter()
    cached = (cfg.cache_embeddings or not cfg.augment) and not from_scratch and cfg.epochs > 0
    if cfg.embedding != "gap" and not cached:
        _adapt_embedding(model, xtr, cfg.batch_size)  # the cached path adapts on the features it computes
    if cfg.epochs > 0:
        if cached:
            history += _phase1_cached(model, strategy, cfg, xtr, ytr1, xva, yva1, class_weight, timings)
        else:
            with strategy.scope():
                model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=_loss(cfg.label_smoothing),
                              metrics=["accuracy"])
            history += _fit(model, _dataset(xtr, ytr1, cfg.batch_size, True, cfg.seed, augment),
                            _dataset(xva, yva1, cfg.batch_size, False, cfg.seed), cfg.epochs, cfg.patience,
                            class_weight, "phase 1 (whole network)" if from_scratch else "phase 1 (head)", "head")
    timings["phase1_s"] = time.perf_counter() - t

    # Phase 2: unfreeze the top blocks; batch norm stays in inference mode (frozen statistics), which
    # is what keeps small-batch fine-tuning stable and is required for BN-folded (QAT) weights.
    t = time.perf_counter()
    fine_tune_kept = None
    if cfg.fine_tune_epochs > 0 and cfg.fine_tune_blocks > 0 and not from_scratch:
        before_weights = model.get_weights()
        before = _val_score(model, xva, yva1, cfg.label_smoothing, cfg.batch_size)
        with strategy.scope():
            for layer in top_block_layers(backbone_layers, cfg.fine_tune_blocks):
                if not isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = True
            steps = cfg.fine_tune_epochs * int(np.ceil(len(xtr) / cfg.batch_size))
            lr = keras.optimizers.schedules.CosineDecay(cfg.fine_tune_learning_rate, max(steps, 1), alpha=0.1)
            model.compile(optimizer=keras.optimizers.Adam(lr), loss=_loss(cfg.label_smoothing), metrics=["accuracy"])
        history += _fit(model, _dataset(xtr, ytr1, cfg.batch_size, True, cfg.seed + 7, augment),
                        _dataset(xva, yva1, cfg.batch_size, False, cfg.seed), cfg.fine_tune_epochs,
                        cfg.patience, class_weight, "phase 2 (fine-tune)", "fine_tune")
        # Fine-tuning must not make the delivered model worse than the head alone (small data can overfit).
        after = _val_score(model, xva, yva1, cfg.label_smoothing, cfg.batch_size)
        fine_tune_kept = after >= before or not cfg.fine_tune_guard
        if not fine_tune_kept:
            log.warning("fine-tuning made validation worse (accuracy %.4f -> %.4f, loss %.4f -> %.4f); keeping "
                        "the phase 1 weights", before[0], after[0], -before[1], -after[1])
            model.set_weights(before_weights)
    timings["phase2_s"] = time.perf_counter() - t
    for layer in model.layers:
        layer.trainable = True  # a reloaded model should be fine-tunable by whoever picks it up

    t = time.perf_counter()
    metrics = _final_metrics(model, arrays, classes, cfg.batch_size)
    timings["evaluate_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start
    metrics["timings"] = timings
    metrics["fine_tune_kept"] = fine_tune_kept
    metrics["skipped"] = skipped
    _write_run(out, model, cfg, classes, splits, history, metrics, spec, val_spec)
    log.info("val accuracy %.3f; run written to %s", metrics["val_accuracy"], out)
    return TrainResult(Run(out), metrics, timings, history)


def _phase1_cached(model, strategy, cfg: TrainConfig, xtr, ytr1, xva, yva1, class_weight, timings) -> list[dict]:
    """Embeddings computed once (plus their mirror images when augmenting); the head is the softmax
    regression that fits them best (edgetl.linear_head), its L2 strength cross-validated on the training
    embeddings. One history row: the head's train and validation loss/accuracy."""
    import keras

    from edgetl.backbones import adapt_embedding
    from edgetl.linear_head import fit_softmax_head, softmax

    t = time.perf_counter()
    norm = model.get_layer("embedding")
    multiscale = isinstance(norm, keras.layers.Normalization)
    # multiscale: cache the pooled features, fit the standardisation on them, then standardise
    feature_model = keras.Model(model.input, norm.input if multiscale else norm.output)
    etr = _embed(feature_model, xtr, cfg.batch_size, "embedding train")
    eva = _embed(feature_model, xva, cfg.batch_size, "embedding val")
    # The horizontal flip is the one augmentation that costs a single extra pass: hymenoptera's head
    # 0.928 -> 0.941 (0.35) and 0.954 -> 0.967 (1.0 QAT), the strength cross-validated either way.
    eflip = _embed(feature_model, xtr[:, :, ::-1], cfg.batch_size, "embedding train, mirrored") if cfg.augment else None
    if multiscale:
        adapt_embedding(model, etr)
        etr, eva = (np.asarray(norm(e)) for e in (etr, eva))
        eflip = None if eflip is None else np.asarray(norm(eflip))
    timings["embed_s"] = time.perf_counter() - t
    ytr = ytr1.argmax(1)
    views = [etr] if eflip is None else [etr, eflip]
    weights = np.array([class_weight[int(c)] for c in ytr]) if class_weight else None
    t = time.perf_counter()
    fit = fit_softmax_head(np.concatenate(views), np.tile(ytr, len(views)), ytr1.shape[1],
                           sample_weight=None if weights is None else np.tile(weights, len(views)),
                           smoothing=cfg.label_smoothing, groups=np.tile(np.arange(len(ytr)), len(views)),
                           seed=cfg.seed)
    timings["head_fit_s"] = time.perf_counter() - t
    log.info("phase 1 head: softmax regression, L2 %.2g chosen by %d-strength cross-validation", fit.l2, len(fit.cv))
    with strategy.scope():
        model.get_layer("probabilities").set_weights([fit.kernel, fit.bias])
    row = {"phase": "head", "l2": fit.l2}
    for prefix, e, y1 in (("", etr, ytr1), ("val_", eva, yva1)):
        row[prefix + "accuracy"], row[prefix + "loss"] = _score(softmax(e @ fit.kernel + fit.bias), y1,
                                                                cfg.label_smoothing)
    return [row]


def _adapt_embedding(model, x: np.ndarray, batch: int) -> None:
    import keras

    from edgetl.backbones import adapt_embedding

    pooled = keras.Model(model.input, model.get_layer("embedding").input)
    adapt_embedding(model, _embed(pooled, x, batch, "embedding statistics"))


def _val_score(model, x: np.ndarray, y1: np.ndarray, smoothing: float, batch: int) -> tuple[float, float]:
    """(accuracy, -loss) on validation: compared as a tuple, accuracy decides and loss breaks ties."""
    accuracy, loss = _score(predict_batches(model, x, batch), y1, smoothing)
    return accuracy, -loss


def _score(p: np.ndarray, y1: np.ndarray, smoothing: float) -> tuple[float, float]:
    """(accuracy, cross-entropy with label smoothing, as Keras computes it) of probabilities p."""
    p = np.clip(p, 1e-7, 1.0)
    target = y1 * (1.0 - smoothing) + smoothing / y1.shape[1]
    return float(np.mean(p.argmax(1) == y1.argmax(1))), float(-np.mean(np.sum(target * np.log(p), axis=1)))


def _predict(model, x: np.ndarray, batch: int) -> np.ndarray:
    return predict_batches(model, x, batch)


def _final_metrics(model, arrays: dict, classes: list[str], batch: int) -> dict:
    metrics: dict = {"labels": classes}
    for split in ("val", "test"):
        if split in arrays and len(arrays[split][0]):
            x, y = arrays[split]
            metrics[split] = classification_report(y, _predict(model, x, batch), classes)
            metrics[f"{split}_accuracy"] = metrics[split]["accuracy"]
    metrics["per_class"] = metrics["val"]["per_class"]
    return metrics


def _check_class_names(classes: list[str]) -> None:
    """labels.txt holds one name per line and its readers (Run, the device) strip each line."""
    for c in classes:
        if c != c.strip() or len(c.splitlines()) != 1:  # would read back as another name, or shift indices
            raise EdgetlError(f"class name {c!r} cannot be stored in labels.txt (one name per line): remove its "
                              "leading/trailing spaces or line break (rename the folder or fix the CSV cell)")


# A run folder's files (DEVELOPERS.md) and what later commands derive from its model inside it.
RUN_OUTPUTS = ("model.keras", "labels.txt", "config.json", "split.csv", "history.csv", "metrics.json", "curves.png",
               "confusion_matrix.png", "report.html", "export", "openset")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise EdgetlError(f"--out {out} is a file; give a folder for the run")
    # a previous run's openset/ (copied into bundles by export) and export/ must not sit beside a new model
    if out.is_dir() and set(out.iterdir()) - set(_stale_stages(out)) and not overwrite:
        raise EdgetlError(f"--out {out} already holds files (a previous run?); pass --overwrite to replace that run "
                          "(with its export/ and openset/) or choose another --out")


def _write_run(out: Path, model, cfg: TrainConfig, classes, splits, history, metrics, spec, val_spec) -> None:
    """Write the run's files into a hidden folder inside `out`, and only when all are written (a full disk
    leaves the previous run as it was) swap them in: the old run's config.json goes first and the new one
    lands last, so a kill mid-swap leaves a folder Run() refuses as incomplete, never a mix of two runs."""
    import shutil

    import edgetl
    from edgetl.atomic import naming, stage_dir
    from edgetl.plots import plot_confusion_matrix, plot_curves

    config = {**asdict(cfg), "data": spec.describe(), "val_data": val_spec.describe() if val_spec else None,
              "num_classes": len(classes), "counts": {k: len(v) for k, v in splits.items()},
              "input": {"dtype": "float32", "range": [0, 255], "shape": [cfg.size, cfg.size, 3], "color": "RGB"},
              "edgetl_version": edgetl.__version__}
    writers = {
        "model.keras": model.save,
        "labels.txt": lambda p: p.write_text("".join(c + "\n" for c in classes), encoding="utf-8"),  # Run: UTF-8
        "split.csv": lambda p: write_split_csv(p, splits),
        "history.csv": lambda p: write_history_csv(p, history),
        "metrics.json": lambda p: p.write_text(json.dumps(metrics, indent=2)),
        "curves.png": lambda p: plot_curves(history, p),
        "confusion_matrix.png": lambda p: plot_confusion_matrix(
            np.array(metrics["val"]["confusion_matrix"]), classes, p,
            title=f"validation (accuracy {metrics['val_accuracy']:.3f})"),
        "config.json": lambda p: p.write_text(json.dumps(config, indent=2)),  # last: it completes a run
    }
    stage = stage_dir(out, "train")
    try:
        for name, write in writers.items():
            with naming(out / name):
                write(stage / name)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    # Nothing below needs disk space. An empty --out or --overwrite: drop the old run and what its model made.
    for name in ("config.json", *RUN_OUTPUTS):
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    for name in writers:
        os.replace(stage / name, out / name)
    stage.rmdir()
    for p in _stale_stages(out):  # left by a run killed while writing
        shutil.rmtree(p, ignore_errors=True)


def _stale_stages(out: Path) -> list[Path]:
    return [p for p in out.glob(".train.*.partial") if p.is_dir()] if out.is_dir() else []


class _CallableModule(types.ModuleType):
    """`edgetl.train(...)` must work even after `import edgetl.train` rebinds the package attribute to
    this module, so the module itself forwards calls to :func:`train`."""

    def __call__(self, *args, **kwargs) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
