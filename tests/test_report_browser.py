"""report.html renders in headless Chromium with every section present and non-empty, opens offline
(nothing fetched but the file itself), and its screenshot is not blank."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgetl.report import SECTIONS, write_report

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

_SECTIONS_JS = """() => [...document.querySelectorAll('main > section')].map(s => ({
  id: s.id, status: s.dataset.status, text: s.innerText.trim(),
  images: [...s.querySelectorAll('img')].map(i => ({ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth,
                                                   cls: i.className})),
  rows: s.querySelectorAll('tbody tr').length}))"""


def _has(module: str, *names: str) -> bool:
    try:
        mod = __import__(module, fromlist=list(names))
    except ImportError:
        return False
    return all(hasattr(mod, n) for n in names)


@pytest.fixture(scope="module")
def exported_run(patch_run, tmp_path_factory) -> Path:
    """The patch-task run, exported to int8 TFLite and given an unknown-object detector (evaluated on
    yellow patches it never saw) by the real export and open-set code, where those are present."""
    if _has("edgetl.export", "export_run") and not (patch_run / "export" / "parity.json").is_file():
        from edgetl.export import export_run

        export_run(patch_run, max_drop=100.0, overwrite=True)  # parity is reported, not gated, here
    if _has("edgetl.openset", "fit_run", "evaluate_run") and not (patch_run / "openset" / "openset.json").is_file():
        from edgetl.openset import evaluate_run, fit_run
        from tests.support.patch_task import write_unknown_images

        fit_run(patch_run, scorer="msp")  # msp: no leave-one-class-out search, seconds
        evaluate_run(patch_run, write_unknown_images(tmp_path_factory.mktemp("unknown")))
    return patch_run


@pytest.fixture(scope="module")
def report(exported_run, tmp_path_factory) -> Path:
    return write_report(exported_run, tmp_path_factory.mktemp("report") / "report.html", misclassified=8,
                        latency_runs=5)


def test_report_is_self_contained(report):
    page = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I), "external resource referenced"
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    assert page.count('src="data:image/') >= 10  # every picture inlined
    for sid, _, _ in SECTIONS:
        assert f'<section id="{sid}" data-status=' in page


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"Debian chromium not installed at {CHROMIUM} "
                                                        "(tools/test.sh installs it with apt-get)")
def test_report_renders_in_chromium_with_every_section_filled(report, exported_run):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    fetched: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: fetched.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            sections = {s["id"]: s for s in page.evaluate(_SECTIONS_JS)}
            title = page.title()
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()

    assert fetched == [report.as_uri()], f"the report fetched more than itself: {fetched}"
    assert title.startswith("edgetl run report")
    assert list(sections) == [sid for sid, _, _ in SECTIONS]
    for sid, s in sections.items():
        heading = next(t for i, t, _ in SECTIONS if i == sid)
        assert len(s["text"]) > len(heading) + 20, f"section {sid} has no text: {s['text']!r}"
        assert s["status"] != "error", f"section {sid} failed: {s['text']}"
        assert all(img["ok"] for img in s["images"]), f"section {sid} has a broken image"

    # Sections whose inputs the run has are built, not excused.
    available = ["overview", "dataset", "curves", "confusion", "per-class", "misclassified", "features", "model"]
    if (exported_run / "export" / "parity.json").is_file():
        available.append("parity")
    if (exported_run / "openset" / "openset.json").is_file():
        available.append("openset")
    for sid in available:
        assert sections[sid]["status"] == "ok", (sid, sections[sid]["text"])
    assert len([i for i in sections["dataset"]["images"] if i["cls"] == "thumb"]) == 3 * 6
    assert sections["dataset"]["rows"] == 4  # three classes and the total
    assert sections["curves"]["images"] and sections["confusion"]["images"]
    assert re.search(r"val: \d+ of 48 images correct", sections["confusion"]["text"])
    assert sections["per-class"]["rows"] >= 3
    wrong = re.search(r"(\d+) of 48 validation images misclassified", sections["misclassified"]["text"])
    assert wrong and int(wrong.group(1)) > 0  # faint val patches: the model does make mistakes
    assert len(sections["misclassified"]["images"]) == 2  # the mistakes and the correct-per-class sheet
    assert len(sections["features"]["images"]) == 1 and "through the network" in sections["features"]["text"]
    assert "Keras float32 latency" in sections["model"]["text"]
    if "parity" in available:
        assert "int8 TFLite accuracy" in sections["parity"]["text"]
        assert "TFLite latency" in sections["model"]["text"]
    if "openset" in available:
        assert "msp" in sections["openset"]["text"] and "auroc" in sections["openset"]["text"]
        assert len(sections["openset"]["images"]) >= 2  # histogram + ROC: evaluation and fit
    else:
        assert "edgetl openset fit" in sections["openset"]["text"]

    img = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), np.float32)
    assert img.shape[0] > 2000  # a long page: all sections laid out
    assert img.std() > 20 and (img < 200).mean() > 0.05, "screenshot looks blank"


def test_missing_inputs_say_what_to_run_and_lose_nothing(patch_run, tmp_path):
    """A run with only model, labels, config and split: sections explain, the report is still written."""
    bare = tmp_path / "bare_run"
    bare.mkdir()
    for name in ("model.keras", "labels.txt", "config.json", "split.csv"):
        shutil.copy(patch_run / name, bare / name)
    (bare / "export").mkdir()
    (bare / "export" / "parity.json").write_text("{ truncated")
    page = write_report(bare, misclassified=2, latency_runs=2).read_text()
    status = dict(re.findall(r'<section id="([^"]+)" data-status="(\w+)"', page))
    assert status["curves"] == "missing" and "re-run <code>edgetl train</code>" in page
    assert status["confusion"] == status["per-class"] == "missing"
    assert status["parity"] == "error" and "not valid JSON" in page
    assert status["dataset"] == status["misclassified"] == status["model"] == "ok"
    assert (bare / "report.html").is_file()
    assert sorted(p.name for p in bare.iterdir()) == sorted(["model.keras", "labels.txt", "config.json",
                                                             "split.csv", "export", "report.html"])
