"""More host outputs that a full disk (or a kill) must not leave half written: signing keys, open-set results and
plots, `visualize`/`evaluate --plot` pictures, frames from a video.

As in test_host_commands_full_disk.py the disk fills for real: the real CLI runs in a child whose file-size limit
(RLIMIT_FSIZE, SIGXFSZ ignored) makes a write fail with EFBIG, as ENOSPC would. To hit one file among several
the limit can be set at the moment that file (or a temporary name for it) is opened for writing (an audit hook).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.runs import make_image_dataset
from tests.test_host_commands_full_disk import ROOT, assert_clear_disk_full_error, leftovers, snapshot

_CHILD = """
import os, resource, signal, sys
limit, dest = int(sys.argv[1]), sys.argv[2]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

def fill(event, args):  # the disk fills when DEST, or a hidden temporary name for it, is opened for writing
    if event != "open" or not isinstance(args[0], (str, os.PathLike)):
        return
    name = os.path.basename(os.fspath(args[0]))
    stem, suffix = os.path.splitext(dest)
    if name != dest and not (name.startswith("." + stem + ".") and name.endswith(suffix)):
        return
    mode, flags = args[1], args[2] or 0
    if (isinstance(mode, str) and any(c in mode for c in "wax+")) or flags & (os.O_WRONLY | os.O_RDWR):
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

if dest:
    sys.addaudithook(fill)
else:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = ["edgetl"] + sys.argv[3:]
from edgetl.cli import main
main()
"""


def run_full(limit: int, *args, when: str = "") -> subprocess.CompletedProcess:
    """`edgetl ARGS` in a child that cannot write a file past `limit` bytes: from the start, or (`when` = a file
    name) from the moment that file is opened for writing."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", _CHILD, str(limit), when, *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env=env)


@pytest.fixture
def export_run_copy(tiny_export_run, tmp_path) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_export_run, run, ignore=shutil.ignore_patterns("export", "openset", "report.html"))
    return run


# ------------------------------------------------------------------------------------------------ keys
@pytest.fixture
def key_pair(tmp_path):
    from edgetl.bundle import generate_keys

    key, pub = generate_keys(tmp_path / "keys" / "signer")
    return key, pub, snapshot(key.parent)


def test_keys_generate_overwrite_on_a_full_disk_keeps_the_previous_private_key(key_pair):
    key, pub, before = key_pair
    # the private key (119 bytes of PEM) does not fit
    r = run_full(60, "keys", "generate", key.with_suffix(""), "--overwrite")
    assert snapshot(key.parent) == before, "the previous private key was cut off"
    assert leftovers(key.parent) == []
    assert_clear_disk_full_error(r, key)


def test_keys_generate_overwrite_on_a_full_disk_does_not_split_the_pair(key_pair):
    from cryptography.hazmat.primitives import serialization

    from edgetl.bundle import load_private_key

    key, pub, before = key_pair
    # the private key fits, the public one does not: a new private key beside the old public key would sign
    # bundles that no device trusting that public key accepts
    r = run_full(10, "keys", "generate", key.with_suffix(""), "--overwrite", when="signer.pub")
    assert snapshot(key.parent) == before, "one half of the key pair was replaced"
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert (load_private_key(key).public_key().public_bytes(*raw)
            == serialization.load_pem_public_key(pub.read_bytes()).public_bytes(*raw))
    assert leftovers(key.parent) == []
    assert_clear_disk_full_error(r, pub)


def test_keys_private_key_is_0600_from_its_first_byte(tmp_path, monkeypatch):
    """Even its temporary file: created 0600 (not chmod-ed afterwards), whatever the umask."""
    from edgetl.bundle import generate_keys

    key, pub = generate_keys(tmp_path / "signer")
    key.chmod(0o644)  # an old key with a loose mode, overwritten
    seen: dict[str, int] = {}
    real_replace = os.replace

    def spy(src, dst, *a, **kw):
        seen[os.path.basename(dst)] = stat.S_IMODE(os.stat(src).st_mode)
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", spy)
    for name in ("chmod", "fchmod"):  # a mode set only after the file exists does not count
        monkeypatch.setattr(os, name, lambda *a, **kw: None)
    old = os.umask(0)
    try:
        generate_keys(tmp_path / "signer", overwrite=True)
    finally:
        os.umask(old)
    assert seen.get("signer.key") == 0o600, f"written in place or not 0600 before the rename: {seen}"
    assert "signer.pub" in seen, "the public key was written in place"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------ openset
@pytest.fixture
def openset_results(export_run_copy, tmp_path):
    """A run whose RUN/openset holds a previous `openset evaluate` and `openset loco`."""
    from edgetl.openset import evaluate_run, loco_run

    run = export_run_copy
    unknown = make_image_dataset(tmp_path / "unknown", ("stripes",), n=6, size=32)
    evaluate_run(run, unknown, scorer="mahalanobis")
    loco_run(run, ["mahalanobis"])
    return run, unknown, snapshot(run / "openset")


