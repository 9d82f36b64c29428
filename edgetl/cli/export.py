"""`edgetl export`, `edgetl bench`, and the `calibrate`, `keys`, `bundle`, `edgetpu` groups."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from edgetl.cli._errors import one_line
from edgetl.errors import EdgetlError

calibrate_app = typer.Typer(help="Representative image sets for int8 calibration.", no_args_is_help=True)
keys_app = typer.Typer(help="Ed25519 signing keys for model bundles.", no_args_is_help=True)
bundle_app = typer.Typer(help="Sign, verify, inspect and pack model bundles.", no_args_is_help=True)
edgetpu_app = typer.Typer(help="Edge TPU readiness of .tflite models.", no_args_is_help=True)


def _table(title: str, rows: list[tuple[str, object]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # titles and values are data (paths, class names, versions): `runs [v2]` must not be read as rich markup
    t = Table(title=escape(title), show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    for k, v in rows:
        t.add_row(k, escape(str(v)))
    Console().print(t)


def export(
    run: Path = typer.Argument(..., help="Run folder written by `edgetl train`."),
    out: Path = typer.Option(None, "--out", help="Bundle directory (default RUN/export)."),
    quant: str = typer.Option("int8", "--quant", help="int8 | float16 | dynamic | float32"),
    io: str = typer.Option(None, "--io", help="uint8 | int8 | float32 (default uint8 for int8, else float32)"),
    calibration: Path = typer.Option(None, "--calibration", help="Calibration set (`edgetl calibrate build`)."),
    calibration_size: int = typer.Option(300, "--calibration-size", help="Images picked from the run's train "
                                         "split when no --calibration is given."),
    edgetpu: bool = typer.Option(False, "--edgetpu", help="Check Edge TPU compatibility; compile when "
                                 "edgetpu_compiler is on PATH."),
    allow_cpu_ops: bool = typer.Option(False, "--allow-cpu-ops", help="Accept ops falling back to the CPU."),
    max_drop: float = typer.Option(1.0, "--max-drop", help="Largest accepted accuracy drop, in points; "
                                   "beyond it export exits 3 and leaves the bundle unsigned."),
    key: Path = typer.Option(None, "--key", help="Private key: sign the bundle right away."),
    version: str = typer.Option(None, "--version", help="Model version (default RUNNAME-TIMESTAMP)."),
    threads: int = typer.Option(None, "--threads", help="Interpreter threads for the parity check."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export in --out."),
    bias_correction: bool = typer.Option(True, "--bias-correction/--no-bias-correction",
                                         help="int8: subtract each conv's mean weight-rounding error from its "
                                              "bias, measured on the calibration images (closer to float)."),
) -> None:
    """Quantize a trained run to TFLite, check parity with the float model, write the bundle."""
    from edgetl.export import ParityError, export_run

    try:
        res = export_run(run, out, quant=quant, io=io, calibration=calibration, calibration_size=calibration_size,
                         edgetpu=edgetpu, allow_cpu_ops=allow_cpu_ops, max_drop=max_drop, key=key,
                         model_version=version, num_threads=threads, overwrite=overwrite,
                         bias_correction=bias_correction)
    except ParityError as exc:
        typer.echo(f"error: {one_line(exc)}", err=True)
        raise typer.Exit(3) from exc
    p, s, m = res.parity, res.summary, res.manifest
    _table(f"export {m['model_version']}", [
        ("bundle", res.out_dir), ("quantization", f"{m['quantization']['mode']} (io {m['quantization']['io']})"),
        ("size", f"{s['size_bytes'] / 1e6:.2f} MB"), ("conversion", f"{s['conversion_s']:.1f} s"),
        ("float accuracy", f"{p['float_accuracy']:.4f}"), ("tflite accuracy", f"{p['tflite_accuracy']:.4f}"),
        ("drop", f"{p['drop_points']:.2f} points (max {p['max_drop_points']})"),
        ("embedding cosine", f"{p['embedding_cosine_mean']:.4f}"),
        ("input quantization", m["input"]["quantization"]),
        ("ops", ", ".join(f"{k}x{v}" for k, v in s["op_counts"].items())),
        ("edgetpu", "-" if not m.get("edgetpu") else
         ("compiled" if m["edgetpu"]["compiled"] else
          ("compatible" if m["edgetpu"]["static"]["compatible"] else "NOT compatible"))),
        ("signed", (res.out_dir / "manifest.sig").is_file()),
    ])


def bench(
    model: Path = typer.Argument(..., help="A .tflite file or a bundle directory."),
    threads: int = typer.Option(None, "--threads", help="Interpreter threads (default: all cores)."),
    runs: int = typer.Option(100, "--runs", help="Timed invokes."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed invokes first."),
    delegate: str = typer.Option("auto", "--delegate", help="auto | none | edgetpu"),
    edgetpu: bool = typer.Option(False, "--edgetpu", help="Benchmark the bundle's model_edgetpu.tflite."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Invoke latency (p50/p90/p99), size and peak RSS through the device's interpreter loader."""
    from edgetl.bench import bench as run_bench

    if delegate not in ("auto", "none", "edgetpu"):
        raise EdgetlError(f"--delegate {delegate!r} is not one of auto, none, edgetpu")
    res = run_bench(model, threads=threads, runs=runs, warmup=warmup, delegate=delegate, edgetpu=edgetpu)
    if as_json:
        typer.echo(json.dumps(res))
        return
    _table(f"bench {Path(res['model']).name}", [(k, v) for k, v in res.items() if k != "model"])


