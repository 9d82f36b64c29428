"""The report on a run written by the real trainer (`tiny_run`: MobileNetV2 0.35 at 96 px): the trainer's
own pictures are embedded as they are and every section that has its inputs is built."""

from __future__ import annotations

import base64
import re

from edgetl.report import write_report


def test_report_on_a_trained_run(tiny_run, tmp_path):
    path = write_report(tiny_run, tmp_path / "report.html", misclassified=4, latency_runs=3)
    page = path.read_text(encoding="utf-8")
    status = dict(re.findall(r'<section id="([^"]+)" data-status="(\w+)"', page))
    for sid in ("overview", "dataset", "curves", "confusion", "per-class", "misclassified", "features", "model"):
        assert status[sid] == "ok", (sid, status)
    for sid in ("parity", "openset"):  # the fixture run is neither exported nor given a detector
        exported = (tiny_run / "export" / "parity.json").is_file() if sid == "parity" else \
            (tiny_run / "openset" / "openset.json").is_file()
        assert status[sid] == ("ok" if exported else "missing"), (sid, status)
    for picture in ("curves.png", "confusion_matrix.png"):
        encoded = base64.b64encode((tiny_run / picture).read_bytes()).decode("ascii")
        assert encoded in page, f"{picture} not embedded as written by the trainer"
    run_name = tiny_run.resolve().name
    assert f"edgetl run report: {run_name}" in page
    assert "mobilenet_v2" in page  # the run's config is shown
    assert re.search(r"\d+ of \d+ validation images misclassified", page)
