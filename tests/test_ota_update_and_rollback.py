"""Over-the-air updates with real signed bundles and real TFLite models.

Good bundles are applied (path, file:// URL, http URL, MQTT chunks); unsigned, untrusted and
tampered bundles are refused before anything changes; a model that fails on invoke is rolled
back and the running model keeps running.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from edgetl.bundle import generate_keys, pack_bundle, sign_bundle, write_manifest
from edgetl_device.commands import dispatch
from edgetl_device.config import MqttConfig
from edgetl_device.mqtt import MqttReporter
from edgetl_device.ota import ModelUpdater, chunk_commands
from tests.support.device_target import ModelHolder
from tests.support.mqtt_collector import Collector

SMALL = "mobilenet_v1_0.25_128_quant.tflite"
BROKEN = "invalid_model_invoking_error.tflite"  # loads, fails on invoke


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    good, stranger = generate_keys(d / "publisher"), generate_keys(d / "stranger")
    return {"priv": good[0], "pub": good[1], "stranger": stranger[0]}


@pytest.fixture
def make(tmp_path, shared_data, keys):
    def make_bundle(version: str, model: str = SMALL, sign_with: str | None = "priv", archive: bool = True) -> Path:
        root = tmp_path / "build" / version
        root.mkdir(parents=True)
        shutil.copy(shared_data / "models" / model, root / "model.tflite")
        labels = (shared_data / "models" / "imagenet_labels.txt").read_text().splitlines()
        (root / "labels.txt").write_text("\n".join(labels) + "\n")
        write_manifest(root, {"model_version": version, "classes": [x.strip() for x in labels if x.strip()]})
        if sign_with:
            sign_bundle(root, keys[sign_with])
        return pack_bundle(root, tmp_path / "build" / f"{version}.tar.gz") if archive else root
    return make_bundle


@pytest.fixture
def device(tmp_path, keys):
    target = ModelHolder(tmp_path / "device", trusted_keys=[keys["pub"]])
    updater = ModelUpdater(tmp_path / "device" / "bundles", trusted_keys=[keys["pub"]])
    return target, updater


def update(device, **doc):
    target, updater = device
    from edgetl_device.reporting import JsonlReporter

    reporter = JsonlReporter(Path(updater.dir).parent / "report.jsonl", "cam1")
    try:
        return dispatch("update_model", json.dumps(doc).encode(), target, reporter, updater=updater)
    finally:
        reporter.stop()


def test_good_bundles_are_applied_and_the_previous_one_kept(device, make):
    target, updater = device
    first = make("1.0")
    msg = update(device, path=str(first), sha256=hashlib.sha256(first.read_bytes()).hexdigest())
    assert msg["ok"], msg
    assert target.model_version == "1.0" and updater.current == Path(msg["result"]["bundle"])
    assert (updater.dir / "current").is_symlink() and msg["result"]["health"]["outputs"] == [[1, 1001]]
    msg = update(device, url=make("2.0").as_uri())
    assert msg["ok"], msg
    assert target.model_version == "2.0" and updater.previous == Path(msg["result"]["previous"])
    assert (updater.current / "model.tflite").is_file() and (updater.previous / "model.tflite").is_file()
    frame = np.zeros(target.interpreter.get_input_details()[0]["shape"], np.uint8)
    target.interpreter.set_tensor(target.interpreter.get_input_details()[0]["index"], frame)
    target.interpreter.invoke()  # the swapped-in model really runs


def _assert_unchanged(device, before):
    target, updater = device
    assert target.model_version == before and updater.current is not None
    assert updater.current.name == Path(target.bundle_dir).name
    assert [p.name for p in updater.dir.glob("b-*")] == [updater.current.name]


@pytest.mark.parametrize("case, expect", [
    ("unsigned", "manifest.sig"),
    ("untrusted", "key"),
    ("tampered_file", "sha256"),
    ("wrong_archive_sha", "sha256 does not match"),
    ("truncated_archive", "re-download"),
])
def test_bad_bundles_are_refused_and_the_running_model_keeps_running(device, make, case, expect, tmp_path):
    assert update(device, path=str(make("1.0")))["ok"]
    if case == "unsigned":
        doc = {"path": str(make("evil", sign_with=None))}
    elif case == "untrusted":
        doc = {"path": str(make("evil", sign_with="stranger"))}
    elif case == "tampered_file":
        root = make("evil", archive=False)
        (root / "labels.txt").write_text("cat\n" * 1001)  # after signing
        doc = {"path": str(root)}
    elif case == "wrong_archive_sha":
        doc = {"path": str(make("evil")), "sha256": "0" * 64}
    else:
        archive = make("evil")
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])  # an interrupted download
        doc = {"path": str(archive)}
    msg = update(device, **doc)
    assert msg["ok"] is False and any(e in msg["error"] for e in expect.split("|")), msg["error"]
    _assert_unchanged(device, "1.0")


def test_model_failing_the_health_check_is_rolled_back(device, make):
    target, updater = device
    assert update(device, path=str(make("1.0")))["ok"]
    good_interpreter = target.interpreter
    msg = update(device, path=str(make("broken", model=BROKEN)))
    assert msg["ok"] is False and "rolled back" in msg["error"] and "health check" in msg["error"], msg
    _assert_unchanged(device, "1.0")
    assert target.interpreter is good_interpreter


def test_update_over_http(device, make):
    archive = make("3.0")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ok = update(device, url=f"http://127.0.0.1:{server.server_port}/{archive.name}")
        missing = update(device, url=f"http://127.0.0.1:{server.server_port}/nope.tar.gz")
    finally:
        server.shutdown()
    assert ok["ok"] and device[0].model_version == "3.0", ok
    assert not missing["ok"] and "cannot download" in missing["error"]


def test_update_in_chunks_over_a_real_broker(device, make, broker, tmp_path):
    target, updater = device
    archive = make("4.0")
    config = MqttConfig(port=broker.port, outbox_path=tmp_path / "o.sqlite3", telemetry_interval=3600)
    reporter = MqttReporter(config, "cam1")
    reporter.subscribe(lambda name, payload: dispatch(name, payload, target, reporter, updater=updater))
    chunks = list(chunk_commands(archive, chunk_bytes=128 * 1024))
    try:
        assert reporter.wait_connected(5) and len(chunks) >= 3
        with Collector(broker.port, "edgetl/cam1/cmd_result", qos=1) as sub:
            for doc in chunks:
                sub.client.publish("edgetl/cam1/cmd/update_model", json.dumps(doc), qos=1)
            assert sub.wait_for(lambda s: len(s.of("cmd_result")) >= len(chunks), 20)
            results = sub.of("cmd_result")
    finally:
        reporter.stop()
    assert all(r["ok"] for r in results), results
    assert results[-1]["result"]["applied"] and results[-1]["result"]["model_version"] == "4.0"
    assert target.model_version == "4.0"
    assert not any((updater.dir / ".incoming").iterdir())


def test_runtime_refusing_the_new_model_rolls_back_the_link(device, make):
    target, updater = device
    assert update(device, path=str(make("1.0")))["ok"]

    def refuse(bundle_dir):
        raise RuntimeError("camera pipeline busy")

    target.swap_model = refuse
    msg = update(device, path=str(make("2.0")))
    assert msg["ok"] is False and "camera pipeline busy" in msg["error"] and "rolled back" in msg["error"]
    _assert_unchanged(device, "1.0")


def test_prune_never_deletes_the_current_bundle_when_the_bundles_folder_is_reached_through_a_symlink(
        tmp_path, make, keys):
    # e.g. data_dir /home/pi/edgetl-data -> a USB disk, and bundles named while the clock was ahead
    # (a Pi has no RTC): the new, current bundle sorts oldest, and only the current/previous guard keeps it
    from edgetl_device.bundle import extract_bundle

    (tmp_path / "usb").mkdir()
    (tmp_path / "data").symlink_to(tmp_path / "usb")
    target = ModelHolder(tmp_path / "device", trusted_keys=[keys["pub"]])
    updater = ModelUpdater(tmp_path / "data" / "bundles", trusted_keys=[keys["pub"]], keep=3)
    for i in range(3):
        extract_bundle(make(f"0.{i}"), updater.dir / f"b-20991231T00000{i}-aaaaa{i}", [keys["pub"]])
    (updater.dir / "current").symlink_to("b-20991231T000002-aaaaa2")
    msg = update((target, updater), path=str(make("1.0")))
    assert msg["ok"], msg
    assert updater.current is not None and (updater.current / "model.tflite").is_file()
    assert updater.previous is not None and updater.previous.name == "b-20991231T000002-aaaaa2"
    assert updater.previous.is_dir()


@pytest.mark.parametrize("how, case", [("path", "untrusted"), ("url", "untrusted"), ("chunks", "untrusted"),
                                       ("chunks", "truncated"), ("folder", "fifo")])
def test_refusals_name_what_the_operator_sent_not_a_staging_path(device, make, how, case):
    # The archive is unpacked into `.b-....partial` under bundles/ (a URL or chunks first land in .incoming/):
    # a refusal must name the archive, URL or transfer the operator sent, with the reason.
    target, updater = device
    assert update(device, path=str(make("1.0")))["ok"]
    if case == "fifo":  # passes verification (not in the manifest) but cannot be copied onto the device
        source = make("evil", archive=False)
        os.mkfifo(source / "camera.pipe")
    else:
        source = make("evil", sign_with="stranger" if case == "untrusted" else "priv")
    if case == "truncated":
        source.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    if how == "chunks":
        sent = "transfer t-evil"
        msgs = [update(device, **doc) for doc in chunk_commands(source, chunk_bytes=64 * 1024, transfer_id="t-evil")]
    else:
        sent = source.as_uri() if how == "url" else str(source)
        msgs = [update(device, **{"url" if how == "url" else "path": sent})]
    assert all(m["ok"] for m in msgs[:-1]) and msgs[-1]["ok"] is False, msgs[-1]
    error = msgs[-1]["error"]
    assert sent in error and (error.count(sent) == 1 or case == "fifo"), error  # named once, not mangled
    assert {"untrusted": "not trusted", "truncated": "truncated", "fifo": "named pipe"}[case] in error, error
    assert ".partial" not in error and ".incoming" not in error and str(updater.dir) not in error, error
    assert not list(updater.dir.glob(".*.partial"))  # and nothing is left staged
    _assert_unchanged(device, "1.0")
