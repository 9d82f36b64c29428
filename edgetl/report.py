"""`report.html` for a run: one self-contained page (images base64-embedded, inline CSS, no scripts,
no external fonts) that opens offline and can be mailed around.

Every section is always present: when its inputs do not exist yet it says so and what to run, rather
than vanishing; when building it fails the error is shown in place and the rest of the report is kept.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.atomic import write_text
from edgetl.errors import EdgetlError

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
SAMPLES_PER_CLASS = 6
MAX_LIST = 20  # longer JSON lists are summarised, not printed

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2330;
background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c5cad6;font-size:13px}
nav{padding:8px 32px;background:#e7e9ee;font-size:13px}nav a{margin-right:14px;color:#2a4d9b}
main{padding:8px 32px 40px;max-width:1200px}
section{background:#fff;border-radius:8px;padding:14px 20px;margin:16px 0;box-shadow:0 1px 3px #0002}
section h2{margin:0 0 10px;font-size:18px}h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #d5d8df;padding:3px 8px;text-align:right}th{background:#eef0f4}
td:first-child,th:first-child{text-align:left}
img.plot{max-width:100%;height:auto;border:1px solid #e2e4ea}
.thumbs{display:flex;flex-wrap:wrap;gap:4px;align-items:center;margin:4px 0}
.thumbs span{width:110px;font-size:13px;font-weight:600}
.missing{color:#8a5a00;background:#fff6e0;padding:8px 12px;border-radius:6px}
.error{color:#8a1020;background:#fde8ea;padding:8px 12px;border-radius:6px}
code{background:#eef0f4;padding:1px 4px;border-radius:3px}
"""


@dataclass
class Section:
    id: str
    title: str
    body: str
    status: str = "ok"  # ok | missing | error


class _Missing(Exception):
    """A section's inputs do not exist yet; the message says what to run."""


# ----------------------------------------------------------------------------------------------------------
# HTML helpers (pure)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def img_tag(data: bytes, alt: str, mime: str = "image/png", cls: str = "plot", width: int | None = None) -> str:
    """An <img> with the picture inlined as a data: URI."""
    w = f' width="{width}"' if width else ""
    return (f'<img class="{cls}" alt="{_e(alt)}"{w} '
            f'src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}">')


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def json_tables(doc: Any, title: str = "") -> str:
    """Any JSON document as tables: scalars as key/value, dicts of dicts and lists of dicts as one row each."""
    if isinstance(doc, list) and doc and all(isinstance(x, dict) for x in doc):
        cols = list(dict.fromkeys(c for x in doc for c, y in x.items() if not isinstance(y, dict | list)))
        head = f"<h3>{_e(title)}</h3>" if title else ""
        return head + table(cols, [[row.get(c, "") for c in cols] for row in doc])
    if not isinstance(doc, dict):
        return table([title or "value"], [[_fmt(doc)]])
    scalars, nested = [], []
    for k, v in doc.items():
        if isinstance(v, dict):
            nested.append((k, v))
        elif isinstance(v, list):
            short = len(v) <= MAX_LIST and all(not isinstance(x, dict | list) for x in v)
            scalars.append((k, ", ".join(_fmt(x) for x in v) if short else f"({len(v)} values)"))
        else:
            scalars.append((k, v))
    parts = [f"<h3>{_e(title)}</h3>"] if title and scalars else []
    if scalars:
        parts.append(table(["key", "value"], scalars))
    for k, v in nested:
        inner = list(v.values())
        if inner and all(isinstance(x, dict) for x in inner):
            cols = list(dict.fromkeys(c for x in inner for c, y in x.items() if not isinstance(y, dict | list)))
            parts.append(f"<h3>{_e(k)}</h3>" + table([k, *cols], [[name, *[row.get(c, "") for c in cols]]
                                                                    for name, row in v.items()]))
        else:
            parts.append(json_tables(v, f"{title + ' / ' if title else ''}{k}"))
    return "".join(parts)


def _missing(text: str) -> str:
    return f'<p class="missing">{text}</p>'


def _fig_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EdgetlError(f"{path} is not valid JSON ({exc}); re-create it") from exc


