"""Open-set ("is this something the model never saw?") scorers, numpy only.

Every scorer maps one frame's model outputs -- softmax probabilities [C] and the
L2-normalised embedding [D] -- to a float where HIGHER means MORE UNKNOWN. The
host (`edgetl openset fit`) fits their parameters and a threshold; they ship in
the bundle as `manifest["unknown"]` (scalars) plus `openset.npz` (arrays), and
the device rebuilds the same objects with `load_scorer` / `scorer_from_bundle`.

Scorers:
- ``msp``: 1 - max softmax probability (Hendrycks & Gimpel).
- ``energy`` / ``maxlogit``: the bundle's TFLite model only exposes probabilities
  and an L2-normalised embedding, and the softmax hides the logit scale energy
  needs. So these use a linear head fitted by `edgetl openset fit` on the
  normalised embedding (logits = e @ W + b) -- honest energy of that head, not of
  the model's own classifier.
- ``cosine``: 1 - max cosine similarity to the class prototypes (normalised means).
- ``knn``: 1 - similarity to the k-th nearest training embedding in a bounded
  bank (<= 2,000 vectors, stored float16) (Sun et al. 2022); optionally in the
  whitened space of the shared class covariance (centred, projected, normalised),
  where the search is D/r times cheaper and directions classes vary along count less.
- ``mahalanobis``: min over classes of the Mahalanobis distance with a shared,
  shrunk covariance (Lee et al. 2018); ``relative_mahalanobis`` subtracts the
  distance to one background Gaussian fitted on all data (Ren et al. 2021).
- ``combined``: weighted sum of standardised component scores; what `edgetl openset
  fit` builds is relative Mahalanobis + whitened kNN, sharing one projection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgetl_device.errors import DeviceError

log = logging.getLogger(__name__)

MAX_BANK = 2000
BACKGROUND_SPACES = ("embedding", "whitened")  # where relative Mahalanobis fits its background Gaussian
SCORER_NAMES = ("msp", "energy", "maxlogit", "cosine", "knn", "mahalanobis", "relative_mahalanobis",
                "combined")


def _as2d(x: np.ndarray | None) -> np.ndarray | None:
    if x is None:
        return None
    x = np.asarray(x, dtype=np.float32)
    return x[None, :] if x.ndim == 1 else x.reshape(x.shape[0], -1)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation (the exported embedding already is; int8 rounding makes it ~1)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


class Scorer:
    """Base: subclasses implement `score_batch`; `score` is the per-frame device call."""

    name = "base"
    needs_embedding = True
    # Set by `Combined` for the duration of one call: parts that share a matrix (the kNN search space is
    # the Mahalanobis whitening) project the frame once. Keyed by the matrix object.
    _memo: dict[int, np.ndarray] | None = None

    def score_batch(self, probs: np.ndarray | None, embeddings: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def score(self, probs: np.ndarray | None, embedding: np.ndarray | None = None) -> float:
        """Unknown-ness of one frame (higher = more unknown)."""
        return float(self.score_batch(_as2d(probs), _as2d(embedding))[0])

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able scalars, arrays) that `load_scorer` turns back into this scorer."""
        raise NotImplementedError

    def _emb(self, embeddings: np.ndarray | None) -> np.ndarray:
        if embeddings is None:
            raise DeviceError(f"open-set scorer {self.name!r} needs the model's embedding output; "
                              "export the model with both outputs (probabilities, embedding)")
        return l2_normalise(embeddings)

    def _project(self, e: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """e @ matrix, computed once per frame across the parts of a `Combined` scorer."""
        memo = self._memo
        if memo is None:
            return e @ matrix
        key = id(matrix)
        if key not in memo:
            memo[key] = e @ matrix
        return memo[key]

    def projections(self) -> dict[str, np.ndarray]:
        """This scorer's D x r matrices by attribute name (`Combined` shares equal ones between parts)."""
        return {}

    def __call__(self, probs: np.ndarray | None, embedding: np.ndarray | None = None) -> float:
        return self.score(probs, embedding)


class MSP(Scorer):
    name = "msp"
    needs_embedding = False

    def score_batch(self, probs, embeddings):
        if probs is None:
            raise DeviceError("the msp scorer needs the model's probabilities output")
        return 1.0 - np.asarray(probs, dtype=np.float32).max(axis=1)

    def state(self):
        return {}, {}


class LinearHead(Scorer):
    """Energy (temperature T) or max-logit of a linear head on the normalised embedding."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, temperature: float = 1.0,
                 kind: str = "energy") -> None:
        if kind not in ("energy", "maxlogit"):
            raise DeviceError(f"unknown linear-head scorer {kind!r}")
        self.name = kind
        self.weight = np.asarray(weight, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.temperature = float(temperature)

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        return self._emb(embeddings) @ self.weight + self.bias

    def score_batch(self, probs, embeddings):
        z = self.logits(embeddings)
        if self.name == "maxlogit":
            return -z.max(axis=1)
        return -self.temperature * _logsumexp(z / self.temperature)

    def state(self):
        return {"temperature": self.temperature}, {"weight": self.weight, "bias": self.bias}


class Cosine(Scorer):
    name = "cosine"

    def __init__(self, prototypes: np.ndarray) -> None:
        self.prototypes = l2_normalise(prototypes)

    def score_batch(self, probs, embeddings):
        return 1.0 - (self._emb(embeddings) @ self.prototypes.T).max(axis=1)

    def state(self):
        return {}, {"prototypes": self.prototypes}


class KNN(Scorer):
    """k-th nearest neighbour cosine distance to a bounded bank of training embeddings.

    With `projection` (D x r) and `center` (D) the search runs on normalise((e - center) @ projection);
    the bank then holds training vectors already in that space (r wide)."""

    name = "knn"

    def __init__(self, bank: np.ndarray, k: int = 1, projection: np.ndarray | None = None,
                 center: np.ndarray | None = None) -> None:
        bank = np.asarray(bank)
        if len(bank) > MAX_BANK:
            raise DeviceError(f"kNN bank has {len(bank)} vectors, more than {MAX_BANK}; refit with a smaller bank")
        if not 1 <= int(k) <= len(bank):
            raise DeviceError(f"kNN k={k} must be between 1 and the bank size {len(bank)}")
        if (projection is None) != (center is None):
            raise DeviceError("kNN in a projected space needs both 'projection' and 'center'")
        self.projection = None if projection is None else np.asarray(projection, dtype=np.float32)
        self.center = None if center is None else np.asarray(center, dtype=np.float32).reshape(-1)
        if self.projection is not None and bank.shape[1] != self.projection.shape[1]:
            raise DeviceError(f"kNN bank vectors have {bank.shape[1]} values, the projection makes "
                              f"{self.projection.shape[1]}; refit the scorer")
        self._projected_center = None if self.projection is None else self.center @ self.projection
        self.bank16 = bank.astype(np.float16)  # what ships
        self.bank = l2_normalise(self.bank16.astype(np.float32))  # what computes
        self.k = int(k)

    def search_space(self, embeddings: np.ndarray) -> np.ndarray:
        e = self._emb(embeddings)
        if self.projection is None:
            return e
        return l2_normalise(self._project(e, self.projection) - self._projected_center)

    def score_batch(self, probs, embeddings):
        sims = self.search_space(embeddings) @ self.bank.T
        kth = np.partition(sims, -self.k, axis=1)[:, -self.k]
        return 1.0 - kth

    def projections(self):
        return {} if self.projection is None else {"projection": self.projection}

    def state(self):
        arrays = {"bank": self.bank16}
        if self.projection is not None:
            arrays |= {"projection": self.projection, "center": self.center}
        return {"k": self.k}, arrays


class Mahalanobis(Scorer):
    """min_c ||(e - mu_c) W||^2 where W W^T is the shared (shrunk) precision matrix.

    Relative: minus the distance to one background Gaussian over all training data, which removes
    directions every class shares (background, lighting) from the evidence (Ren et al. 2021).
    `background_space` "embedding": ||(e - mu_0) W0||^2 with W0 D x r, as in the paper; "whitened": the
    background Gaussian lives in the class-whitened coordinates z = e W, ||(z - z_0) W0||^2 with W0 r x r.
    The latter reuses the projection the class distances need (cheaper on the device) and separates
    in-scene unknowns better, unrelated photos worse (see `edgetl.openset.fit_mahalanobis`).
    """

    def __init__(self, means: np.ndarray, whiten: np.ndarray, background_mean: np.ndarray | None = None,
                 background_whiten: np.ndarray | None = None, background_space: str = "embedding") -> None:
        # projections in float32 (the cost: D x rank), distances summed in float64 because relative
        # Mahalanobis subtracts two large numbers
        self.whiten = np.asarray(whiten, dtype=np.float32)
        self.means = np.asarray(means, dtype=np.float32)
        self.projected_means = (self.means @ self.whiten).astype(np.float64)
        self.relative = background_mean is not None
        self.name = "relative_mahalanobis" if self.relative else "mahalanobis"
        self.background_space = background_space
        if self.relative:
            if background_space not in BACKGROUND_SPACES:
                raise DeviceError(f"relative Mahalanobis background_space must be one of "
                                  f"{', '.join(BACKGROUND_SPACES)} (got {background_space!r})")
            self.background_mean = np.asarray(background_mean, dtype=np.float32).reshape(-1)
            self.background_whiten = np.asarray(background_whiten, dtype=np.float32)
            inner = self.whiten.shape[0 if background_space == "embedding" else 1]
            if self.background_whiten.shape[0] != inner or self.background_mean.shape[0] != inner:
                raise DeviceError(f"relative Mahalanobis background ({background_space} space) needs a "
                                  f"{inner}-wide mean and whitening, got {self.background_mean.shape[0]} and "
                                  f"{self.background_whiten.shape[0]}; refit the scorer")
            self.projected_background = (self.background_mean @ self.background_whiten).astype(np.float64)

    def class_distances(self, embeddings: np.ndarray) -> np.ndarray:
        e = self._emb(embeddings)
        z32 = self._project(e, self.whiten)
        z = z32.astype(np.float64)
        d = ((z[:, None, :] - self.projected_means[None, :, :]) ** 2).sum(axis=2)
        if self.relative:
            if self.background_space == "whitened":
                inner = z32 @ self.background_whiten  # r x r on the projection already made
            else:
                inner = self._project(e, self.background_whiten)
            z0 = inner.astype(np.float64) - self.projected_background
            d = d - (z0 ** 2).sum(axis=1, keepdims=True)
        return d

    def projections(self):
        out = {"whiten": self.whiten}
        if self.relative and self.background_space == "embedding":
            out["background_whiten"] = self.background_whiten
        return out

    def score_batch(self, probs, embeddings):
        return self.class_distances(embeddings).min(axis=1)

    def state(self):
        arrays = {"means": self.means, "whiten": self.whiten}
        params: dict[str, Any] = {}
        if self.relative:
            arrays |= {"background_mean": self.background_mean, "background_whiten": self.background_whiten}
            params["background_space"] = self.background_space
        return params, arrays


class Combined(Scorer):
    """sum_i w_i (s_i - m_i) / sd_i: standardised near and far evidence added up."""

    name = "combined"

    def __init__(self, parts: list[Scorer], means: list[float], stds: list[float], weights: list[float]) -> None:
        if not parts or not len(parts) == len(means) == len(stds) == len(weights):
            raise DeviceError("combined scorer needs matching parts, means, stds and weights")
        self.parts = parts
        self.means = [float(m) for m in means]
        self.stds = [max(float(s), 1e-12) for s in stds]
        self.weights = [float(w) for w in weights]
        self.needs_embedding = any(p.needs_embedding for p in parts)
        _share_equal_projections(parts)

    def score_batch(self, probs, embeddings):
        total = 0.0
        memo: dict[int, np.ndarray] = {}
        try:
            for part, m, s, w in zip(self.parts, self.means, self.stds, self.weights, strict=True):
                part._memo = memo
                total = total + w * (part.score_batch(probs, embeddings) - m) / s
        finally:
            for part in self.parts:
                part._memo = None
        return np.asarray(total, dtype=np.float32)

    def state(self):
        """Arrays of each part under "i.name"; an array another part already holds (the same object)
        is stored once and named in that part's "shared" map."""
        params: dict[str, Any] = {"parts": [], "means": self.means, "stds": self.stds, "weights": self.weights}
        arrays: dict[str, np.ndarray] = {}
        stored: dict[int, str] = {}
        for i, part in enumerate(self.parts):
            p, a = part.state()
            spec: dict[str, Any] = {"scorer": part.name, "params": p}
            for key, value in a.items():
                if id(value) in stored:
                    spec.setdefault("shared", {})[key] = stored[id(value)]
                else:
                    stored[id(value)] = f"{i}.{key}"
                    arrays[f"{i}.{key}"] = value
            params["parts"].append(spec)
        return params, arrays


def _share_equal_projections(parts: list[Scorer]) -> None:
    """Make parts with equal projection matrices hold one object, so a frame is projected once."""
    seen: list[np.ndarray] = []
    for part in parts:
        for attr, matrix in part.projections().items():
            same = next((m for m in seen if m is matrix or (m.shape == matrix.shape and np.array_equal(m, matrix))),
                        None)
            if same is None:
                seen.append(matrix)
            elif same is not matrix:
                setattr(part, attr, same)


def _need(arrays: dict[str, np.ndarray], name: str, *keys: str) -> list[np.ndarray]:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DeviceError(f"open-set scorer {name!r} is missing arrays {missing} in openset.npz; "
                          "re-run `edgetl openset fit` and re-export the bundle")
    return [arrays[k] for k in keys]


def build_scorer(name: str, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Scorer:
    """A scorer from its name, scalar params and arrays (the inverse of `Scorer.state`)."""
    if name == "msp":
        return MSP()
    if name in ("energy", "maxlogit"):
        w, b = _need(arrays, name, "weight", "bias")
        return LinearHead(w, b, float(params.get("temperature", 1.0)), kind=name)
    if name == "cosine":
        return Cosine(*_need(arrays, name, "prototypes"))
    if name == "knn":
        projected = "projection" in arrays or "center" in arrays
        space = _need(arrays, name, "projection", "center") if projected else [None, None]
        return KNN(*_need(arrays, name, "bank"), k=int(params.get("k", 1)), projection=space[0], center=space[1])
    if name == "mahalanobis":
        return Mahalanobis(*_need(arrays, name, "means", "whiten"))
    if name == "relative_mahalanobis":
        # bundles written before background_space existed fitted the background in the embedding space
        return Mahalanobis(*_need(arrays, name, "means", "whiten", "background_mean", "background_whiten"),
                           background_space=str(params.get("background_space", "embedding")))
    if name == "combined":
        parts = []
        for i, spec in enumerate(params.get("parts", [])):
            sub = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{i}.")}
            for key, ref in spec.get("shared", {}).items():
                sub[key] = _need(arrays, name, ref)[0]
            parts.append(build_scorer(spec["scorer"], spec.get("params", {}), sub))
        return Combined(parts, params.get("means", []), params.get("stds", []), params.get("weights", []))
    raise DeviceError(f"unknown open-set scorer {name!r}; expected one of {', '.join(SCORER_NAMES)}")


def load_scorer(params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Scorer:
    """A scorer from an `openset.json` dict (``{"scorer", "params", ...}``) and its arrays.

    Also accepts a bare params dict carrying a ``"scorer"`` key.
    """
    name = params.get("scorer")
    if not name:
        raise DeviceError("open-set parameters have no 'scorer' name; re-run `edgetl openset fit`")
    inner = params.get("params", params)
    return build_scorer(str(name), inner, arrays)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise DeviceError(f"open-set arrays not found: {path}; re-run `edgetl openset fit` and re-export")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(Path(path), **arrays)


def scorer_from_bundle(bundle: Any) -> tuple[Callable[[np.ndarray, np.ndarray | None], float], float] | None:
    """(score(probs, embedding) -> float, threshold) from a bundle, or None when it has no open-set section.

    A frame is "unknown" when its score is above the threshold.
    """
    unknown = (getattr(bundle, "manifest", None) or {}).get("unknown")
    if not unknown:
        return None
    if "threshold" not in unknown:
        raise DeviceError("bundle manifest 'unknown' section has no threshold; re-run `edgetl openset fit`")
    arrays: dict[str, np.ndarray] = {}
    file = unknown.get("file")
    if file:
        arrays = load_npz(Path(bundle.root) / file)
    scorer = load_scorer(unknown, arrays)
    log.info("open-set scorer %s, threshold %.4g", scorer.name, float(unknown["threshold"]))
    return scorer.score, float(unknown["threshold"])
