"""The arithmetic of an answer: k-NN search and the two statistics built on it, the composer
vote (:func:`vote`) and the novelty (:func:`clip_novelty`, :func:`track_novelty`).

Every answer :mod:`musicidx.query` gives is computed here, and so is every answer the build asks
of its held-out tracks to validate the encoder and calibrate the novelty threshold
(:mod:`.scoring`, :mod:`.calibration`).  That is why these functions sit in the indexer, one floor
below the query stage: imports only run down, and one copy for both keeps calibration and queries
in agreement by construction.

Distances are cosine distances ``1 - cos`` between unit embeddings (0 = identical, 2 = opposite).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Neighbours:
    """``ids[i, j]`` is the j-th nearest index clip of query clip ``i`` at cosine distance
    ``dist[i, j]``; rows are padded with ``-1`` / ``inf`` when the index holds fewer than k."""

    ids: np.ndarray  # (n_query, k) int64
    dist: np.ndarray  # (n_query, k) float32


def search(index: Any, emb: np.ndarray, k: int) -> Neighbours:
    """The ``k`` nearest index clips of each row of ``emb`` (FAISS's ``-1`` padding kept masked)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    sim, ids = index.search(np.ascontiguousarray(emb, dtype=np.float32), k)
    dist = np.where(ids >= 0, 1.0 - sim, np.inf).astype(np.float32)
    return Neighbours(ids.astype(np.int64), dist)


def clip_novelty(nb: Neighbours, k: int) -> np.ndarray:
    """Novelty of each query clip: cosine distance to its k-th neighbour (the farthest
    available one when the index holds fewer than k clips)."""
    valid = np.isfinite(nb.dist[:, :k])
    last = np.maximum(valid.sum(axis=1) - 1, 0)
    return nb.dist[np.arange(len(nb.dist)), last]


def track_novelty(nb: Neighbours, k: int) -> float:
    """A track's novelty: the median of its clips' novelties (robust to a few odd clips)."""
    return float(np.median(clip_novelty(nb, k)))


def search_outside(index: Any, emb: np.ndarray, clip_group: np.ndarray, group: str, k: int) -> Neighbours:
    """The ``k`` nearest index clips of each row of ``emb`` among the clips whose
    ``clip_group[id]`` is not ``group`` (a track's neighbours without its own work)."""
    n_same = int((clip_group == group).sum())
    sim, ids = index.search(np.ascontiguousarray(emb, dtype=np.float32), min(index.ntotal, k + n_same))
    keep_ids = np.full((len(emb), k), -1, np.int64)
    keep_dist = np.full((len(emb), k), np.inf, np.float32)
    for i in range(len(emb)):
        ok = (ids[i] >= 0) & (clip_group[np.maximum(ids[i], 0)] != group)
        n = min(k, int(ok.sum()))
        keep_ids[i, :n] = ids[i][ok][:n]
        keep_dist[i, :n] = 1.0 - sim[i][ok][:n]
    return Neighbours(keep_ids, keep_dist)


def reference_kth_distances(index: Any, ref_emb: np.ndarray, k: int) -> np.ndarray:
    """Each index clip's distance to its k-th neighbour among the *other* index clips: how
    dense the index is around it (``ref_emb`` must be the index's vectors, in id order)."""
    nb = search(index, ref_emb, k + 1)
    return clip_novelty(Neighbours(nb.ids[:, 1:], nb.dist[:, 1:]), k)  # column 0 is the clip itself


def relative_novelty(nb: Neighbours, ref_kth: np.ndarray, k: int) -> np.ndarray:
    """Each query clip's k-th-neighbour distance divided by the median k-th-neighbour distance
    of those neighbours themselves (a local-outlier-factor-style ratio): about 1 inside the
    training distribution, larger outside, and not fooled by dense regions of the index."""
    own = clip_novelty(nb, k)
    ids = nb.ids[:, :k]
    local = np.array([np.median(ref_kth[row[row >= 0]]) if (row >= 0).any() else np.nan for row in ids])
    return own / np.maximum(local, 1e-6)


def vote(
    nb: Neighbours, clip_labels: np.ndarray, n_labels: int, *, balanced: bool = True, power: float = 1.0
) -> np.ndarray:
    """Similarity-weighted votes per label summed over every clip's neighbours, normalised
    to sum to 1.  ``clip_labels[id]`` is the label of index clip ``id``.

    With ``balanced`` each label's votes are divided by its share of the index raised to
    ``power``, so that a composer with many tracks does not win by numbers alone: ``power=1``
    (the default, what every index answers with) is a uniform prior over composers, ``0`` the raw
    votes, and values between a softer correction (``benchmarks/accuracy/vote_balance.py``).
    """
    valid = nb.ids >= 0
    weights = np.clip(1.0 - nb.dist, 0.0, None)[valid]
    votes = np.bincount(clip_labels[nb.ids[valid]], weights=weights, minlength=n_labels).astype(np.float64)
    if balanced:
        counts = np.bincount(clip_labels, minlength=n_labels).astype(np.float64)
        if power != 1.0:
            counts = counts**power
        votes = np.divide(votes, counts, out=np.zeros_like(votes), where=counts > 0)
    total = votes.sum()
    return votes / total if total > 0 else np.full(n_labels, 1.0 / max(n_labels, 1))
