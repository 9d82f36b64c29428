"""The deploy flow on a real trainer run: keys -> export --key -> verify -> pack -> verify/extract -> device."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from edgetl.cli import app
from edgetl_device.bundle import open_bundle
from edgetl_device.interpreter import load_interpreter

runner = CliRunner()


def ok(args: list[str]):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


def test_export_sign_pack_verify_and_run_on_device(tiny_run, tmp_path):
    ok(["keys", "generate", tmp_path / "pub"])
    key, pub = tmp_path / "pub.key", tmp_path / "pub.pub"
    bundle = tmp_path / "bundle"
    ok(["export", tiny_run, "--out", bundle, "--key", key, "--version", "1.2.3", "--calibration-size", "24"])
    assert (bundle / "manifest.sig").is_file()
    assert "OK" in ok(["bundle", "verify", bundle, "--trusted-key", pub]).stdout
    ok(["bundle", "pack", bundle, "--out", tmp_path / "b.tar.gz"])
    ok(["bundle", "verify", tmp_path / "b.tar.gz", "--trusted-key", pub, "--extract-to", tmp_path / "device"])
    info = json.loads(ok(["bundle", "inspect", tmp_path / "b.tar.gz", "--json"]).stdout)
    assert info["signed"] and info["manifest"]["model_version"] == "1.2.3"

    # What the device runtime does: open the verified bundle and classify a val image with it.
    b = open_bundle(tmp_path / "device", [pub])
    m = b.manifest
    assert m["input"]["dtype"] == "uint8" and m["input"]["normalization"] == "raw_0_255"
    scale, zp = m["input"]["quantization"]
    assert abs(scale - 1.0) < 0.02 and zp == 0
    assert m["backbone"]["name"] == "mobilenet_v2" and m["classes"] == b.labels
    assert m["parity"]["passed"]
    from edgetl.data import load_image
    from edgetl.run import Run

    run = Run(tiny_run)
    sample = run.samples("val")[0]
    img = load_image(sample.path, m["input"]["size"][0])
    it = load_interpreter(b.model_path, num_threads=1, delegate="none")
    it.set_tensor(it.get_input_details()[0]["index"], img[None])
    it.invoke()
    outs = it.get_output_details()
    probs_d = outs[b.output_index("probabilities")]
    emb_d = outs[b.output_index("embedding")]
    s, z = probs_d["quantization"]
    probs = (it.get_tensor(probs_d["index"]).astype(np.float32) - z) * s
    s, z = emb_d["quantization"]
    emb = (it.get_tensor(emb_d["index"]).astype(np.float32) - z) * s
    assert probs.shape == (1, len(b.labels)) and abs(probs.sum() - 1.0) < 0.05
    assert abs(np.linalg.norm(emb) - 1.0) < 0.05
    keras_probs = run.load_model().predict(img[None].astype(np.float32), verbose=0)
    assert probs.argmax() == keras_probs.argmax()


def test_cli_rejects_untrusted_and_tampered_bundles(tiny_export_run, tmp_path):
    ok(["keys", "generate", tmp_path / "a"])
    ok(["keys", "generate", tmp_path / "b"])
    bundle = tmp_path / "bundle"
    ok(["export", tiny_export_run, "--out", bundle, "--quant", "float32"])
    r = runner.invoke(app, ["bundle", "verify", str(bundle), "--trusted-key", str(tmp_path / "a.pub")])
    assert r.exit_code == 2 and "not signed" in r.stderr
    ok(["bundle", "sign", bundle, "--key", tmp_path / "b.key"])
    r = runner.invoke(app, ["bundle", "verify", str(bundle), "--trusted-key", str(tmp_path / "a.pub")])
    assert r.exit_code == 2 and "not trusted" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (bundle / "labels.txt").write_text("cat\ndog\nbird\n")
    r = runner.invoke(app, ["bundle", "verify", str(bundle), "--trusted-key", str(tmp_path / "b.pub")])
    assert r.exit_code == 2 and "labels.txt was modified" in r.stderr
    r = runner.invoke(app, ["export", str(tmp_path / "no-such-run")])
    assert r.exit_code == 2 and "does not exist" in r.stderr


def test_export_parity_failure_exits_3_and_leaves_bundle_unsigned(tiny_export_run, tmp_path):
    ok(["keys", "generate", tmp_path / "k"])
    # a negative allowance cannot be met: parity failure path of the CLI, on a healthy model
    r = runner.invoke(app, ["export", str(tiny_export_run), "--out", str(tmp_path / "e"), "--max-drop", "-1",
                            "--key", str(tmp_path / "k.key")])
    assert r.exit_code == 3 and "drop" in r.stderr
    assert (tmp_path / "e" / "parity.json").is_file() and not (tmp_path / "e" / "manifest.sig").exists()
