"""`edgetl data check|split|from-video`: dataset inspection and preparation (wraps edgetl.data)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from edgetl.cli.train import LABEL_COLUMN, MISSING_LABEL, PATH_COLUMN, SPLIT_COLUMN, _csv_options, _data_arg

data_app = typer.Typer(help="Check, split and build datasets.", no_args_is_help=True)


@data_app.command("check")
def check_cmd(
    data: Path = typer.Argument(None, help="Class folders, a train/val(/test) folder, or a CSV manifest."),
    csv: Path = typer.Option(None, "--csv", help="CSV manifest (instead of DATA)."),
    path_column: str = PATH_COLUMN,
    label_column: str = LABEL_COLUMN,
    missing_label: str = MISSING_LABEL,
    split_column: str = SPLIT_COLUMN,
    near_distance: int = typer.Option(4, help="Perceptual-hash distance (0-64) counted as a near duplicate."),
    tiny_class: int = typer.Option(10, help="Warn about classes with fewer images than this."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when images are unreadable/corrupt or "
                                "duplicates leak across train/val/test (the report is printed either way)."),
) -> None:
    """Classes, counts, sizes, corrupt files, duplicates/leakage, imbalance (a report: exit 0 unless --strict)."""
    from edgetl.data import check_dataset

    report = check_dataset(_data_arg(data, csv), near_distance=near_distance, tiny_class=tiny_class,
                           csv_options=_csv_options(path_column, label_column, missing_label, split_column))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_check(report)
    if strict and (report["unreadable"] or any(d["cross_split"] for d in report["duplicates"])):
        raise typer.Exit(1)


def _print_check(r: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # paths, class names and messages are data: `IMG [copy].png` must not be read as rich markup
    console = Console()
    splits = list(r["counts"])
    t = Table("class", *splits, "total",
              title=f"{escape(str(r['data']))}: {r['total']} images, {r['readable']} readable")
    for c in r["classes"]:
        per = [r["counts"][s].get(c, 0) for s in splits]
        t.add_row(escape(c), *map(str, per), str(sum(per)))
    console.print(t)
    if r["sizes"]:
        w, h = r["sizes"]["width"], r["sizes"]["height"]
        console.print(f"sizes: width {w['min']}-{w['max']} (median {w['median']}), height {h['min']}-{h['max']} "
                      f"(median {h['median']}); modes {r['sizes']['modes']}")
        d = r["sizes"]["detail"]
        console.print(f"detail: about {d['median_px']} px (median; {d['median_ratio']:.2f} of the stored size); "
                      f"{d['upscaled']} image(s) enlarged 2x or more")
    for b in r["unreadable"][:20]:
        console.print(f"[red]unreadable[/] {escape(b['error'])}", markup=True, highlight=False)
    for d in r["duplicates"][:20]:
        flag = "[red]LEAK[/] " if d["cross_split"] else ""
        console.print(f"{flag}{d['kind']} duplicate (distance {d['distance']}, {'/'.join(d['splits'])}): "
                      f"{escape(' = '.join(d['paths']))}", highlight=False)
    if len(r["duplicates"]) > 20:
        console.print(f"... {len(r['duplicates']) - 20} more duplicate groups (see --json)")
    for w_ in r["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(w_)}", highlight=False)
    if not r["warnings"]:
        console.print("[green]no problems found[/]")


@data_app.command("split")
def split_cmd(
    data: Path = typer.Argument(None, help="Class folders, split folders, or a CSV manifest."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest CSV to write (path,label,split)."),
    csv: Path = typer.Option(None, "--csv", help="CSV manifest (instead of DATA)."),
    path_column: str = PATH_COLUMN,
    label_column: str = LABEL_COLUMN,
    missing_label: str = MISSING_LABEL,
    split_column: str = SPLIT_COLUMN,
    val: float = typer.Option(0.2, "--val", help="Validation fraction."),
    test: float = typer.Option(0.1, "--test", help="Test fraction (0 = no test split)."),
    seed: int = typer.Option(0, help="Random seed for the split."),
) -> None:
    """Stratified, seeded train/val/test split written as a manifest (no files copied)."""
    from edgetl.data import split_manifest

    counts = split_manifest(_data_arg(data, csv), out, val=val, test=test, seed=seed,
                            csv_options=_csv_options(path_column, label_column, missing_label, split_column))
    summary = ", ".join(f"{s} {sum(c.values())}" for s, c in counts.items())
    typer.echo(f"wrote {out}: {summary}")


@data_app.command("from-video")
def from_video_cmd(
    video: Path = typer.Argument(..., help="Video file (anything OpenCV reads)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder; frames go to OUT/<class>/."),
    label: str = typer.Option(..., "--class", help="Class folder name for the frames."),
    every: int = typer.Option(None, "--every", help="Keep every N-th frame."),
    scene_threshold: float = typer.Option(None, "--scene-threshold",
                                          help="Keep a frame when it differs from the last kept one by more "
                                          "than T (mean grey-level difference, 0-255; try 10-30)."),
    max_frames: int = typer.Option(None, "--max-frames", help="Stop after writing this many frames."),
    size: int = typer.Option(None, "--max-side", help="Downscale so the longer side is at most this."),
) -> None:
    """Extract frames (every N, or on scene change) into a class folder."""
    from edgetl.data import frames_from_video

    paths = frames_from_video(video, out, label, every=every, scene_threshold=scene_threshold,
                              max_frames=max_frames, size=size)
    typer.echo(f"wrote {len(paths)} frames to {Path(out) / label}")


def register(app: typer.Typer) -> None:
    """Attach the `data` group to the root app."""
    app.add_typer(data_app, name="data")
