"""The novelty threshold: calibrated at build time, for every k a query may use, on tracks of known
composers the encoder did not train on, and said to be *uncalibrated* when those are too few.

A threshold is the ``accept_rate`` quantile of those tracks' novelties (:func:`calibrate_threshold`):
held-out works scored against an index of the other works (a trained encoder), every track against
an index of the other works (a frozen one), or -- when nothing could be held out -- each training
track against the others' works (:func:`calibrate`).  :func:`calibration_shortfall` says when a
threshold may back a "new composer?" verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from musicidx.encoder.recipe import Recipe

from .ann import make_faiss_index
from .manifest import SEEN_IN_TRAINING_HOW
from .neighbours import Neighbours, search_outside, track_novelty, vote
from .prepare import ClipArrays, Corpus
from .scoring import TrackScores


def calibrate_threshold(novelties: np.ndarray, accept_rate: float) -> float:
    """The novelty under which ``accept_rate`` of known-composer tracks fall."""
    if not 0.0 < accept_rate <= 1.0:
        raise ValueError(f"accept_rate must be in (0, 1], got {accept_rate}")
    if len(novelties) == 0:
        raise ValueError("no held-out tracks to calibrate on")
    return float(np.quantile(np.asarray(novelties, dtype=np.float64), accept_rate, method="higher"))


#: A novelty threshold backs a "new composer?" verdict only when it was calibrated on at least this
#: many tracks of at least :data:`MIN_CALIBRATION_WORKS` works the encoder never trained on.  Below
#: 20 tracks the 95 % quantile is the largest novelty seen, which a fresh track by a known composer
#: stays under with probability n / (n + 1) only: 75 % with 3 tracks, 89 % with 8.  Movements of one
#: work resemble each other, so the tracks must also spread over several works.
MIN_CALIBRATION_TRACKS = 8
MIN_CALIBRATION_WORKS = 4


def calibration_shortfall(tracks: int, works: int, *, seen_in_training: bool = False) -> str | None:
    """Why a threshold calibrated on ``tracks`` tracks of ``works`` works cannot back a verdict, in
    words; ``None`` when it can.  ``seen_in_training``: those tracks were trained on (nothing could be
    held out), which makes their novelties too small whatever their number."""
    need = (
        f"a verdict needs at least {MIN_CALIBRATION_TRACKS} tracks of {MIN_CALIBRATION_WORKS} works held out of "
        "training"
    )
    if seen_in_training:
        return f"calibrated on {tracks} tracks of {works} works the encoder trained on (none could be held out); {need}"
    if tracks < MIN_CALIBRATION_TRACKS or works < MIN_CALIBRATION_WORKS:
        return f"calibrated on only {tracks} held-out tracks of {works} works; {need}"
    return None


@dataclass
class Calibration:
    """The thresholds per k, what they were calibrated on (tracks, works, how, in words) and the
    validation accuracy those tracks gave (``None`` when they were trained on)."""

    thresholds: dict[int, float]
    tracks: int
    works: int
    accuracy: float | None
    balanced_accuracy: float | None
    how: str
    seen_in_training: bool = False  # calibrated on works the encoder trained on (too few pieces called new)


def calibrate(
    model: Any,
    r: Recipe,
    tr: ClipArrays,
    va: ClipArrays,
    held_out: Callable[..., TrackScores],
    track_label: np.ndarray,
    track_group: np.ndarray,
    *,
    n: int,
    emb: np.ndarray | None = None,
) -> Calibration:
    """Novelty thresholds at every k a query may use, from tracks the encoder did not train on:
    the held-out works (a trained encoder) or every track against the other works (a frozen one)."""
    ks = calibration_ks(r.k, len(tr.feats))
    val_tracks = np.unique(va.track)
    acc: float | None
    bacc: float | None
    if len(val_tracks):
        scores = held_out(model, ks=ks)
        acc, bacc = scores.accuracy()
        how = "held-out works of known composers, scored against an index of the other works"
        by_k, works = scores.novelty_by_k, len(set(track_group[val_tracks]))
    elif r.frozen:
        by_k, scores = leave_one_work_out_scores(model, tr, track_label, track_group, ks, k=r.k, n_labels=n, emb=emb)
        # a single-work composer's track, its work left out, has no composer left in the index: a new
        # composer, not a known one -- it neither calibrates nor validates
        tracks = np.unique(tr.track)
        works_of = {c: set(track_group[track_label == c]) for c in set(track_label.tolist())}
        keep = np.array([len(works_of[int(track_label[t])]) > 1 for t in tracks])
        by_k = {kk: v[keep] for kk, v in by_k.items()}
        scores = TrackScores(scores.truth[keep], scores.pred[keep], scores.novelty[keep], scores.confidence[keep])
        acc, bacc = scores.accuracy()
        how = "every track against an index of the other works (the pretrained encoder never trained on them)"
        val_tracks = tracks[keep]
        works = len(set(track_group[val_tracks]))
    else:  # nothing could be held out: each training track against the others' works
        by_k = leave_one_work_out_novelties(model, tr, track_group, ks)
        acc = bacc = None
        how = f"{SEEN_IN_TRAINING_HOW}: each track against an index of the other works, all seen in training"
        val_tracks = np.unique(tr.track)
        works = len(set(track_group[val_tracks]))
    thresholds = {kk: calibrate_threshold(v, r.accept_rate) for kk, v in by_k.items()}
    seen = not len(va.track) and not r.frozen
    return Calibration(thresholds, len(val_tracks), works, acc, bacc, how, seen_in_training=seen)


def leave_one_work_out_scores(
    model: Any,
    clips: ClipArrays,
    track_label: np.ndarray,
    track_group: np.ndarray,
    ks: Sequence[int],
    *,
    k: int,
    n_labels: int,
    emb: np.ndarray | None = None,
) -> tuple[dict[int, np.ndarray], TrackScores]:
    """Each track of ``clips`` against an index of the other works' clips: its novelty at each k
    of ``ks`` and its vote at ``k`` (the calibration and validation of a frozen encoder). ``emb``:
    the clips' embeddings, when the caller has them."""
    from musicidx.encoder.model import embed

    emb = embed(model, clips.feats) if emb is None else emb
    index, _ = make_faiss_index(model.config.embedding_dim, len(emb), "flat")
    index.add_with_ids(emb, np.arange(len(emb), dtype=np.int64))
    clip_group, clip_label = track_group[clips.track], track_label[clips.track]
    tracks = np.unique(clips.track)
    nbs = [search_outside(index, emb[clips.track == t], clip_group, track_group[t], max(ks)) for t in tracks]
    preds, conf = np.empty(len(tracks), np.int64), np.empty(len(tracks))
    for i, nb in enumerate(nbs):
        votes = vote(Neighbours(nb.ids[:, :k], nb.dist[:, :k]), clip_label, n_labels)
        preds[i], conf[i] = int(np.argmax(votes)), float(votes.max())
    novelty = np.array([track_novelty(nb, k) for nb in nbs])
    by_k = {kk: np.array([track_novelty(nb, kk) for nb in nbs]) for kk in ks}
    return by_k, TrackScores(track_label[tracks], preds, novelty, conf)


