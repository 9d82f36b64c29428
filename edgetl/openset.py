"""Fit, calibrate and evaluate open-set ("unknown object") scorers on the host.

Works on arrays of (probabilities, L2-normalised embeddings, labels); getting
those from a run or a TFLite model is in `edgetl.openset_data` style helpers at
the bottom of this module (TensorFlow only imported there, lazily).

Conventions (used by the CLI, the plots and `tools/bench_openset.py`):
- a score is higher for more unknown frames; a frame is flagged when score > threshold;
- AUROC: probability that a random unknown frame scores above a random known one;
- FPR@95TPR: with known frames as positives (the usual OOD convention, Liang et al. 2018),
  the fraction of unknown frames still accepted as known when 95 % of known frames are
  accepted -- i.e. missed unknowns at a 5 % false-alarm rate;
- false-alarm rate: fraction of known frames flagged at the chosen threshold.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.atomic import in_the_way, naming, replacing, temp_name, write_text
from edgetl.errors import EdgetlError
from edgetl.linear_head import softmax
from edgetl.plots import save_figure
from edgetl_device.openset import (
    BACKGROUND_SPACES,
    KNN,
    MAX_BANK,
    MSP,
    SCORER_NAMES,
    Combined,
    Cosine,
    LinearHead,
    Mahalanobis,
    Scorer,
    l2_normalise,
    load_npz,
    load_scorer,
)

log = logging.getLogger(__name__)

DEFAULT_FALSE_ALARM = 0.05
AUTO_TIE = 0.01
DEFAULT_RANK = 256  # Mahalanobis directions kept (0 = all): D x 256 on the device, not D x D
KNN_SPACES = ("whitened", "embedding")
DEFAULT_KNN_SPACE = "whitened"  # measured on find-the-ship leave-one-class-out: see tools/bench_openset.py
DEFAULT_BACKGROUND = "embedding"  # relative Mahalanobis' background Gaussian (Ren et al.): see fit_mahalanobis
DEFAULT_BACKGROUND_SHRINKAGE = 0.5  # for background "whitened"
# Parametric + non-parametric evidence in one whitened space: relative Mahalanobis (a frame far from every
# class Gaussian) and kNN (a frame far from every training frame, which a Gaussian per class misses when a
# class is multi-modal). Measured on find-the-ship leave-one-class-out (tools/bench_openset.py --trained):
# near AUROC 0.910 vs 0.892 / 0.873 alone; adding the head's max logit (0.79 near, 0.40 far) made it worse.
COMBINED_PARTS = ("relative_mahalanobis", "knn")
AUTO_PREFERENCE = ("combined", "relative_mahalanobis", "knn", "mahalanobis", "energy", "cosine", "maxlogit", "msp")
AUTO_CANDIDATES = ("msp", "energy", "cosine", "knn", "mahalanobis", "relative_mahalanobis", "combined")


# --------------------------------------------------------------------------- metrics
def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Area under the ROC curve for "unknown scores higher" (Mann-Whitney U, ties count half)."""
    known, unknown = np.asarray(known, np.float64).ravel(), np.asarray(unknown, np.float64).ravel()
    if len(known) == 0 or len(unknown) == 0:
        raise EdgetlError("AUROC needs both known and unknown scores; give some of each")
    scores = np.concatenate([known, unknown])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[len(known):].sum() - len(unknown) * (len(unknown) + 1) / 2.0
    return float(u / (len(known) * len(unknown)))


