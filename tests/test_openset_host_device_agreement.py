"""The score the host computes for a frame is the score the device computes from the bundle.

Real parts: a trained Keras run, real int8 TFLite conversion (`edgetl.export`), a signed bundle,
`edgetl_device.bundle.open_bundle` + `edgetl_device.inference.Model` + `scorer_from_bundle`.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from edgetl.openset import Embedder, auroc, fit_run, load_openset
from edgetl_device.bundle import open_bundle
from edgetl_device.inference import Model
from edgetl_device.openset import scorer_from_bundle


def write_frames(folder, images):
    folder.mkdir(parents=True)
    paths = []
    for i, img in enumerate(images):
        p = folder / f"{i:03d}.png"
        # frames bigger than the model input, so both sides really resize (INTER_AREA)
        Image.fromarray(cv2.resize(img, (48, 40), interpolation=cv2.INTER_NEAREST)).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def exported(tiny_export_run, tmp_path_factory):
    from edgetl.bundle import generate_keys, sign_bundle
    from edgetl.export import export_run
    from tests.support.tiny_export_run import make_images

    tmp = tmp_path_factory.mktemp("openset_bundle")
    export_run(tiny_export_run, tmp / "bundle", quant="int8")
    rng = np.random.default_rng(11)
    known = np.concatenate([make_images(rng, c, 8) for c in range(3)])
    yellow = make_images(rng, 0, 16)
    yellow[..., 1] = yellow[..., 0]  # red and green both high: a colour no class has
    frames = {"known": write_frames(tmp / "known", known), "unknown": write_frames(tmp / "unknown", yellow)}
    return tmp, frames, generate_keys(tmp / "keys/publisher"), sign_bundle


@pytest.mark.parametrize("scorer", ["relative_mahalanobis", "combined", "msp", "knn", "energy", "maxlogit", "cosine",
                                    "mahalanobis"])
def test_device_scores_from_the_bundle_equal_host_scores(tiny_export_run, exported, scorer):
    tmp, frames, (private, public), sign_bundle = exported
    bundle_dir = tmp / "bundle"
    tflite = bundle_dir / "model.tflite"
    doc = fit_run(tiny_export_run, scorer, tflite=tflite, bundle=bundle_dir, out=tmp / f"fit_{scorer}")
    sign_bundle(bundle_dir, private)

    bundle = open_bundle(bundle_dir, [public])
    assert bundle.manifest["unknown"]["scorer"] == scorer
    score, threshold = scorer_from_bundle(bundle)
    assert threshold == pytest.approx(doc["threshold"])
    model = Model(bundle.model_path, bundle.labels, manifest=bundle.manifest)

    paths = frames["known"] + frames["unknown"]
    device = np.array([score(*model.run(cv2.imread(str(p)))) for p in paths])
    _, host_scorer = load_openset(tmp / f"fit_{scorer}")
    host = host_scorer.score_batch(*Embedder(tiny_export_run, tflite)(paths))
    # float32 matmuls of one frame vs a batch may round differently: allow 1e-4 of the score range
    np.testing.assert_allclose(device, host, rtol=1e-4, atol=1e-4 * np.ptp(host))
    # the host's decisions at the shipped threshold are the device's
    assert ((device > threshold) == (host > threshold)).all()


def test_int8_device_scores_track_the_float_model(tiny_export_run, exported):
    tmp, frames, _, _ = exported
    fit_run(tiny_export_run, "relative_mahalanobis", out=tmp / "fit_float")  # fitted on Keras float embeddings
    _, scorer = load_openset(tmp / "fit_float")
    paths = frames["known"] + frames["unknown"]
    n_known = len(frames["known"])
    float_scores = scorer.score_batch(*Embedder(tiny_export_run)(paths))
    int8_scores = scorer.score_batch(*Embedder(tiny_export_run, tmp / "bundle/model.tflite")(paths))
    assert np.corrcoef(float_scores, int8_scores)[0, 1] > 0.9
    a_float = auroc(float_scores[:n_known], float_scores[n_known:])
    a_int8 = auroc(int8_scores[:n_known], int8_scores[n_known:])
    assert a_float > 0.9
    assert abs(a_float - a_int8) < 0.05, (a_float, a_int8)


def test_bundle_without_unknown_section_gives_none(tiny_export_run, exported):
    tmp, _, _, _ = exported
    from edgetl_device.bundle import Bundle

    plain = Bundle(root=tmp, manifest={"unknown": None}, model_path=tmp / "bundle/model.tflite",
                   edgetpu_model_path=None, labels=["a"])
    assert scorer_from_bundle(plain) is None
    doc = json.loads((tmp / "bundle/manifest.json").read_text())
    assert "openset.npz" in doc["files"]  # hashed, so tampering with the scorer is caught by the device
