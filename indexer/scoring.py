"""Tracks scored against an in-memory index of other tracks, exactly as a query against a saved
index scores them (the same search, vote and novelty of :mod:`.neighbours`).

The build validates its encoder and calibrates the novelty threshold with :func:`score_tracks`;
``musicidx eval`` scores every fold with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .ann import make_faiss_index
from .neighbours import Neighbours, reference_kth_distances, relative_novelty, search, track_novelty, vote
from .prepare import ClipArrays


@dataclass
class TrackScores:
    """Per query track: true label, predicted label and novelty."""

    truth: np.ndarray
    pred: np.ndarray
    novelty: np.ndarray
    confidence: np.ndarray  # the winning composer's share of the votes
    # Candidate novelty statistics measured alongside (``musicidx eval`` reports their AUROC):
    # "relative" (k-th distance over the neighbours' own, median over clips), "mean_k" (mean
    # distance to the k neighbours, median over clips), "nearest" (distance to the nearest).
    alternatives: dict[str, np.ndarray] = field(default_factory=dict)
    novelty_by_k: dict[int, np.ndarray] = field(default_factory=dict)  # the novelty at each k asked for

    def accuracy(self) -> tuple[float, float]:
        """(accuracy, balanced accuracy = mean recall over the composers present)."""
        if len(self.truth) == 0:
            return float("nan"), float("nan")
        hit = self.pred == self.truth
        return float(hit.mean()), float(np.mean([hit[self.truth == c].mean() for c in np.unique(self.truth)]))


def score_tracks(
    model: Any,
    ref: ClipArrays,
    ref_clip_label: np.ndarray,
    query: ClipArrays,
    track_label: np.ndarray,
    *,
    n_labels: int,
    k: int,
    alternatives: bool = False,
    ks: Sequence[int] = (),
    vote_power: float = 1.0,
) -> TrackScores:
    """Index ``ref``'s clips, then vote and measure novelty for every track of ``query``,
    exactly as a query against a saved index does; with ``alternatives``, also the candidate
    novelty statistics of :attr:`TrackScores.alternatives` (for ``musicidx eval``); with ``ks``,
    the novelty at each of those k too (:attr:`TrackScores.novelty_by_k`, for calibration).
    ``vote_power``: the class-size correction of the vote (see
    :func:`~musicidx.indexer.neighbours.vote`; 1, what queries use, unless measuring another)."""
    from musicidx.encoder.model import embed

    index, _ = make_faiss_index(model.config.embedding_dim, len(ref.feats), "flat")
    ref_emb = embed(model, ref.feats)
    index.add_with_ids(ref_emb, np.arange(len(ref.feats), dtype=np.int64))
    ref_kth = reference_kth_distances(index, ref_emb, k) if alternatives else None
    q_emb = embed(model, query.feats)
    tracks = np.unique(query.track)
    pred, novelty, confidence = np.empty(len(tracks), np.int64), np.empty(len(tracks)), np.empty(len(tracks))
    alt = {name: np.empty(len(tracks)) for name in ("relative", "mean_k", "nearest")} if alternatives else {}
    by_k = {kk: np.empty(len(tracks)) for kk in ks}
    for i, t in enumerate(tracks):
        wide = search(index, q_emb[query.track == t], max([k, *ks]))
        nb = Neighbours(wide.ids[:, :k], wide.dist[:, :k])
        for kk, values in by_k.items():
            values[i] = track_novelty(wide, kk)
        votes = vote(nb, ref_clip_label, n_labels, power=vote_power)
        pred[i], confidence[i] = int(np.argmax(votes)), float(votes.max())
        novelty[i] = track_novelty(nb, k)
        if ref_kth is not None:
            alt["relative"][i] = float(np.median(relative_novelty(nb, ref_kth, k)))
            finite = np.where(np.isfinite(nb.dist[:, :k]), nb.dist[:, :k], np.nan)
            alt["mean_k"][i] = float(np.median(np.nanmean(finite, axis=1)))
            alt["nearest"][i] = float(np.median(nb.dist[:, 0]))
    return TrackScores(track_label[tracks], pred, novelty, confidence, alt, by_k)
