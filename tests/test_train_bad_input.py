"""Bad input to `edgetl train`: clear EdgetlError (CLI: one line, exit 2), or handled and reported."""

from __future__ import annotations

import csv
import socket

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgetl.cli import app
from edgetl.errors import EdgetlError
from edgetl.train import train
from tests.support.runs import make_image_dataset, tiny_weights

FAST = dict(size=32, weights="none", epochs=1, fine_tune_epochs=0, augment=False, batch_size=8)


def _cli_error(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    # progress logging may precede it, but the error itself is one line, last, with no traceback
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in res.output, res.output
    return errors[0]


def test_odd_images_train_and_broken_ones_are_skipped_and_reported(tmp_path):
    data = make_image_dataset(tmp_path / "d", ("a", "b"), n=6, size=48)
    rgb = np.asarray(Image.open(data / "a" / "a_000.png"))
    Image.fromarray(rgb).convert("L").save(data / "a" / "gray.png")
    Image.fromarray(rgb).convert("CMYK").save(data / "a" / "cmyk.jpg")
    Image.fromarray(rgb).convert("RGBA").save(data / "b" / "alpha.png")
    Image.fromarray(rgb).convert("P").save(data / "b" / "palette.gif")
    Image.fromarray(np.full((3000, 4000, 3), 90, np.uint8)).save(data / "b" / "huge.jpg", quality=60)
    (data / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = train(data, tmp_path / "run", val_split=0.3, **FAST)
    skipped = [s["path"] for s in result.metrics["skipped"]]
    assert len(skipped) == 1 and skipped[0].endswith("broken.jpg")
    used = {s.path.name for split in ("train", "val") for s in result.run.samples(split)}
    assert {"gray.png", "cmyk.jpg", "alpha.png", "palette.gif", "huge.jpg"} <= used
    assert "broken.jpg" not in used


def test_empty_class_folder(tmp_path):
    data = make_image_dataset(tmp_path / "d", ("a", "b"), n=4, size=32)
    (data / "empty").mkdir()
    with pytest.raises(EdgetlError, match="has no images"):
        train(data, tmp_path / "run", **FAST)
    assert "empty has no images" in _cli_error(["train", str(data), "--out", str(tmp_path / "run")])


def test_single_class(tmp_path):
    data = make_image_dataset(tmp_path / "d", ("only",), n=8, size=32)
    assert "at least 2 classes" in _cli_error(["train", str(data), "--out", str(tmp_path / "run"), "--weights",
                                               "none"])


def write_csv(path, header: list[str], rows: list[list]):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_all_images_of_a_class_unreadable(tmp_path):
    data = make_image_dataset(tmp_path / "d", ("a", "b"), n=4, size=32)
    for p in (data / "b").iterdir():
        p.write_bytes(b"junk")
    with pytest.raises(EdgetlError, match="classes"):
        train(data, tmp_path / "run", **FAST)


def test_csv_rows_pointing_at_missing_files(tmp_path):
    data = make_image_dataset(tmp_path / "d", ("a", "b"), n=3, size=32)
    manifest = write_csv(tmp_path / "m.csv", ["file", "cls"],
                         [[p.relative_to(tmp_path), p.parent.name] for p in sorted(data.rglob("*.png"))]
                         + [["d/a/vanished.png", "a"]])
    msg = _cli_error(["train", "--csv", str(manifest), "--path-column", "file", "--label-column", "cls",
                      "--out", str(tmp_path / "run"), "--weights", "none"])
    assert "missing files" in msg and "vanished.png" in msg


@pytest.mark.parametrize("args,needle", [
    (["--backbone", "resnet50"], "unknown backbone"),
    (["--backbone", "mobilenet_v2", "--alpha", "0.25"], "does not support alpha 0.25"),
    (["--backbone", "mobilenet_v1", "--alpha", "0.35"], "does not support alpha 0.35"),
    (["--backbone", "vgg16", "--alpha", "0.5"], "does not support alpha"),
    (["--size", "16", "--weights", "none"], "--size >= 32"),
    (["--size", "200"], "ImageNet weights for mobilenet_v2 exist only for sizes"),
    (["--alpha", "1.4", "--size", "128"], "alpha 1.4 exist only for size 224"),  # not a download that 404s
    (["--weights", "/nonexistent/w.h5"], "not found"),
    (["--strategy", "tpu", "--weights", "none"], "--strategy"),
])
def test_unsupported_combinations(tmp_path, args, needle):
    data = make_image_dataset(tmp_path / "d", ("a", "b"), n=3, size=32)
    assert needle in _cli_error(["train", str(data), "--out", str(tmp_path / "run"), *args])


def test_weights_file_of_another_architecture(tmp_path):
    import keras

    v1 = keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, include_top=False, weights=None)
    wrong = tmp_path / "mobilenet_v1.weights.h5"
    v1.save_weights(wrong)
    data = make_image_dataset(tmp_path / "d", ("a", "b"), n=3, size=32)
    with pytest.raises(EdgetlError, match="does not fit mobilenet_v2 alpha 0.35"):
        train(data, tmp_path / "run", **{**FAST, "weights": str(wrong)})
    with pytest.raises(EdgetlError, match="does not fit mobilenet_v1 alpha 0.5"):
        train(data, tmp_path / "run", **{**FAST, "backbone": "mobilenet_v1", "alpha": 0.5, "weights": str(wrong)})


def test_legacy_h5_of_another_alpha(shared_data, tmp_path):
    data = make_image_dataset(tmp_path / "d", ("a", "b"), n=3, size=32)
    w = shared_data / "weights" / "mobilenet_v2_0.35_224_no_top.h5"
    with pytest.raises(EdgetlError, match="does not fit mobilenet_v2 alpha 1.0"):
        train(data, tmp_path / "run", **{**FAST, "alpha": 1.0, "weights": str(w)})


def _online() -> bool:
    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=2).close()
        return True
    except OSError:
        return False


