"""Pictures people would rather look at than read: training curves and confusion matrices."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgetl.atomic import replacing

MAX_INCHES = 24.0  # confusion matrix side: 2,400 px at 100 dpi
MAX_TICK_LABELS = 100
MAX_COUNTS = 50  # classes up to which every cell's count is written


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str] | IO[bytes], **savefig: Any) -> Any:
    """`fig.savefig(path)`, then close `fig` (also on failure). A file name is written all or nothing: a full disk
    or a kill leaves the previous picture, never half a PNG. A file object (report.html's in-memory PNGs) is
    written directly. Returns the path written (`.png` added to a name without a suffix, as matplotlib does)."""
    plt = _plt()
    try:
        if not isinstance(path, (str, os.PathLike)):
            fig.savefig(path, **savefig)
            return path
        path = Path(path)
        fmt = savefig.pop("format", None) or path.suffix[1:].lower()
        if not fmt:  # matplotlib writes NAME.png; the temporary name must not make it guess
            fmt = plt.rcParams["savefig.format"]
            path = path.with_name(path.name.rstrip(".") + "." + fmt)
        with replacing(path) as tmp:
            fig.savefig(tmp, format=fmt, **savefig)
    finally:
        plt.close(fig)
    return path


def plot_curves(history: Sequence[dict], path: Path) -> None:
    """Loss and accuracy per epoch for train and val; a dashed line marks where fine-tuning starts."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history) + 1)
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            ys = [row.get(prefix + key) for row in history]
            if any(y is not None and y != "" for y in ys):
                # markers: a head solved on cached embeddings is a single point, not a curve
                ax.plot(epochs, [np.nan if y in (None, "") else float(y) for y in ys], style, marker="o",
                        markersize=3, label=(prefix or "train_") + key)
        phases = [row.get("phase") for row in history]
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(i + 0.5, color="gray", linestyle=":", label="fine-tuning starts")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def plot_confusion_matrix(cm: np.ndarray, labels: Sequence[str], path: Path, title: str = "") -> None:
    """Row-normalised colours (recall), raw counts written in the cells."""
    plt = _plt()
    cm = np.asarray(cm)
    n = len(labels)
    # capped: 0.6 inch per class made 1,000 classes a 60,000 px square with a million text objects
    size = min(max(4.0, 0.6 * n + 2), MAX_INCHES)
    fig, ax = plt.subplots(figsize=(size, size))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    step = max(1, -(-n // MAX_TICK_LABELS))  # every step-th class named when they no longer fit
    ticks = range(0, n, step)
    names = [labels[i] for i in ticks]
    fontsize = 10 if n <= 40 else 6
    # parse_math=False: class names are folder names / CSV cells, "$1_$5" is not TeX (it crashed savefig)
    ax.set_xticks(ticks, names, rotation=45, ha="right", fontsize=fontsize, parse_math=False)
    ax.set_yticks(ticks, names, fontsize=fontsize, parse_math=False)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= MAX_COUNTS:  # beyond that the cells are too small to read a number in
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title or "confusion matrix", parse_math=False)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
