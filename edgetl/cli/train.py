"""`edgetl train` and `edgetl evaluate`: thin wrappers over edgetl.train / edgetl.evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from edgetl.train import TrainConfig

PATH_COLUMN = typer.Option("path", "--path-column", help="CSV column holding image paths.")
LABEL_COLUMN = typer.Option("label", "--label-column", help="CSV column holding class names.")
MISSING_LABEL = typer.Option(None, "--missing-label", help="Class for rows with an empty label cell (e.g. Empty).")
SPLIT_COLUMN = typer.Option(None, "--split-column", help="CSV column with train/val/test.")
_D = TrainConfig()  # defaults live in TrainConfig; the help shows them for options a --preset may fill


def _csv_options(path_column, label_column, missing_label, split_column) -> dict:
    return {"path_column": path_column, "label_column": label_column, "missing_label": missing_label,
            "split_column": split_column}


def _data_arg(data: Path | None, csv: Path | None) -> Path:
    if csv is not None:
        return csv
    if data is None:
        raise typer.BadParameter("give DATA (a folder or .csv) or --csv FILE")
    return data


def train_cmd(
    data: Path = typer.Argument(None, help="Class folders, a train/val(/test) folder, or a CSV manifest."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to write (new or empty)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run --out already holds (with its "
                                   "export/ and openset/, which belong to the old model)."),
    csv: Path = typer.Option(None, "--csv", help="CSV manifest (instead of DATA)."),
    path_column: str = PATH_COLUMN,
    label_column: str = LABEL_COLUMN,
    missing_label: str = MISSING_LABEL,
    split_column: str = SPLIT_COLUMN,
    val: Path = typer.Option(None, "--val", help="Separate validation data (folder or CSV, same columns)."),
    backbone: str = typer.Option("mobilenet_v2", help="mobilenet_v2|mobilenet_v1|mobilenet_v3_small|"
                                 "mobilenet_v3_large|vgg16"),
    alpha: float = typer.Option(None, help="Width multiplier (default 0.35 for mobilenet_v2, else 1.0)."),
    size: int = typer.Option(224, help="Input size in pixels (square)."),
    weights: str = typer.Option("imagenet", help="imagenet (Keras cache/download) | PATH to a weights file | none"),
    preset: str = typer.Option(None, help="photos | photos-large | fixed-camera: measured recipes (see "
                               "tools/bench_train.py) for the options below that you do not give."),
    epochs: int = typer.Option(None, help="Phase 1 epochs (head on the frozen backbone, augmented); "
                               "with cached embeddings the head is solved outright and any value > 0 runs it. "
                               f"\\[default: {_D.epochs}]"),
    fine_tune_epochs: int = typer.Option(None, help="Phase 2 epochs (top blocks unfrozen); 0 skips it. "
                                         f"\\[default: {_D.fine_tune_epochs}]"),
    fine_tune_blocks: int = typer.Option(None, help="How many top backbone blocks phase 2 unfreezes. "
                                         f"\\[default: {_D.fine_tune_blocks}]"),
    batch_size: int = typer.Option(32, help="Images per training step."),
    learning_rate: float = typer.Option(None, "--lr",
                                        help=f"Phase 1 learning rate. \\[default: {_D.learning_rate:g}]"),
    fine_tune_learning_rate: float = typer.Option(None, "--fine-tune-lr",
                                                  help="Phase 2 learning rate (cosine). "
                                                  f"\\[default: {_D.fine_tune_learning_rate:g}]"),
    fine_tune_guard: bool = typer.Option(True, "--fine-tune-guard/--no-fine-tune-guard",
                                         help="Revert phase 2 if validation got worse than after phase 1."),
    dropout: float = typer.Option(0.2, help="Dropout rate before the classifier layer."),
    embedding: str = typer.Option(None, help="gap (average of the final features) | multiscale (plus a max over "
                                  "the stride-16 features, standardised): small objects in a fixed camera's view. "
                                  f"\\[default: {_D.embedding}]"),
    center_crop: float = typer.Option(None, "--center-crop", help="Crop the centred square, this fraction of "
                                      "the shorter side, before resizing (aspect kept; photos); 0 = whole frame, "
                                      "squeezed (a fixed camera's edges matter). The bundle tells the device. "
                                      "\\[default: whole frame]"),
    label_smoothing: float = typer.Option(None, help="Label smoothing of the training loss (0 = off). "
                                          f"\\[default: {_D.label_smoothing:g}]"),
    class_weights: bool = typer.Option(True, "--class-weights/--no-class-weights",
                                       help="Weight the loss by inverse class frequency (imbalanced data)."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Flip, rotation, zoom, shift, "
                                 "brightness/contrast on the fly."),
    cache_embeddings: bool = typer.Option(None, "--cache-embeddings/--no-cache-embeddings",
                                          help="Phase 1 on embeddings computed once (and mirrored, when augmenting): a "
                                          "softmax regression, its L2 strength cross-validated on the training "
                                          "images (automatic with --no-augment)."),
    patience: int = typer.Option(None, help="Early stopping patience (val loss; best weights restored); 0 = off. "
                                 f"\\[default: {_D.patience}]"),
    val_split: float = typer.Option(0.2, help="Validation fraction when DATA has no val split."),
    seed: int = typer.Option(0, help="Random seed (split, initialisation, augmentation)."),
    strategy: str = typer.Option("default", help="default|mirrored|multiworker (tf.distribute)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write RUN/report.html at the end."),
) -> None:
    """Transfer-learn a classifier and write a run folder (model.keras, labels, metrics, plots, report)."""
    from edgetl.train import train

    # options left unset come from --preset, else from TrainConfig's defaults (one place)
    optional = dict(epochs=epochs, fine_tune_epochs=fine_tune_epochs, fine_tune_blocks=fine_tune_blocks,
                    learning_rate=learning_rate, fine_tune_learning_rate=fine_tune_learning_rate,
                    embedding=embedding, cache_embeddings=cache_embeddings, patience=patience,
                    center_crop=center_crop, label_smoothing=label_smoothing)
    result = train(
        _data_arg(data, csv), out, val_data=val, preset=preset, overwrite=overwrite,
        csv_options=_csv_options(path_column, label_column, missing_label, split_column),
        backbone=backbone, alpha=alpha, size=size, weights=weights, batch_size=batch_size, dropout=dropout,
        fine_tune_guard=fine_tune_guard, class_weights=class_weights,
        augment=augment, val_split=val_split, seed=seed, strategy=strategy,
        **{k: v for k, v in optional.items() if v is not None},
    )
    t = result.timings
    typer.echo(f"val_accuracy {result.val_accuracy:.4f}  ({t['total_s']:.0f} s: load {t['load_s']:.0f}, "
               f"phase 1 {t['phase1_s']:.0f}, phase 2 {t['phase2_s']:.0f})  -> {result.path}")
    if result.metrics.get("skipped"):
        typer.echo(f"skipped {len(result.metrics['skipped'])} unreadable image(s); see metrics.json", err=True)
    if report:
        from edgetl.report import write_report

        typer.echo(f"report: {write_report(result.path)}")


def evaluate_cmd(
    run: Path = typer.Argument(..., help="Run folder from `edgetl train`."),
    data: Path = typer.Option(None, "--data", help="Dataset (any layout); default: the run's val split."),
    split: str = typer.Option(None, "--split", help="Which split of DATA (or of the run) to use."),
    path_column: str = PATH_COLUMN,
    label_column: str = LABEL_COLUMN,
    missing_label: str = MISSING_LABEL,
    split_column: str = SPLIT_COLUMN,
    top_k: int = typer.Option(5, "--top-k", help="Also report top-K accuracy."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
    plot: Path = typer.Option(None, "--plot", help="Write a confusion-matrix PNG here (an existing folder: "
                              "FOLDER/confusion_matrix.png; missing folders are created)."),
) -> None:
    """Accuracy, top-k, per-class precision/recall/F1, confusion matrix and calibration (ECE)."""
    from edgetl.evaluate import evaluate

    report = evaluate(run, data, split=split, top_k=top_k, plot=plot,
                      csv_options=_csv_options(path_column, label_column, missing_label, split_column))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_report(report)


def _print_report(report: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # class names are folder names / CSV cells, not rich markup (`cat [old]`)
    console = Console()
    topk = next(k for k in report if k.startswith("top_") and k.endswith("_accuracy"))
    console.print(f"[bold]accuracy[/] {report['accuracy']:.4f}   {topk} {report[topk]:.4f}   "
                  f"macro F1 {report['macro_f1']:.4f}   ECE {report['ece']:.4f}   n={report['n']}")
    table = Table("class", "precision", "recall", "F1", "support")
    for name, m in report["per_class"].items():
        table.add_row(escape(name), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    console.print(table)
    cm = Table("true \\ predicted", *map(escape, report["labels"]), title="confusion matrix")
    for name, row in zip(report["labels"], report["confusion_matrix"], strict=True):
        cm.add_row(escape(name), *map(str, row))
    console.print(cm)
    if report.get("skipped"):
        console.print(f"[yellow]skipped {len(report['skipped'])} unreadable image(s)[/]")


def register(app: typer.Typer) -> None:
    """Attach `train` and `evaluate` to the root app."""
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
