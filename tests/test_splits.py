"""The splits of ``musicidx eval``: grouped folds (closed set) and leave one composer out (open set)."""

from __future__ import annotations

import numpy as np
import pytest

from musicidx.encoder.errors import MusicIdxError
from musicidx.evaluate.splits import grouped_folds, leave_one_composer_out

#: 3 composers x 5 works x 2 movements, interleaved so that positions do not follow composers
COMPOSERS = [c for _ in range(2) for c in ("Alpha", "Beta", "Gamma") for _ in range(5)]
WORKS = [f"{c}/work{w}" for _ in range(2) for c in ("Alpha", "Beta", "Gamma") for w in range(5)]


def test_grouped_folds_partition_the_tracks_without_splitting_a_work() -> None:
    folds = grouped_folds(COMPOSERS, WORKS, n_folds=5, seed=0)
    assert len(folds) == 5
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(len(COMPOSERS)))
    works = np.asarray(WORKS)
    for train, test in folds:
        assert not set(works[train]) & set(works[test])
        assert np.array_equal(train, np.sort(train)) and np.array_equal(test, np.sort(test))
        assert {COMPOSERS[i] for i in test} == {"Alpha", "Beta", "Gamma"}  # stratified: one work of each
    assert [t.tolist() for _, t in folds] == [t.tolist() for _, t in grouped_folds(COMPOSERS, WORKS, n_folds=5)]


def test_grouped_folds_name_a_composer_with_too_few_works() -> None:
    with pytest.raises(MusicIdxError, match=r"composer Alpha has 5 work\(s\); grouped 6-fold CV needs 6"):
        grouped_folds(COMPOSERS, WORKS, n_folds=6)


def test_leave_one_composer_out_holds_out_the_first_fold_of_the_others() -> None:
    splits = leave_one_composer_out(COMPOSERS, WORKS, n_folds=5, seed=3)
    assert list(splits) == ["Alpha", "Beta", "Gamma"]
    names, works = np.asarray(COMPOSERS), np.asarray(WORKS)
    for c, (reference, known_test, unknown) in splits.items():
        assert unknown.tolist() == np.flatnonzero(names == c).tolist()
        others = np.flatnonzero(names != c)
        assert sorted([*reference, *known_test]) == others.tolist() and not set(reference) & set(known_test)
        assert not set(works[reference]) & set(works[known_test])
        train, test = grouped_folds(list(names[others]), list(works[others]), n_folds=5, seed=3)[0]
        assert reference.tolist() == others[train].tolist() and known_test.tolist() == others[test].tolist()
