"""`edgetl fleet`: watch devices, record their history, roll out models, serve a dashboard."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import typer

from edgetl.errors import EdgetlError

log = logging.getLogger(__name__)

fleet_app = typer.Typer(help="Fleet tools over MQTT: monitor, record, events, deploy, command, serve.",
                        no_args_is_help=True)

BROKER = typer.Option(os.environ.get("EDGETL_BROKER", "mqtt://127.0.0.1:1883"), "--broker",
                      help="mqtt://host:port or mqtts://host:port (env EDGETL_BROKER).")
CA = typer.Option(None, "--ca", help="CA certificate (PEM) that signed the broker's certificate.")
USERNAME = typer.Option(None, "--username", help="Broker user name.")
PASSWORD = typer.Option(None, "--password", help="Broker password (env EDGETL_BROKER_PASSWORD).",
                        envvar="EDGETL_BROKER_PASSWORD")
CERT = typer.Option(None, "--cert", help="Client certificate (PEM) when the broker requires one.")
KEY = typer.Option(None, "--key", help="Private key (PEM) of --cert.")
PREFIX = typer.Option("edgetl", "--prefix", help="Topic prefix: <prefix>/<device_id>/...")
DB = typer.Option("fleet.sqlite3", "--db", help="SQLite file (default) or postgresql://user@host/db.")
TABLE_PREFIX = typer.Option("", "--table-prefix", help="Prefix for the store's table names.")


def _broker(url: str, ca: Path | None, username: str | None, password: str | None, prefix: str,
            cert: Path | None = None, key: Path | None = None):
    from edgetl.fleet.mqtt import BrokerOptions
    from edgetl.fleet.topics import parse_broker_url

    parse_broker_url(url)  # fail early with a clear message
    return BrokerOptions(url=url, ca=ca, username=username, password=password, prefix=prefix, cert=cert, key=key)


@fleet_app.command()
def monitor(
    broker: str = BROKER, ca: Path | None = CA, username: str | None = USERNAME, password: str | None = PASSWORD,
    prefix: str = PREFIX, cert: Path | None = CERT, key: Path | None = KEY,
    interval: float = typer.Option(10.0, help="Telemetry interval assumed until a device's own is learnt (s)."),
    refresh: float = typer.Option(1.0, help="Seconds between table redraws."),
    duration: float | None = typer.Option(None, help="Stop after this many seconds (default: until Ctrl-C)."),
    once: bool = typer.Option(False, "--once", help="Listen for --duration (default 3 s), print one table, exit."),
    limit: int | None = typer.Option(None, help="Show at most this many devices (problems first)."),
) -> None:
    """Live table of devices: state, last seen, fps, inference ms, model, disk, outbox, events, seq gaps."""
    from rich.console import Console
    from rich.live import Live

    from edgetl.fleet.monitor import FleetState, listen, render_table
    from edgetl.fleet.mqtt import close

    opts = _broker(broker, ca, username, password, prefix, cert, key)
    state = FleetState(default_interval=interval)
    client = listen(opts, state)
    console = Console()
    try:
        if once:
            time.sleep(duration if duration is not None else 3.0)
            console.print(render_table(state, limit=limit))
            return
        end = time.monotonic() + duration if duration is not None else None
        if limit is None:  # fit the terminal; problem devices are sorted first so they stay visible
            limit = max(5, console.size.height - 9)
        with Live(render_table(state, limit=limit), console=console, refresh_per_second=4) as live:
            while end is None or time.monotonic() < end:
                time.sleep(refresh)
                live.update(render_table(state, limit=limit))
    except KeyboardInterrupt:
        pass
    finally:
        close(client)


@fleet_app.command()
def record(
    broker: str = BROKER, ca: Path | None = CA, username: str | None = USERNAME, password: str | None = PASSWORD,
    prefix: str = PREFIX, cert: Path | None = CERT, key: Path | None = KEY,
    db: str = DB, table_prefix: str = TABLE_PREFIX,
    client_id: str = typer.Option("edgetl-fleet-recorder", help="MQTT client id of the persistent session "
                                  "(the broker keeps events for it while the recorder is down)."),
    keep_telemetry: str | None = typer.Option(None, help="Drop telemetry older than this age (e.g. 7d); "
                                              "events and status changes are kept. Default: keep all."),
    duration: float | None = typer.Option(None, help="Stop after this many seconds (default: until Ctrl-C)."),
) -> None:
    """Store every event, status change, telemetry message and command result (idempotent by event id)."""
    from edgetl.fleet.recorder import Recorder
    from edgetl.fleet.store import open_store, parse_time

    opts = _broker(broker, ca, username, password, prefix, cert, key)
    keep = None
    if keep_telemetry:
        now = time.time()
        keep = now - parse_time(keep_telemetry, now)
        if keep <= 0:
            raise EdgetlError(f"--keep-telemetry {keep_telemetry!r}: give an age such as 12h or 7d")
    store = open_store(db, table_prefix)
    stop = threading.Event()
    try:
        with Recorder(store, opts, client_id=client_id, keep_telemetry=keep) as rec:
            typer.echo(f"recording {opts.url} ({prefix}/+/...) into {db}; Ctrl-C to stop", err=True)
            try:
                stop.wait(duration)
            except KeyboardInterrupt:
                pass
        t = rec.stats.totals
        typer.echo(f"stored {t.events_new} new events ({t.events_duplicate} duplicates), {t.status} status, "
                   f"{t.telemetry} telemetry, {t.cmd_results} command results; {t.rejected} rejected", err=True)
    finally:
        store.close()


@fleet_app.command()
def events(
    db: str = DB, table_prefix: str = TABLE_PREFIX,
    device: str | None = typer.Option(None, "--device", help="Only this device id."),
    since: str | None = typer.Option(None, help="From: ISO 8601, unix seconds, or an age like 15m, 2h, 7d."),
    until: str | None = typer.Option(None, help="Until (exclusive), same formats as --since."),
    label: str | None = typer.Option(None, "--class", help="Only this class label."),
    unknown: bool | None = typer.Option(None, "--unknown/--known", help="Only unknown (or only known) objects."),
    limit: int | None = typer.Option(1000, help="At most this many events (0: no limit)."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    plot: Path | None = typer.Option(None, "--plot", help="Also draw events over time by class (PNG)."),
) -> None:
    """Query stored events; export as CSV or JSON; plot them."""
    from edgetl.fleet.store import EVENT_COLUMNS, open_store, parse_time

    if fmt not in ("table", "csv", "json"):
        raise EdgetlError(f"--format {fmt!r}: choose table, csv or json")
    db_path = Path(db)
    if not db.startswith(("postgres://", "postgresql://")) and not db_path.exists():
        raise EdgetlError(f"no event store at {db}; start `edgetl fleet record --db {db}` first")
    with open_store(db, table_prefix) as store:
        rows = store.events(device=device, since=parse_time(since) if since else None,
                            until=parse_time(until) if until else None, label=label, unknown=unknown,
                            limit=limit or None)
    out = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout  # noqa: SIM115
    try:
        if fmt == "json":
            json.dump(rows, out, indent=1)
            out.write("\n")
        elif fmt == "csv":
            writer = csv.DictWriter(out, fieldnames=list(EVENT_COLUMNS))
            writer.writeheader()
            writer.writerows(rows)
        else:
            _print_events(rows, out)
    finally:
        if output:
            out.close()
    if output:
        typer.echo(f"wrote {len(rows)} events to {output}", err=True)
    if plot:
        from edgetl.fleet.plots import plot_events

        plot_events(rows, plot, title=device or "all devices")
        typer.echo(f"plot: {plot}", err=True)


def _print_events(rows: list[dict[str, Any]], out: Any) -> None:
    from datetime import datetime

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # ids, labels and paths come from the devices: data, not rich markup (`cat [old]`)
    table = Table(title=f"{len(rows)} events")
    for col in ("time", "device", "seq", "type", "class", "score", "unknown", "clip"):
        table.add_column(col)
    for r in rows:
        table.add_row(datetime.fromtimestamp(r["time"]).strftime("%Y-%m-%d %H:%M:%S") if r["time"] else "-",
                      escape(str(r["device_id"])), str(r["seq"]), escape(str(r["type"])), escape(str(r["label"])),
                      f"{r['score']:.2f}" if r["score"] is not None else "-",
                      "yes" if r["unknown"] else "", escape(r["clip_path"] or ""))
    Console(file=out).print(table)


def _print_results(results: list, title: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # ids, answers and error texts come from the devices: data, not rich markup (`[Errno 2] ... [v2]`)
    table = Table(title=escape(title))
    for col in ("device", "ok", "seconds", "result / error"):
        table.add_column(col)
    for r in results:
        detail = r.detail if isinstance(r.detail, str) else json.dumps(r.detail)
        table.add_row(escape(r.device_id), "[green]yes[/]" if r.ok else "[red]NO[/]", f"{r.seconds:.1f}",
                      escape(detail))
    Console().print(table)
    for r in results:  # in full, whatever the terminal width
        if not r.ok:
            typer.echo(f"FAILED {r.device_id}: {r.detail}", err=True)


@fleet_app.command()
def deploy(
    bundle: Path = typer.Argument(..., help="Signed bundle folder or .tar.gz (from `edgetl export`)."),
    devices: str | None = typer.Option(None, "--devices", help="Device ids, comma separated."),
    group: str | None = typer.Option(None, "--group", help="A device group from --groups."),
    groups: Path | None = typer.Option(None, "--groups", help="YAML `groups: {NAME: \\[ids]}` "
                                       "(default fleet-groups.yaml, env EDGETL_FLEET_GROUPS)."),
    canary: int = typer.Option(1, help="Devices updated first; the rollout halts if any of them fails."),
    batch: int | None = typer.Option(None, help="After the canary, update this many at a time (default: all)."),
    timeout: float = typer.Option(120.0, help="Seconds to wait for each wave's answers."),
    via: str = typer.Option("serve", help="serve: this host serves the bundle over HTTP; url: devices fetch "
                            "--url; path: devices read it from a shared path; mqtt: chunks through the broker."),
    url: str | None = typer.Option(None, help="The bundle's URL, with --via url."),
    http_host: str | None = typer.Option(None, help="Address devices reach this host on (--via serve)."),
    http_port: int = typer.Option(0, help="Port for --via serve (0: any free port)."),
    trusted_key: list[Path] = typer.Option([], "--trusted-key", help="Check the signature with this public "
                                           "key before sending (the devices check it again)."),
    broker: str = BROKER, ca: Path | None = CA, username: str | None = USERNAME, password: str | None = PASSWORD,
    prefix: str = PREFIX, cert: Path | None = CERT, key: Path | None = KEY,
) -> None:
    """Roll a signed bundle out through `cmd/update_model`: canary first, halt on failure."""
    from edgetl.fleet.deploy import bundle_archive, resolve_devices, staging_dir

    ids = resolve_devices(devices, group, groups)
    workdir = staging_dir()
    try:
        _deploy(bundle_archive(bundle, workdir), ids, canary, batch, timeout, via, url, http_host, http_port,
                trusted_key, _broker(broker, ca, username, password, prefix, cert, key))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _deploy(archive: Path, ids: list[str], canary: int, batch: int | None, timeout: float, via: str,
            url: str | None, http_host: str | None, http_port: int, trusted_key: list[Path], opts: Any) -> None:
    from edgetl.bundle import inspect_bundle
    from edgetl.fleet.deploy import BundleServer, CommandSession, rollout, update_args

    version = inspect_bundle(archive)["manifest"].get("model_version")  # what a lost answer is confirmed by
    if trusted_key:
        from edgetl.bundle import verify

        verify(archive, [str(k) for k in trusted_key])
    if via == "serve":
        server = BundleServer(archive, port=http_port, advertise=http_host)
        args = update_args(archive, "url", server.url)
    else:
        server = None
        args = update_args(archive, via, url)

    def on_wave(i: int, results: list) -> None:
        _print_results(results, f"wave {i + 1}" + (" (canary)" if i == 0 and canary else ""))

    with CommandSession(opts) as session:
        if server is not None:
            with server:
                report = rollout(session, ids, args, canary=canary, batch=batch, timeout=timeout, on_wave=on_wave,
                                 version=version)
        else:
            report = rollout(session, ids, args, canary=canary, batch=batch, timeout=timeout, on_wave=on_wave,
                             version=version)
    updated = sum(r.ok for w in report.waves for r in w)
    if report.halted:
        failed = [f"{r.device_id} ({r.detail if isinstance(r.detail, str) else json.dumps(r.detail)})"
                  for w in report.waves for r in w if not r.ok]
        typer.echo(f"rollout HALTED: {updated} updated, {len(failed)} failed: {'; '.join(failed)}; "
                   f"{len(report.not_attempted)} not attempted ({', '.join(report.not_attempted) or 'none'})",
                   err=True)
        raise typer.Exit(1)
    typer.echo(f"rollout complete: {updated}/{len(ids)} devices updated", err=True)


@fleet_app.command()
def command(
    name: str = typer.Argument(..., help="ping, set_threshold, snapshot, record, reload_config or update_model."),
    devices: str | None = typer.Option(None, "--devices", help="Device ids, comma separated."),
    group: str | None = typer.Option(None, "--group", help="A device group from --groups."),
    groups: Path | None = typer.Option(None, "--groups", help="YAML `groups: {NAME: \\[ids]}`."),
    arg: list[str] = typer.Option([], "--arg", help="Command argument KEY=VALUE (VALUE parsed as JSON if it "
                                  "can be), repeatable, e.g. --arg value=0.7."),
    timeout: float = typer.Option(30.0, help="Seconds to wait for the answers."),
    broker: str = BROKER, ca: Path | None = CA, username: str | None = USERNAME, password: str | None = PASSWORD,
    prefix: str = PREFIX, cert: Path | None = CERT, key: Path | None = KEY,
) -> None:
    """Send a command to devices and print each answer (exit 1 if any failed or stayed silent)."""
    from edgetl.fleet.deploy import CommandSession, resolve_devices

    ids = resolve_devices(devices, group, groups)
    args = parse_args(arg)
    with CommandSession(_broker(broker, ca, username, password, prefix, cert, key)) as session:
        results = session.run(ids, name, args, timeout)
    _print_results(results, f"{name} on {len(ids)} device(s)")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def parse_args(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise EdgetlError(f"--arg {pair!r}: write KEY=VALUE, e.g. --arg value=0.7")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@fleet_app.command()
def serve(
    db: str = DB, table_prefix: str = TABLE_PREFIX,
    host: str = typer.Option("127.0.0.1", help="Address to listen on. 0.0.0.0 opens it to the whole network "
                             "with no login: only on a trusted network or behind an authenticating proxy."),
    port: int = typer.Option(8000, help="Port to listen on."),
    media: Path | None = typer.Option(None, help="Folder holding the devices' snapshots and clips "
                                      "(event paths are looked up under it)."),
    silent_after: float = typer.Option(30.0, help="Flag an online device as silent after this many seconds "
                                       "without a message (3 telemetry intervals)."),
    allowed_host: list[str] = typer.Option([], "--allowed-host", help="Also answer requests for this host name "
                                           "(repeat), e.g. a reverse proxy's. Others than localhost, 127.0.0.1, "
                                           "[::1] (and IP addresses and --host when not on loopback) get 421: "
                                           "no web page can read the dashboard through DNS rebinding."),
) -> None:
    """Local web dashboard over the event store: devices, recent events, snapshots, clip links."""
    from edgetl.fleet.dashboard import Dashboard

    if not db.startswith(("postgres://", "postgresql://")) and not Path(db).exists():
        raise EdgetlError(f"no event store at {db}; start `edgetl fleet record --db {db}` first")
    if media is not None and not media.is_dir():
        raise EdgetlError(f"--media {media} is not a folder")
    dash = Dashboard(db, table_prefix=table_prefix, media=media, host=host, port=port, silent_after=silent_after,
                     allowed_hosts=allowed_host)
    typer.echo(f"dashboard on {dash.url} (Ctrl-C to stop)", err=True)
    try:
        dash.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        dash.close()


def register(app: typer.Typer) -> None:
    """Attach this area's commands to the root app."""
    app.add_typer(fleet_app, name="fleet")
