"""OTA downloads, chunked transfers and bundle archives against a hostile server or sender.

Real HTTP servers in threads, real archives, real files; nothing mocked. Limits are made small
through ModelUpdater's parameters so every case takes a second or two.
"""

from __future__ import annotations

import base64
import gzip
import http.server
import json
import socket
import tarfile
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from edgetl.bundle import generate_keys, sign_bundle, write_manifest
from edgetl_device.bundle import extract_bundle, open_bundle
from edgetl_device.commands import dispatch
from edgetl_device.errors import DeviceError
from edgetl_device.ota import ModelUpdater
from edgetl_device.reporting import JsonlReporter


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    priv, pub = generate_keys(tmp_path_factory.mktemp("keys") / "publisher")
    return priv, pub


class _Target:
    def swap_model(self, bundle_dir: Path) -> None:
        raise AssertionError("nothing here may ever be applied")


def _update(updater: ModelUpdater, tmp_path: Path, **doc) -> dict:
    reporter = JsonlReporter(tmp_path / "report.jsonl", "cam1")
    try:
        return dispatch("update_model", json.dumps(doc).encode(), _Target(), reporter, updater=updater)
    finally:
        reporter.stop()


@pytest.fixture
def server():
    """A bundle server that misbehaves on purpose; also counts connections to a would-be FTP port."""
    ftp = socket.socket()
    ftp.bind(("127.0.0.1", 0))
    ftp.listen(5)
    ftp.settimeout(0.2)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/drip":  # valid-looking, endless, one byte at a time: no read ever times out
                self.send_response(200)
                self.end_headers()
                try:
                    for _ in range(200):
                        self.wfile.write(b"\x1f")
                        self.wfile.flush()
                        time.sleep(0.05)
                except OSError:
                    pass
            elif self.path == "/to-ftp":
                self.send_response(302)
                self.send_header("Location", f"ftp://127.0.0.1:{ftp.getsockname()[1]}/bundle.tar.gz")
                self.end_headers()

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", ftp
    finally:
        httpd.shutdown()
        httpd.server_close()
        ftp.close()


def test_a_server_that_trickles_bytes_forever_is_cut_off_by_a_total_deadline(tmp_path, keys, server):
    base, _ = server
    updater = ModelUpdater(tmp_path / "bundles", [keys[1]], http_timeout=2, download_timeout=1.0)
    started = time.monotonic()
    msg = _update(updater, tmp_path, url=base + "/drip")
    took = time.monotonic() - started
    assert not msg["ok"] and took < 4, (took, msg)
    assert "1 s" in msg["error"] or "took longer" in msg["error"], msg["error"]
    assert list((tmp_path / "bundles" / ".incoming").iterdir()) == []  # the partial download is gone


def test_a_redirect_to_another_scheme_is_refused_without_connecting(tmp_path, keys, server):
    base, ftp = server
    updater = ModelUpdater(tmp_path / "bundles", [keys[1]], http_timeout=2)
    msg = _update(updater, tmp_path, url=base + "/to-ftp")
    assert not msg["ok"] and "redirect" in msg["error"].lower(), msg
    with pytest.raises(TimeoutError):
        ftp.accept()[0].close()  # nobody came


def test_abandoned_chunked_transfers_cannot_pile_up_on_the_device(tmp_path, keys):
    updater = ModelUpdater(tmp_path / "bundles", [keys[1]], max_bytes=64 * 1024)
    piece = base64.b64encode(b"\0" * 60 * 1024).decode()
    for i in range(10):  # each under the per-transfer limit, never completed
        msg = _update(updater, tmp_path, sha256="0" * 64,
                      chunk={"transfer_id": f"t{i}", "index": 0, "count": 2, "data": piece})
        assert msg["ok"], msg
    folders = [p for p in updater.incoming.iterdir() if p.is_dir()]
    on_disk = sum(f.stat().st_size for p in folders for f in p.rglob("*"))
    assert len(folders) <= updater.max_transfers and on_disk <= updater.max_transfers * updater.max_bytes, folders
    assert (updater.incoming / "t9").is_dir()  # the newest transfer is the one kept going


def _bomb(path: Path, kind: bytes, size: int) -> Path:
    """A tiny .tar.gz whose first header announces a `size`-byte pax/GNU-longname extension."""
    info = tarfile.TarInfo("././@PaxHeader" if kind == tarfile.XHDTYPE else "././@LongLink")
    info.type, info.size = kind, size
    header = info.tobuf(format=tarfile.GNU_FORMAT if kind == tarfile.GNUTYPE_LONGNAME else tarfile.USTAR_FORMAT)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header)
        for _ in range(size >> 20):
            f.write(bytes(1 << 20))
        f.write(bytes(1024))
    return path


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME], ids=["pax", "gnu-longname"])
def test_an_archive_header_extension_is_not_buffered_whole_before_the_signature_is_checked(tmp_path, keys, kind):
    archive = _bomb(tmp_path / "bomb.tar.gz", kind, 64 << 20)  # ~70 KB on the wire, 64 MiB in one read
    assert archive.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(DeviceError):
            extract_bundle(archive, tmp_path / "dest", [keys[1]])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak >> 20} MiB allocated for an unsigned archive header"
    assert not (tmp_path / "dest").exists()


def test_the_openset_file_the_manifest_names_must_itself_be_hashed_and_signed(tmp_path, keys):
    root = tmp_path / "b"
    root.mkdir()
    (root / "model.tflite").write_bytes(b"TFL3" + bytes(64))
    (root / "labels.txt").write_text("ants\nbees\n")
    write_manifest(root, {"model_version": "1", "classes": ["ants", "bees"],
                          "unknown": {"scorer": "msp", "threshold": 0.5, "file": "extra.npz"}})
    sign_bundle(root, keys[0])
    (root / "extra.npz").write_bytes(b"anything at all")  # not in `files`: nothing vouches for it
    with pytest.raises(DeviceError, match="extra.npz"):
        open_bundle(root, [keys[1]])
