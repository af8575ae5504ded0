"""Closed-set effect of how strongly the composer vote corrects for class size.

    python benchmarks/vote_balance.py 1.0 0.5 [...]

For each power ``p``, runs ``musicidx eval``'s closed set (same folds, default recipe) with a
track's votes for each composer divided by that composer's share of the index to the power ``p``
(``p = 1`` is musicidx's balanced vote, ``p = 0`` the raw vote). Only the vote changes, so the
fold encoders come from the trained-encoder cache after the first run.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import musicidx.indexer.build as build
from musicidx.indexer.neighbours import Neighbours
from musicidx.query.evaluate import evaluate

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "musicians"


def powered_vote(
    nb: Neighbours, clip_labels: np.ndarray, n_labels: int, *, balanced: bool = True, power: float = 1.0
) -> Any:
    valid = nb.ids >= 0
    weights = np.clip(1.0 - nb.dist, 0.0, None)[valid]
    votes = np.bincount(clip_labels[nb.ids[valid]], weights=weights, minlength=n_labels).astype(np.float64)
    counts = np.bincount(clip_labels, minlength=n_labels).astype(np.float64) ** power
    votes = np.divide(votes, counts, out=np.zeros_like(votes), where=counts > 0)
    return votes / votes.sum() if votes.sum() > 0 else np.full(n_labels, 1.0 / n_labels)


def main() -> None:
    for power in map(float, sys.argv[1:] or ["1.0", "0.5"]):
        build.vote = partial(powered_vote, power=power)  # score_tracks looks the vote up in build
        c = evaluate(CORPUS, folds=5, seed=0, open_set=False).closed
        recall = ", ".join(f"{k} {v:.2f}" for k, v in c["recall"].items())
        print(
            f"power {power}: accuracy {c['accuracy']:.3f}, balanced accuracy {c['balanced_accuracy']:.3f}, "
            f"macro-F1 {c['macro_f1']:.3f}, recall {recall}",
            flush=True,
        )


if __name__ == "__main__":
    main()
