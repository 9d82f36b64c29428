"""The real Coral models on the shared photos give the published golden labels; model errors are clear."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgetl_device.cli import app
from edgetl_device.errors import DeviceError
from edgetl_device.inference import Class, Model, get_classes, read_labels, resize_area, resize_fast

GOLDEN = {  # SOURCES.md: top-1 of mobilenet_v2_1.0_224_quant.tflite, RGB, area resize, no crop
    "grace_hopper.bmp": (653, "military uniform", 0.93),
    "cat.bmp": (286, "Egyptian cat", 0.78),
    "bird.bmp": (20, "chickadee", 0.99),
    "parrot.jpg": (89, "macaw", 1.00),
    "hot_dog.jpg": (935, "hotdog", 0.92),
    "dragonfly.bmp": (320, "dragonfly", 0.99),
    "owl.jpg": (83, "ruffed grouse", 0.72),
}


@pytest.fixture(scope="module")
def coral_v2(shared_data):
    models = shared_data / "models"
    return Model(models / "mobilenet_v2_1.0_224_quant.tflite", read_labels(models / "imagenet_labels.txt"),
                 num_threads=1)


@pytest.mark.parametrize("image", sorted(GOLDEN))
def test_golden_top1(coral_v2, shared_data, image):
    index, label, score = GOLDEN[image]
    top = coral_v2.classify(cv2.imread(str(shared_data / "images" / image)), top_k=3)
    assert top[0].id == index and coral_v2.labels[index].startswith(label)
    assert top[0].score == pytest.approx(score, abs=0.02)
    assert top[0].score >= top[1].score >= top[2].score


def test_fast_resize_keeps_every_golden_top1(shared_data):
    models = shared_data / "models"
    fast = Model(models / "mobilenet_v2_1.0_224_quant.tflite", num_threads=1, resize="fast")
    for image, (index, _, score) in GOLDEN.items():
        top = fast.classify(cv2.imread(str(shared_data / "images" / image)))[0]
        assert top.id == index and top.score == pytest.approx(score, abs=0.04), image


@pytest.mark.parametrize("image", sorted(GOLDEN))
def test_fast_resize_stays_close_to_the_area_resize(shared_data, image):
    # Plain bilinear lands 0.95-2.9 levels from area on average here (up to 87): aliasing a model
    # trained on area-resized images never saw.
    img = cv2.imread(str(shared_data / "images" / image))
    fast = resize_fast(img, (224, 224)).astype(np.int16)
    area = resize_area(img, (224, 224)).astype(np.int16)
    diff = np.abs(fast - area)
    assert fast.shape == (224, 224, 3) and diff.mean() <= 0.6 and diff.max() <= 24


def test_quantized_input_is_written_as_raw_uint8(coral_v2, shared_data):
    img = cv2.imread(str(shared_data / "images/cat.bmp"))
    x = coral_v2.preprocess(img)
    assert x.dtype == np.uint8 and x.shape == (1, 224, 224, 3)
    expected = cv2.cvtColor(cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    assert np.array_equal(x[0], expected)
    out = coral_v2.run(img)
    assert out.probabilities.dtype == np.float32 and out.probabilities.shape == (1001,) and out.embedding is None
    assert out.probabilities.sum() == pytest.approx(1.0, abs=0.05)


def test_center_crop_takes_the_middle(shared_data):
    models = shared_data / "models"
    m = Model(models / "mobilenet_v1_0.25_128_quant.tflite", center_crop=0.5)
    img = np.zeros((100, 200, 3), np.uint8)
    img[25:75, 75:125] = 255  # the central 50x50 square of the shorter side
    assert m.preprocess(img).min() == 255


def test_get_classes_top_k_and_threshold():
    probs = np.array([0.1, 0.5, 0.05, 0.35], np.float32)
    assert get_classes(probs, top_k=2) == [Class(1, 0.5), Class(3, pytest.approx(0.35))]
    assert [c.id for c in get_classes(probs, top_k=4, threshold=0.3)] == [1, 3]
    assert get_classes(probs, top_k=0) == []


def test_cli_classify_prints_index_label_score(shared_data):
    models = shared_data / "models"
    result = CliRunner().invoke(app, ["classify", str(models / "mobilenet_v2_1.0_224_quant.tflite"),
                                      str(shared_data / "images/grace_hopper.bmp"),
                                      "--labels", str(models / "imagenet_labels.txt"), "--top-k", "3"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if ln and not ln.startswith("INFO")]
    assert len(lines) == 3 and lines[0].startswith("653 military uniform 0.93")
    assert all(ln.split()[0].isdigit() for ln in lines)


def test_invalid_model_is_a_clear_error(shared_data):
    with pytest.raises(DeviceError, match="invalid_model_invoking_error.tflite.*re-export"):
        Model(shared_data / "models/invalid_model_invoking_error.tflite").run(np.zeros((8, 8, 3), np.uint8))


def test_edgetpu_model_without_tpu_is_a_clear_error(shared_data):
    with pytest.raises(DeviceError, match="Edge TPU"):
        Model(shared_data / "models/mobilenet_v1_0.25_128_quant_edgetpu.tflite")


def test_cli_errors_are_one_line_and_exit_2(shared_data, tmp_path):
    models = shared_data / "models"
    image = str(shared_data / "images/cat.bmp")
    cases = [
        [str(models / "invalid_model_invoking_error.tflite"), image],
        [str(models / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"), image],
        [str(models / "mobilenet_v1_0.25_128_quant.tflite"), str(tmp_path / "missing.jpg")],
        [str(models / "mobilenet_v1_0.25_128_quant.tflite"), image, "--labels", str(tmp_path / "none.txt")],
    ]
    for args in cases:
        proc = subprocess.run([sys.executable, "-m", "edgetl_device.cli", "classify", *args],
                              capture_output=True, text=True, timeout=60)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1, (args, proc.stderr)


def test_labels_that_do_not_match_the_model_are_rejected(shared_data, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(DeviceError, match="labels file has 2 lines"):
        Model(shared_data / "models/mobilenet_v1_0.25_128_quant.tflite", read_labels(labels))


def test_labels_with_a_byte_order_mark_or_blank_lines(tmp_path):
    # Windows editors save UTF-8 with a BOM; pycoral's `index label` files may hold blank lines
    labels = tmp_path / "labels.txt"
    labels.write_bytes("\ufeff0 background\n1 tench\n\n2 goldfish\n".encode())
    assert read_labels(labels) == ["background", "tench", "goldfish"]
    labels.write_bytes("\ufeffbackground\ntench\n".encode())
    assert read_labels(labels) == ["background", "tench"]


def test_tensorflow_is_a_working_last_resort_interpreter(shared_data):
    # a development host with TensorFlow but neither ai-edge-litert nor tflite-runtime
    script = (
        "import sys\n"
        "sys.modules.update(dict.fromkeys(['ai_edge_litert', 'ai_edge_litert.interpreter', 'tflite_runtime']))\n"
        "import cv2\n"
        "from edgetl_device.interpreter import backend_module\n"
        "from edgetl_device.inference import Model\n"
        "m = Model(sys.argv[1] + '/models/mobilenet_v2_1.0_224_quant.tflite', num_threads=1)\n"
        "print(backend_module()[0], m.classify(cv2.imread(sys.argv[1] + '/images/parrot.jpg'))[0].id)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(shared_data)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    backend, top1 = proc.stdout.split()[-2:]
    assert backend.startswith("tensorflow") and int(top1) == GOLDEN["parrot.jpg"][0]


def test_probing_for_a_missing_edge_tpu_prints_no_traceback():
    # load_model asks this for every bundle that ships an Edge TPU model; most devices have none
    proc = subprocess.run([sys.executable, "-c", "from edgetl_device.inference import _tpu_available as t; "
                           "import gc; r = t(); gc.collect(); print(r)"], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False"] and "Traceback" not in proc.stderr, proc.stderr


def test_cli_rejects_a_center_crop_above_one(shared_data):
    models = shared_data / "models"
    result = CliRunner().invoke(app, ["classify", str(models / "mobilenet_v1_0.25_128_quant.tflite"),
                                      str(shared_data / "images/cat.bmp"), "--center-crop", "1.5"])
    assert result.exit_code == 2 and "center-crop" in result.output
