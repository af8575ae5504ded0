"""k-NN search over FAISS, composer votes, novelty and its calibrated threshold."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from musicidx.encoder.errors import MusicIdxError
from musicidx.indexer.ann import make_faiss_index
from musicidx.indexer.calibration import calibrate_threshold
from musicidx.indexer.neighbours import (
    Neighbours,
    clip_novelty,
    reference_kth_distances,
    relative_novelty,
    search,
    track_novelty,
    vote,
)


def _unit(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _index(vectors: np.ndarray, kind: str = "flat") -> Any:
    index, chosen = make_faiss_index(vectors.shape[1], len(vectors), kind)
    index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    return index


def test_search_finds_itself_first_at_distance_zero(rng: np.random.Generator) -> None:
    vecs = _unit(rng, 20)
    nb = search(_index(vecs), vecs, 3)
    assert nb.ids.dtype == np.int64 and nb.ids.shape == nb.dist.shape == (20, 3)
    np.testing.assert_array_equal(nb.ids[:, 0], np.arange(20))
    np.testing.assert_allclose(nb.dist[:, 0], 0.0, atol=1e-6)
    assert (np.diff(nb.dist, axis=1) >= -1e-6).all()  # nearest first
    assert ((nb.dist >= -1e-6) & (nb.dist <= 2 + 1e-6)).all()  # cosine distance of unit vectors


def test_search_masks_faiss_padding_when_k_exceeds_the_index(rng: np.random.Generator) -> None:
    vecs = _unit(rng, 3)
    nb = search(_index(vecs), vecs[:2], 5)
    assert (nb.ids[:, 3:] == -1).all() and np.isinf(nb.dist[:, 3:]).all()
    assert (nb.ids[:, :3] >= 0).all() and np.isfinite(nb.dist[:, :3]).all()
    # the padding takes no part in votes or novelty
    votes = vote(nb, np.array([0, 1, 1]), 2, balanced=False)
    assert votes.sum() == pytest.approx(1.0) and np.isfinite(votes).all()
    np.testing.assert_allclose(clip_novelty(nb, 5), nb.dist[:, 2])  # the farthest real neighbour


def test_search_rejects_k_below_one(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        search(_index(_unit(rng, 3)), _unit(rng, 1), 0)


def test_hnsw_and_flat_agree_on_a_small_index(rng: np.random.Generator) -> None:
    vecs = _unit(rng, 200, 16)
    flat, hnsw = search(_index(vecs, "flat"), vecs[:20], 5), search(_index(vecs, "hnsw"), vecs[:20], 5)
    np.testing.assert_array_equal(flat.ids[:, 0], hnsw.ids[:, 0])


def test_make_faiss_index_kinds() -> None:
    assert make_faiss_index(8, 100_000)[1] == "flat"
    assert make_faiss_index(8, 100_001)[1] == "hnsw"
    with pytest.raises(MusicIdxError, match="unknown FAISS index kind 'ivf'; use auto, flat, hnsw, ivfpq"):
        make_faiss_index(8, 10, "ivf")


def _nb(ids: list[list[int]], dist: list[list[float]]) -> Neighbours:
    return Neighbours(np.array(ids, dtype=np.int64), np.array(dist, dtype=np.float32))


def test_vote_is_similarity_weighted_and_sums_to_one() -> None:
    labels = np.array([0, 0, 1, 1])
    nb = _nb([[0, 2], [1, 3]], [[0.1, 0.5], [0.2, 0.9]])
    votes = vote(nb, labels, 2)
    assert votes.sum() == pytest.approx(1.0)
    # label 0: 0.9 + 0.8, label 1: 0.5 + 0.1 (equal counts, so balancing changes nothing)
    np.testing.assert_allclose(votes, np.array([1.7, 0.6]) / 2.3, rtol=1e-6)


def test_balanced_vote_divides_by_each_composers_share() -> None:
    labels = np.array([0, 0, 0, 1])  # composer 0 has three clips, composer 1 one
    nb = _nb([[0, 1, 3]], [[0.0, 0.0, 0.0]])
    np.testing.assert_allclose(vote(nb, labels, 2, balanced=False), [2 / 3, 1 / 3])
    np.testing.assert_allclose(vote(nb, labels, 2), [(2 / 3) / (2 / 3 + 1), 1 / (2 / 3 + 1)])


def test_vote_power_softens_the_class_size_correction() -> None:
    labels = np.array([0, 0, 0, 0, 1])  # composer 0 has four clips, composer 1 one
    nb = _nb([[0, 1, 4]], [[0.0, 0.0, 0.0]])  # raw votes 2 : 1
    np.testing.assert_array_equal(vote(nb, labels, 2, power=1.0), vote(nb, labels, 2))
    np.testing.assert_allclose(vote(nb, labels, 2, power=0.0), vote(nb, labels, 2, balanced=False))
    np.testing.assert_allclose(vote(nb, labels, 2, power=0.5), [(2 / 2) / (2 / 2 + 1), 1 / (2 / 2 + 1)])
    np.testing.assert_allclose(vote(nb, labels, 2, balanced=False, power=0.5), [2 / 3, 1 / 3])  # unbalanced: no effect


def test_vote_ignores_padding_and_negative_similarity_and_falls_back_to_uniform() -> None:
    labels = np.array([0, 1, 2])
    only_padding = _nb([[-1, -1]], [[np.inf, np.inf]])
    np.testing.assert_allclose(vote(only_padding, labels, 3), [1 / 3] * 3)
    opposite = _nb([[0, 1]], [[1.5, 0.5]])  # cos = -0.5 weighs nothing, not negatively
    np.testing.assert_allclose(vote(opposite, labels, 3), [0.0, 1.0, 0.0])
    unused_label = vote(_nb([[0]], [[0.0]]), labels, 4)  # a label with no clips gets nothing
    np.testing.assert_allclose(unused_label, [1.0, 0.0, 0.0, 0.0])


def test_novelty_is_the_distance_to_the_kth_neighbour_and_a_track_takes_the_median() -> None:
    nb = _nb([[0, 1, 2], [0, 1, 2], [0, 1, -1]], [[0.1, 0.2, 0.3], [0.0, 0.5, 0.9], [0.1, 0.4, np.inf]])
    np.testing.assert_allclose(clip_novelty(nb, 3), [0.3, 0.9, 0.4])
    np.testing.assert_allclose(clip_novelty(nb, 2), [0.2, 0.5, 0.4])
    assert track_novelty(nb, 3) == pytest.approx(0.4)


def test_calibrate_threshold_accepts_the_stated_share(rng: np.random.Generator) -> None:
    novelties = rng.uniform(0, 1, 101)
    for rate in (0.5, 0.9, 0.95):
        t = calibrate_threshold(novelties, rate)
        assert t in novelties  # an observed novelty ("higher" quantile), not an interpolation
        assert (novelties <= t).mean() >= rate
        assert (novelties < t).mean() < rate
    assert calibrate_threshold(novelties, 1.0) == novelties.max()
    assert calibrate_threshold(np.array([0.25]), 0.95) == 0.25


@pytest.mark.parametrize(("rate", "match"), [(0.0, r"accept_rate must be in \(0, 1\], got 0.0"), (1.5, "got 1.5")])
def test_calibrate_threshold_rejects_bad_rates(rate: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        calibrate_threshold(np.array([0.1, 0.2]), rate)


def test_calibrate_threshold_needs_tracks() -> None:
    with pytest.raises(ValueError, match="no held-out tracks to calibrate on"):
        calibrate_threshold(np.array([]), 0.95)


def test_reference_kth_distance_leaves_the_clip_itself_out() -> None:
    # four points on a circle at 0, 10, 20 and 90 degrees
    angles = np.deg2rad([0.0, 10.0, 20.0, 90.0])
    vecs = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    kth = reference_kth_distances(_index(vecs), vecs, 1)
    expected = 1 - np.cos(np.deg2rad([10.0, 10.0, 10.0, 70.0]))
    np.testing.assert_allclose(kth, expected, atol=1e-6)


def test_relative_novelty_is_scaled_by_the_local_density() -> None:
    # a dense cluster (1 degree apart) near 0 degrees and a sparse one (20 degrees apart) near 180
    angles = np.deg2rad(np.r_[np.arange(5.0), 180 + 20 * np.arange(5.0)])
    vecs = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    index = _index(vecs)
    kth = reference_kth_distances(index, vecs, 2)
    # a query 10 degrees off each cluster: absolutely equally far, relatively far from the dense one
    q = np.deg2rad([-10.0, 160.0])
    nb = search(index, np.stack([np.cos(q), np.sin(q)], axis=1).astype(np.float32), 2)
    rel = relative_novelty(nb, kth, 2)
    assert rel[0] > 10 > 2 > rel[1]  # about 48 and 1.6
