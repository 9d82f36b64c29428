"""`edgetl visualize` (feature maps, Grad-CAM, misclassified sheet) and `edgetl report` (report.html).

User errors (EdgetlError) become one line and exit 2 through `edgetl.cli._errors`."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from edgetl.errors import EdgetlError

log = logging.getLogger(__name__)


def _class_index(labels: list[str], chosen: str | None) -> int | None:
    if chosen is None:
        return None
    if chosen in labels:
        return labels.index(chosen)
    if chosen.isdigit() and int(chosen) < len(labels):
        return int(chosen)
    raise EdgetlError(f"unknown class {chosen!r}; the run's classes are: {', '.join(labels)}")


def visualize(
    targets: list[Path] = typer.Argument(..., metavar="[RUN] [IMAGE]",
                                         help="RUN IMAGE; IMAGE alone with --backbone; RUN alone with "
                                              "--misclassified."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the PNGs."),
    layers: list[str] = typer.Option(None, "--layers", "-l",
                                     help="Layer names (repeat or comma-separate); nested as "
                                          "'backbone/layer'. Default: one per block."),
    class_name: str = typer.Option(None, "--class", help="Grad-CAM for this class (default: predicted)."),
    gradcam_layer: str = typer.Option(None, "--gradcam-layer", help="Grad-CAM layer (default: last conv)."),
    misclassified: int = typer.Option(0, "--misclassified", help="Contact sheet of N misclassified val images."),
    backbone: str = typer.Option(None, "--backbone", help="Bare backbone instead of a run: vgg16, mobilenet, "
                                                          "mobilenet_v2, mobilenet_v3_small/large."),
    weights: Path = typer.Option(None, "--weights", help="Backbone weights file (no top); default random."),
    alpha: float = typer.Option(None, "--alpha", help="MobileNet width multiplier for --backbone."),
    size: int = typer.Option(224, "--size", help="Input size for --backbone."),
    max_channels: int = typer.Option(64, "--max-channels", help="Channels shown per layer."),
) -> None:
    """Feature maps layer by layer, Grad-CAM of the predicted (or --class) class, misclassified sheet."""
    from edgetl import visualize as viz

    if misclassified < 0:
        raise EdgetlError("--misclassified takes a count >= 0")
    if out.exists() and not out.is_dir():  # checked before loading a model: mkdir would say "File exists"
        raise EdgetlError(f"--out {out} is a file; give a folder for the PNGs")
    names = [n.strip() for item in (layers or []) for n in item.split(",") if n.strip()] or None
    if backbone:
        if len(targets) != 1:
            raise EdgetlError("with --backbone give only IMAGE (no RUN)")
        if class_name or misclassified:
            raise EdgetlError("--class/--misclassified need a run's classifier, not a bare backbone")
        model = viz.build_backbone(backbone, weights, size, alpha)
        image = viz.load_rgb(targets[0], size)
        written = viz.save_feature_maps(viz.feature_maps(model, image, names), image, out, max_channels)
    else:
        if misclassified and len(targets) == 1:
            run_path, image_path = targets[0], None
        elif len(targets) == 2:
            run_path, image_path = targets
        else:
            raise EdgetlError("give RUN IMAGE (or IMAGE with --backbone, or RUN with --misclassified N)")
        run = viz.open_run(run_path)
        model = run.load_model()
        written = []
        if image_path is not None:
            image = viz.load_rgb(image_path, run.size, run.center_crop)
            maps = viz.feature_maps(model, image, names)
            written += viz.save_feature_maps(maps, image, out, max_channels)
            cam = viz.grad_cam(model, image, _class_index(run.labels, class_name), gradcam_layer)
            written.append(viz.save_gradcam(image, cam, run.labels, out / "gradcam.png"))
            typer.echo(f"predicted {run.labels[int(cam.probabilities.argmax())]} "
                       f"(p={cam.probabilities.max():.2f}); Grad-CAM of {run.labels[cam.class_index]} "
                       f"at {cam.layer}")
        if misclassified:
            items, total = viz.find_misclassified(model, run, misclassified, progress=True)
            if items:
                written.append(viz.save_contact_sheet(items, out / "misclassified.png"))
            typer.echo(f"{total} misclassified validation images; showing {len(items)}")
    for p in written:
        typer.echo(str(p))


def report(
    run: Path = typer.Argument(..., help="Run folder."),
    out: Path = typer.Option(None, "--out", "-o", help="HTML file (default RUN/report.html)."),
    misclassified: int = typer.Option(12, "--misclassified", help="Misclassified examples to show."),
) -> None:
    """Self-contained report.html for a run (opens offline; images embedded)."""
    from edgetl.report import write_report

    typer.echo(str(write_report(run, out, misclassified=misclassified)))


def register(app: typer.Typer) -> None:
    """Attach this area's commands to the root app."""
    app.command("visualize")(visualize)
    app.command("report")(report)