@calibrate_app.command("build")
def calibrate_build(
    data: Path = typer.Argument(..., help="Dataset (class folders or CSV) or a run folder (its train split)."),
    out: Path = typer.Option(..., "--out", help="e.g. calibration/NAME"),
    size: int = typer.Option(300, "--size", help="Number of images."),
    extra: Path = typer.Option(None, "--extra", help="Frames (images/videos) captured by the target camera."),
    extra_fraction: float = typer.Option(0.3, "--extra-fraction", help="Share of the set taken from --extra."),
    seed: int = typer.Option(0, "--seed", help="Random seed for the pick."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing set in --out."),
) -> None:
    """Pick a stratified, de-duplicated calibration set (with a manifest)."""
    from edgetl.calibrate import build

    m = build(data, out, size=size, extra=extra, extra_fraction=extra_fraction, seed=seed, overwrite=overwrite)
    typer.echo(f"{out}: {m['count']} images {m['per_label']} ({m['duplicates_skipped']} near-duplicates skipped)")


@keys_app.command("generate")
def keys_generate(
    name: Path = typer.Argument(..., help="Writes NAME.key (private, keep secret) and NAME.pub (for devices)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing NAME.key / NAME.pub."),
) -> None:
    """Generate an Ed25519 signing key pair."""
    from edgetl.bundle import generate_keys
    from edgetl_device.bundle import key_id, load_public_key

    priv, pub = generate_keys(name, overwrite=overwrite)
    typer.echo(f"private key {priv} (keep it secret), public key {pub}, key id {key_id(load_public_key(pub))}")


@bundle_app.command("sign")
def bundle_sign(
    bundle_dir: Path = typer.Argument(..., help="Bundle directory."),
    key: Path = typer.Option(..., "--key", help="Private key from `edgetl keys generate`."),
    refresh: bool = typer.Option(False, "--refresh", help="Re-hash files first (after adding/changing files)."),
) -> None:
    """Sign manifest.json (Ed25519) into manifest.sig."""
    from edgetl.bundle import sign_bundle

    typer.echo(f"signed: {sign_bundle(bundle_dir, key, refresh=refresh)}")


@bundle_app.command("verify")
def bundle_verify(
    path: Path = typer.Argument(..., help="Bundle directory or .tar.gz."),
    trusted_key: list[Path] = typer.Option(..., "--trusted-key", help="Trusted public key(s) or a folder of .pub."),
    extract_to: Path = typer.Option(None, "--extract-to", help="Also unpack a verified archive here."),
) -> None:
    """Verify hashes, signature, schema and archive safety with the device's own code; exit 2 if any fails."""
    from edgetl.bundle import verify

    b = verify(path, trusted_key, extract_to=extract_to)
    typer.echo(f"OK {path}: model {b.model_version}, {len(b.labels)} classes, signed by key {b.signed_by}")


@bundle_app.command("inspect")
def bundle_inspect(
    path: Path = typer.Argument(..., help="Bundle directory or .tar.gz."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show a bundle's manifest (no signature check; use `verify` for that)."""
    from edgetl.bundle import inspect_bundle

    info = inspect_bundle(path)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    m = info["manifest"]
    inp = m.get("input", {})
    _table(f"bundle {path}", [
        ("model version", m.get("model_version")), ("schema", m.get("schema_version")),
        ("created", m.get("created")), ("backbone", m.get("backbone")),
        ("input", f"{inp.get('size')} {inp.get('channels')} {inp.get('dtype')} q={inp.get('quantization')}"),
        ("outputs", ", ".join(f"{o['name']}#{o['index']}{o['shape']}" for o in m.get("outputs", []))),
        ("classes", ", ".join(m.get("classes", []))),
        ("quantization", m.get("quantization", {}).get("mode")),
        ("parity", m.get("parity")), ("unknown detector", m.get("unknown")),
        ("files", ", ".join(f"{k} ({v['size']} B)" for k, v in m.get("files", {}).items())),
        ("signed", f"{info['signed']} (key {info.get('key_id')})"),
        ("stale files", ", ".join(info["stale_files"]) or "none"),
    ])


@bundle_app.command("pack")
def bundle_pack(
    bundle_dir: Path = typer.Argument(..., help="Bundle directory."),
    out: Path = typer.Option(..., "--out", help="X.tar.gz"),
) -> None:
    """Pack a bundle directory into a reproducible .tar.gz for deployment."""
    from edgetl.bundle import pack_bundle

    typer.echo(f"packed: {pack_bundle(bundle_dir, out)}")


@edgetpu_app.command("check")
def edgetpu_check(
    model: Path = typer.Argument(..., help="A .tflite file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when the model is not fully compatible."),
) -> None:
    """Static op-by-op Edge TPU compatibility check (recognises already compiled models)."""
    from edgetl.edgetpu import check_edgetpu, format_report

    report = check_edgetpu(model)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))
    if strict and not report.compatible:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach this area's commands to the root app."""
    app.command("export")(export)
    app.command("bench")(bench)
    app.add_typer(calibrate_app, name="calibrate")
    app.add_typer(keys_app, name="keys")
    app.add_typer(bundle_app, name="bundle")
    app.add_typer(edgetpu_app, name="edgetpu")
