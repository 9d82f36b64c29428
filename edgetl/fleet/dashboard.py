"""`edgetl fleet serve`: a local web page over the event store (stdlib http.server, no framework).

JSON API: `/api/devices`, `/api/events?device=&label=&unknown=&since=&limit=`, `/api/events/<id>`,
`/api/labels`; `/media/<path>` serves snapshots and clips from the `--media` folder (never
outside it). The page (`static/dashboard.html`) polls the API and renders devices, filters, recent
events, and an event's snapshot and clip link.

DNS rebinding: a web page can point its own name at 127.0.0.1 and read this API from the operator's browser,
but the request then carries that name in its Host header. Bound to a loopback address, the dashboard answers
only Host localhost / 127.x.x.x / [::1] (any port); bound to another address, also any IP literal (no DNS
involved) and its own --host name. `allowed_hosts` (`--allowed-host`) adds names, e.g. a reverse proxy's.
Anything else gets 421.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import mimetypes
import os
import shutil
import threading
import time
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from edgetl.errors import EdgetlError
from edgetl.fleet.store import EventStore, open_store, parse_time

log = logging.getLogger(__name__)

# Media files come from devices: shown inline only as images/video, never run as a page of the dashboard.
_INLINE_MEDIA = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "video/")


def media_url(media: Path | None, device_id: str, path: str | None) -> str | None:
    """URL of a device file copied under `media`: tried as given (relative), as <device>/<name>, as <name>."""
    if not media or not path:
        return None
    p = PurePosixPath(path.replace("\\", "/"))
    candidates = ([p] if not p.is_absolute() else []) + [PurePosixPath(device_id, p.name), PurePosixPath(p.name)]
    root = media.resolve()
    for rel in candidates:
        full = (root / rel).resolve()
        if full.is_file() and full.is_relative_to(root):
            return "/media/" + quote(rel.as_posix())
    return None


class Dashboard:
    def __init__(self, db: str | Path | EventStore, table_prefix: str = "", media: Path | None = None,
                 host: str = "127.0.0.1", port: int = 8000, silent_after: float = 30.0,
                 request_timeout: float = 30.0, allowed_hosts: Iterable[str] = ()) -> None:
        self.allowed_hosts = set()
        for name in allowed_hosts:
            parsed = host_name(name)
            if parsed is None:
                raise EdgetlError(f"--allowed-host {name!r} is not a host name; give the name the browser uses, "
                                  "e.g. --allowed-host fleet.example.lan (no scheme, path or user)")
            self.allowed_hosts.add(parsed)
        self.loopback = _is_loopback(host)
        if not self.loopback and host_name(host) is not None:
            self.allowed_hosts.add(host_name(host))  # --host mybox.lan: browsed as http://mybox.lan:PORT/
        self._refused: set[str] = set()
        self.store = db if isinstance(db, EventStore) else open_store(db, table_prefix)
        self._own_store = not isinstance(db, EventStore)
        self.media = media.resolve() if media else None
        self.silent_after = silent_after
        # timeout: a client that connects and sends nothing (or trickles) gives its thread back
        handler = type("Handler", (_Handler,), {"dashboard": self, "timeout": request_timeout})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise EdgetlError(f"cannot listen on {host}:{port} ({exc}); choose another --port") from exc
        self.httpd.daemon_threads = True
        if not self.loopback:
            log.warning("dashboard listens on %s: anyone who can reach it sees every device, event, snapshot and "
                        "clip (no login, plain HTTP); keep it on 127.0.0.1 or behind an authenticating proxy", host)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> Dashboard:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="dashboard", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(5)
        self.httpd.server_close()
        if self._own_store:
            self.store.close()

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def host_allowed(self, value: str | None) -> bool:
        """Whether a request with this Host header may be answered (see the module docstring)."""
        if value is None:  # every browser sends Host: a client without one is no rebinding page
            return True
        name = host_name(value)
        if name is None:
            return False
        if name == "localhost" or name in self.allowed_hosts:
            return True
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return False
        return ip.is_loopback or not self.loopback

    # -- API ------------------------------------------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        now = time.time()
        out = []
        for d in self.store.devices():
            d["silent"] = d["state"] not in ("offline", "stopped") and (
                d["last_seen"] is None or now - d["last_seen"] > self.silent_after)
            out.append(d)
        return out

    def events(self, query: dict[str, str]) -> list[dict[str, Any]]:
        unknown = {"1": True, "true": True, "0": False, "false": False}.get(query.get("unknown", ""))
        try:
            limit = min(int(query.get("limit", "200")), 5000)
        except ValueError as exc:
            raise EdgetlError("limit must be a number") from exc
        if limit < 0:  # SQL reads LIMIT -1 as "no limit"
            raise EdgetlError("limit must be 0 or more")
        rows = self.store.events(device=query.get("device") or None, label=query.get("label") or None,
                                 since=parse_time(query["since"]) if query.get("since") else None,
                                 unknown=unknown, limit=limit, newest_first=True)
        for r in rows:
            self._add_media(r)
        return rows

    def event(self, event_id: str) -> dict[str, Any] | None:
        e = self.store.event(event_id)
        if e is not None:
            self._add_media(e)
        return e

    def _add_media(self, e: dict[str, Any]) -> None:
        device, snapshot, clip = e.get("device_id"), e.get("snapshot_path"), e.get("clip_path")
        device = device if isinstance(device, str) else ""
        e["snapshot_url"] = media_url(self.media, device, snapshot) if isinstance(snapshot, str) else None
        e["clip_url"] = media_url(self.media, device, clip) if isinstance(clip, str) else None


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1 or not self.dashboard.host_allowed(hosts[0] if hosts else None):
            self._wrong_host(", ".join(hosts))
            return
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path
        try:
            if path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            elif path == "/api/devices":
                self._json(self.dashboard.devices())
            elif path == "/api/labels":
                self._json(self.dashboard.store.labels())
            elif path == "/api/events":
                self._json(self.dashboard.events(query))
            elif path.startswith("/api/events/"):
                event = self.dashboard.event(unquote(path.rsplit("/", 1)[-1]))
                if event is None:
                    self._json({"error": "no such event"}, HTTPStatus.NOT_FOUND)
                else:
                    self._json(event)
            elif path.startswith("/media/"):
                self._media(unquote(path[len("/media/"):]))
            else:
                self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
        except EdgetlError as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except Exception:
            log.exception("dashboard request %s failed", self.path)
            self._json({"error": "internal error, see the server log"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _media(self, rel: str) -> None:
        root = self.dashboard.media
        if root is None:
            self._json({"error": "no --media folder given"}, HTTPStatus.NOT_FOUND)
            return
        try:
            full = (root / rel).resolve()
            f = open(full, "rb") if full.is_relative_to(root) and full.is_file() else None  # noqa: SIM115
        except (OSError, ValueError):  # a NUL byte, a name too long: nothing by that name
            f = None
        if f is None:
            self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
            return
        with f:
            ctype = mimetypes.guess_type(full.name)[0] or "application/octet-stream"
            inline = ctype.startswith(_INLINE_MEDIA)
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", ctype if inline else "application/octet-stream")
            self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
            self.send_header("Cache-Control", "no-store")
            # a device wrote this file: never let it run script in the dashboard's origin
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", "sandbox; default-src 'none'; img-src 'self'; "
                                                        "media-src 'self'")
            if not inline:
                self.send_header("Content-Disposition", "attachment")
            self.end_headers()
            shutil.copyfileobj(f, self.wfile)

    def _wrong_host(self, value: str) -> None:
        shown = value[:100]
        refused = self.dashboard._refused
        if shown not in refused and len(refused) < 100:  # a rebinding page polls: warn once per name
            refused.add(shown)
            log.warning("dashboard: refused a request for Host %r (a web page using DNS rebinding, or a proxy "
                        "name missing from --allowed-host)", shown)
        text = (f"Host {shown!r} is not served here: open the dashboard as http://127.0.0.1:PORT/ or "
                "http://localhost:PORT/; behind a reverse proxy start `edgetl fleet serve` with --allowed-host NAME\n")
        self._send(HTTPStatus.MISDIRECTED_REQUEST, text.encode(), "text/plain; charset=utf-8")

    def _json(self, data: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("dashboard: " + fmt, *args)


def host_name(value: str) -> str | None:
    """The lower-case name or address in a Host header value ("name", "name:port", "[v6]:port"), brackets
    removed; None when it is anything else (a path, user info, spaces, a port that is not a number)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep:
            return None
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
    else:
        name, sep, port = value.partition(":")
        rest = sep + port
        if not name or not name.isascii() or not all(c.isalnum() or c in "-._" for c in name):
            return None
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and rest[1:].isascii()):
        return None
    return name


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


PAGE = (Path(__file__).parent / "static" / "dashboard.html").read_text(encoding="utf-8")