def leave_one_work_out_novelties(
    model: Any, clips: ClipArrays, track_group: np.ndarray, ks: Sequence[int]
) -> dict[int, np.ndarray]:
    """Each track's novelty at each k of ``ks`` against an index of ``clips`` without its own
    work's clips (the calibration when no work could be held out of training)."""
    from musicidx.encoder.model import embed

    emb = embed(model, clips.feats)
    index, _ = make_faiss_index(model.config.embedding_dim, len(emb), "flat")
    index.add_with_ids(emb, np.arange(len(emb), dtype=np.int64))
    clip_group = track_group[clips.track]
    nbs = [
        search_outside(index, emb[clips.track == t], clip_group, track_group[t], max(ks))
        for t in np.unique(clips.track)
    ]
    return {k: np.array([track_novelty(nb, k) for nb in nbs]) for k in ks}


#: The k a build calibrates a novelty threshold for (besides its own): ``query --k`` accepts these.
CALIBRATED_KS = (1, 3, 5, 10, 20, 50, 100)


def calibration_ks(k: int, n_reference: int) -> list[int]:
    """The build's ``k`` and every :data:`CALIBRATED_KS` up to ``n_reference`` (the clips of the
    index calibration searches), sorted."""
    return sorted({k, *(x for x in CALIBRATED_KS if x <= n_reference)})


def small_corpus_warnings(
    corpus: Corpus,
    single: Sequence[str],
    *,
    validated: bool,
    uncalibrated: str | None = None,
    val_fraction: float = 0.2,
) -> list[str]:
    """In words, what a corpus too small to hold a work of every composer out leaves untested, and
    (given why the threshold is uncalibrated) how many works per composer a calibrated verdict needs."""
    out = []
    for c in single:
        work = next(t.work for t in corpus.tracks if t.composer == c)
        n = sum(t.composer == c for t in corpus.tracks)
        out.append(
            f"{c} has a single work ({work}; {n} track(s)), kept whole in training: no unseen work of {c} is in "
            f"the validation or the novelty calibration, so how well the index recognises {c} is untested"
        )
    if not validated:
        out.append(
            "no composer has two works, so nothing was held out: there is no validation accuracy, and the novelty "
            "threshold was calibrated on works the encoder trained on (it will call too few pieces new)"
        )
    if uncalibrated is not None:
        composers = len({t.composer for t in corpus.tracks})
        per_work = len(corpus.tracks) / max(1, len({t.group for t in corpus.tracks}))
        need = works_needed_per_composer(composers, tracks_per_work=per_work, val_fraction=val_fraction)
        out.append(
            f"the novelty threshold is uncalibrated ({uncalibrated}), so answers show the novelty but no "
            f"new-composer verdict; a calibrated verdict needs about {need} works per composer here "
            f"({composers} composers, {per_work:.1f} tracks per work, {val_fraction:.0%} of the works held out)"
        )
    return out


def works_needed_per_composer(composers: int, *, tracks_per_work: float, val_fraction: float) -> int:
    """About how many works each composer needs for the held-out share (``val_fraction`` of every
    composer's works) to reach the minimum calibration of :func:`calibration_shortfall`."""
    held = max(MIN_CALIBRATION_WORKS, math.ceil(MIN_CALIBRATION_TRACKS / max(tracks_per_work, 1e-9)))
    return max(2, math.ceil(held / (max(composers, 1) * val_fraction) - 1e-9))  # 8 / (4 x 0.2) is 10, not 11