def _median_ms(fn: Callable[[], Any], runs: int, warmup: int = 2) -> tuple[float, float]:
    """Median and 95th percentile wall time of `fn` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), float(np.percentile(times, 95))


# ----------------------------------------------------------------------------------------------------------
# Sections


class _Ctx:
    """Lazily loaded pieces shared by sections (the model is loaded once)."""

    def __init__(self, run: Any, misclassified: int, latency_runs: int, tmp: Path):
        self.run = run
        self.tmp = tmp  # scratch for pictures drawn to files; nothing is written into the run folder
        self.root: Path = Path(run.path)
        self.misclassified = misclassified
        self.latency_runs = latency_runs
        self._model = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = self.run.load_model()
        return self._model

    @property
    def metrics(self) -> dict:
        return self.run.metrics or {}


def _overview(ctx: _Ctx) -> str:
    cfg = ctx.run.config
    keys = ["backbone", "alpha", "size", "weights", "epochs", "fine_tune_epochs", "batch_size", "learning_rate",
            "seed", "data", "edgetl_version"]
    rows = [(k, cfg[k] if not isinstance(cfg[k], dict | list) else json.dumps(cfg[k])) for k in keys if k in cfg]
    m = ctx.metrics
    rows += [(k, m[k]) for k in ("val_accuracy", "test_accuracy") if k in m]
    rows.append(("classes", ", ".join(ctx.run.labels)))
    return table(["setting", "value"], rows)


def _thumb(path: Path, size: int = 96) -> bytes:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
        return buf.getvalue()


def _dataset(ctx: _Ctx) -> str:
    if not (ctx.root / "split.csv").is_file():
        raise _Missing("no split.csv in the run: re-run <code>edgetl train</code>")
    labels = ctx.run.labels
    splits = {s: ctx.run.samples(s) for s in ("train", "val", "test")}
    counts = {s: {lab: 0 for lab in labels} for s in splits}
    for s, samples in splits.items():
        for smp in samples:
            counts[s][smp.label] = counts[s].get(smp.label, 0) + 1
    rows = [[lab, *[counts[s].get(lab, 0) for s in splits], sum(counts[s].get(lab, 0) for s in splits)]
            for lab in labels]
    rows.append(["total", *[len(v) for v in splits.values()], sum(len(v) for v in splits.values())])
    parts = [table(["class", *splits, "all"], rows), "<h3>sample images per class</h3>"]
    pool = splits["train"] or splits["val"] or splits["test"]
    for lab in labels:
        picks = [s for s in pool if s.label == lab][:SAMPLES_PER_CLASS]
        thumbs = []
        for s in picks:
            try:
                thumbs.append(img_tag(_thumb(Path(s.path)), f"{lab}: {Path(s.path).name}", "image/jpeg", "thumb"))
            except OSError as exc:  # a moved/deleted image must not sink the whole report
                thumbs.append(f"<em>{_e(Path(s.path).name)}: {_e(exc)}</em>")
        parts.append(f'<div class="thumbs"><span>{_e(lab)}</span>{"".join(thumbs) or "<em>none</em>"}</div>')
    return "".join(parts)


def _read_history(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _curves(ctx: _Ctx) -> str:
    png = ctx.root / "curves.png"
    hist_file = ctx.root / "history.csv"
    if png.is_file():
        body = img_tag(png.read_bytes(), "training curves")
    elif hist_file.is_file():
        from edgetl.plots import plot_curves

        buf = io.BytesIO()
        plot_curves(_read_history(hist_file), buf)
        body = img_tag(buf.getvalue(), "training curves")
    else:
        raise _Missing("no training history (history.csv) in the run: re-run <code>edgetl train</code>")
    if hist_file.is_file():
        hist = _read_history(hist_file)
        if hist:
            last = hist[-1]
            body += f"<p>{len(hist)} epochs; last epoch: " + ", ".join(
                f"{_e(k)} {_e(_fmt(_num(v)))}" for k, v in last.items() if k not in ("epoch",) and v != "") + "</p>"
    return body


def _num(v: str) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _split_report(m: dict, split: str) -> dict | None:
    rep = m.get(split)
    return rep if isinstance(rep, dict) and "confusion_matrix" in rep else None


def _confusion(ctx: _Ctx) -> str:
    m = ctx.metrics
    parts = []
    png = ctx.root / "confusion_matrix.png"
    if png.is_file():
        parts.append(img_tag(png.read_bytes(), "validation confusion matrix"))
    from edgetl.plots import plot_confusion_matrix

    for split in ("val", "test"):
        rep = _split_report(m, split)
        if rep is None or (split == "val" and png.is_file()):
            continue
        buf = io.BytesIO()
        plot_confusion_matrix(np.array(rep["confusion_matrix"]), ctx.run.labels, buf,
                              title=f"{split} (accuracy {rep.get('accuracy', float('nan')):.3f})")
        parts.append(img_tag(buf.getvalue(), f"{split} confusion matrix"))
    if not parts:
        raise _Missing("no confusion matrix in the run (metrics.json): re-run <code>edgetl train</code> "
                       "or <code>edgetl evaluate RUN</code>")
    for split in ("val", "test"):
        rep = _split_report(m, split)
        if rep is not None:
            parts.append(f"<p>{split}: {_confused_pairs(np.array(rep['confusion_matrix']), ctx.run.labels)}</p>")
    return "".join(parts)


def confused_pairs(cm: np.ndarray, labels: Sequence[str], top: int = 3) -> list[tuple[str, str, int]]:
    """The largest off-diagonal cells: (true, predicted, count), most frequent first."""
    off = [(int(cm[i, j]), i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j] > 0]
    off.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [(labels[i], labels[j], n) for n, i, j in off[:top]]


def _confused_pairs(cm: np.ndarray, labels: Sequence[str]) -> str:
    total, right = int(cm.sum()), int(np.trace(cm))
    pairs = confused_pairs(cm, labels)
    tail = ("most confused (true → predicted): " + ", ".join(f"{_e(a)} → {_e(b)} ({n})" for a, b, n in pairs)
            if pairs else "no confusions")
    return f"{right} of {total} images correct; {tail}"


def _per_class(ctx: _Ctx) -> str:
    m = ctx.metrics
    parts = []
    for split in ("val", "test"):
        rep = _split_report(m, split)
        pc = rep.get("per_class") if rep else (m.get("per_class") if split == "val" else None)
        if not pc:
            continue
        rows = [[lab, v.get("precision"), v.get("recall"), v.get("f1"), v.get("support", "")] for lab, v in pc.items()]
        parts.append(f"<h3>{split}</h3>" + table(["class", "precision", "recall", "F1", "support"], rows))
        if rep:
            summary = [(k, v) for k, v in rep.items() if not isinstance(v, dict | list)]
            parts.append(table(["metric", "value"], summary))
    if not parts:
        raise _Missing("no per-class metrics in the run (metrics.json): re-run <code>edgetl train</code>")
    return "".join(parts)


def _parity(ctx: _Ctx) -> str:
    doc = _read_json(ctx.root / "export" / "parity.json")
    if doc is None:
        raise _Missing("not exported yet: run <code>edgetl export RUN</code> to quantize to int8 TFLite and "
                       "measure float-vs-TFLite parity")
    parts = []
    fa, ta = doc.get("float_accuracy"), doc.get("tflite_accuracy")
    if isinstance(fa, int | float) and isinstance(ta, int | float):
        parts.append(f"<p>float accuracy <b>{fa:.4f}</b>, int8 TFLite accuracy <b>{ta:.4f}</b> "
                     f"(difference {ta - fa:+.4f})</p>")
    parts.append(json_tables(doc))
    return "".join(parts)


def _openset(ctx: _Ctx) -> str:
    """RUN/openset/ as `edgetl openset fit/evaluate/loco` write it: detector, results tables, score plots."""
    d = ctx.root / "openset"
    doc = _read_json(d / "openset.json")
    if doc is None:
        raise _Missing("unknown-object detector not fitted yet: run <code>edgetl openset fit RUN</code>, then "
                       "<code>edgetl openset evaluate RUN UNKNOWN_DIR</code> for histograms and ROC")
    parts = [json_tables({k: v for k, v in doc.items() if k not in ("params", "file")}, "detector")]
    for extra in sorted(d.glob("*.json")):
        if extra.name != "openset.json":
            data = _read_json(extra)
            if isinstance(data, list):  # the plot paths are shown as pictures below, not as text
                data = [{k: v for k, v in row.items() if k != "plot"} if isinstance(row, dict) else row
                        for row in data]
            parts.append(json_tables(data, extra.stem))
    pngs = sorted(d.glob("*.png"), key=lambda p: (not p.stem.startswith("evaluate"), p.name))
    parts += [f"<h3>{_e(p.stem)}</h3>" + img_tag(p.read_bytes(), p.stem) for p in pngs]
    if not any(p.stem.startswith("evaluate") for p in pngs):
        parts.append(_missing("not evaluated against unknown objects yet: run <code>edgetl openset evaluate RUN "
                              "UNKNOWN_DIR</code> for the score histograms and ROC"))
    return "".join(parts)


def _misclassified(ctx: _Ctx) -> str:
    from edgetl.visualize import explain_rows, pick_examples, predict_split, save_contact_sheet

    rows, probs = predict_split(ctx.model, ctx.run, "val", progress=True)
    if not rows:
        raise _Missing("the run has no validation split, so there is nothing to check")
    wrong, correct = pick_examples(rows, probs, ctx.run.labels)
    shown = wrong[: ctx.misclassified]
    parts = [f"<p>{len(wrong)} of {len(rows)} validation images misclassified"
             + (f"; the {len(shown)} most confident mistakes, with Grad-CAM of the predicted class:</p>"
                if shown else ".</p>")]
    if shown:
        sheet = save_contact_sheet(explain_rows(ctx.model, ctx.run, rows, probs, shown), ctx.tmp / "wrong.png")
        parts.append(img_tag(sheet.read_bytes(), "misclassified validation images with Grad-CAM"))
    if correct:  # why the model is right, too: its most confident correct image per class
        sheet = save_contact_sheet(explain_rows(ctx.model, ctx.run, rows, probs, correct), ctx.tmp / "right.png")
        parts.append("<h3>correctly classified, the most confident per class (Grad-CAM of the predicted class)</h3>"
                     + img_tag(sheet.read_bytes(), "correct validation images with Grad-CAM"))
    return "".join(parts)


def _features(ctx: _Ctx) -> str:
    from edgetl.visualize import feature_maps, load_rgb, save_layers_overview

    pool = ctx.run.samples("val") or ctx.run.samples("train")
    if not pool:
        raise _Missing("the run has no images listed in split.csv to look at")
    sample = pool[0]
    img = load_rgb(sample.path, ctx.run.size, ctx.run.center_crop)
    maps = feature_maps(ctx.model, img)
    path = save_layers_overview(maps, img, ctx.tmp / "layers.png")
    return (f"<p>{_e(Path(sample.path).name)} ({_e(sample.label)}) through the network, one layer per block, "
            f"the 8 most active channels each; <code>edgetl visualize RUN IMAGE</code> shows every channel.</p>"
            + img_tag(path.read_bytes(), "feature maps layer by layer"))


def _model(ctx: _Ctx) -> str:
    model = ctx.model
    size = ctx.run.size
    x = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    import tensorflow as tf

    # A compiled call measures the network, not Python's per-layer eager dispatch.
    infer = tf.function(lambda t: model(t, training=False))
    p50, p95 = _median_ms(lambda: infer(x), ctx.latency_runs)
    rows = [("model.keras", f"{(ctx.root / 'model.keras').stat().st_size / 1e6:.2f} MB"),
            ("parameters", f"{model.count_params():,}"),
            ("input", f"{size}x{size}x3 RGB, float [0, 255]"),
            ("Keras float32 latency, batch 1, this host", f"p50 {p50:.1f} ms, p95 {p95:.1f} ms")]
    exp = ctx.root / "export"
    parts = []
    tflites = sorted(exp.glob("*.tflite")) if exp.is_dir() else []
    for t in tflites:
        rows.append((f"export/{t.name}", f"{t.stat().st_size / 1e6:.2f} MB"))
    model_tflite = exp / "model.tflite"
    if model_tflite.is_file():
        rows.append(("TFLite latency, 1 thread, this host", _tflite_latency(model_tflite, ctx.latency_runs)))
    parts.append(table(["", "value"], rows))
    summary = _read_json(exp / "summary.json")
    if summary is not None:
        parts.append(json_tables(summary, "export summary"))
    for bench in sorted(exp.glob("bench*.json")) if exp.is_dir() else []:
        parts.append(json_tables(_read_json(bench), bench.stem))
    if not tflites:
        parts.append(_missing("not exported yet: run <code>edgetl export RUN</code> for the int8 TFLite size "
                              "and on-device latency"))
    return "".join(parts)


def _tflite_latency(path: Path, runs: int) -> str:
    from edgetl_device.interpreter import load_interpreter

    interp = load_interpreter(path, num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    shape, dtype = inp["shape"], inp["dtype"]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        data = np.random.default_rng(0).integers(max(info.min, 0), min(info.max, 255) + 1, shape).astype(dtype)
    else:
        data = np.random.default_rng(0).uniform(0, 255, shape).astype(dtype)

    def once() -> None:
        interp.set_tensor(inp["index"], data)
        interp.invoke()

    p50, p95 = _median_ms(once, runs)
    return f"p50 {p50:.2f} ms, p95 {p95:.2f} ms ({np.dtype(dtype).name} input)"


SECTIONS: tuple[tuple[str, str, Callable[[_Ctx], str]], ...] = (
    ("overview", "Run", _overview),
    ("dataset", "Dataset", _dataset),
    ("curves", "Training curves", _curves),
    ("confusion", "Confusion matrix", _confusion),
    ("per-class", "Per-class metrics", _per_class),
    ("parity", "Quantization parity (float vs int8 TFLite)", _parity),
    ("openset", "Unknown-object detector", _openset),
    ("misclassified", "Misclassified examples with Grad-CAM", _misclassified),
    ("features", "Feature maps layer by layer", _features),
    ("model", "Model size and latency", _model),
)


def build_sections(run: Any, misclassified: int = 12, latency_runs: int = 20) -> list[Section]:
    """Every section of the report, in order; never raises for one section's failure."""
    import tempfile

    out = []
    with tempfile.TemporaryDirectory(prefix="edgetl_report_") as tmp:
        ctx = _Ctx(run, misclassified, latency_runs, Path(tmp))
        for sid, title, build in SECTIONS:
            out.append(_build_one(ctx, sid, title, build))
    return out


