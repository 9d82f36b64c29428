"""How `edgetl demo` picks weights and a broker, guards its output folder, and fails fast on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgetl import demo
from edgetl.errors import EdgetlError
from tests.support.mosquitto import free_port

CACHE_NAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


def _file(path: Path, data: bytes = b"h5") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_weights_come_from_the_flag_then_the_keras_cache_then_shared_data_then_scratch(tmp_path):
    given = _file(tmp_path / "mine.h5")
    cache = tmp_path / "keras" / "models"
    shared = tmp_path / "shared"
    _file(shared / "weights" / "mobilenet_v2_0.35_224_no_top.h5")

    c = demo.resolve_weights(given, models_dir=cache, shared_dirs=[shared])
    assert (c.source, c.value) == ("--weights", str(given.resolve()))

    c = demo.resolve_weights(None, models_dir=cache, shared_dirs=[shared])
    assert c.source == "shared data" and "shared data" in c.note

    _file(cache / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5")
    _file(cache / CACHE_NAME)
    c = demo.resolve_weights(None, models_dir=cache, shared_dirs=[shared])
    assert (c.source, Path(c.value).name) == ("keras cache", CACHE_NAME)  # 224 preferred

    c = demo.resolve_weights(None, models_dir=tmp_path / "none", shared_dirs=[tmp_path / "nowhere"])
    assert c.value == "none" and "FROM SCRATCH" in c.note and "--weights PATH" in c.note

    with pytest.raises(EdgetlError, match="--weights .* not found"):
        demo.resolve_weights(tmp_path / "missing.h5")


def test_broker_is_used_when_it_answers_and_a_dead_one_is_an_error(broker):
    closed = free_port()
    assert demo.resolve_broker(broker.url) == demo.Broker("127.0.0.1", broker.port)
    assert demo.resolve_broker(None, default=demo.Broker("127.0.0.1", broker.port)).port == broker.port
    assert demo.resolve_broker(None, default=demo.Broker("127.0.0.1", closed)) is None  # local event log
    assert demo.resolve_broker("none", default=demo.Broker("127.0.0.1", broker.port)) is None
    with pytest.raises(EdgetlError, match="no MQTT broker answers"):
        demo.resolve_broker(f"mqtt://127.0.0.1:{closed}")
    with pytest.raises(EdgetlError, match="bad broker URL"):
        demo.resolve_broker("http://example.org")


def test_output_folder_of_someone_else_is_never_cleared(tmp_path):
    theirs = tmp_path / "theirs"
    _file(theirs / "thesis.tex")
    with pytest.raises(EdgetlError, match="not made by `edgetl demo`"):
        demo.prepare_out(theirs)
    assert (theirs / "thesis.tex").is_file()

    ours = demo.prepare_out(tmp_path / "ours")
    _file(ours / "run" / "old.txt")
    demo.prepare_out(ours)
    assert sorted(p.name for p in ours.iterdir()) == [demo.MARKER]


@pytest.mark.parametrize("args, message", [
    (["--data", "/nonexistent/data"], "--data /nonexistent/data is not a folder"),
    (["--weights", "/nonexistent/w.h5"], "--weights /nonexistent/w.h5 not found"),
    (["--broker", "mqtt://127.0.0.1:{closed}"], "no MQTT broker answers at 127.0.0.1:{closed}"),
])
def test_cli_bad_input_is_one_line_exit_2_before_any_work(tmp_path, args, message):
    closed = free_port()
    args = [a.format(closed=closed) for a in args]
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "edgetl", "demo", "--quick", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {proc.stderr.strip()[7:]}"]
    assert message.format(closed=closed) in proc.stderr
    assert not out.exists()
