"""Edge TPU readiness: a static, op-by-op check of a .tflite file, and the `edgetpu_compiler` wrapper.

The static check reads the flatbuffer directly (LiteRT's generated schema, no TensorFlow import),
so it also works on models an interpreter cannot load, such as already compiled
`*_edgetpu.tflite` files whose work sits inside the `edgetpu-custom-op`.

Rules (Coral "TensorFlow models on the Edge TPU"): tensors 8-bit quantized (int32 biases allowed),
static shapes, at most 3 dimensions larger than 1 (only the innermost 3), and supported ops only.
The compiler maps ops up to the first unsupported one; everything after runs on the CPU.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgetl.errors import EdgetlError

log = logging.getLogger(__name__)

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
# Coral's supported-operations table (TFLite builtin names).
SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "MAXIMUM",
    "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PADV2", "PRELU", "QUANTIZE", "REDUCE_MAX",
    "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
    "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM",
    "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "HARD_SWISH",
})
EIGHT_BIT = frozenset({"INT8", "UINT8"})
# Biases are int32 in every 8-bit quantized model; the Edge TPU accepts them as constants.
ALLOWED_CONST_TYPES = frozenset({"INT32"})


def _schema():
    """LiteRT's generated flatbuffer schema (light), else TensorFlow's copy."""
    for name in ("ai_edge_litert.schema_py_generated", "tflite_runtime.schema_py_generated"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return importlib.import_module("tensorflow.lite.python.schema_py_generated")


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass
class TensorInfo:
    index: int
    name: str
    dtype: str
    shape: list[int]
    shape_signature: list[int]
    scale: list[float]
    zero_point: list[int]
    constant: bool


@dataclass
class OpInfo:
    index: int
    name: str  # builtin name, or the custom op's code
    inputs: list[int]
    outputs: list[int]
    custom: bool = False


@dataclass
class TFLiteModel:
    path: Path
    size_bytes: int
    tensors: list[TensorInfo]
    ops: list[OpInfo]
    inputs: list[int]
    outputs: list[int]
    subgraphs: int
    constant_bytes: int = 0  # bytes of constant tensor data (weights, biases)

    @property
    def is_edgetpu_compiled(self) -> bool:
        return any(op.custom and op.name == EDGETPU_CUSTOM_OP for op in self.ops)

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.name] = counts.get(op.name, 0) + 1
        return counts


def read_tflite(path: str | os.PathLike[str]) -> TFLiteModel:
    """Parse the main subgraph's tensors and ops out of a .tflite flatbuffer."""
    path = Path(path)
    if not path.is_file():
        raise EdgetlError(f"model file not found: {path}")
    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise EdgetlError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier); export it with `edgetl export`")
    S = _schema()
    try:
        model = S.Model.GetRootAs(buf, 0)
        builtin = _enum_names(S.BuiltinOperator)
        ttype = _enum_names(S.TensorType)
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            if builtin.get(code) == "CUSTOM":
                codes.append(((oc.CustomCode() or b"").decode("utf-8", "replace"), True))
            else:
                codes.append((builtin.get(code, f"BUILTIN_{code}"), False))
        sg = model.Subgraphs(0)
        tensors = []
        for t in range(sg.TensorsLength()):
            tt = sg.Tensors(t)
            q = tt.Quantization()
            scale = [float(x) for x in q.ScaleAsNumpy()] if q is not None and q.ScaleLength() else []
            zp = [int(x) for x in q.ZeroPointAsNumpy()] if q is not None and q.ZeroPointLength() else []
            buffer = model.Buffers(tt.Buffer()) if tt.Buffer() < model.BuffersLength() else None
            constant = bool(buffer is not None and (buffer.DataLength() > 0 or buffer.Size() > 0))
            shape = [int(x) for x in tt.ShapeAsNumpy()] if tt.ShapeLength() else []
            sig = [int(x) for x in tt.ShapeSignatureAsNumpy()] if tt.ShapeSignatureLength() else list(shape)
            tensors.append(TensorInfo(t, (tt.Name() or b"").decode("utf-8", "replace"), ttype.get(tt.Type(), "?"),
                                      shape, sig, scale, zp, constant))
        ops = []
        for o in range(sg.OperatorsLength()):
            op = sg.Operators(o)
            name, custom = codes[op.OpcodeIndex()]
            ins = [int(x) for x in op.InputsAsNumpy()] if op.InputsLength() else []
            outs = [int(x) for x in op.OutputsAsNumpy()] if op.OutputsLength() else []
            ops.append(OpInfo(o, name, ins, outs, custom))
        ins = [int(x) for x in sg.InputsAsNumpy()]
        outs = [int(x) for x in sg.OutputsAsNumpy()]
        constant_bytes = sum(model.Buffers(i).DataLength() for i in range(model.BuffersLength()))
        return TFLiteModel(path, len(buf), tensors, ops, ins, outs, model.SubgraphsLength(), constant_bytes)
    except EdgetlError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt flatbuffer fails anywhere inside the accessors
        raise EdgetlError(f"{path} is a corrupt TFLite file ({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------- static check
@dataclass
class Issue:
    op_index: int | None
    op: str
    reason: str


@dataclass
class EdgeTPUReport:
    path: str
    compiled: bool  # already compiled by edgetpu_compiler
    compatible: bool  # the whole graph can map to the Edge TPU
    ops_total: int
    ops_mappable: int  # ops before the first problem (the compiler maps only that prefix)
    issues: list[Issue] = field(default_factory=list)
    cpu_ops: list[str] = field(default_factory=list)  # for compiled models: ops left outside the TPU op

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tensor_issues(t: TensorInfo) -> list[str]:
    out = []
    if t.dtype not in EIGHT_BIT and not (t.constant and t.dtype in ALLOWED_CONST_TYPES):
        out.append(f"tensor {t.name!r} is {t.dtype}, the Edge TPU needs 8-bit quantized tensors")
    if any(d < 0 for d in t.shape_signature):
        out.append(f"tensor {t.name!r} has a dynamic shape {t.shape_signature}; export with a fixed batch of 1")
    # Weights (constant filters) are 4-D by nature; the rank rule is about activations.
    if not t.constant and len(t.shape) > 3 and any(d > 1 for d in t.shape[:-3]):
        out.append(f"tensor {t.name!r} has shape {t.shape}: only the innermost 3 dimensions may exceed 1")
    return out


def check_edgetpu(path: str | os.PathLike[str]) -> EdgeTPUReport:
    """Op-by-op static compatibility check (what edgetpu_compiler would accept) of a .tflite file."""
    model = read_tflite(path)
    if model.is_edgetpu_compiled:
        cpu = [op.name for op in model.ops if not (op.custom and op.name == EDGETPU_CUSTOM_OP)]
        # Quantize/dequantize at the edges of a compiled model are normal; other ops ran on the CPU.
        fallback = [n for n in cpu if n not in ("QUANTIZE", "DEQUANTIZE")]
        return EdgeTPUReport(str(path), True, not fallback, len(model.ops),
                             len(model.ops) - len(fallback), [], cpu)
    issues: list[Issue] = []
    if model.subgraphs > 1:
        issues.append(Issue(None, "-", f"model has {model.subgraphs} subgraphs; the Edge TPU compiler takes one"))
    first_bad: int | None = None
    for op in model.ops:
        reasons = []
        if op.custom or op.name not in SUPPORTED_OPS:
            reasons.append(f"{op.name} is not supported by the Edge TPU")
        for t in op.inputs + op.outputs:
            if t >= 0:
                reasons.extend(_tensor_issues(model.tensors[t]))
        for r in dict.fromkeys(reasons):  # de-duplicate, keep order
            issues.append(Issue(op.index, op.name, r))
        if reasons and first_bad is None:
            first_bad = op.index
    mappable = len(model.ops) if first_bad is None else first_bad
    return EdgeTPUReport(str(path), False, not issues, len(model.ops), mappable, issues, [])


def format_report(report: EdgeTPUReport) -> str:
    if report.compiled:
        extra = f"; CPU ops: {', '.join(report.cpu_ops)}" if report.cpu_ops else ""
        return f"{report.path}: already compiled for the Edge TPU{extra}"
    if report.compatible:
        return f"{report.path}: Edge TPU compatible ({report.ops_total} ops, all mappable)"
    lines = [f"{report.path}: NOT fully Edge TPU compatible ({report.ops_mappable}/{report.ops_total} ops "
             "mappable before the first problem; the rest would run on the CPU)"]
    lines += [f"  op {i.op_index} {i.op}: {i.reason}" for i in report.issues[:20]]
    if len(report.issues) > 20:
        lines.append(f"  ... {len(report.issues) - 20} more")
    return "\n".join(lines)


# ---------------------------------------------------------------- compiler
@dataclass
class CompileResult:
    model_path: Path
    log_text: str
    ops_on_tpu: int
    ops_on_cpu: int
    table: list[dict[str, Any]]  # {"op", "count", "status"}
    compiler_version: str | None


_TABLE_ROW = re.compile(r"^([A-Z][A-Z0-9_]+)\s+(\d+)\s+(.+?)\s*$")


def parse_compiler_log(text: str) -> tuple[int, int, list[dict[str, Any]], str | None]:
    """(ops on TPU, ops on CPU, per-op table, compiler version) from edgetpu_compiler's log/stdout."""
    version = None
    m = re.search(r"Edge TPU Compiler version\s+(\S+)", text)
    if m:
        version = m.group(1)
    tpu = cpu = None
    m = re.search(r"Number of operations that will run on Edge TPU:\s*(\d+)", text)
    if m:
        tpu = int(m.group(1))
    m = re.search(r"Number of operations that will run on CPU:\s*(\d+)", text)
    if m:
        cpu = int(m.group(1))
    table = []
    in_table = False
    for line in text.splitlines():
        if re.match(r"^\s*Operator\s+Count\s+Status", line):
            in_table = True
            continue
        if in_table:
            row = _TABLE_ROW.match(line.strip())
            if row:
                table.append({"op": row.group(1), "count": int(row.group(2)), "status": row.group(3)})
    if tpu is None:
        tpu = sum(r["count"] for r in table if r["status"].startswith("Mapped to Edge TPU"))
    if cpu is None:
        cpu = sum(r["count"] for r in table if not r["status"].startswith("Mapped to Edge TPU"))
    return tpu, cpu, table, version


def check_cpu_fallback(ops_on_cpu: int, table: list[dict[str, Any]], allow_cpu_ops: bool) -> None:
    """EdgetlError naming the ops the compiler left on the CPU, unless that is allowed."""
    if ops_on_cpu and not allow_cpu_ops:
        bad = ", ".join(f"{r['op']} ({r['status']})" for r in table if not r["status"].startswith("Mapped to Edge TPU"))
        raise EdgetlError(f"edgetpu_compiler left {ops_on_cpu} ops on the CPU: {bad or 'see log'}; fix the model "
                          "or pass --allow-cpu-ops to accept the slower split model")


def compiler_path() -> str | None:
    return shutil.which("edgetpu_compiler")


def compile_edgetpu(model: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                    allow_cpu_ops: bool = False, timeout_s: int = 600) -> CompileResult:
    """Run edgetpu_compiler; EdgetlError when it fails or (unless allowed) leaves ops on the CPU."""
    exe = compiler_path()
    if exe is None:
        raise EdgetlError("edgetpu_compiler is not on PATH; install it (Debian/Ubuntu x86-64: "
                          "apt-get install edgetpu-compiler) or export without --edgetpu")
    model, out_dir = Path(model), Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="edgetpu-") as tmp:
        proc = subprocess.run([exe, "--show_operations", "--out_dir", tmp, str(model)],
                              capture_output=True, text=True, timeout=timeout_s)
        text = proc.stdout + "\n" + proc.stderr
        logs = list(Path(tmp).glob("*.log"))
        if logs:
            text += "\n" + logs[0].read_text(errors="replace")
        produced = Path(tmp) / (model.stem + "_edgetpu.tflite")
        if proc.returncode != 0 or not produced.is_file():
            raise EdgetlError(f"edgetpu_compiler failed on {model} (exit {proc.returncode}): "
                              f"{' '.join(text.split())[:300]}")
        tpu, cpu, table, version = parse_compiler_log(text)
        check_cpu_fallback(cpu, table, allow_cpu_ops)
        out_dir.mkdir(parents=True, exist_ok=True)
        dest = out_dir / "model_edgetpu.tflite"
        shutil.copyfile(produced, dest)
    return CompileResult(dest, text, tpu, cpu, table, version)
