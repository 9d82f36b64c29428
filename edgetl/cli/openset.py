"""`edgetl openset fit|evaluate|loco`: the unknown-object detector (wraps edgetl.openset)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from edgetl.openset import BACKGROUND_SPACES, DEFAULT_BACKGROUND, DEFAULT_KNN_SPACE

openset_app = typer.Typer(help="Unknown-object detection: fit scorers, calibrate, evaluate.", no_args_is_help=True)

SCORER_HELP = ("msp | energy | maxlogit | cosine | knn | mahalanobis | relative_mahalanobis | combined | auto "
               "(best on validation: your --outliers if given, else leave-one-class-out)")


KNN_SPACE_HELP = ("kNN: search the whitened space of the shared class covariance (cheaper; what `combined` "
                  "uses) or the plain embedding (cosine).")

K_HELP = "kNN: which neighbour."
BANK_SIZE_HELP = "kNN: training vectors kept (<= 2000)."
SHRINKAGE_HELP = "Mahalanobis covariance shrinkage (0-1)."


BACKGROUND_HELP = ("relative Mahalanobis: fit the background Gaussian on the embedding (Ren et al.; catches "
                   "unrelated photos) or in the class-whitened space (cheaper; better on in-scene unknowns, "
                   "much worse on unrelated photos).")


def _options(k: int, bank_size: int, shrinkage: float, knn_space: str, background: str) -> dict:
    if background not in BACKGROUND_SPACES:
        raise typer.BadParameter(f"must be one of {', '.join(BACKGROUND_SPACES)} (got {background!r})",
                                 param_hint="--background")
    if not 0.0 <= shrinkage <= 1.0:  # also NaN; above 1 the covariance turns negative and scores become noise
        raise typer.BadParameter(f"must be between 0 and 1 (got {shrinkage})", param_hint="--shrinkage")
    return {"k": k, "bank_size": bank_size, "shrinkage": shrinkage, "knn_space": knn_space,
            "background": background}


def _tflite_default(run: Path, tflite: Path | None, use_export: bool) -> Path | None:
    if tflite is None and use_export and (run / "export" / "model.tflite").is_file():
        return run / "export" / "model.tflite"
    return tflite


@openset_app.command("fit")
def fit_cmd(
    run: Path = typer.Argument(..., help="Run folder written by `edgetl train`."),
    scorer: str = typer.Option("auto", "--scorer", help=SCORER_HELP),
    false_alarm: float = typer.Option(0.05, "--false-alarm", help="Target fraction of known frames flagged."),
    tflite: Path = typer.Option(None, "--tflite", help="Compute embeddings with this TFLite model (the one the "
                                "device runs) so the threshold holds on the device."),
    device_model: bool = typer.Option(False, "--device-model", help="Use RUN/export/model.tflite when it exists."),
    outliers: Path = typer.Option(None, "--outliers", help="Folder of images that are NOT any known class "
                                  "(outlier exposure; also used to pick the scorer)."),
    bundle: Path = typer.Option(None, "--bundle", help="Also write into this exported bundle folder."),
    k: int = typer.Option(1, "--k", help=K_HELP),
    bank_size: int = typer.Option(2000, "--bank-size", help=BANK_SIZE_HELP),
    shrinkage: float = typer.Option(0.1, "--shrinkage", help=SHRINKAGE_HELP),
    knn_space: str = typer.Option(DEFAULT_KNN_SPACE, "--knn-space", help=KNN_SPACE_HELP),
    background: str = typer.Option(DEFAULT_BACKGROUND, "--background", help=BACKGROUND_HELP),
    out: Path = typer.Option(None, "--out", help="Output folder (default RUN/openset)."),
) -> None:
    """Fit an unknown-object scorer on the training embeddings and calibrate its threshold on validation."""
    from edgetl.openset import fit_run

    doc = fit_run(run, scorer, false_alarm, _tflite_default(run, tflite, device_model), outliers, bundle,
                  _options(k, bank_size, shrinkage, knn_space, background), out)
    typer.echo(f"scorer {doc['scorer']}, threshold {doc['threshold']:.5g}: {100 * doc['val_false_alarm']:.1f}% of "
               f"{doc['n_val']} validation frames flagged (target {100 * false_alarm:.1f}%) -> "
               f"{out or run / 'openset'}")
    for name, value in (doc.get("auto_loco_auroc") or doc.get("auto_outlier_auroc") or {}).items():
        typer.echo(f"  auto: {name:<22} AUROC {value:.3f}")


@openset_app.command("evaluate")
def evaluate_cmd(
    run: Path = typer.Argument(..., help="Run folder written by `edgetl train`."),
    unknown: Path = typer.Option(..., "--unknown", help="Folder of images of things the model must flag."),
    scorer: str = typer.Option(None, "--scorer", help="Default: the scorer saved by `openset fit`. "
                               + SCORER_HELP + " | all"),
    false_alarm: float = typer.Option(0.05, "--false-alarm", help="Target when a scorer is fitted here."),
    tflite: Path = typer.Option(None, "--tflite", help="Compute embeddings with this TFLite model."),
    device_model: bool = typer.Option(False, "--device-model", help="Use RUN/export/model.tflite when it exists."),
    k: int = typer.Option(1, "--k", help=K_HELP),
    bank_size: int = typer.Option(2000, "--bank-size", help=BANK_SIZE_HELP),
    shrinkage: float = typer.Option(0.1, "--shrinkage", help=SHRINKAGE_HELP),
    knn_space: str = typer.Option(DEFAULT_KNN_SPACE, "--knn-space", help=KNN_SPACE_HELP),
    background: str = typer.Option(DEFAULT_BACKGROUND, "--background", help=BACKGROUND_HELP),
    out: Path = typer.Option(None, "--out", help="Folder with openset.json and for the plots (default RUN/openset)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """AUROC, FPR@95%TPR and the false-alarm rate at the threshold; histogram + ROC plots."""
    from edgetl.openset import evaluate_run

    rows = evaluate_run(run, unknown, scorer, false_alarm, _tflite_default(run, tflite, device_model),
                        _options(k, bank_size, shrinkage, knn_space, background), out)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # paths and names are data, not rich markup (`unknown [v2]/`)
    t = Table("scorer", "AUROC", "FPR@95TPR", "threshold", "false alarms", "unknown flagged", "plot",
              title=f"known: {escape(str(rows[0]['known_split']))} split (n={rows[0]['n_known']}), "
                    f"unknown: {escape(str(unknown))} (n={rows[0]['n_unknown']})")
    for r in rows:
        t.add_row(escape(r["scorer"]), f"{r['auroc']:.3f}", f"{r['fpr95']:.3f}", f"{r['threshold']:.4g}",
                  f"{100 * r['false_alarm']:.1f}%", f"{100 * r['detection']:.1f}%", escape(str(r["plot"])))
    Console().print(t)


@openset_app.command("loco")
def loco_cmd(
    run: Path = typer.Argument(..., help="Run folder written by `edgetl train`."),
    scorer: list[str] = typer.Option(None, "--scorer", help="Scorers to compare (repeat); default all."),
    tflite: Path = typer.Option(None, "--tflite", help="Compute embeddings with this TFLite model."),
    k: int = typer.Option(1, "--k", help=K_HELP),
    bank_size: int = typer.Option(2000, "--bank-size", help=BANK_SIZE_HELP),
    shrinkage: float = typer.Option(0.1, "--shrinkage", help=SHRINKAGE_HELP),
    knn_space: str = typer.Option(DEFAULT_KNN_SPACE, "--knn-space", help=KNN_SPACE_HELP),
    background: str = typer.Option(DEFAULT_BACKGROUND, "--background", help=BACKGROUND_HELP),
    out: Path = typer.Option(None, "--out", help="Output folder (default RUN/openset)."),
) -> None:
    """Leave-one-class-out: each class in turn is the unknown (estimate without unknown data)."""
    from edgetl.openset import AUTO_CANDIDATES, loco_run

    options = _options(k, bank_size, shrinkage, knn_space, background)
    res = loco_run(run, scorer or AUTO_CANDIDATES, tflite, options, out)
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    scorers = res["scorers"]
    classes = list(next(iter(scorers.values()))["per_class"]) if scorers else []
    # class names are data, not rich markup (`cat [old]`)
    t = Table("scorer", "mean AUROC", "mean FPR@95", *map(escape, classes),
              title=f"leave-one-class-out ({escape(str(res['split']))} split)")
    for name, s in scorers.items():
        t.add_row(escape(name), f"{s['mean_auroc']:.3f}", f"{s['mean_fpr95']:.3f}",
                  *(f"{s['per_class'][c]:.2f}" for c in classes))
    Console().print(t)


def register(app: typer.Typer) -> None:
    """Attach this area's commands to the root app."""
    app.add_typer(openset_app, name="openset")
