"""`edgetl fleet serve`: a local web page over the event store (stdlib http.server, no framework).

JSON API: `/api/devices`, `/api/events?device=&label=&unknown=&since=&limit=`, `/api/events/<id>`,
`/api/labels`; `/media/<path>` serves snapshots and clips from the `--media` folder (never
outside it). The page (`static/dashboard.html`) polls the API and renders devices, filters, recent
events, and an event's snapshot and clip link.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from edgetl.errors import EdgetlError
from edgetl.fleet.store import EventStore, open_store, parse_time

log = logging.getLogger(__name__)


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
                 host: str = "127.0.0.1", port: int = 8000, silent_after: float = 30.0) -> None:
        self.store = db if isinstance(db, EventStore) else open_store(db, table_prefix)
        self._own_store = not isinstance(db, EventStore)
        self.media = media.resolve() if media else None
        self.silent_after = silent_after
        handler = type("Handler", (_Handler,), {"dashboard": self})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise EdgetlError(f"cannot listen on {host}:{port} ({exc}); choose another --port") from exc
        self.httpd.daemon_threads = True
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
        e["snapshot_url"] = media_url(self.media, e["device_id"], e.get("snapshot_path"))
        e["clip_url"] = media_url(self.media, e["device_id"], e.get("clip_path"))


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
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
        full = (root / rel).resolve()
        if not full.is_relative_to(root) or not full.is_file():
            self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
            return
        ctype = mimetypes.guess_type(full.name)[0] or "application/octet-stream"
        self._send(HTTPStatus.OK, full.read_bytes(), ctype)

    def _json(self, data: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("dashboard: " + fmt, *args)


PAGE = (Path(__file__).parent / "static" / "dashboard.html").read_text(encoding="utf-8")
