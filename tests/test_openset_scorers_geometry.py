"""Each open-set scorer on synthetic embeddings whose geometry makes the right answer known."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.errors import EdgetlError
from edgetl.openset import (
    FitData,
    auroc,
    fit_scorer,
    fpr_at_tpr,
    leave_one_class_out,
    softmax,
)
from edgetl_device.errors import DeviceError
from edgetl_device.openset import KNN, Cosine, Mahalanobis, build_scorer, l2_normalise

D, C = 32, 4


def clusters(rng: np.random.Generator, n_per: int, centers: np.ndarray, spread: float = 0.15):
    e = np.concatenate([c + spread * rng.standard_normal((n_per, D)) for c in centers])
    y = np.repeat(np.arange(len(centers)), n_per)
    return l2_normalise(e), y


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((D, D)))[0]
    centers = basis[:C]  # orthonormal class directions
    far_center = basis[C + 1]  # orthogonal to every class: a "far" unknown
    e_tr, y_tr = clusters(rng, 150, centers)
    e_va, y_va = clusters(rng, 100, centers)
    e_far, _ = clusters(rng, 200, far_center[None])
    # "true" probabilities: a softmax on scaled cosine to the class directions
    def probs(e):
        return softmax(10 * e @ centers.T)
    return dict(centers=centers, e_tr=e_tr, y_tr=y_tr, e_va=e_va, y_va=y_va, e_far=e_far, probs=probs)


@pytest.mark.parametrize("name", ["msp", "energy", "maxlogit", "cosine", "knn", "mahalanobis",
                                  "relative_mahalanobis", "combined"])
def test_every_scorer_ranks_far_unknowns_above_known(world, name):
    data = FitData(world["probs"](world["e_tr"]), world["e_tr"], world["y_tr"], C)
    scorer = fit_scorer(name, data)
    known = scorer.score_batch(world["probs"](world["e_va"]), world["e_va"])
    far = scorer.score_batch(world["probs"](world["e_far"]), world["e_far"])
    assert auroc(known, far) > 0.97, name
    assert fpr_at_tpr(known, far) < 0.1, name
    # the single-frame device call gives the batch result
    one = scorer.score(world["probs"](world["e_far"][:1])[0], world["e_far"][0])
    assert one == pytest.approx(far[0], rel=1e-4, abs=1e-5)


def test_cosine_is_one_minus_similarity_to_nearest_prototype(world):
    scorer = Cosine(world["centers"])
    assert scorer.score(None, world["centers"][2]) == pytest.approx(0.0, abs=1e-6)
    halfway = l2_normalise(world["centers"][0] + world["centers"][1])
    assert scorer.score(None, halfway) == pytest.approx(1 - np.sqrt(0.5), abs=1e-5)
    assert scorer.score(None, -world["centers"][0]) == pytest.approx(1.0, abs=1e-5)  # orthogonal to the others


def test_knn_uses_the_kth_neighbour_and_bounds_the_bank(world):
    bank = world["e_tr"][:50]
    q = bank[7]
    sims = np.sort(l2_normalise(bank.astype(np.float16).astype(np.float32)) @ q)[::-1]
    assert KNN(bank, k=1).score(None, q) == pytest.approx(1 - sims[0], abs=1e-3)
    assert KNN(bank, k=3).score(None, q) == pytest.approx(1 - sims[2], abs=1e-3)
    assert KNN(bank).state()[1]["bank"].dtype == np.float16
    with pytest.raises(DeviceError, match="more than 2000"):
        KNN(np.ones((2001, 4)))


def test_whitened_knn_searches_the_mahalanobis_space_and_shares_it_in_combined(world):
    data = FitData(world["probs"](world["e_tr"]), world["e_tr"], world["y_tr"], C, options={"k": 2})
    knn = fit_scorer("knn", data)
    maha = fit_scorer("mahalanobis", data)
    assert knn.projection is not None and np.array_equal(knn.projection, maha.whiten)
    # by hand: centre on the training mean, whiten, normalise, 1 - 2nd best cosine against the bank
    e = l2_normalise(world["e_tr"])
    z = l2_normalise((l2_normalise(world["e_far"][:3]) - e.mean(0)) @ maha.whiten)
    sims = np.sort(z @ knn.bank.T, axis=1)[:, ::-1]
    assert np.allclose(knn.score_batch(None, world["e_far"][:3]), 1 - sims[:, 1], atol=1e-4)
    plain = fit_scorer("knn", FitData(data.probs, data.embeddings, data.labels, C, options={"knn_space": "embedding"}))
    assert plain.projection is None and plain.bank.shape[1] == D

    # in `combined` the kNN part and the Mahalanobis part hold one matrix: projected once per frame,
    # stored once in the bundle, and still one object after a reload
    combined = fit_scorer("combined", data)
    rel, knn_part = combined.parts[0], combined.parts[-1]
    assert knn_part.projection is rel.whiten
    params, arrays = combined.state()
    assert params["parts"][-1]["shared"] == {"projection": "0.whiten"}
    assert not any(k.endswith(".projection") for k in arrays)
    again = build_scorer("combined", params, arrays)
    assert again.parts[-1].projection is again.parts[0].whiten
    p = world["probs"](world["e_far"])
    assert np.allclose(again.score_batch(p, world["e_far"]), combined.score_batch(p, world["e_far"]), atol=1e-5)
    with pytest.raises(DeviceError, match="missing arrays"):
        build_scorer("combined", params, {k: v for k, v in arrays.items() if k != "0.whiten"})


def test_mahalanobis_weighs_directions_by_class_spread():
    # one class stretched along x: a step along y (narrow) is stranger than the same step along x
    rng = np.random.default_rng(1)
    e = np.zeros((500, D))
    e[:, 0] = 1.0
    e[:, 1] = 0.3 * rng.standard_normal(500)
    e[:, 2] = 0.02 * rng.standard_normal(500)
    e[:, 3:] = 0.02 * rng.standard_normal((500, D - 3))
    data = FitData(np.ones((500, 1)), e, np.zeros(500, int), 1)
    scorer = fit_scorer("mahalanobis", data, None)
    along_wide, along_narrow = np.zeros(D), np.zeros(D)
    along_wide[[0, 1]] = [1.0, 0.2]
    along_narrow[[0, 2]] = [1.0, 0.2]
    assert scorer.score(None, along_narrow) > 20 * scorer.score(None, along_wide)
    # cosine cannot tell them apart
    cos = fit_scorer("cosine", data)
    assert cos.score(None, along_narrow) == pytest.approx(cos.score(None, along_wide), rel=0.15)


def test_relative_mahalanobis_ignores_a_direction_shared_by_all_data(world):
    data = FitData(world["probs"](world["e_tr"]), world["e_tr"], world["y_tr"], C)
    rel = fit_scorer("relative_mahalanobis", FitData(data.probs, data.embeddings, data.labels, C,
                                                     options={"background": "whitened"}))
    plain = fit_scorer("mahalanobis", data)
    assert isinstance(rel, Mahalanobis) and rel.relative and not plain.relative
    # relative = plain minus the background distance, for every frame; "whitened": the background
    # Gaussian lives in the class-whitened coordinates (r x r, no second D x r projection on the device)
    assert rel.background_space == "whitened" and list(rel.projections()) == ["whiten"]
    r = rel.whiten.shape[1]
    assert rel.background_whiten.shape == (r, r)
    z = l2_normalise(world["e_far"]) @ rel.whiten
    bg = ((z - rel.background_mean) @ rel.background_whiten) ** 2
    expected = plain.score_batch(None, world["e_far"]) - bg.sum(1)
    assert np.allclose(rel.score_batch(None, world["e_far"]), expected, rtol=1e-3, atol=1e-2)
    # Ren et al.'s original (the default): the background fitted on the embedding itself (D x r)
    emb = fit_scorer("relative_mahalanobis", data)
    assert emb.background_space == "embedding" and emb.background_whiten.shape == rel.whiten.shape
    bg = ((l2_normalise(world["e_far"]) - emb.background_mean) @ emb.background_whiten) ** 2
    expected = plain.score_batch(None, world["e_far"]) - bg.sum(1)
    assert np.allclose(emb.score_batch(None, world["e_far"]), expected, rtol=1e-3, atol=1e-2)


def test_relative_mahalanobis_state_names_its_background_space_and_old_bundles_still_load(world):
    data = FitData(world["probs"](world["e_tr"]), world["e_tr"], world["y_tr"], C)
    for space in ("whitened", "embedding"):  # rank 8 < D: the two spaces' arrays differ in shape
        rel = fit_scorer("relative_mahalanobis", FitData(data.probs, data.embeddings, data.labels, C,
                                                         options={"background": space, "rank": 8}))
        params, arrays = rel.state()
        assert params == {"background_space": space}
        again = build_scorer("relative_mahalanobis", params, arrays)
        assert np.allclose(again.score_batch(None, world["e_far"]), rel.score_batch(None, world["e_far"]))
        if space == "embedding":  # written before background_space existed: no params at all
            old = build_scorer("relative_mahalanobis", {}, arrays)
            assert np.allclose(old.score_batch(None, world["e_far"]), rel.score_batch(None, world["e_far"]))
        else:  # the same arrays read as the other space do not fit: a clear error, not garbage scores
            with pytest.raises(DeviceError, match="background"):
                build_scorer("relative_mahalanobis", {}, arrays)
    with pytest.raises(EdgetlError, match="background must be one of"):
        fit_scorer("relative_mahalanobis", FitData(data.probs, data.embeddings, data.labels, C,
                                                   options={"background": "pixels"}))


def test_energy_is_lower_for_confident_known_frames(world):
    data = FitData(world["probs"](world["e_tr"]), world["e_tr"], world["y_tr"], C)
    energy = fit_scorer("energy", data)
    z = energy.logits(world["e_va"][:5])
    assert np.allclose(energy.score_batch(None, world["e_va"][:5]), -np.log(np.exp(z).sum(1)), atol=1e-4)
    assert (energy.logits(world["e_va"]).argmax(1) == world["y_va"]).mean() > 0.95


def test_state_round_trip_gives_identical_scores(world):
    data = FitData(world["probs"](world["e_tr"]), world["e_tr"], world["y_tr"], C, options={"k": 3})
    for name in ["energy", "knn", "relative_mahalanobis", "combined"]:
        scorer = fit_scorer(name, data)
        params, arrays = scorer.state()
        again = build_scorer(scorer.name, params, arrays)
        p = world["probs"](world["e_far"])
        assert np.allclose(scorer.score_batch(p, world["e_far"]), again.score_batch(p, world["e_far"]), atol=1e-5)


def test_leave_one_class_out_reports_each_class(world):
    data = FitData(world["probs"](world["e_tr"]), world["e_tr"], world["y_tr"], C)
    res = leave_one_class_out(["cosine"], data, None, world["e_va"], world["y_va"])
    assert [r["held"] for r in res["cosine"]] == list(range(C))
    # orthogonal classes: a held-out class is far from the rest
    assert min(r["auroc"] for r in res["cosine"]) > 0.95


def test_missing_embedding_is_a_clear_error(world):
    scorer = Cosine(world["centers"])
    with pytest.raises(DeviceError, match="embedding"):
        scorer.score(np.ones(C) / C, None)
    with pytest.raises(DeviceError, match="unknown open-set scorer"):
        build_scorer("vim", {}, {})


def test_outlier_exposure_raises_energy_of_outlier_like_frames(world):
    rng = np.random.default_rng(4)
    # outliers the user has: mixtures of two classes (the confusable region between them)
    mix = l2_normalise(world["centers"][0] + world["centers"][1] + 0.15 * rng.standard_normal((200, D)))
    fresh = l2_normalise(world["centers"][0] + world["centers"][1] + 0.15 * rng.standard_normal((200, D)))
    base = FitData(world["probs"](world["e_tr"]), world["e_tr"], world["y_tr"], C)
    exposed = FitData(base.probs, base.embeddings, base.labels, C, outliers=mix)
    plain, oe = fit_scorer("energy", base), fit_scorer("energy", exposed)
    known = world["e_va"]
    gain_plain = auroc(plain.score_batch(None, known), plain.score_batch(None, fresh))
    gain_oe = auroc(oe.score_batch(None, known), oe.score_batch(None, fresh))
    assert gain_oe > gain_plain
    assert (oe.logits(known).argmax(1) == world["y_va"]).mean() > 0.95  # still classifies the known classes


def test_leave_one_class_out_rates_combined_as_fit_ships_it():
    """`--scorer auto` and `openset loco` rate `combined` as `fit` builds it: parts standardised on held-out
    known frames. Standardised on its own training frames, the kNN part (distance 0 to itself) got the 1e-3
    std floor and swamped the sum, so loco's "combined" was just kNN."""
    from edgetl.openset import _drop_class, loco_scores

    rng = np.random.default_rng(3)
    c = 5
    centers = l2_normalise(0.3 * np.eye(D)[:c] + 1.0)  # near classes, anisotropic spread
    scale = np.linspace(0.2, 2.0, D)

    def draw(n):
        e = np.concatenate([m + 0.1 * rng.standard_normal((n, D)) * scale for m in centers])
        return l2_normalise(e), np.repeat(np.arange(c), n)

    e_tr, y_tr = draw(100)
    e_va, y_va = draw(60)
    train = FitData(np.full((len(y_tr), c), 1 / c), e_tr, y_tr, c)
    loco = {n: leave_one_class_out([n], train, None, e_va, y_va)[n] for n in ("knn", "combined")}
    for row in loco["combined"]:
        held = row["held"]
        keep, known = y_tr != held, y_va != held
        sub = FitData(np.full((keep.sum(), c - 1), 1 / (c - 1)), e_tr[keep], _drop_class(y_tr[keep], held), c - 1)
        shipped = fit_scorer("combined", sub, calib=(None, e_va[known]))  # what `fit` does with validation frames
        s = shipped.score_batch(None, e_va)
        assert row["auroc"] == pytest.approx(auroc(s[known], s[~known]), abs=1e-9)
        np.testing.assert_allclose(loco_scores("combined", train, None, e_va, y_va, held)["known"], s[known],
                                   rtol=1e-5, atol=1e-5)
    mean = {n: np.mean([r["auroc"] for r in rows]) for n, rows in loco.items()}
    assert mean["combined"] > mean["knn"] + 0.03, mean