def test_openset_evaluate_on_a_full_disk_keeps_the_previous_json(openset_results):
    run, unknown, before = openset_results
    out = run / "openset"
    # evaluate.json (written after the plots) no longer fits
    r = run_full(20, "openset", "evaluate", run, "--unknown", unknown, "--scorer", "mahalanobis",
                 when="evaluate.json")
    assert snapshot(out)["evaluate.json"] == before["evaluate.json"], "the previous evaluate.json was cut off"
    assert leftovers(out) == []
    assert_clear_disk_full_error(r, out / "evaluate.json")


def test_openset_loco_on_a_full_disk_keeps_the_previous_plot_and_json(openset_results):
    run, _, before = openset_results
    out = run / "openset"
    # the plot no longer fits: the previous one stays, and so does the json beside it
    r = run_full((out / "loco.png").stat().st_size // 2, "openset", "loco", run, "--scorer", "mahalanobis",
                 when="loco.png")
    assert snapshot(out) == before, "the previous loco plot (or its json) was changed"
    assert leftovers(out) == []
    assert_clear_disk_full_error(r, out / "loco.png")


def test_openset_loco_on_a_full_disk_keeps_the_previous_json(openset_results):
    run, _, before = openset_results
    out = run / "openset"
    r = run_full(20, "openset", "loco", run, "--scorer", "mahalanobis", when="loco.json")
    assert snapshot(out)["loco.json"] == before["loco.json"], "the previous loco.json was cut off"
    assert leftovers(out) == []
    assert_clear_disk_full_error(r, out / "loco.json")


# ------------------------------------------------------------------------------------------------ pictures
def _complete_png(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
        return True
    except OSError:
        return False


def test_visualize_on_a_full_disk_leaves_no_cut_off_picture(export_run_copy, tmp_path):
    from typer.testing import CliRunner

    from edgetl.cli import app

    run = export_run_copy
    image = Path((run / "split.csv").read_text().splitlines()[1].split(",")[0])
    out = tmp_path / "pictures"
    res = CliRunner().invoke(app, ["visualize", str(run), str(image), "--out", str(out)])
    assert res.exit_code == 0, res.output
    before = snapshot(out)
    sizes = {p.name: p.stat().st_size for p in out.iterdir()}
    assert len(sizes) >= 3
    limit = sorted(sizes.values())[len(sizes) // 2]  # the smaller pictures fit, the larger ones do not

    r = run_full(limit, "visualize", run, image, "--out", out)
    assert set(snapshot(out)) == set(before), "a picture was deleted, or a temporary file left"
    for name, size in sizes.items():
        assert _complete_png(out / name), f"{name} was cut off"
        if size > limit:  # could not have been written whole: the previous one must still be there
            assert snapshot(out)[name] == before[name], f"the previous {name} was replaced"
    assert leftovers(out) == []
    assert_clear_disk_full_error(r, out)


def test_evaluate_plot_on_a_full_disk_keeps_the_previous_plot(export_run_copy, tmp_path):
    from edgetl.evaluate import evaluate

    run = export_run_copy
    png = tmp_path / "plots" / "cm.png"
    evaluate(run, plot=png)
    before = png.read_bytes()
    r = run_full(len(before) // 2, "evaluate", run, "--plot", png)
    assert png.read_bytes() == before, "the previous confusion matrix was cut off"
    assert leftovers(png.parent) == []
    assert_clear_disk_full_error(r, png)


def test_plots_keep_matplotlib_naming_and_file_objects(tmp_path):
    """A --plot name without a suffix still gets `.png` added (as matplotlib did); report.html's in-memory PNGs
    still work."""
    import io

    import numpy as np

    from edgetl.plots import plot_confusion_matrix, plot_curves

    plot_confusion_matrix(np.eye(2, dtype=int), ["a", "b"], tmp_path / "cm")
    assert _complete_png(tmp_path / "cm.png") and not (tmp_path / "cm").exists()
    buf = io.BytesIO()
    plot_curves([{"loss": 1.0, "accuracy": 0.5}, {"loss": 0.5, "accuracy": 0.8}], buf)
    assert buf.getvalue().startswith(b"\x89PNG")
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------ frames
@pytest.fixture
def small_video(tmp_path) -> Path:
    import cv2
    import numpy as np

    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert w.isOpened()
    rng = np.random.default_rng(0)
    for _ in range(20):
        w.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))  # noise: frames of a few kB
    w.release()
    return path


def test_data_from_video_on_a_full_disk_leaves_no_cut_off_frame(small_video, tmp_path):
    from edgetl.data import frames_from_video

    ds = tmp_path / "ds"
    frames_from_video(small_video, ds, "yard", every=5)
    before = snapshot(ds)
    limit = min(p.stat().st_size for p in (ds / "yard").iterdir()) // 2

    r = run_full(limit, "data", "from-video", small_video, "--out", ds, "--class", "yard", "--every", "5")
    assert snapshot(ds) == before, "a previous frame was replaced by a cut-off one"
    assert leftovers(ds / "yard") == []
    assert_clear_disk_full_error(r, ds / "yard")

    fresh = tmp_path / "fresh"
    r = run_full(limit, "data", "from-video", small_video, "--out", fresh, "--class", "yard", "--every", "5")
    assert not (fresh / "yard").exists() or not any((fresh / "yard").iterdir()), \
        f"a cut-off frame was left in the class folder: {sorted((fresh / 'yard').iterdir())}"
    assert_clear_disk_full_error(r, fresh / "yard")
