"""`--preset photos|photos-large|fixed-camera` fills the options the user left out; explicit options still win."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgetl.cli import app
from edgetl.errors import EdgetlError
from edgetl.train import PRESETS, TrainConfig, train
from tests.support.runs import make_image_dataset, tiny_weights


def test_presets_name_only_real_training_options():
    fields = set(TrainConfig.__dataclass_fields__)
    for name, values in PRESETS.items():
        assert set(values) <= fields, name


def test_unknown_preset_is_a_clear_error(tmp_path):
    with pytest.raises(EdgetlError, match="--preset must be one of photos, photos-large, fixed-camera"):
        train(tmp_path, tmp_path / "run", preset="drones")


def test_cli_preset_fills_unset_options_and_explicit_ones_win(tmp_path):
    data = make_image_dataset(tmp_path / "data", n=8, size=64)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", str(data), "--out", str(run), "--size", "96", "--weights", tiny_weights(), "--no-report",
        "--preset", "fixed-camera", "--epochs", "2", "--fine-tune-epochs", "1", "--no-augment",
    ])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    preset = PRESETS["fixed-camera"]
    assert config["preset"] == "fixed-camera"
    assert config["embedding"] == preset["embedding"] == "multiscale"  # from the preset
    assert config["fine_tune_blocks"] == preset["fine_tune_blocks"] != TrainConfig.fine_tune_blocks
    assert config["fine_tune_learning_rate"] == preset["fine_tune_learning_rate"]
    assert config["label_smoothing"] == preset["label_smoothing"] == 0.0 != TrainConfig.label_smoothing
    assert (config["epochs"], config["fine_tune_epochs"]) == (2, 1)  # given on the command line


def test_cli_without_preset_keeps_trainconfig_defaults(tmp_path):
    data = make_image_dataset(tmp_path / "data", n=6, size=64)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", str(data), "--out", str(run), "--size", "96", "--weights", tiny_weights(), "--no-report",
        "--epochs", "1", "--fine-tune-epochs", "0", "--no-augment",
    ])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    defaults = TrainConfig()
    assert config["preset"] is None
    assert (config["embedding"], config["patience"], config["learning_rate"], config["label_smoothing"],
            config["center_crop"]) == (defaults.embedding, defaults.patience, defaults.learning_rate,
                                       defaults.label_smoothing, None)


def test_center_crop_travels_from_training_to_the_device(tmp_path):
    """--center-crop (the photos preset's 1.0) is recorded in the run, used by export's calibration and parity,
    written into the bundle manifest, and applied by the device before its resize."""
    import numpy as np

    from edgetl.export import export_run
    from edgetl.run import Run
    from edgetl_device.inference import Model

    data = make_image_dataset(tmp_path / "data", n=8, size=64)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", str(data), "--out", str(run), "--size", "96", "--weights", tiny_weights(), "--no-report",
        "--preset", "photos", "--epochs", "1", "--fine-tune-epochs", "0",
    ])
    assert result.exit_code == 0, result.output
    assert Run(run).center_crop == PRESETS["photos"]["center_crop"] == 1.0
    res = export_run(run, tmp_path / "bundle", quant="float32", max_drop=100.0)
    assert res.manifest["input"]["center_crop"] == 1.0
    model = Model(res.model_path, manifest=res.manifest)
    assert model.center_crop == 1.0
    wide = np.zeros((60, 180, 3), np.uint8)
    wide[:, 60:120] = 255  # only the centred square is white
    assert model.preprocess(wide).astype(np.float32).min() == 255

    # explicitly off (0 = whole frame, squeezed) even with the preset; out of range is a clear error
    off = tmp_path / "off"
    result = CliRunner().invoke(app, [
        "train", str(data), "--out", str(off), "--size", "96", "--weights", tiny_weights(), "--no-report",
        "--preset", "photos", "--center-crop", "0", "--epochs", "1", "--fine-tune-epochs", "0",
    ])
    assert result.exit_code == 0, result.output
    assert Run(off).center_crop is None
    with pytest.raises(EdgetlError, match="--center-crop must be in"):
        train(data, tmp_path / "bad", center_crop=1.5)
