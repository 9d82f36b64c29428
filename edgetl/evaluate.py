"""`edgetl evaluate`: a run's model on a dataset, with the same metric code as training's report."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import numpy as np

from edgetl import data as D
from edgetl.atomic import in_the_way
from edgetl.errors import EdgetlError
from edgetl.metrics import classification_report
from edgetl.run import Run, predict_batches

log = logging.getLogger(__name__)


def _samples(run: Run, data, split: str | None, csv_options: dict) -> list[D.Sample]:
    if data is None:
        samples = run.samples(split or "val")
        if not samples:
            raise EdgetlError(f"{run.path} has no {split or 'val'!r} samples; pass --data DIR")
        return samples
    dataset = D.load_dataset(D.as_spec(data, **csv_options))
    if split:
        if split not in dataset.splits:
            raise EdgetlError(f"{data} has no {split!r} split (has: {', '.join(dataset.splits)})")
        return dataset.splits[split]
    # A split-folder dataset: evaluate on test if present, else val; a flat dataset: everything.
    for name in ("test", "val", "all"):
        if name in dataset.splits:
            return dataset.splits[name]
    return dataset.all_samples()


def evaluate(run: str | Path | Run, data=None, *, split: str | None = None, top_k: int = 5,
             batch_size: int = 32, csv_options: dict | None = None, plot: str | Path | None = None) -> dict:
    """Accuracy, top-k, per-class precision/recall/F1, confusion matrix and ECE of `run` on `data`.

    `data` = any dataset layout (default: the run's own validation split). Images whose class the run
    does not know are an error (they would silently count as wrong). Unreadable images are skipped.
    `plot` = a PNG file to write, or an existing folder (written as FOLDER/confusion_matrix.png).
    """
    if plot and Path(plot).is_dir():  # savefig would write FOLDER.png beside it
        plot = Path(plot) / "confusion_matrix.png"
    if plot:
        _check_plot(Path(plot))
    if top_k < 1:  # 0 reported a made-up top_0_accuracy of 0, -1 the top-(n-1) accuracy
        raise EdgetlError(f"--top-k must be >= 1 (got {top_k})")
    run = run if isinstance(run, Run) else Run(run)
    samples = _samples(run, data, split, csv_options or {})
    unknown = sorted({s.label for s in samples} - set(run.labels))
    if unknown:
        raise EdgetlError(f"classes {', '.join(unknown)} are not among the run's labels "
                          f"({', '.join(run.labels)}); evaluate on data with the same classes")
    x, ok, failures = run.load_images([s.path for s in samples])
    if not ok:
        if data is None:  # split.csv holds absolute paths: a run copied to another machine points nowhere
            raise EdgetlError(f"none of the {len(samples)} images listed in {run.path / 'split.csv'} can be read "
                              f"({failures[0][1]}); was the dataset moved? pass it with --data DIR")
        raise EdgetlError("no readable images to evaluate")
    index = {c: i for i, c in enumerate(run.labels)}
    y = np.array([index[samples[i].label] for i in ok])
    model = run.load_model()
    probs = predict_batches(model, x, batch_size, desc="evaluating")
    report = classification_report(y, probs, run.labels, top_k=top_k)
    report["skipped"] = [{"path": str(p), "error": e} for p, e in failures]
    report["run"] = str(run.path)
    if plot:
        from edgetl.plots import plot_confusion_matrix

        Path(plot).parent.mkdir(parents=True, exist_ok=True)  # like every other output: missing folders are made
        plot_confusion_matrix(np.array(report["confusion_matrix"]), run.labels, Path(plot),
                              title=f"accuracy {report['accuracy']:.3f} (n={report['n']})")
    return report


def _check_plot(plot: Path) -> None:
    """Before any image is read: --plot must be writable as a picture (the errno or matplotlib's "Format 'txt'
    is not supported" came only after the whole inference)."""
    blocked = in_the_way(plot.parent)
    if blocked:
        p, what = blocked
        raise EdgetlError(f"--plot {plot}: {p} is {what}, not a folder; give a PNG file name in a folder "
                          "(missing folders are created)")
    if plot.suffix:
        from matplotlib.backend_bases import FigureCanvasBase

        if plot.suffix[1:].lower() not in FigureCanvasBase.get_supported_filetypes():
            raise EdgetlError(f"--plot {plot}: cannot write a {plot.suffix} picture; give a .png file name "
                              "(or .pdf, .svg, .jpg)")


class _CallableModule(types.ModuleType):
    """Keeps `edgetl.evaluate(...)` callable after `import edgetl.evaluate` (see edgetl/train.py)."""

    def __call__(self, *args, **kwargs) -> dict:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
