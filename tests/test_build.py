"""Build helpers: the grouped train/validation split, clip stacking, scores, corpus-level errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from musicidx.encoder.config import FeatureConfig
from musicidx.indexer.build import ClipArrays, TrackScores, prepare_corpus, split_by_work, thin_clips
from musicidx.indexer.corpus import CorpusError


def _check_split(composers: list[str], works: list[str], **kw: Any) -> tuple[np.ndarray, np.ndarray]:
    train, val = split_by_work(composers, works, **{"val_fraction": 0.34, "seed": 0, **kw})
    assert len(train) and len(val), "both sides non-empty"
    assert sorted([*train, *val]) == list(range(len(works))), "a partition of the tracks"
    assert not {works[i] for i in train} & {works[i] for i in val}, "no work on both sides"
    return train, val


def test_split_holds_out_whole_works_stratified_by_composer() -> None:
    composers = [c for c in "ABC" for _ in range(4)]
    works = [f"{c}/{w}" for c in "ABC" for w in ("s1", "s1", "s2", "e1")]  # movements 1 and 2 of s1
    train, val = _check_split(composers, works)
    assert {composers[i] for i in val} == {"A", "B", "C"}  # every composer validated
    assert np.array_equal(train, np.sort(train)) and np.array_equal(val, np.sort(val))
    again = split_by_work(composers, works, val_fraction=0.34, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train, val)))  # deterministic given the seed


@pytest.mark.parametrize(
    ("composers", "works"),
    [
        (["A"] * 3 + ["B"] * 3, ["A/w1"] * 3 + ["B/w2"] * 3),  # fewer works than splits
        (["A"] * 4 + ["B"], ["A/1", "A/2", "A/3", "A/4", "B/5"]),  # a composer with one track
        (["A"] * 2 + ["B"] * 2, ["A/1", "A/1", "B/2", "B/3"]),
    ],
    ids=["two-works", "one-track-composer", "small"],
)
def test_split_of_tiny_corpora(composers: list[str], works: list[str]) -> None:
    _check_split(composers, works, val_fraction=0.2)


def test_split_needs_two_works() -> None:
    with pytest.raises(CorpusError, match="need at least two distinct works to hold one out for validation"):
        split_by_work(["A", "B"], ["w", "w"], val_fraction=0.2, seed=0)


def test_thin_clips_keeps_evenly_spaced_clips_of_each_track() -> None:
    track = np.repeat([0, 1, 2], [5, 2, 1])
    clips = ClipArrays(np.arange(8)[:, None, None] * np.ones((8, 2, 3)), track, np.arange(8.0))
    thin = thin_clips(clips, per_track=3)
    assert thin.track.tolist() == [0, 0, 0, 1, 1, 2]
    assert thin.start.tolist() == [0.0, 2.0, 4.0, 5.0, 6.0, 7.0]
    assert thin.feats[:, 0, 0].tolist() == thin.start.tolist()


def test_track_scores_accuracy_and_balanced_accuracy() -> None:
    s = TrackScores(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]), np.zeros(4), np.ones(4))
    assert s.accuracy() == (0.75, 0.5)  # composer 1 never recognised
    empty = TrackScores(np.zeros(0, int), np.zeros(0, int), np.zeros(0), np.zeros(0))
    assert all(np.isnan(v) for v in empty.accuracy())


def test_a_corpus_of_only_bad_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "Bach").mkdir()
    (tmp_path / "Bach" / "a.mid").write_bytes(b"")
    (tmp_path / "Bach" / "b.mid").write_bytes(b"junk")
    with pytest.raises(CorpusError, match=r"none of the 2 MIDI files could be used"):
        prepare_corpus(tmp_path, features=FeatureConfig(), cache_dir=None, workers=1)


@pytest.mark.fluidsynth
def test_one_composer_is_not_enough_to_train(corpus_dir: Path, tmp_path: Path, build_tiny: Any) -> None:
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "Alpha").symlink_to(corpus_dir / "Alpha")
    with pytest.raises(CorpusError, match="need usable MIDI files of at least two composers to train"):
        build_tiny(tmp_path / "only", tmp_path / "idx", None)
    assert not (tmp_path / "idx").exists()


@pytest.mark.fluidsynth
def test_two_composers_with_one_work_each_build(corpus_dir: Path, tmp_path: Path, build_tiny: Any) -> None:
    """The smallest corpus a user might try: a work of two movements by each of two composers."""
    for c in ("Alpha", "Beta"):
        (tmp_path / "c" / c).mkdir(parents=True)
        for name in sorted(corpus_dir.glob(f"{c}/Sonata No 1_*")):
            (tmp_path / "c" / c / name.name).symlink_to(name)
    report = build_tiny(tmp_path / "c", tmp_path / "idx", None)
    assert report.fit.n_tracks == 4 and report.fit.n_works == 2 and report.fit.val_tracks == 2
