"""`edgetl bench` measures invoke latency of real models through the device's interpreter loader."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from edgetl.cli import app
from edgetl_device.interpreter import cpu_int8_dot, describe_int8_dot

runner = CliRunner()


def test_bench_real_coral_model_reports_percentiles(shared_data):
    model = shared_data / "models" / "mobilenet_v1_0.25_128_quant.tflite"
    r = runner.invoke(app, ["bench", str(model), "--runs", "30", "--warmup", "3", "--threads", "1", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert 0 < res["p50_ms"] <= res["p90_ms"] <= res["p99_ms"]
    assert res["size_bytes"] == model.stat().st_size and res["threads"] == 1 and res["runs"] == 30
    assert res["delegate"] == "cpu (XNNPACK)" and res["peak_rss_mb"] > 0
    assert res["cpu_int8_dot"] == describe_int8_dot(cpu_int8_dot())


# /proc/cpuinfo excerpts: x86 flags lines and an ARM Features line
AVX512_VNNI = "processor\t: 0\nflags\t\t: fpu sse4_2 avx2 fma avx512f avx512_vnni\n"
AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse4_2 avx2 fma\nprocessor\t: 1\nflags\t\t: fpu sse4_2 avx2 fma\n"
PI5 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes crc32 atomics asimddp lrcpc\n"
PI4 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"


def test_cpu_int8_dot_product_extensions_are_read_from_cpuinfo():
    assert cpu_int8_dot(AVX512_VNNI) == ["avx512_vnni"]
    assert cpu_int8_dot(AVX2_ONLY) == []
    assert cpu_int8_dot(PI5) == ["asimddp"]
    assert cpu_int8_dot(PI4) == []
    assert cpu_int8_dot("processor\t: 0\n") is None  # no flags line: unknown, not "none"


def test_int8_dot_description_warns_only_on_x86_without_vnni():
    assert describe_int8_dot(["avx512_vnni"], "x86_64") == "avx512_vnni"
    assert "slower than float32" in describe_int8_dot([], "x86_64")
    assert describe_int8_dot([], "aarch64") == "none"
    assert describe_int8_dot(None) == "unknown"


def test_bench_compiled_edgetpu_model_without_tpu_is_a_clear_error(shared_data):
    model = shared_data / "models" / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    r = runner.invoke(app, ["bench", str(model), "--runs", "5"])
    assert r.exit_code == 2
    assert "Edge TPU" in r.stderr and "model.tflite" in r.stderr


def test_bench_bundle_directory(tiny_export_run, tmp_path):
    from edgetl.export import export_run

    res = export_run(tiny_export_run, tmp_path / "b", quant="int8", model_version="3.1")
    r = runner.invoke(app, ["bench", str(res.out_dir), "--runs", "10", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["model_version"] == "3.1" and out["size_bytes"] == res.model_path.stat().st_size


def test_bench_rejects_non_model(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    r = runner.invoke(app, ["bench", str(tmp_path / "x.txt")])
    assert r.exit_code == 2 and "not a .tflite" in r.stderr
