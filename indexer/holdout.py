"""Which tracks a build holds out of training: whole works, stratified by composer.

Movements of one work resemble each other, so a work is never split across training and
validation (:func:`split_by_work`); :func:`majority_baseline` is what the validation accuracy
is compared with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .corpus import CorpusError


def split_by_work(
    composers: Sequence[str], works: Sequence[str], *, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Track indices (train, val): works held out whole, stratified by composer.

    Every composer keeps at least one work in training: a composer with a single work is never
    validated (all its tracks train), and a composer whose works all fell on the validation side
    gets one back (the first by name).  When no composer has two works, nothing is held out
    (``val`` is empty)."""
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    y, groups = np.asarray(composers), np.asarray(works)
    if len(set(works)) < 2:
        raise CorpusError("need at least two distinct works to hold one out for validation")
    single = single_work_composers(composers, works)
    pool = np.flatnonzero(~np.isin(y, single))  # tracks of composers with two works or more
    if len(pool) == 0:
        return np.arange(len(y)), np.zeros(0, np.int64)
    yp, gp = y[pool], groups[pool]
    n_splits = max(2, int(round(1.0 / val_fraction)))
    min_members = min(int((yp == c).sum()) for c in set(yp))
    k = min(n_splits, min_members, len(set(gp)))  # >= 2 (two works each); sklearn wants k <= groups
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" on small corpora
        sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        _, val_p = next(sgkf.split(np.zeros(len(yp)), yp, gp))
    held = set(gp[val_p].tolist())
    for c in sorted(set(yp)):
        own = sorted(set(gp[yp == c].tolist()))
        if set(own) <= held:  # every work of c held out: give the first one back to training
            held.discard(own[0])
    is_val = np.isin(groups, sorted(held))
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def single_work_composers(composers: Sequence[str], works: Sequence[str]) -> list[str]:
    """The composers all of whose tracks belong to one work, sorted."""
    works_of: dict[str, set[str]] = {}
    for c, w in zip(composers, works):
        works_of.setdefault(c, set()).add(w)
    return sorted(c for c, ws in works_of.items() if len(ws) < 2)


def majority_baseline(train_labels: np.ndarray, val_labels: np.ndarray) -> tuple[int, float | None, float | None]:
    """What always answering the composer with the most training tracks scores on ``val_labels``:
    (that label, accuracy, balanced accuracy over the composers present); ``None`` without val."""
    largest = int(np.bincount(train_labels).argmax())  # ties: the first by name
    if len(val_labels) == 0:
        return largest, None, None
    present = np.unique(val_labels)
    return largest, float((val_labels == largest).mean()), float((present == largest).sum() / len(present))
