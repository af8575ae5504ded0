"""Closed-set effect of how strongly the composer vote corrects for class size.

    python -m benchmarks.accuracy.vote_balance [POWER ...] [--corpus DIR] [--folds 5] [--seed 0]

For each power ``p`` (default 1.0 and 0.5), the closed set of ``musicidx eval`` -- the same grouped
folds (:func:`musicidx.evaluate.splits.grouped_folds`), the default recipe -- with a track's votes for
each composer divided by that composer's share of the index to the power ``p``
(:func:`musicidx.indexer.neighbours.vote` with ``power=p``; ``p = 1`` is musicidx's balanced vote,
``p = 0`` the raw vote).  Only the vote changes: each fold's encoder is fitted once (from the
trained-encoder cache after the first run) and every power scores the same held-out tracks with it.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from benchmarks.paths import add_corpus_argument
from musicidx.encoder.recipe import DEFAULT_RECIPE, Recipe
from musicidx.evaluate.splits import grouped_folds
from musicidx.indexer.fit import fit_index
from musicidx.indexer.prepare import Corpus, prepare_corpus, stack_clips
from musicidx.indexer.scoring import score_tracks


def fold_encoders(corpus: Corpus, folds: list[tuple[np.ndarray, np.ndarray]], recipe: Recipe) -> list[Any]:
    """Each fold's encoder, built on its training tracks exactly as ``musicidx eval`` builds it."""
    from musicidx.encoder.model import Encoder

    models = []
    for train, _ in folds:
        contents, _ = fit_index(corpus.subset(train), recipe=recipe)
        model = Encoder(recipe.model, corpus.feature_config)
        model.load_state_dict(contents.encoder_state)
        models.append(model.eval())
    return models


def closed_set(
    corpus: Corpus, folds: list[tuple[np.ndarray, np.ndarray]], models: list[Any], *, k: int, power: float
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1 and recall per composer over every fold's held-out tracks."""
    from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

    composers = sorted({t.composer for t in corpus.tracks})
    label = np.array([composers.index(t.composer) for t in corpus.tracks])
    truth, pred = [], []
    for (train, test), model in zip(folds, models):
        ref = stack_clips(corpus, train)
        query = stack_clips(corpus, test)
        s = score_tracks(model, ref, label[ref.track], query, label, n_labels=len(composers), k=k, vote_power=power)
        truth.append(s.truth)
        pred.append(s.pred)
    t, p = np.concatenate(truth), np.concatenate(pred)
    labels = list(range(len(composers)))
    recall = recall_score(t, p, average=None, labels=labels, zero_division=0)
    return {
        "accuracy": float((t == p).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(t, p)),
        "macro_f1": float(f1_score(t, p, average="macro", labels=labels, zero_division=0)),
        "recall": dict(zip(composers, map(float, recall))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("powers", nargs="*", type=float, default=[1.0, 0.5], metavar="POWER")
    add_corpus_argument(ap)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="fold seed")
    a = ap.parse_args()
    recipe = DEFAULT_RECIPE
    corpus = prepare_corpus(a.corpus, features=recipe.features, cache_dir=True, variants=recipe.train.program_variants)
    folds = grouped_folds(
        [t.composer for t in corpus.tracks], [t.group for t in corpus.tracks], n_folds=a.folds, seed=a.seed
    )
    models = fold_encoders(corpus, folds, recipe)
    for power in a.powers:
        c = closed_set(corpus, folds, models, k=recipe.k, power=power)
        recall = ", ".join(f"{k} {v:.2f}" for k, v in c["recall"].items())
        print(
            f"power {power}: accuracy {c['accuracy']:.3f}, balanced accuracy {c['balanced_accuracy']:.3f}, "
            f"macro-F1 {c['macro_f1']:.3f}, recall {recall}",
            flush=True,
        )


if __name__ == "__main__":
    main()