def _build_one(ctx: _Ctx, sid: str, title: str, build: Callable[[_Ctx], str]) -> Section:
    try:
        return Section(sid, title, build(ctx))
    except _Missing as exc:
        return Section(sid, title, _missing(str(exc)), "missing")
    except Exception as exc:  # noqa: BLE001 - one broken input must not lose the rest of the report
        log.warning("report section %s failed: %s", sid, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return Section(sid, title, f'<p class="error">could not build this section: {_e(exc)}</p>', "error")


def render_html(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    nav = "".join(f'<a href="#{s.id}">{_e(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.id}" data-status="{s.status}"><h2>{_e(s.title)}</h2>{s.body}</section>'
                   for s in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p></header><nav>{nav}</nav>"
            f"<main>{body}</main></body></html>")


def write_report(run_dir: str | Path, out: str | Path | None = None, *, misclassified: int = 12,
                 latency_runs: int = 20) -> Path:
    """Write the run's self-contained report (default `RUN/report.html`) and return its path."""
    from edgetl.run import Run

    run = Run(run_dir)
    path = Path(out) if out else run.path / REPORT_FILE
    if path.exists() and path.is_dir():
        raise EdgetlError(f"{path} is a folder; give a file name for the report, e.g. {path / REPORT_FILE}")
    _plt()  # headless backend before any section draws
    sections = build_sections(run, misclassified, latency_runs)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: UP017 - py3.10 support
    page = render_html(f"edgetl run report: {run.path.resolve().name}", f"{run.path.resolve()} · {now}", sections)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, page)  # never leave a half-written report (or its temporary file) behind
    log.info("report written to %s (%d kB)", path, len(page) // 1024)
    return path
