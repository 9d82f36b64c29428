"""Feature maps layer by layer: one layer per block by default, shapes of the layers, value ranges,
nested backbones reached correctly, grids and PNGs that show something."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgetl.errors import EdgetlError
from edgetl.visualize import (
    build_backbone,
    channel_grid,
    default_feature_layers,
    feature_maps,
    find_layer,
    load_rgb,
    normalize_channels,
    save_feature_maps,
)


@pytest.fixture(scope="module")
def vgg16_64():
    return build_backbone("vgg16", None, size=64)  # random weights: VGG16's ImageNet file is not offline


def _image(shared_data=None, size=64) -> np.ndarray:
    if shared_data is not None:
        return load_rgb(shared_data / "images" / "cat.bmp", size)
    return np.random.default_rng(0).uniform(0, 255, (size, size, 3)).astype(np.float32)


def test_vgg16_default_is_one_layer_per_block_with_the_layer_shapes(vgg16_64):
    maps = feature_maps(vgg16_64, _image())
    assert list(maps) == [f"vgg16/block{b}_conv{c}" for b, c in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))]
    expected = [(64, 64, 64), (32, 32, 128), (16, 16, 256), (8, 8, 512), (4, 4, 512)]
    assert [m.shape for m in maps.values()] == expected
    for name, fmap in maps.items():
        assert fmap.dtype == np.float32 and np.isfinite(fmap).all()
        assert fmap.min() >= 0.0, name  # VGG convs end in ReLU
        assert fmap.max() > 0.0, name  # random weights still respond to a noise image


def test_nested_backbone_maps_equal_the_backbone_run_on_its_own():
    """Taps through a nested sub-model return exactly what that layer computes."""
    import keras

    from tests.support.patch_task import build_model

    model = build_model()
    img = _image()
    maps = feature_maps(model, img, ["conv1", "tiny_backbone/conv3"])
    assert list(maps) == ["tiny_backbone/conv1", "tiny_backbone/conv3"]
    bb = model.get_layer("tiny_backbone")
    direct = keras.Model(bb.inputs, [bb.get_layer("conv1").output, bb.get_layer("conv3").output])
    d1, d3 = direct(img[None] / 127.5 - 1.0)
    np.testing.assert_allclose(maps["tiny_backbone/conv1"], np.asarray(d1)[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(maps["tiny_backbone/conv3"], np.asarray(d3)[0], rtol=1e-5, atol=1e-5)
    assert [r.name for r in default_feature_layers(model)] == ["tiny_backbone/conv1", "tiny_backbone/conv2",
                                                               "tiny_backbone/conv3"]


def test_mobilenet_v2_pretrained_chosen_layers_and_pictures(shared_data, tmp_path):
    weights = shared_data / "weights" / "mobilenet_v2_0.35_224_no_top.h5"
    model = build_backbone("mobilenet_v2", weights, size=96, alpha=0.35)
    img = _image(shared_data, 96)
    defaults = [r.name.split("/")[-1] for r in default_feature_layers(model)]
    assert defaults == ["block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu",
                        "block_13_expand_relu", "out_relu"]
    names = ["Conv1_relu", "mobilenetv2_0.35_96/block_6_expand_relu"]
    maps = feature_maps(model, img, names)
    for ref_name, fmap in maps.items():
        ref = find_layer(model, ref_name)
        assert fmap.shape == tuple(ref.output_shape[1:])
        assert 0.0 <= fmap.min() and fmap.max() <= 6.0  # ReLU6
    assert maps["mobilenetv2_0.35_96/Conv1_relu"].shape == (48, 48, 16)

    grid, order = channel_grid(maps["mobilenetv2_0.35_96/Conv1_relu"], max_channels=9)
    assert len(order) == 9 and grid.shape == (3 * 48 + 2, 3 * 48 + 2)
    vals = grid[np.isfinite(grid)]
    assert vals.min() == 0.0 and vals.max() == 1.0
    means = maps["mobilenetv2_0.35_96/Conv1_relu"].mean(axis=(0, 1))
    assert means[order[0]] == means.max()  # most active channel first

    paths = save_feature_maps(maps, img, tmp_path / "maps")
    assert [p.name for p in paths] == ["00_input.png", "01_mobilenetv2_0.35_96__Conv1_relu.png",
                                       "02_mobilenetv2_0.35_96__block_6_expand_relu.png", "layers.png"]
    from PIL import Image

    for p in paths:
        pixels = np.asarray(Image.open(p).convert("L"), np.float32)
        assert pixels.std() > 10, f"{p.name} looks blank"


def test_mobilenet_v1_pretrained_default_layers(shared_data):
    model = build_backbone("mobilenet", shared_data / "weights" / "mobilenet_v1_0.25_224_no_top.h5", 64, 0.25)
    maps = feature_maps(model, _image(shared_data, 64))
    assert [n.split("/")[-1] for n in maps] == ["conv_pw_1_relu", "conv_pw_3_relu", "conv_pw_5_relu",
                                                "conv_pw_11_relu", "conv_pw_13_relu"]
    assert [m.shape[:2] for m in maps.values()] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]


def test_bad_layers_and_backbones_are_clear_errors(vgg16_64, tmp_path):
    with pytest.raises(EdgetlError, match="no layer 'block9_conv1'.*block1_conv1"):
        feature_maps(vgg16_64, _image(), ["block9_conv1"])
    with pytest.raises(EdgetlError, match="unknown backbone 'resnet'"):
        build_backbone("resnet")
    with pytest.raises(EdgetlError, match="weights file not found"):
        build_backbone("vgg16", tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(EdgetlError, match="cannot build vgg16"):
        build_backbone("vgg16", bad, size=32)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5)),
              elements=st.floats(-1e4, 1e4, width=32)))
def test_normalized_channels_are_in_unit_range(fmap):
    norm = normalize_channels(fmap)
    assert norm.shape == fmap.shape
    assert np.isfinite(norm).all() and norm.min() >= 0.0 and norm.max() <= 1.0
    for c in range(fmap.shape[2]):
        if fmap[:, :, c].max() > fmap[:, :, c].min():
            assert norm[:, :, c].max() == pytest.approx(1.0) and norm[:, :, c].min() == 0.0


def test_sequential_model_with_a_nested_sequential_backbone():
    import keras

    bb = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, activation="relu", name="c1"),
                           keras.layers.MaxPooling2D(name="p1"), keras.layers.Conv2D(16, 3, activation="relu",
                                                                                      name="c2")], name="bb")
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255.0), bb,
                              keras.layers.GlobalAveragePooling2D(name="embedding"),
                              keras.layers.Dense(3, activation="softmax", name="probabilities")])
    img = _image(size=32)
    maps = feature_maps(model, img)
    assert {k: v.shape for k, v in maps.items()} == {"bb/c1": (30, 30, 8), "bb/c2": (13, 13, 16)}
    direct = keras.Model(bb.inputs, bb.get_layer("c2").output)(img[None] / 255.0)
    np.testing.assert_allclose(maps["bb/c2"], np.asarray(direct)[0], rtol=1e-5, atol=1e-5)


def test_vgg16_with_user_given_weights_uses_them(vgg16_64, tmp_path):
    """A weights file the user gives is loaded: maps equal those of the (randomly initialised) model the
    file came from, which a fresh random initialisation would not reproduce."""
    weights = tmp_path / "vgg16_notop.weights.h5"
    vgg16_64.get_layer("vgg16").save_weights(weights)
    model = build_backbone("vgg16", weights, size=64)
    img = _image()
    got = feature_maps(model, img, ["block3_conv3"])["vgg16/block3_conv3"]
    want = feature_maps(vgg16_64, img, ["block3_conv3"])["vgg16/block3_conv3"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
