"""Every backbone builds around raw pixels with its preprocessing inside, and takes a user weights file."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from edgetl.backbones import block_index, build_classifier, top_block_layers

# Small sizes keep this fast; the architectures are the same at 224.
CASES = [("mobilenet_v2", 0.35, 32), ("mobilenet_v1", 0.25, 32), ("mobilenet_v3_small", 0.75, 32),
         ("mobilenet_v3_large", 1.0, 32), ("vgg16", 1.0, 32)]


@pytest.mark.parametrize("name,alpha,size", CASES)
def test_classifier_contract_for_every_backbone(name, alpha, size):
    model, layers = build_classifier(name, alpha, size, "none", num_classes=4)
    assert model.input_shape == (None, size, size, 3)
    assert model.layers[-1].name == "probabilities" and model.output_shape == (None, 4)
    assert len(model.get_layer("embedding").output.shape) == 2
    # flat graph: backbone layers are the model's own layers (Grad-CAM and TFLite see them)
    assert all(isinstance(lyr, keras.layers.Layer) and not isinstance(lyr, keras.Model) for lyr in model.layers)
    assert len(top_block_layers(layers, 2)) < len(layers)


def test_vgg16_caffe_preprocessing_matches_keras():
    full, _ = build_classifier("vgg16", 1.0, 32, "none", 2)
    pre = keras.Model(full.input, full.get_layer("preprocess").output)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    expected = keras.applications.vgg16.preprocess_input(x.copy())
    np.testing.assert_allclose(pre(x).numpy(), expected, atol=1e-3)


def test_mobilenet_preprocessing_is_x_over_127_5_minus_1():
    full, _ = build_classifier("mobilenet_v2", 0.35, 32, "none", 2)
    pre = keras.Model(full.input, full.get_layer("preprocess").output)
    x = np.array([[[[0.0, 127.5, 255.0]]]], np.float32).repeat(32, 1).repeat(32, 2)
    np.testing.assert_allclose(pre(x).numpy()[0, 0, 0], [-1.0, 0.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("name,alpha", [("mobilenet_v3_small", 1.0), ("vgg16", 1.0)])
def test_user_weights_file_is_loaded(tmp_path, name, alpha):
    """MobileNetV3/VGG16 ImageNet files are not available offline: a user's own file must work."""
    ctor = {"mobilenet_v3_small": keras.applications.MobileNetV3Small, "vgg16": keras.applications.VGG16}[name]
    kw = {} if name == "vgg16" else {"alpha": alpha}
    donor = ctor(input_shape=(32, 32, 3), include_top=False, weights=None, **kw)
    path = tmp_path / f"{name}.weights.h5"
    donor.save_weights(path)
    model, _ = build_classifier(name, alpha, 32, str(path), 2)
    conv = next(lyr for lyr in donor.layers if isinstance(lyr, keras.layers.Conv2D))
    np.testing.assert_array_equal(model.get_layer(conv.name).get_weights()[0], conv.get_weights()[0])


def test_shared_mobilenet_weights_load(shared_data):
    ref = keras.applications.MobileNet(input_shape=(64, 64, 3), alpha=0.25, include_top=False,
                                       weights=str(shared_data / "weights" / "mobilenet_v1_0.25_224_no_top.h5"))
    model, _ = build_classifier("mobilenet_v1", 0.25, 64, str(shared_data / "weights" /
                                                               "mobilenet_v1_0.25_224_no_top.h5"), 2)
    x = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    feats = keras.Model(model.input, model.get_layer("embedding").output)(x).numpy()
    expected = ref(keras.applications.mobilenet.preprocess_input(x.copy())).numpy().mean(axis=(1, 2))
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-5)


def test_block_numbers_are_parsed_for_each_family():
    assert block_index("block_16_project") == 16
    assert block_index("conv_pw_13_relu") == 13
    assert block_index("expanded_conv_10_add") == 10
    assert block_index("block5_conv3") == 5
    assert block_index("Conv_1") is None


def test_imagenet_weights_come_from_the_keras_cache_offline(shared_data, tmp_path, monkeypatch):
    """--weights imagenet uses Keras' own cache: seed it with the official file and no network is needed."""
    import shutil

    import keras.src.backend.config as keras_config

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))
    (tmp_path / "models").mkdir()
    official = shared_data / "weights" / "mobilenet_v2_0.35_224_no_top.h5"
    shutil.copy(official, tmp_path / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5")
    from_cache, _ = build_classifier("mobilenet_v2", 0.35, 96, "imagenet", 2)
    from_path, _ = build_classifier("mobilenet_v2", 0.35, 96, str(official), 2)
    for name in ("Conv1", "block_8_project", "Conv_1"):
        np.testing.assert_array_equal(from_cache.get_layer(name).get_weights()[0],
                                      from_path.get_layer(name).get_weights()[0])
