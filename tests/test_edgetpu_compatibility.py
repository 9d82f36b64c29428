"""Static Edge TPU check on the real Coral models; the compiler log parser; our int8 exports."""

from __future__ import annotations

import pytest

from edgetl.edgetpu import (
    check_cpu_fallback,
    check_edgetpu,
    compile_edgetpu,
    compiler_path,
    format_report,
    parse_compiler_log,
    read_tflite,
)
from edgetl.errors import EdgetlError


def test_coral_cpu_models_are_edgetpu_compatible(shared_data):
    for name in ("mobilenet_v1_0.25_128_quant.tflite", "mobilenet_v2_1.0_224_quant.tflite"):
        r = check_edgetpu(shared_data / "models" / name)
        assert r.compatible and not r.compiled and r.ops_mappable == r.ops_total, format_report(r)
        assert r.issues == []


def test_already_compiled_model_is_recognised(shared_data):
    path = shared_data / "models" / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    model = read_tflite(path)
    assert model.is_edgetpu_compiled and model.op_counts() == {"edgetpu-custom-op": 1}
    r = check_edgetpu(path)
    assert r.compiled and r.compatible and "already compiled" in format_report(r)


def test_unsupported_custom_op_and_float_tensors_are_reported(shared_data):
    r = check_edgetpu(shared_data / "models" / "invalid_model_invoking_error.tflite")
    assert not r.compatible and r.ops_mappable == 0
    reasons = " ".join(i.reason for i in r.issues)
    assert "fake-op-double is not supported" in reasons and "FLOAT32" in reasons


def test_float_export_is_flagged_and_int8_export_passes(tiny_export_run, tmp_path):
    from edgetl.export import export_run

    f = check_edgetpu(export_run(tiny_export_run, tmp_path / "f", quant="float32").model_path)
    assert not f.compatible and any("FLOAT32" in i.reason for i in f.issues)
    res = export_run(tiny_export_run, tmp_path / "q", quant="int8", edgetpu=True)
    q = check_edgetpu(res.model_path)
    assert q.compatible, format_report(q)
    info = res.manifest["edgetpu"]
    assert info["static"]["compatible"] and info["compiled"] == (compiler_path() is not None)
    with pytest.raises(EdgetlError, match="--edgetpu needs --quant int8"):
        export_run(tiny_export_run, tmp_path / "h", quant="float16", edgetpu=True)


def test_not_a_tflite_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"hello world, not a flatbuffer")
    with pytest.raises(EdgetlError, match="not a TFLite flatbuffer"):
        check_edgetpu(bad)


COMPILER_LOG = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 313 ms.

Input model: model.tflite
Input size: 473.05KiB
Output model: model_edgetpu.tflite
Output size: 624.16KiB
On-chip memory used for caching model parameters: 586.50KiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 33
Operation log: model_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU.
Number of operations that will run on Edge TPU: 31
Number of operations that will run on CPU: 2

Operator                       Count      Status

CONV_2D                        15         Mapped to Edge TPU
DEPTHWISE_CONV_2D              13         Mapped to Edge TPU
MEAN                           1          Mapped to Edge TPU
L2_NORMALIZATION               1          Mapped to Edge TPU
FULLY_CONNECTED                1          Mapped to Edge TPU
SOFTMAX                        1          More than one subgraph is not supported
DEQUANTIZE                     1          Operation is working on an unsupported data type
"""


def test_compiler_log_is_parsed():
    tpu, cpu, table, version = parse_compiler_log(COMPILER_LOG)
    assert (tpu, cpu, version) == (31, 2, "16.0.384591198")
    assert {"op": "DEQUANTIZE", "count": 1, "status": "Operation is working on an unsupported data type"} in table
    assert sum(r["count"] for r in table) == 33


def test_compiler_cpu_fallback_fails_unless_allowed():
    _, cpu, table, _ = parse_compiler_log(COMPILER_LOG)
    with pytest.raises(EdgetlError, match="left 2 ops on the CPU: SOFTMAX .*DEQUANTIZE"):
        check_cpu_fallback(cpu, table, allow_cpu_ops=False)
    check_cpu_fallback(cpu, table, allow_cpu_ops=True)
    check_cpu_fallback(0, table[:5], allow_cpu_ops=False)


def test_missing_compiler_is_a_clear_error(shared_data, tmp_path):
    if compiler_path() is not None:
        pytest.skip("edgetpu_compiler is installed here")
    with pytest.raises(EdgetlError, match="edgetpu_compiler is not on PATH"):
        compile_edgetpu(shared_data / "models" / "mobilenet_v1_0.25_128_quant.tflite", tmp_path)
