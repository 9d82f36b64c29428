"""Rollouts: a bundle the canary refuses halts the rollout; a good one reaches every device, wave by wave."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgetl.bundle import generate_keys, pack_bundle, sign_bundle, write_manifest
from edgetl.cli import app
from edgetl.errors import EdgetlError
from edgetl.fleet.deploy import BundleServer, CommandSession, plan_waves, resolve_devices, rollout, update_args
from edgetl.fleet.mqtt import BrokerOptions
from edgetl.fleet.sim import SimDevice
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    pub_priv = generate_keys(d / "publisher")
    other = generate_keys(d / "stranger")
    return {"priv": pub_priv[0], "pub": pub_priv[1], "other_pub": other[1]}


def _signed_archive(folder: Path, model: Path, version: str, keys) -> Path:
    """A signed bundle .tar.gz around a real TFLite model (the device's health check loads and invokes it)."""
    root = folder / "b"
    root.mkdir()
    shutil.copyfile(model, root / "model.tflite")
    (root / "labels.txt").write_text("ants\nbees\n")
    write_manifest(root, {"model_version": version, "classes": ["ants", "bees"]})
    sign_bundle(root, keys["priv"])
    return pack_bundle(root, folder / "b.tar.gz")


@pytest.fixture(scope="module")
def archive(tmp_path_factory, keys, shared_data) -> Path:
    model = shared_data / "models" / "mobilenet_v1_0.25_128_quant.tflite"
    return _signed_archive(tmp_path_factory.mktemp("good"), model, "2.0.0", keys)


def _tampered(archive: Path, out: Path) -> Path:
    """The same archive with one byte of the model changed after signing."""
    with tarfile.open(archive) as src, tarfile.open(out, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name == "model.tflite":
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.addfile(m, io.BytesIO(data))
    return out


def _fleet(broker, tmp_path, trusted: dict[str, Path]) -> list[SimDevice]:
    devs = [SimDevice(name, "127.0.0.1", broker.port, tmp_path / "devices", trusted_keys=[key])
            for name, key in trusted.items()]
    assert all(d.wait_connected(10) for d in devs)
    return devs


def test_canary_that_refuses_the_bundle_halts_the_rollout(broker, tmp_path, keys, archive):
    # cam1 (the canary) was provisioned with the wrong trusted key: it must refuse the bundle
    devs = _fleet(broker, tmp_path, {"cam1": keys["other_pub"], "cam2": keys["pub"], "cam3": keys["pub"]})
    try:
        runner = CliRunner()
        # the host can check the signature first: a bundle its key does not match never leaves
        r = runner.invoke(app, ["fleet", "deploy", str(archive), "--devices", "cam1,cam2,cam3",
                                "--trusted-key", str(keys["other_pub"]), "--broker", broker.url])
        assert r.exit_code == 2, r.output
        r = runner.invoke(app, ["fleet", "deploy", str(archive), "--devices", "cam1,cam2,cam3", "--canary", "1",
                                "--via", "serve", "--http-host", "127.0.0.1", "--timeout", "10",
                                "--trusted-key", str(keys["pub"]), "--broker", broker.url])
        assert r.exit_code == 1, r.output
        assert "FAILED cam1" in r.output and "not trusted here" in r.output
        assert "HALTED" in r.output and "cam2, cam3" in r.output
        assert [d.model_version for d in devs] == ["1.0.0", "1.0.0", "1.0.0"]
    finally:
        for d in devs:
            d.stop()


def test_tampered_bundle_fails_on_the_canary(broker, tmp_path, keys, archive):
    devs = _fleet(broker, tmp_path, {"cam1": keys["pub"], "cam2": keys["pub"]})
    bad = _tampered(archive, tmp_path / "bad.tar.gz")
    try:
        with CommandSession(BrokerOptions(url=broker.url)) as session:
            report = rollout(session, ["cam1", "cam2"], update_args(bad, "path"), canary=1, timeout=10)
        assert report.halted and report.not_attempted == ["cam2"]
        (canary,) = report.waves[0]
        assert not canary.ok and canary.answered and "model.tflite" in canary.detail, canary.detail
        assert [d.model_version for d in devs] == ["1.0.0", "1.0.0"]
    finally:
        for d in devs:
            d.stop()


def test_signed_model_that_fails_its_health_check_halts_after_rollback(broker, tmp_path, keys, shared_data):
    """Signature and hashes are fine, but the model does not run on the device: the canary rolls back."""
    broken = _signed_archive(tmp_path, shared_data / "models" / "invalid_model_invoking_error.tflite", "3.0.0", keys)
    devs = _fleet(broker, tmp_path, {"cam1": keys["pub"], "cam2": keys["pub"], "cam3": keys["pub"]})
    try:
        with CommandSession(BrokerOptions(url=broker.url)) as session:
            report = rollout(session, ["cam1", "cam2", "cam3"], update_args(broken, "mqtt"), canary=1, timeout=20)
        assert report.halted and report.not_attempted == ["cam2", "cam3"]
        (canary,) = report.waves[0]
        assert not canary.ok and "rolled back" in canary.detail and "health check" in canary.detail
        assert [d.model_version for d in devs] == ["1.0.0"] * 3
    finally:
        for d in devs:
            d.stop()


def test_good_bundle_reaches_every_device_over_http(broker, tmp_path, keys, archive):
    devs = _fleet(broker, tmp_path, {f"cam{i}": keys["pub"] for i in range(1, 5)})
    waves = []
    try:
        with CommandSession(BrokerOptions(url=broker.url)) as session, \
                BundleServer(archive, host="127.0.0.1", advertise="127.0.0.1") as server:
            report = rollout(session, [d.device_id for d in devs], update_args(archive, "url", server.url),
                             canary=1, batch=2, timeout=10, on_wave=lambda i, rs: waves.append(rs))
            assert report.ok and not report.halted
            assert [[r.device_id for r in w] for w in waves] == [["cam1"], ["cam2", "cam3"], ["cam4"]]
            assert all(r.detail["applied"] and r.detail["model_version"] == "2.0.0" for w in waves for r in w)
            assert [d.model_version for d in devs] == ["2.0.0"] * 4
            # a silent device is a failure too
            ghost = session.run(["ghost"], "ping", timeout=0.5)[0]
            assert not ghost.ok and not ghost.answered
    finally:
        for d in devs:
            d.stop()


def test_broker_restart_between_waves_halts_honestly_instead_of_crashing(broker, tmp_path, keys, archive):
    """The broker goes away after the canary: the next wave is sent while the link is down. The rollout must
    not crash half-done; each device's result matches the model it really runs."""
    devs = _fleet(broker, tmp_path, {"cam1": keys["pub"], "cam2": keys["pub"], "cam3": keys["pub"]})
    restarted = threading.Event()
    try:
        with CommandSession(BrokerOptions(url=broker.url)) as session:
            def restart_broker_after_canary(i: int, _results: list) -> None:
                if i == 0:
                    broker.kill()
                    assert wait_until(lambda: not session.client.is_connected(), 5)
                    threading.Timer(1.5, lambda: (broker.start(), restarted.set())).start()

            report = rollout(session, ["cam1", "cam2", "cam3"], update_args(archive, "path"), canary=1,
                             timeout=15, on_wave=restart_broker_after_canary)
        assert restarted.wait(10)
        results = {r.device_id: r for w in report.waves for r in w}
        assert results["cam1"].ok and devs[0].model_version == "2.0.0"
        for d in devs[1:]:  # reached after the restart (ok) or missed it (no answer, halted): never a lie
            assert results[d.device_id].ok == (d.model_version == "2.0.0"), results[d.device_id]
        assert report.halted == (not all(r.ok for r in results.values()))
    finally:
        for d in devs:
            d.stop()


def test_bundle_in_mqtt_chunks(broker, tmp_path, keys, archive):
    devs = _fleet(broker, tmp_path, {"cam1": keys["pub"], "cam2": keys["pub"]})
    try:
        r = CliRunner().invoke(app, ["fleet", "deploy", str(archive), "--devices", "cam1,cam2", "--via", "mqtt",
                                     "--timeout", "20", "--broker", broker.url])
        assert r.exit_code == 0, r.output
        assert "2/2 devices updated" in r.output
        assert [d.model_version for d in devs] == ["2.0.0", "2.0.0"]
    finally:
        for d in devs:
            d.stop()


def test_command_cli_by_group(broker, tmp_path, keys):
    devs = _fleet(broker, tmp_path, {"cam1": keys["pub"], "cam2": keys["pub"]})
    groups = tmp_path / "fleet-groups.yaml"
    groups.write_text("groups:\n  yard: [cam1, cam2]\n")
    runner = CliRunner()
    try:
        r = runner.invoke(app, ["fleet", "command", "set_threshold", "--group", "yard", "--groups", str(groups),
                                "--arg", "value=0.7", "--broker", broker.url, "--timeout", "10"])
        assert r.exit_code == 0, r.output
        assert [d.threshold for d in devs] == [0.7, 0.7]
        r = runner.invoke(app, ["fleet", "command", "set_threshold", "--devices", "cam1", "--arg", "value=7e6",
                                "--broker", broker.url, "--timeout", "10"])
        assert r.exit_code == 1 and "less than or equal to 1000000" in r.output
        r = runner.invoke(app, ["fleet", "command", "reboot", "--devices", "cam1", "--broker", broker.url])
        assert r.exit_code == 2 and "unknown command" in r.output
    finally:
        for d in devs:
            d.stop()


def test_device_selection_and_wave_planning(tmp_path):
    assert plan_waves(["a", "b", "c", "d", "e"], canary=2, batch=2) == [["a", "b"], ["c", "d"], ["e"]]
    assert plan_waves(["a", "b", "a"], canary=0, batch=None) == [["a", "b"]]
    with pytest.raises(EdgetlError, match="no device after the canary.*--canary 0"):  # a lone device: say how
        plan_waves(["a"], canary=1, batch=None)
    with pytest.raises(EdgetlError, match="exactly one"):
        resolve_devices("a,b", "yard", None)
    with pytest.raises(EdgetlError, match="not found"):
        resolve_devices(None, "yard", tmp_path / "nope.yaml")
    (tmp_path / "g.yaml").write_text(json.dumps({"yard": ["a"]}))
    assert resolve_devices(None, "yard", tmp_path / "g.yaml") == ["a"]
    with pytest.raises(EdgetlError, match="known groups: yard"):
        resolve_devices(None, "roof", tmp_path / "g.yaml")


@pytest.mark.parametrize("command", ["deploy", "command"])
def test_groups_help_shows_the_file_format(command):
    # rich read "[ids]" in `groups: {NAME: [ids]}` as markup and printed `groups: {NAME: }`
    r = CliRunner().invoke(app, ["fleet", command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "{NAME: [ids]}" in r.output, r.output


def test_a_device_id_no_device_can_have_is_a_clear_error_before_anything_is_sent(broker, tmp_path):
    """`+`/`#` are MQTT wildcards: publishing there fails mid-rollout, after the canary was already updated."""
    with pytest.raises(EdgetlError, match="cam#2"):
        resolve_devices("cam1,cam#2", None, None)
    (tmp_path / "g.yaml").write_text("groups:\n  yard: [cam1, cam+3]\n")
    with pytest.raises(EdgetlError, match="cam\\+3"):
        resolve_devices(None, "yard", tmp_path / "g.yaml")
    r = CliRunner().invoke(app, ["fleet", "command", "ping", "--devices", "cam1,cam#2", "--broker", broker.url,
                                 "--timeout", "1"])
    assert r.exit_code == 2 and "cam#2" in r.output, r.output