def test_imagenet_weights_offline_names_weights_path(tmp_path, monkeypatch):
    if _online():
        pytest.skip("network reachable: Keras could download the weights")
    import keras.src.backend.config as keras_config

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras_home"))  # an empty Keras cache
    data = make_image_dataset(tmp_path / "d", ("a", "b"), n=3, size=32)
    msg = _cli_error(["train", str(data), "--out", str(tmp_path / "run"), "--backbone", "mobilenet_v3_small",
                      "--alpha", "1.0", "--size", "224"])
    assert "--weights PATH" in msg


# the cached-head path on the shared weights: seconds, where weights="none" trains the whole network
CACHED = dict(size=32, weights=tiny_weights(), epochs=1, fine_tune_epochs=0, augment=False, batch_size=8)


def test_out_that_is_a_file(tmp_path):
    data = make_image_dataset(tmp_path / "d", ("a", "b"), n=3, size=32)
    (tmp_path / "notes.txt").write_text("mine")
    msg = _cli_error(["train", str(data), "--out", str(tmp_path / "notes.txt"), "--weights", "none"])
    assert "is a file" in msg and (tmp_path / "notes.txt").read_text() == "mine"


def test_out_holding_a_previous_run_is_refused_unless_overwrite(tmp_path):
    """Re-training into RUN must not leave the old model's openset/ (which export copies into the bundle) and
    export/ beside the new model: refused, or with --overwrite replaced together with the old run."""
    data = make_image_dataset(tmp_path / "d", ("a", "b"), n=3, size=32)
    run = tmp_path / "run"
    train(data, run, **CACHED)
    (run / "openset").mkdir()
    (run / "openset" / "openset.json").write_text("{}")  # fitted on the first model's embeddings
    (run / "export").mkdir()
    (run / "export" / "model.tflite").write_bytes(b"first model")
    first = (run / "model.keras").read_bytes()
    msg = _cli_error(["train", str(data), "--out", str(run), "--size", "32", "--weights", "none"])
    assert "--overwrite" in msg and (run / "model.keras").read_bytes() == first
    assert (run / "openset" / "openset.json").is_file()
    result = train(data, run, overwrite=True, **{**CACHED, "seed": 1})
    assert not (run / "openset").exists() and not (run / "export").exists()
    assert result.run.config["seed"] == 1 and result.run.labels == ["a", "b"]


def test_class_names_that_labels_txt_cannot_hold(tmp_path):
    """labels.txt is one name per line and its readers strip lines: ' lead'/'trail ' would come back as other
    names (the run could not evaluate its own validation split) and a line break shifts every index after it."""
    data = make_image_dataset(tmp_path / "d", ("trail ", "b"), n=3, size=32)
    with pytest.raises(EdgetlError, match="'trail '"):
        train(data, tmp_path / "run", **CACHED)
    assert not (tmp_path / "run").exists()
    images = make_image_dataset(tmp_path / "imgs", ("a", "b"), n=3, size=32)
    manifest = write_csv(tmp_path / "m.csv", ["path", "label"],  # a quoted cell with a line break:
                         [[p, "two\nlines" if p.parent.name == "a" else "b"] for p in sorted(images.rglob("*.png"))])
    assert "line break" in _cli_error(["train", "--csv", str(manifest), "--out", str(tmp_path / "run2"),
                                       "--weights", "none"])


def test_weights_file_that_is_truncated_or_not_weights(shared_data, tmp_path):
    """The right architecture's file cut short (an interrupted download) or an HTML error page saved as .h5 is
    damaged, not "another --backbone/--alpha": the message must say so."""
    data = make_image_dataset(tmp_path / "d", ("a", "b"), n=3, size=32)
    good = (shared_data / "weights" / "mobilenet_v2_0.35_224_no_top.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(good[: len(good) // 2])
    (tmp_path / "page.h5").write_text("<html>404 Not Found</html>")
    for name in ("cut.h5", "page.h5"):
        msg = _cli_error(["train", str(data), "--out", str(tmp_path / "run"), "--size", "32", "--weights",
                          str(tmp_path / name)])
        assert "truncated or corrupt" in msg and "does not fit" not in msg, msg


@pytest.mark.parametrize(("backbone", "alpha"), [("mobilenet_v2", 0.35), ("mobilenet_v1", 1.0),
                                                 ("mobilenet_v3_small", 1.0), ("vgg16", 1.0)])
def test_a_backbone_without_alpha_gets_one_it_supports(backbone, alpha):
    # --backbone vgg16 alone used to fail with "does not support alpha 0.35": an alpha the user never set
    from edgetl.train import TrainConfig

    cfg = TrainConfig(backbone=backbone, weights="none")
    cfg.validate()
    assert cfg.alpha == alpha
