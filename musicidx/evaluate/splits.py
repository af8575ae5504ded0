"""How ``musicidx eval`` splits a labelled folder, for anyone who must split it the same way.

* :func:`grouped_folds`: the closed set's cross-validation folds -- scikit-learn's
  ``StratifiedGroupKFold`` grouped by work (movements of one work never straddle train and test),
  stratified by composer;
* :func:`leave_one_composer_out`: the open set's splits -- for each composer, the others' tracks
  split by :func:`grouped_folds` with the first fold held out, and every track of that composer
  as the unknown ones.

Both take a track's composer and its work (``Track.group``), index positions come back sorted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from musicidx.encoder.errors import MusicIdxError


def grouped_folds(
    composers: Sequence[str], works: Sequence[str], *, n_folds: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) track indices: works never straddle a split, composers stratified.

    ``StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)``; a composer with fewer
    works than ``n_folds`` is a :class:`MusicIdxError` naming it."""
    from sklearn.model_selection import StratifiedGroupKFold

    for c in sorted(set(composers)):
        n_works = len({w for w, k in zip(works, composers) if k == c})
        if n_works < n_folds:
            raise MusicIdxError(
                f"composer {c} has {n_works} work(s); grouped {n_folds}-fold CV needs {n_folds} (use --folds)"
            )
    sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(np.sort(a), np.sort(b)) for a, b in sgkf.split(np.zeros(len(composers)), composers, works)]


def leave_one_composer_out(
    composers: Sequence[str], works: Sequence[str], *, n_folds: int, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each composer ``c`` (sorted): ``(reference, known_test, unknown)`` track indices.

    The other composers' tracks are split by :func:`grouped_folds` (``n_folds``, ``seed``) and its
    first fold is held out as ``known_test``; the rest is ``reference``, what an index of the known
    composers holds; ``unknown`` is every track of ``c``.  The construction of ``musicidx eval``'s
    open set."""
    names = np.asarray(composers)
    groups = np.asarray(works)
    out = {}
    for c in sorted(set(composers)):
        known, unknown = np.flatnonzero(names != c), np.flatnonzero(names == c)
        train, test = grouped_folds(list(names[known]), list(groups[known]), n_folds=n_folds, seed=seed)[0]
        out[c] = (known[train], known[test], unknown)
    return out
