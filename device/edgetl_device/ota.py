"""Over-the-air model updates: fetch, verify, stage, swap atomically, health-check, roll back.

Layout under the bundles folder (e.g. `<data_dir>/bundles`):

    current  -> b-20261128T120000-1a2b3c   (symlink; point model.bundle here to survive restarts)
    previous -> b-20261127T090000-9f8e7d   (kept for rollback)
    b-.../   verified bundles (the newest `keep` are kept)
    .incoming/  downloads and MQTT chunks in progress

An update is refused before anything changes when the archive's sha256 does not match,
the signature is not from a trusted key, or any file was tampered with
(`edgetl_device.bundle`). After the `current` link is swapped, the new model must load and
invoke on a frame, and the runtime must accept it (`CommandTarget.swap_model`); any failure
points `current` back at the previous bundle and the running model keeps running.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shutil
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgetl_device.bundle import Bundle, extract_bundle, open_bundle, sha256_file
from edgetl_device.errors import DeviceError
from edgetl_device.events import SCHEMA_VERSION
from edgetl_device.interpreter import load_interpreter

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
STALE_TRANSFER_S = 3600.0  # an unfinished chunked transfer is dropped after an hour of silence


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follow http(s) redirects only (urllib would also follow one to ftp://)."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        scheme = urllib.parse.urlparse(urllib.parse.urljoin(req.full_url, newurl)).scheme.lower()
        if scheme not in ("http", "https"):
            raise DeviceError(f"update_model: {req.full_url} redirects to a {scheme or 'schemeless'}:// URL; "
                              "only http(s) redirects are followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def forget_interrupted_downloads(bundles_dir: str | os.PathLike[str]) -> None:
    """At start: remove http(s) downloads (`<bundles>/.incoming/<uuid>.tar.gz`) a crash or power loss cut off.
    Chunked transfers (folders) are kept, so their sender can finish them."""
    incoming = Path(bundles_dir) / ".incoming"
    if not incoming.is_dir():
        return
    for path in incoming.glob("*.tar.gz"):
        try:
            if path.is_file() and not path.is_symlink():
                path.unlink()
                log.info("removed interrupted model download %s", path.name)
        except OSError as exc:
            log.warning("cannot remove interrupted model download %s: %s", path, exc)


def chunk_commands(archive: str | os.PathLike[str], chunk_bytes: int = CHUNK_BYTES,
                   transfer_id: str | None = None) -> Iterator[dict[str, Any]]:
    """`update_model` command payloads that send `archive` over MQTT in pieces (host/fleet side)."""
    archive = Path(archive)
    data = archive.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    transfer_id = transfer_id or uuid.uuid4().hex[:16]
    count = max(1, -(-len(data) // chunk_bytes))
    for i in range(count):
        piece = data[i * chunk_bytes:(i + 1) * chunk_bytes]
        yield {"schema": SCHEMA_VERSION, "request_id": f"{transfer_id}-{i}", "sha256": digest,
               "chunk": {"transfer_id": transfer_id, "index": i, "count": count,
                         "data": base64.b64encode(piece).decode("ascii")}}


def health_check(model_path: Path, frame: np.ndarray | None = None) -> dict[str, Any]:
    """Load the model and invoke it once on `frame` (or a mid-grey image); DeviceError if anything fails."""
    try:
        interpreter = load_interpreter(model_path, num_threads=1, delegate="none")
    except DeviceError as exc:
        raise DeviceError(f"health check failed: {exc}") from exc
    inp = interpreter.get_input_details()[0]
    shape = tuple(int(s) for s in inp["shape"])
    if frame is None:
        data = np.full(shape, 128, dtype=np.uint8)
    else:
        import cv2  # device dependency; only needed to fit a real frame to the input size

        data = cv2.resize(frame, (shape[2], shape[1]), interpolation=cv2.INTER_AREA)[None]
    dtype = np.dtype(inp["dtype"])
    if dtype.kind == "f":
        data = data.astype(dtype)
    elif dtype != np.uint8:
        data = (data.astype(np.int16) - 128).astype(dtype)
    started = time.perf_counter()
    try:
        interpreter.set_tensor(inp["index"], data.reshape(shape))
        interpreter.invoke()
        outputs = [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]
    except (RuntimeError, ValueError) as exc:
        raise DeviceError(f"health check failed: {model_path.name} does not run ({exc})") from exc
    for out in outputs:
        if out.dtype.kind == "f" and not np.all(np.isfinite(out)):
            raise DeviceError(f"health check failed: {model_path.name} outputs NaN/inf")
    return {"invoke_ms": round((time.perf_counter() - started) * 1000, 2),
            "outputs": [list(o.shape) for o in outputs]}


class ModelUpdater:
    """Applies `update_model` commands for one device (one update at a time)."""

    def __init__(self, bundles_dir: str | os.PathLike[str], trusted_keys: Sequence[Any],
                 keep: int = 3, max_bytes: int = 500 * 2**20, http_timeout: float = 60.0,
                 allow_unsigned: bool = False, frame_source: Any = None, download_timeout: float = 1800.0,
                 max_transfers: int = 2) -> None:
        self.dir = Path(bundles_dir)
        self.trusted_keys = list(trusted_keys)
        self.keep = max(2, keep)
        self.max_bytes = max_bytes
        self.http_timeout = http_timeout  # per connect/read; download_timeout bounds the whole download
        self.download_timeout = download_timeout
        self.max_transfers = max(1, max_transfers)  # unfinished chunked transfers kept on disk at once
        self.allow_unsigned = allow_unsigned
        self.frame_source = frame_source  # callable -> BGR frame for the health check, or None
        self.incoming = self.dir / ".incoming"
        self._lock = threading.Lock()
        forget_interrupted_downloads(self.dir)

    @property
    def current(self) -> Path | None:
        link = self.dir / "current"
        return link.resolve() if link.is_symlink() else None

    @property
    def previous(self) -> Path | None:
        link = self.dir / "previous"
        return link.resolve() if link.is_symlink() else None

    # -- entry point from commands.dispatch ---------------------------------------------------
    def handle(self, cmd: Any, target: Any) -> dict[str, Any]:
        if not self.trusted_keys and not self.allow_unsigned:
            raise DeviceError("update_model refused: no trusted_keys in the device config to verify bundles with")
        if cmd.chunk is not None:
            archive = self._receive_chunk(cmd.chunk, cmd.sha256)
            if archive is None:
                return {"received": cmd.chunk.index, "count": cmd.chunk.count, "applied": False}
            try:
                return self.apply(archive, target, expected_sha256=cmd.sha256,
                                  sent=f"transfer {cmd.chunk.transfer_id}")
            finally:
                shutil.rmtree(archive.parent, ignore_errors=True)
        if cmd.url is not None:
            return self.apply_url(cmd.url, target, cmd.sha256)
        return self.apply(Path(cmd.path), target, expected_sha256=cmd.sha256)

    def apply_url(self, url: str, target: Any, expected_sha256: str | None = None) -> dict[str, Any]:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme == "file":
            return self.apply(Path(urllib.request.url2pathname(parsed.path)), target, expected_sha256, sent=url)
        if parsed.scheme not in ("http", "https"):
            raise DeviceError(f"update_model url scheme {parsed.scheme!r} is not supported; use file://, http(s)://")
        archive = self._download(url)
        try:
            return self.apply(archive, target, expected_sha256, sent=url)
        finally:
            archive.unlink(missing_ok=True)

    def apply(self, source: Path, target: Any, expected_sha256: str | None = None,
              sent: str | None = None) -> dict[str, Any]:
        """Verify and stage `source` (bundle dir or .tar.gz), swap it in, health-check, roll back on failure.
        Errors name `sent` (what the operator sent: a URL, a chunked transfer; default `source`)."""
        with self._lock:
            staged, bundle = self._stage(Path(source), expected_sha256, sent or str(source))
            old = self.current
            self._point("current", staged)
            try:
                frame = self.frame_source() if self.frame_source else None
                check = health_check(bundle.model_path, frame)
                target.swap_model(staged)
            except Exception as exc:
                self._rollback(old, staged)
                reason = str(exc) if isinstance(exc, DeviceError) else f"{type(exc).__name__}: {exc}"
                raise DeviceError(f"update to {bundle.model_version} rolled back to "
                                  f"{old.name if old else 'the running model'}: {reason}") from exc
            if old is not None and old != staged:
                self._point("previous", old)
            self._prune()
            log.info("model updated to %s (%s)", bundle.model_version, staged.name)
            return {"applied": True, "model_version": bundle.model_version, "bundle": str(staged),
                    "previous": str(old) if old else None, "signed_by": bundle.signed_by, "health": check}

    # -- steps --------------------------------------------------------------------------------
    def _stage(self, source: Path, expected_sha256: str | None, sent: str) -> tuple[Path, Bundle]:
        if not source.exists():
            raise DeviceError(f"update_model: {sent} not found on the device")
        self.dir.mkdir(parents=True, exist_ok=True)
        dest = self.dir / f"b-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        if source.is_file():
            if source.stat().st_size > self.max_bytes:
                raise DeviceError(f"update_model: {sent} is over the {self.max_bytes >> 20} MiB limit")
            if expected_sha256 and sha256_file(source) != expected_sha256.lower():
                raise DeviceError("update_model refused: the archive's sha256 does not match; re-send it")
            try:
                return dest, extract_bundle(source, dest, self.trusted_keys, self.allow_unsigned)
            except DeviceError as exc:  # it names the staging folder or the downloaded copy: name what was sent
                staging = re.escape(f"{dest.parent}{os.sep}.{dest.name}.") + r"\S*?\.partial(?:/[^\s:]*)?"
                internal = f"{staging}|{re.escape(str(source))}"
                raise DeviceError(re.sub(internal, lambda _: sent, str(exc))) from exc
        if expected_sha256:
            raise DeviceError("update_model: sha256 applies to an archive; send a .tar.gz or drop sha256")
        open_bundle(source, self.trusted_keys, self.allow_unsigned)  # refuse before copying anything
        partial = self.dir / f".{dest.name}.partial"
        try:
            shutil.copytree(source, partial, symlinks=False)
        except OSError as exc:  # shutil.Error (e.g. a named pipe in the folder) lists the staging paths
            shutil.rmtree(partial, ignore_errors=True)
            why = exc.args[0][0][2] if isinstance(exc, shutil.Error) and exc.args and exc.args[0] else exc.strerror
            raise DeviceError(f"update_model: cannot copy bundle {sent} onto the device: {why or exc}") from exc
        os.replace(partial, dest)
        try:
            return dest, open_bundle(dest, self.trusted_keys, self.allow_unsigned)  # the copy, not the source
        except DeviceError:
            shutil.rmtree(dest, ignore_errors=True)
            raise

    def _point(self, name: str, at: Path) -> None:
        """Atomically re-point a symlink (rename over the old one)."""
        tmp = self.dir / f".{name}.{uuid.uuid4().hex[:6]}"
        os.symlink(at.name, tmp)
        os.replace(tmp, self.dir / name)

    def _rollback(self, old: Path | None, staged: Path) -> None:
        if old is not None:
            self._point("current", old)
        else:
            (self.dir / "current").unlink(missing_ok=True)
        shutil.rmtree(staged, ignore_errors=True)
        log.warning("model update rolled back; current bundle stays %s", old.name if old else "(none)")

    def _prune(self) -> None:
        keep = {p for p in (self.current, self.previous) if p is not None}
        bundles = sorted((p for p in self.dir.glob("b-*") if p.is_dir()), key=lambda p: p.name, reverse=True)
        for p in bundles[self.keep:]:
            if p.resolve() not in keep:  # current/previous are resolved, so a symlinked folder must be too
                shutil.rmtree(p, ignore_errors=True)

    def _download(self, url: str) -> Path:
        self.incoming.mkdir(parents=True, exist_ok=True)
        out = self.incoming / f"{uuid.uuid4().hex}.tar.gz"
        deadline = time.monotonic() + self.download_timeout
        opener = urllib.request.build_opener(_HttpRedirectsOnly)
        try:
            with opener.open(url, timeout=self.http_timeout) as resp, open(out, "wb") as f:
                total = 0
                # read1: whatever one recv gives, so a server trickling bytes cannot park us inside one read
                for block in iter(lambda: resp.read1(1 << 16), b""):
                    total += len(block)
                    if total > self.max_bytes:
                        raise DeviceError(f"update_model: {url} is over the {self.max_bytes >> 20} MiB limit")
                    if time.monotonic() > deadline:
                        raise DeviceError(f"update_model: {url} took longer than {self.download_timeout:g} s to "
                                          "download; check the link or the server and send it again")
                    f.write(block)
        except DeviceError:
            out.unlink(missing_ok=True)
            raise
        except (OSError, ValueError) as exc:  # URLError/HTTPError are OSErrors
            out.unlink(missing_ok=True)
            raise DeviceError(f"update_model: cannot download {url}: {exc}") from exc
        return out

    def _forget_stale_transfers(self) -> None:
        """Drop chunked transfers that stopped arriving (no chunk for STALE_TRANSFER_S)."""
        if not self.incoming.is_dir():
            return
        for folder in self.incoming.iterdir():
            try:
                if folder.is_dir() and time.time() - folder.stat().st_mtime > STALE_TRANSFER_S:
                    shutil.rmtree(folder, ignore_errors=True)
                    log.info("dropped stale model transfer %s", folder.name)
            except OSError:
                continue

    def _make_room_for_a_transfer(self) -> None:
        """A new transfer starts: drop the least recently active unfinished ones beyond max_transfers - 1
        (a sender that starts over gets a new transfer_id; the abandoned copies must not fill the disk)."""
        if not self.incoming.is_dir():
            return
        folders = []
        for folder in self.incoming.iterdir():
            try:
                if folder.is_dir():
                    folders.append((folder.stat().st_mtime, folder))
            except OSError:
                continue
        for _, folder in sorted(folders)[:max(0, len(folders) - (self.max_transfers - 1))]:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("dropped unfinished model transfer %s to make room for a new one", folder.name)

    def _receive_chunk(self, chunk: Any, sha256: str) -> Path | None:
        """Store one chunk; the assembled archive once all arrived (sha256 checked by apply)."""
        self._forget_stale_transfers()
        folder = self.incoming / chunk.transfer_id
        if not folder.is_dir():
            self._make_room_for_a_transfer()
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / "count"
        if meta.exists() and meta.read_text() != f"{chunk.count} {sha256.lower()}":
            raise DeviceError(f"chunk {chunk.index} of transfer {chunk.transfer_id} disagrees with earlier chunks "
                              "on count or sha256; restart the transfer with a new transfer_id")
        meta.write_text(f"{chunk.count} {sha256.lower()}")
        try:
            data = base64.b64decode(chunk.data, validate=True)
        except ValueError as exc:
            raise DeviceError(f"chunk {chunk.index}: data is not base64 ({exc})") from None
        part = folder / f"{chunk.index:06d}.part"
        tmp = part.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, part)
        parts = sorted(folder.glob("*.part"))
        if sum(p.stat().st_size for p in parts) > self.max_bytes:
            shutil.rmtree(folder, ignore_errors=True)
            raise DeviceError(f"transfer {chunk.transfer_id} is over the {self.max_bytes >> 20} MiB limit")
        if len(parts) < chunk.count:
            return None
        archive = folder / "bundle.tar.gz"
        with open(archive, "wb") as f:
            for p in parts:
                f.write(p.read_bytes())
        return archive