def fpr_at_tpr(known: np.ndarray, unknown: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of unknown frames accepted as known when `tpr` of known frames are accepted."""
    known, unknown = np.asarray(known, np.float64).ravel(), np.asarray(unknown, np.float64).ravel()
    t = np.quantile(known, tpr, method="higher")  # accept score <= t: >= tpr of known accepted
    return float(np.mean(unknown <= t))


def false_alarm_at_detection(known: np.ndarray, unknown: np.ndarray, detection: float = 0.95) -> float:
    """Fraction of known frames flagged when the threshold catches `detection` of the unknown frames.

    The same ROC point read from the other side: `fpr_at_tpr` treats known frames as positives (Hendrycks &
    Gimpel, KNN), OpenOOD v1.5 treats unknowns as positives. For a camera that records the unknown this one
    answers "to catch 95 % of them, how many ordinary frames would also alarm?"."""
    known, unknown = np.asarray(known, np.float64).ravel(), np.asarray(unknown, np.float64).ravel()
    caught = int(np.ceil(detection * len(unknown) - 1e-9))
    t = np.sort(unknown)[len(unknown) - caught]  # flag score >= t: the `caught` highest unknowns
    return float(np.mean(known >= t))


def false_alarm_rate(known: np.ndarray, threshold: float) -> float:
    return float(np.mean(np.asarray(known) > threshold))


def detection_rate(unknown: np.ndarray, threshold: float) -> float:
    return float(np.mean(np.asarray(unknown) > threshold))


def roc_curve(known: np.ndarray, unknown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-alarm rate, detection rate) over all thresholds, from (0,0) to (1,1)."""
    thresholds = np.unique(np.concatenate([known, unknown]))[::-1]
    fa = np.array([0.0] + [np.mean(known >= t) for t in thresholds])
    det = np.array([0.0] + [np.mean(unknown >= t) for t in thresholds])
    return fa, det


def calibrate_threshold(known_scores: np.ndarray, target_false_alarm: float = DEFAULT_FALSE_ALARM) -> float:
    """The lowest threshold that flags at most `target_false_alarm` of these known frames."""
    s = np.sort(np.asarray(known_scores, np.float64).ravel())
    if len(s) == 0:
        raise EdgetlError("no held-out known frames to calibrate the threshold on; add validation data")
    if not 0.0 < target_false_alarm < 1.0:
        raise EdgetlError(f"target false-alarm rate must be between 0 and 1, got {target_false_alarm}")
    allowed = int(np.floor(target_false_alarm * len(s)))
    return float(s[len(s) - allowed - 1])


# --------------------------------------------------------------------------- fitting
def _check(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(embeddings, np.float32)
    y = np.asarray(labels).astype(int).ravel()
    if e.ndim != 2 or len(e) != len(y) or len(e) == 0:
        raise EdgetlError(f"need embeddings [N, D] and N labels, got {e.shape} and {y.shape}")
    return l2_normalise(e), y


def fit_linear_head(embeddings: np.ndarray, labels: np.ndarray, n_classes: int, l2: float = 1e-4,
                    steps: int = 300, lr: float = 0.5, scale: float = 16.0,
                    outliers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression on normalised embeddings (full-batch Adam); returns (W [D,C], b [C]).

    `scale` multiplies the features (cosine-classifier style) so logits can grow past the
    [-1, 1] range of a unit vector. Outliers (optional, outlier exposure) are pushed
    towards the uniform distribution (Hendrycks et al. 2019), weight 0.5.
    """
    e, y = _check(embeddings, labels)
    x = e * scale
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    xo = None if outliers is None or len(outliers) == 0 else l2_normalise(outliers) * scale
    w = np.zeros((x.shape[1], n_classes), np.float32)
    b = np.zeros(n_classes, np.float32)
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    for t in range(1, steps + 1):
        g = (softmax(x @ w + b) - onehot) / len(x)
        gw, gb = x.T @ g + l2 * w, g.sum(0)
        if xo is not None:
            go = 0.5 * (softmax(xo @ w + b) - 1.0 / n_classes) / len(xo)
            gw, gb = gw + xo.T @ go, gb + go.sum(0)
        for i, (param, grad) in enumerate(((w, gw), (b, gb))):
            m[i] = 0.9 * m[i] + 0.1 * grad
            v[i] = 0.999 * v[i] + 0.001 * grad * grad
            param -= lr * 0.01 * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
    return (w * scale).astype(np.float32), b.astype(np.float32)


def _whiten(centered: np.ndarray, shrinkage: float, rank: int | None) -> np.ndarray:
    """W with W W^T = inverse of the shrunk covariance (optionally the top `rank` directions)."""
    d = centered.shape[1]
    cov = centered.T @ centered / max(len(centered) - 1, 1)
    cov = (1 - shrinkage) * cov + shrinkage * (np.trace(cov) / d) * np.eye(d, dtype=cov.dtype)
    vals, vecs = np.linalg.eigh(cov.astype(np.float64))
    vals = np.maximum(vals, 1e-12)
    if rank is not None and rank < d:
        vals, vecs = vals[-rank:], vecs[:, -rank:]
    return (vecs / np.sqrt(vals)).astype(np.float32)


def fit_mahalanobis(embeddings: np.ndarray, labels: np.ndarray, relative: bool = False,
                    shrinkage: float = 0.1, rank: int | None = None, background: str = DEFAULT_BACKGROUND,
                    background_shrinkage: float = DEFAULT_BACKGROUND_SHRINKAGE) -> Mahalanobis:
    """Shared-covariance class Gaussians. `rank` keeps the top principal directions only: the device
    then does a D x rank product instead of D x D (cost scales with it).

    relative: the background Gaussian is fitted in `background` space: "embedding" (D x r, Ren et al.) or
    "whitened" (the class-whitened coordinates, r x r, shrunk by `background_shrinkage`: no second D x r
    product on the device). Measured on find-the-ship leave-one-class-out with trained models
    (tools/bench_openset.py --trained --background whitened, two recipes): "whitened" separates unseen
    ships better (combined FPR@95 0.27 vs 0.38 and 0.36 vs 0.43, AUROC +0.01-0.02) but unrelated photos far
    worse (AUROC 0.80 vs 1.00: a photo is far from the classes *and* from the background Gaussian, and the
    subtraction cancels the two). Hence "embedding" by default; "whitened" only for a camera whose unknowns
    are all in-scene. Without shrinkage "whitened" fails (AUROC 0.54-0.61): there the total covariance is
    nearly singular along the few between-class directions."""
    e, y = _check(embeddings, labels)
    classes = np.unique(y)
    means = np.stack([e[y == c].mean(0) for c in classes])
    centered = e - means[np.searchsorted(classes, y)]
    whiten = _whiten(centered, shrinkage, rank)
    if not relative:
        return Mahalanobis(means, whiten)
    if background not in BACKGROUND_SPACES:
        raise EdgetlError(f"background must be one of {', '.join(BACKGROUND_SPACES)} (got {background!r})")
    if background == "embedding":
        mu0 = e.mean(0)
        return Mahalanobis(means, whiten, mu0, _whiten(e - mu0, shrinkage, rank))
    z = e @ whiten
    z0 = z.mean(0)
    return Mahalanobis(means, whiten, z0, _whiten(z - z0, background_shrinkage, None), background_space="whitened")


def fit_knn(embeddings: np.ndarray, labels: np.ndarray, k: int = 1, bank_size: int = MAX_BANK,
            space: str = "whitened", shrinkage: float = 0.1, rank: int | None = DEFAULT_RANK) -> KNN:
    """kNN over a class-balanced bank. space "whitened": neighbours in the shared-covariance whitening of
    `fit_mahalanobis` (centred on the data mean), the same matrix a Mahalanobis part of `combined` uses;
    "embedding": plain cosine on the normalised embedding (Sun et al. 2022)."""
    if space not in KNN_SPACES:
        raise EdgetlError(f"knn_space must be one of {', '.join(KNN_SPACES)} (got {space!r})")
    e, y = _check(embeddings, labels)
    bank = subsample_bank(e, y, bank_size)
    k = min(int(k), len(bank))
    if space == "embedding":
        return KNN(bank, k=k)
    # fitted on the caller's arrays exactly as a Mahalanobis part is, so `Combined` finds the two equal
    whiten = fit_mahalanobis(embeddings, labels, shrinkage=shrinkage, rank=rank).whiten
    center = e.mean(0)
    return KNN(l2_normalise((bank - center) @ whiten), k=k, projection=whiten, center=center)


def subsample_bank(embeddings: np.ndarray, labels: np.ndarray, size: int = MAX_BANK,
                   seed: int = 0) -> np.ndarray:
    """At most `size` training embeddings, class-balanced-ish (random within class)."""
    e, y = _check(embeddings, labels)
    if len(e) <= size:
        return e
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = max(size // len(classes), 1)
    keep: list[int] = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        keep.extend(rng.choice(idx, min(per, len(idx)), replace=False).tolist())
    rest = np.setdiff1d(np.arange(len(e)), keep)
    if len(keep) < size:
        keep.extend(rng.choice(rest, size - len(keep), replace=False).tolist())
    return e[np.sort(np.asarray(keep[:size]))]


@dataclass
class FitData:
    """What the scorers are fitted on: training (probs, embeddings, labels), optional outliers."""

    probs: np.ndarray
    embeddings: np.ndarray
    labels: np.ndarray
    n_classes: int
    outliers: np.ndarray | None = None
    options: dict[str, Any] = field(default_factory=dict)


def fit_scorer(name: str, data: FitData, calib: tuple[np.ndarray, np.ndarray] | None = None) -> Scorer:
    """Fit scorer `name` on training data. `calib` = (probs, embeddings) of held-out known frames,
    used by ``combined`` to standardise its parts (falls back to the training data)."""
    opts = data.options
    if name == "msp":
        return MSP()
    if name in ("energy", "maxlogit"):
        w, b = fit_linear_head(data.embeddings, data.labels, data.n_classes, outliers=data.outliers)
        return LinearHead(w, b, float(opts.get("temperature", 1.0)), kind=name)
    if name == "cosine":
        e, y = _check(data.embeddings, data.labels)
        return Cosine(np.stack([e[y == c].mean(0) for c in np.unique(y)]))
    rank = opts.get("rank", DEFAULT_RANK)
    rank = None if not rank else int(rank)
    shrinkage = float(opts.get("shrinkage", 0.1))
    if name == "knn":
        return fit_knn(data.embeddings, data.labels, int(opts.get("k", 1)), int(opts.get("bank_size", MAX_BANK)),
                       str(opts.get("knn_space", DEFAULT_KNN_SPACE)), shrinkage, rank)
    if name in ("mahalanobis", "relative_mahalanobis"):
        return fit_mahalanobis(data.embeddings, data.labels, relative=name == "relative_mahalanobis",
                               shrinkage=shrinkage, rank=rank,
                               background=str(opts.get("background", DEFAULT_BACKGROUND)),
                               background_shrinkage=float(opts.get("background_shrinkage",
                                                                   DEFAULT_BACKGROUND_SHRINKAGE)))
    if name == "combined":
        names = opts.get("parts", COMBINED_PARTS)
        parts = [fit_scorer(p, data) for p in names]
        if calib is not None:
            scores = [p.score_batch(*calib) for p in parts]
        else:
            # no held-out frames: standardise on a quarter of the training data scored by parts fitted on
            # the rest (training frames scored by parts fitted on themselves look too familiar, kNN = 0)
            held = np.random.default_rng(0).random(len(data.labels)) < 0.25
            rest = FitData(data.probs[~held], data.embeddings[~held], data.labels[~held], data.n_classes,
                           data.outliers, opts)
            scores = [fit_scorer(p, rest).score_batch(data.probs[held], data.embeddings[held]) for p in names]
        weights = opts.get("weights") or [1.0] * len(parts)
        # std floor 1e-3: below that a part's spread is float16/int8 rounding (e.g. kNN on near-duplicate
        # frames) and dividing by it would let rounding noise dominate the sum
        return Combined(parts, [float(np.mean(s)) for s in scores], [max(float(np.std(s)), 1e-3) for s in scores],
                        weights)
    raise EdgetlError(f"unknown scorer {name!r}; choose one of {', '.join(SCORER_NAMES)} or auto")


def scorer_params(scorer: Scorer, threshold: float, target_false_alarm: float,
                  extra: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The `openset.json` content and `openset.npz` arrays for a fitted, calibrated scorer."""
    params, arrays = scorer.state()
    doc = {"scorer": scorer.name, "threshold": float(threshold), "target_false_alarm": float(target_false_alarm),
           "params": params, "file": "openset.npz"}
    if extra:
        doc |= extra
    return doc, arrays


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Arrays to a temporary file beside `path` (a file object: np.savez would append .npz to the name);
    the caller renames it into place."""
    tmp = temp_name(path)
    try:
        with naming(path), tmp.open("wb") as f:
            np.savez(f, **arrays)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def save_openset(out_dir: Path, doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """openset.npz + openset.json, all or nothing: both are written under temporary names first (a full disk
    leaves the previous detector whole), then the old json goes, the arrays and the new json are renamed in:
    a kill in between leaves no openset.json ("run `edgetl openset fit`"), never one json beside another's arrays."""
    out_dir.mkdir(parents=True, exist_ok=True)
    npz, js = out_dir / doc.get("file", "openset.npz"), out_dir / "openset.json"
    tmp_npz = _write_npz(npz, arrays)
    try:
        with replacing(js) as tmp_js:
            tmp_js.write_text(json.dumps(doc, indent=2) + "\n")
            js.unlink(missing_ok=True)
            os.replace(tmp_npz, npz)
    finally:
        tmp_npz.unlink(missing_ok=True)
    return js


def load_openset(out_dir: Path) -> tuple[dict[str, Any], Scorer]:
    path = Path(out_dir) / "openset.json"
    if not path.is_file():
        raise EdgetlError(f"{path} not found; run `edgetl openset fit RUN` first")
    doc = json.loads(path.read_text())
    arrays = load_npz(Path(out_dir) / doc.get("file", "openset.npz")) if doc.get("file") else {}
    return doc, load_scorer(doc, arrays)


# --------------------------------------------------------------------------- leave-one-class-out
def _drop_class(labels: np.ndarray, held: int) -> np.ndarray:
    """Relabel 0..C-1 without class `held` (classes above it shift down by one)."""
    return np.where(labels > held, labels - 1, labels)


def loco_scores(name: str, train: FitData, val_probs: np.ndarray | None, val_emb: np.ndarray,
                val_labels: np.ndarray, held: int, retrain_head: bool = True,
                extra_unknown: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Known / unknown scores with class `held` removed from training.

    With `retrain_head` the probabilities come from a softmax head refitted on the other
    classes' embeddings (the frozen-backbone variant); otherwise the given probabilities
    are renormalised over the remaining classes.
    """
    keep = train.labels != held
    y_tr = _drop_class(train.labels[keep], held)
    c = train.n_classes - 1
    if retrain_head:
        w, b = fit_linear_head(train.embeddings[keep], y_tr, c)
        p_tr = softmax(l2_normalise(train.embeddings[keep]) @ w + b)
        p_val = softmax(l2_normalise(val_emb) @ w + b)
        p_extra = None if extra_unknown is None else softmax(l2_normalise(extra_unknown) @ w + b)
    else:
        def renorm(p: np.ndarray) -> np.ndarray:
            q = np.delete(p, held, axis=1)
            return q / np.maximum(q.sum(1, keepdims=True), 1e-12)
        p_tr = renorm(train.probs[keep])
        p_val = renorm(val_probs)
        p_extra = None
    sub = FitData(p_tr, train.embeddings[keep], y_tr, c, train.outliers, train.options)
    known = val_labels != held
    # standardise `combined` on held-out known frames as `fit_run` does on validation: on its own training
    # frames the kNN part is ~0 (std floored at 1e-3) and swamps the sum, so loco rated plain kNN as "combined"
    scorer = fit_scorer(name, sub, calib=(p_val[known], val_emb[known]))
    s = scorer.score_batch(p_val, val_emb)
    out = {"known": s[known], "unknown": s[~known]}
    if extra_unknown is not None and p_extra is not None:
        out["far"] = scorer.score_batch(p_extra, extra_unknown)
    return out


def leave_one_class_out(names: Sequence[str], train: FitData, val_probs: np.ndarray | None,
                        val_emb: np.ndarray, val_labels: np.ndarray, retrain_head: bool = True
                        ) -> dict[str, list[dict[str, float]]]:
    """Per scorer, per held-out class: AUROC and FPR@95TPR of that class against the other classes."""
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for held in range(train.n_classes):
        if not np.any(val_labels == held) or not np.any(train.labels == held):
            continue
        for name in names:
            s = loco_scores(name, train, val_probs, val_emb, val_labels, held, retrain_head)
            results[name].append({"held": held, "auroc": auroc(s["known"], s["unknown"]),
                                  "fpr95": fpr_at_tpr(s["known"], s["unknown"])})
    return results


def choose_scorer(train: FitData, val_probs: np.ndarray | None, val_emb: np.ndarray, val_labels: np.ndarray,
                  candidates: Sequence[str] = AUTO_CANDIDATES, unknown: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[str, dict[str, float]]:
    """`--scorer auto`: the candidate with the best validation AUROC.

    With validation unknowns (`unknown` = (probs, embeddings)) it scores them directly;
    without, it uses leave-one-class-out on the validation set.
    """
    table: dict[str, float] = {}
    for name in candidates:
        if unknown is not None:
            scorer = fit_scorer(name, train)
            table[name] = auroc(scorer.score_batch(val_probs, val_emb), scorer.score_batch(*unknown))
        else:
            res = leave_one_class_out([name], train, val_probs, val_emb, val_labels, retrain_head=True)
            table[name] = float(np.mean([r["auroc"] for r in res[name]])) if res[name] else float("nan")
    # Near-ties (within AUTO_TIE) go to the scorer that also covers far unknowns best (AUTO_PREFERENCE):
    # leave-one-class-out only measures near unknowns, where MSP can tie while failing on far ones.
    top = max((v for v in table.values() if not np.isnan(v)), default=float("nan"))
    close = [k for k, v in table.items() if not np.isnan(v) and v >= top - AUTO_TIE]
    if not close:
        raise EdgetlError("could not compare scorers on validation (each class needs validation images); "
                          "pass --scorer NAME")
    best = min(close, key=lambda k: AUTO_PREFERENCE.index(k) if k in AUTO_PREFERENCE else len(AUTO_PREFERENCE))
    log.info("scorer auto: %s", ", ".join(f"{k}={v:.3f}" for k, v in table.items()))
    return best, table


# --------------------------------------------------------------------------- plots
def plot_scores(known: np.ndarray, unknown: np.ndarray, threshold: float | None, title: str, path: Path) -> Path:
    """Score histograms (known vs unknown) with the threshold, and the ROC curve, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    known, unknown = np.asarray(known, np.float64), np.asarray(unknown, np.float64)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.histogram_bin_edges(np.concatenate([known, unknown]), bins=40)
    ax1.hist(known, bins=bins, alpha=0.6, density=True, label=f"known (n={len(known)})")
    if len(unknown):
        ax1.hist(unknown, bins=bins, alpha=0.6, density=True, label=f"unknown (n={len(unknown)})")
    if threshold is not None:
        ax1.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3g}")
    ax1.set_xlabel("score (higher = more unknown)")
    ax1.set_ylabel("density")
    ax1.legend()
    fa, det = roc_curve(known, unknown) if len(unknown) else (np.array([0.0]), np.array([0.0]))
    ax2.plot(fa, det, label=f"AUROC {auroc(known, unknown):.3f}" if len(unknown) else "no unknowns given")
    ax2.plot([0, 1], [0, 1], color="grey", ls=":")
    if threshold is not None and len(unknown):
        ax2.plot([false_alarm_rate(known, threshold)], [detection_rate(unknown, threshold)], "ko",
                 label="chosen threshold")
    ax2.set_xlabel("false-alarm rate (known flagged)")
    ax2.set_ylabel("detection rate (unknown flagged)")
    ax2.legend(loc="lower right")
    fig.suptitle(title, parse_math=False)  # holds the unknown folder's name: "$$x" is not TeX
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=100)  # a full disk leaves the previous plot, not half a PNG
    return path


# --------------------------------------------------------------------------- runs (TensorFlow lazily)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def image_paths(folder: str | Path) -> list[Path]:
    """Every image under `folder` (recursive), sorted."""
    folder = Path(folder)
    if folder.is_file():
        raise EdgetlError(f"image folder {folder} is a file; give a folder of images")
    if not folder.is_dir():
        raise EdgetlError(f"image folder {folder} does not exist; give a folder of images")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise EdgetlError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}")
    return paths


class Embedder:
    """(probabilities, L2-normalised embeddings) for image files, from a run's Keras model or a TFLite file.

    With a TFLite file (the model the device runs) the threshold is calibrated on exactly the
    numbers the device will see; the pixels go through `edgetl.data.load_image` in both cases.
    """

    def __init__(self, run: Any, tflite: str | Path | None = None) -> None:
        if isinstance(run, (str, Path)):
            from edgetl.run import Run

            run = Run(run)
        self.run, self.tflite = run, Path(tflite) if tflite else None
        if self.tflite is not None and not self.tflite.is_file():
            raise EdgetlError(f"TFLite model {self.tflite} not found; run `edgetl export RUN` first or drop --tflite")
        self._keras = None

    @property
    def source(self) -> str:
        return str(self.tflite) if self.tflite else f"{self.run.path / 'model.keras'}"

    def __call__(self, paths: Sequence[Path], desc: str = "embedding") -> tuple[np.ndarray, np.ndarray]:
        if not paths:
            return np.zeros((0, len(self.run.labels)), np.float32), np.zeros((0, 0), np.float32)
        images, ok, failed = self.run.load_images(list(paths), desc=desc)
        if failed:
            raise EdgetlError(f"{len(failed)} unreadable images, e.g. {failed[0][1]}; remove or fix them")
        if self.tflite is not None:
            from edgetl.export import predict_tflite

            probs, emb = predict_tflite(self.tflite, images, len(self.run.labels), desc=desc)
        else:
            if self._keras is None:
                self._keras = self.run.embedding_model()
            probs, emb = self._keras.predict(images.astype(np.float32), batch_size=32, verbose=0)
        # not re-normalised here: the scorers normalise exactly as on the device (bit-identical scores)
        return np.asarray(probs, np.float32), np.asarray(emb, np.float32)


def _split(run: Any, embedder: Embedder, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    samples = run.samples(split)
    index = {c: i for i, c in enumerate(run.labels)}
    probs, emb = embedder([s.path for s in samples], desc=f"{split} images")
    return probs, emb, np.array([index[s.label] for s in samples], int)


@dataclass
class RunData:
    train: FitData
    val: tuple[np.ndarray, np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    outliers: tuple[np.ndarray, np.ndarray] | None = None  # (probs, embeddings) of the user's outlier images


def load_run_data(run: Any, embedder: Embedder, outliers: str | Path | None = None,
                  options: dict[str, Any] | None = None) -> RunData:
    outlier_paths = image_paths(outliers) if outliers else None  # a wrong --outliers fails before the embeddings
    tr = _split(run, embedder, "train")
    if len(tr[2]) == 0:
        raise EdgetlError(f"{run.path} has no training samples in split.csv; re-run `edgetl train`")
    va = _split(run, embedder, "val")
    if len(va[2]) == 0:
        raise EdgetlError(f"{run.path} has no validation split to calibrate the threshold on; "
                          "re-train with --val-split > 0")
    te = _split(run, embedder, "test") if run.samples("test") else None
    out = embedder(outlier_paths, desc="outlier images") if outlier_paths else None
    fit = FitData(tr[0], tr[1], tr[2], len(run.labels), None if out is None else out[1], dict(options or {}))
    return RunData(fit, va, te, out)


def _check_out_dir(out: str | Path | None, run_path: Path) -> Path:
    """The output folder (default RUN/openset), checked before any embedding is computed: a file there (or
    above it) failed only at the end, as "[Errno 17] File exists" / "[Errno 20] Not a directory"."""
    out_dir = Path(out) if out else run_path / "openset"
    name = f"--out {out_dir}" if out else str(out_dir)
    blocked = in_the_way(out_dir)
    if blocked:
        p, what = blocked
        where = name if p == out_dir else f"{name}: {p}"
        hint = "give a folder (default RUN/openset)" if out else "move it away or give another folder with --out"
        raise EdgetlError(f"{where} is {what}; {hint}")
    return out_dir


def _check_bundle(bundle_dir: str | Path) -> Path:
    bundle_dir = Path(bundle_dir)
    if not (bundle_dir / "manifest.json").is_file():
        raise EdgetlError(f"{bundle_dir} is not a bundle folder (no manifest.json); run `edgetl export` first")
    return bundle_dir


def fit_run(run_path: str | Path, scorer: str = "auto", target_false_alarm: float = DEFAULT_FALSE_ALARM,
            tflite: str | Path | None = None, outliers: str | Path | None = None, bundle: str | Path | None = None,
            options: dict[str, Any] | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """`edgetl openset fit`: fit `scorer` (or pick one), calibrate, write RUN/openset/ (and a bundle)."""
    from edgetl.run import Run

    run = Run(run_path)
    if scorer != "auto" and scorer not in SCORER_NAMES:
        raise EdgetlError(f"unknown scorer {scorer!r}; choose auto or one of {', '.join(SCORER_NAMES)}")
    out_dir = _check_out_dir(out, run.path)
    if bundle:
        _check_bundle(bundle)
    embedder = Embedder(run, tflite)
    data = load_run_data(run, embedder, outliers, options)
    vp, ve, vy = data.val
    choice: dict[str, float] = {}
    # outliers the user gave are the best stand-in for unknowns when choosing the scorer
    unk = data.outliers if data.outliers is not None and len(data.outliers[1]) >= 10 else None
    if scorer == "auto":
        scorer, choice = choose_scorer(data.train, vp, ve, vy, unknown=unk)
    fitted = fit_scorer(scorer, data.train, calib=(vp, ve))
    val_scores = fitted.score_batch(vp, ve)
    threshold = calibrate_threshold(val_scores, target_false_alarm)
    extra = {"embeddings": "tflite" if tflite else "keras", "val_false_alarm": false_alarm_rate(val_scores, threshold),
             "n_val": int(len(vy))}
    if choice:
        extra["auto_loco_auroc" if unk is None else "auto_outlier_auroc"] = {k: round(v, 4) for k, v in choice.items()}
    if data.outliers is not None and len(data.outliers[1]):
        outlier_scores = fitted.score_batch(*data.outliers)
        extra["outlier_detection"] = detection_rate(outlier_scores, threshold)
        plot_scores(val_scores, outlier_scores, threshold, f"{fitted.name}: validation known vs outliers",
                    out_dir / "fit_scores.png")
    else:
        plot_scores(val_scores, np.array([]), threshold, f"{fitted.name}: validation known", out_dir / "fit_scores.png")
    doc, arrays = scorer_params(fitted, threshold, target_false_alarm, extra)
    save_openset(out_dir, doc, arrays)
    log.info("openset: %s, threshold %.4g (%.1f%% of %d validation frames flagged) -> %s", fitted.name, threshold,
             100 * extra["val_false_alarm"], len(vy), out_dir)
    if bundle:
        write_to_bundle(bundle, doc, arrays)
    return doc


def write_to_bundle(bundle_dir: str | Path, doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Put the scorer into an exported bundle folder and re-hash its manifest (signature must be redone)."""
    from edgetl.bundle import refresh_manifest

    bundle_dir = _check_bundle(bundle_dir)
    with replacing(bundle_dir / doc.get("file", "openset.npz")) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)  # a full disk here leaves the bundle as it was
    refresh_manifest(bundle_dir, unknown=doc)  # until this lands the manifest's hashes flag openset.npz as changed
    log.info("wrote the open-set scorer into %s; sign the bundle again (`edgetl bundle sign`)", bundle_dir)


def _known_eval(data: RunData) -> tuple[np.ndarray, np.ndarray, str]:
    if data.test is not None and len(data.test[2]):
        return data.test[0], data.test[1], "test"
    return data.val[0], data.val[1], "val"


def evaluate_run(run_path: str | Path, unknown_dir: str | Path, scorer: str | None = None,
                 target_false_alarm: float = DEFAULT_FALSE_ALARM, tflite: str | Path | None = None,
                 options: dict[str, Any] | None = None, out: str | Path | None = None) -> list[dict[str, Any]]:
    """`edgetl openset evaluate`: known (test split, else val) vs the images in `unknown_dir`.

    scorer None: the one `edgetl openset fit` saved (fits auto when none is saved); a name: fit it now;
    "auto": pick on validation (leave-one-class-out); "all": every scorer, one row each.
    """
    from edgetl.run import Run

    run = Run(run_path)
    if scorer not in (None, "auto", "all") and scorer not in SCORER_NAMES:
        raise EdgetlError(f"unknown scorer {scorer!r}; choose auto, all or one of {', '.join(SCORER_NAMES)}")
    out_dir = _check_out_dir(out, run.path)
    unknown_paths = image_paths(unknown_dir)
    embedder = Embedder(run, tflite)
    data = load_run_data(run, embedder, None, options)
    kp, ke, where = _known_eval(data)
    up, ue = embedder(unknown_paths, desc="unknown images")
    vp, ve, vy = data.val
    saved = out_dir / "openset.json"
    rows: list[dict[str, Any]] = []
    if scorer is None and saved.is_file():
        doc, fitted = load_openset(out_dir)
        plans = [(fitted, float(doc["threshold"]), "saved")]
    else:
        names = list(AUTO_CANDIDATES) if scorer == "all" else [scorer or "auto"]
        if names == ["auto"]:
            names = [choose_scorer(data.train, vp, ve, vy)[0]]
        plans = []
        for name in names:
            if name not in SCORER_NAMES:
                raise EdgetlError(f"unknown scorer {name!r}; choose auto, all or one of {', '.join(SCORER_NAMES)}")
            fitted = fit_scorer(name, data.train, calib=(vp, ve))
            plans.append((fitted, calibrate_threshold(fitted.score_batch(vp, ve), target_false_alarm), "fitted now"))
    for fitted, threshold, how in plans:
        ks, us = fitted.score_batch(kp, ke), fitted.score_batch(up, ue)
        png = plot_scores(ks, us, threshold, f"{fitted.name}: {where} known (n={len(ks)}) vs {Path(unknown_dir).name}",
                          out_dir / f"evaluate_{fitted.name}.png")
        rows.append({"scorer": fitted.name, "source": how, "known_split": where, "n_known": int(len(ks)),
                     "n_unknown": int(len(us)), "auroc": auroc(ks, us), "fpr95": fpr_at_tpr(ks, us),
                     "false_alarm_at_95_detection": false_alarm_at_detection(ks, us),
                     "threshold": threshold, "false_alarm": false_alarm_rate(ks, threshold),
                     "detection": detection_rate(us, threshold), "plot": str(png), "embeddings": embedder.source})
    write_text(out_dir / "evaluate.json", json.dumps(rows, indent=2) + "\n")  # after the plots it lists
    return rows


def loco_run(run_path: str | Path, scorers: Sequence[str] = AUTO_CANDIDATES, tflite: str | Path | None = None,
             options: dict[str, Any] | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """`edgetl openset loco`: each class in turn plays the unknown (no unknown data needed).

    The run's backbone saw every class in training, so its embeddings are not retrained per fold:
    only the softmax head and the scorers are refitted without the held-out class. That makes this an
    optimistic-to-fair estimate for near unknowns; `tools/bench_openset.py` shows the frozen-backbone one.
    """
    from edgetl.run import Run

    run = Run(run_path)
    out_dir = _check_out_dir(out, run.path)
    data = load_run_data(run, Embedder(run, tflite), None, options)
    kp, ke, where = _known_eval(data)
    ky = data.test[2] if where == "test" else data.val[2]
    res = leave_one_class_out(list(scorers), data.train, kp, ke, ky, retrain_head=True)
    summary = {name: {"mean_auroc": float(np.mean([r["auroc"] for r in rows])),
                      "mean_fpr95": float(np.mean([r["fpr95"] for r in rows])),
                      "per_class": {run.labels[r["held"]]: round(r["auroc"], 4) for r in rows}}
               for name, rows in res.items() if rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    # each file all or nothing; the plot first, so that a full disk there leaves the previous json beside it
    plot_loco(summary, run.labels, out_dir / "loco.png")
    write_text(out_dir / "loco.json", json.dumps({"split": where, "scorers": summary}, indent=2) + "\n")
    return {"split": where, "scorers": summary}


def plot_loco(summary: dict[str, Any], labels: list[str], path: Path) -> Path:
    """Per held-out class AUROC, one group of bars per scorer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    names = list(summary)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels)), 4))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        vals = [summary[name]["per_class"].get(c, np.nan) for c in labels]
        ax.bar(np.arange(len(labels)) + i * width, vals, width, label=f"{name} ({summary[name]['mean_auroc']:.2f})")
    ax.axhline(0.5, color="grey", ls=":")
    # parse_math=False: class names like "$1_$5" are not TeX (matplotlib raised at savefig)
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=30, ha="right", parse_math=False)
    ax.set_ylabel("AUROC (held-out class as unknown)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=100)
