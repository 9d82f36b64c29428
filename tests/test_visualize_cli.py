"""`edgetl visualize` and `edgetl report` from the command line: files written, one-line errors, exit 2."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgetl.cli import app


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def _png_not_blank(path) -> bool:
    return float(np.asarray(Image.open(path).convert("L"), np.float32).std()) > 5


def test_bare_vgg16_backbone_feature_maps(runner, shared_data, tmp_path):
    out = tmp_path / "vgg"
    res = runner.invoke(app, ["visualize", str(shared_data / "images" / "owl.jpg"), "--backbone", "vgg16",
                              "--size", "64", "--out", str(out), "--max-channels", "16"])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["00_input.png", "01_vgg16__block1_conv2.png", "02_vgg16__block2_conv2.png",
                     "03_vgg16__block3_conv3.png", "04_vgg16__block4_conv3.png", "05_vgg16__block5_conv3.png",
                     "layers.png"]
    assert all(_png_not_blank(out / n) for n in names)


def test_run_image_feature_maps_gradcam_and_misclassified_sheet(runner, patch_run, tmp_path):
    image = next((patch_run / "images").glob("val_*_blue.png"))
    out = tmp_path / "viz"
    res = runner.invoke(app, ["visualize", str(patch_run), str(image), "--out", str(out),
                              "--layers", "conv1,tiny_backbone/conv3", "--class", "blue", "--misclassified", "4"])
    assert res.exit_code == 0, res.output
    assert "Grad-CAM of blue at tiny_backbone/conv3" in res.output
    assert "misclassified validation images; showing 4" in res.output
    for name in ("00_input.png", "01_tiny_backbone__conv1.png", "02_tiny_backbone__conv3.png", "layers.png",
                 "gradcam.png", "misclassified.png"):
        assert _png_not_blank(out / name), name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["RUN", "missing.png"], "image not found"),
        (["RUN", "IMG", "--class", "purple"], "unknown class 'purple'"),
        (["RUN", "IMG", "--layers", "conv9"], "no layer 'conv9'"),
        (["IMG", "--backbone", "resnet"], "unknown backbone 'resnet'"),
        (["RUN", "IMG", "--backbone", "vgg16"], "with --backbone give only IMAGE"),
        (["RUN"], "give RUN IMAGE"),
        (["NORUN", "IMG"], "does not exist"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(runner, patch_run, tmp_path, args, message):
    image = next((patch_run / "images").glob("val_*.png"))
    subst = {"RUN": str(patch_run), "IMG": str(image), "NORUN": str(tmp_path / "no_run"),
             "missing.png": str(tmp_path / "missing.png")}
    res = runner.invoke(app, ["visualize", *[subst.get(a, a) for a in args], "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


def test_report_command_on_a_run(runner, patch_run, tmp_path):
    out = tmp_path / "r" / "my_report.html"
    res = runner.invoke(app, ["report", str(patch_run), "--out", str(out), "--misclassified", "2"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith(str(out))
    assert out.stat().st_size > 50_000 and "<section id=\"misclassified\" data-status=\"ok\">" in out.read_text()
    res = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "does not exist" in res.output
