"""Build helpers: the grouped train/validation split, clip stacking, scores, corpus-level errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from musicidx.encoder.config import FeatureConfig
from musicidx.indexer.corpus import CorpusError
from musicidx.indexer.holdout import majority_baseline, single_work_composers, split_by_work
from musicidx.indexer.prepare import ClipArrays, prepare_corpus, thin_clips
from musicidx.indexer.scoring import TrackScores, score_tracks


def _check_split(composers: list[str], works: list[str], **kw: Any) -> tuple[np.ndarray, np.ndarray]:
    train, val = split_by_work(composers, works, **{"val_fraction": 0.34, "seed": 0, **kw})
    assert len(train) and len(val), "both sides non-empty"
    assert sorted([*train, *val]) == list(range(len(works))), "a partition of the tracks"
    assert not {works[i] for i in train} & {works[i] for i in val}, "no work on both sides"
    assert {composers[i] for i in train} == set(composers), "every composer keeps a work in training"
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
        (["A"] * 4 + ["B"], ["A/1", "A/2", "A/3", "A/4", "B/5"]),  # a composer with one track
        (["A"] * 2 + ["B"] * 2, ["A/1", "A/1", "B/2", "B/3"]),
    ],
    ids=["one-track-composer", "small"],
)
def test_split_of_tiny_corpora(composers: list[str], works: list[str]) -> None:
    train, val = _check_split(composers, works, val_fraction=0.2)
    assert {composers[i] for i in val} == {"A", "B"} - set(single_work_composers(composers, works))


@pytest.mark.parametrize("seed", range(8))
def test_a_composer_with_one_work_is_never_held_out(seed: int) -> None:
    """The issue's corpus: four files of each of three composers, one of them a single work."""
    composers = [c for c in "ABC" for _ in range(4)]
    works = ["A/1", "A/2", "A/3", "A/4", "B/1", "B/1", "B/2", "B/3", "C/1", "C/1", "C/1", "C/1"]
    train, val = _check_split(composers, works, val_fraction=0.5, seed=seed)
    assert set(range(8, 12)) <= set(train.tolist())  # C's only work trains
    assert single_work_composers(composers, works) == ["C"]


@pytest.mark.parametrize("seed", range(8))
def test_a_composer_whose_works_all_fell_in_validation_gets_one_back(seed: int) -> None:
    """Two works each, and validation asked for half: a stratified fold may hold both of one composer."""
    composers = [c for c in "ABCD" for _ in range(2)]
    works = [f"{c}/{i}" for c in "ABCD" for i in (1, 2)]
    _check_split(composers, works, val_fraction=0.5, seed=seed)


def test_with_no_composer_of_two_works_nothing_is_held_out() -> None:
    composers, works = ["A"] * 3 + ["B"] * 3, ["A/w1"] * 3 + ["B/w2"] * 3
    train, val = split_by_work(composers, works, val_fraction=0.2, seed=0)
    assert train.tolist() == list(range(6)) and val.tolist() == []


def test_majority_baseline_always_answers_the_largest_training_composer() -> None:
    train = np.array([0, 1, 1, 1, 2, 2])
    assert majority_baseline(train, np.array([0, 1, 1, 2])) == (1, 0.5, pytest.approx(1 / 3))
    assert majority_baseline(train, np.array([0, 2])) == (1, 0.0, 0.0)  # composer 1 not validated
    assert majority_baseline(train, np.array([], dtype=int)) == (1, None, None)


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


class _FirstTwoBins:
    """A stand-in encoder: a clip's embedding is its first frame's first two bins, normalised."""

    config = type("Config", (), {"embedding_dim": 2})

    def eval(self) -> _FirstTwoBins:
        return self

    def __call__(self, x: Any) -> Any:
        import torch

        return torch.nn.functional.normalize(x[:, :2, 0], dim=1)


def test_score_tracks_votes_with_the_class_size_correction_asked_for() -> None:
    # three one-clip tracks of composer 0 at (1, 0), one of composer 1 at (0.8, 0.6); the query
    # clip at (0.9, 0.436) is nearer composer 1's clip: raw votes 2.7 : 0.98, balanced 0.9 : 0.98
    ref = ClipArrays(np.array([[[1.0], [0.0]]] * 3 + [[[0.8], [0.6]]]), np.arange(4), np.zeros(4))
    query = ClipArrays(np.array([[[0.9], [0.436]]]), np.array([4]), np.zeros(1))
    labels = np.array([0, 0, 0, 1, 1])
    kw: dict[str, Any] = {"n_labels": 2, "k": 4}
    assert score_tracks(_FirstTwoBins(), ref, labels[ref.track], query, labels, **kw).pred.tolist() == [1]
    raw = score_tracks(_FirstTwoBins(), ref, labels[ref.track], query, labels, vote_power=0.0, **kw)
    q = np.array([0.9, 0.436]) / np.hypot(0.9, 0.436)
    votes_0, votes_1 = 3 * q[0], q @ [0.8, 0.6]  # similarity-weighted
    assert raw.pred.tolist() == [0] and raw.confidence[0] == pytest.approx(votes_0 / (votes_0 + votes_1), rel=1e-5)


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
    f = report.fit
    assert f.n_tracks == 4 and f.n_works == 2 and f.val_tracks == 0  # holding one out would leave a composer out
    assert f.val_accuracy is None and f.single_work_composers == ["Alpha", "Beta"]
    assert 0.0 <= f.threshold <= 2.0
    assert len(f.warnings) == 4 and "nothing was held out" in f.warnings[2]
    assert not f.calibrated and f.warnings[3].startswith(
        "the novelty threshold is uncalibrated (calibrated on 4 tracks"
    )
    m = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert m["warnings"] == f.warnings and m["novelty"]["calibrated_on"]["track_ids"] == [0, 1, 2, 3]


@pytest.mark.fluidsynth
def test_a_composer_with_a_single_work_trains_and_is_named_in_a_warning(
    corpus_dir: Path, tmp_path: Path, tiny_cli_defaults: None
) -> None:
    """Alpha and Beta with three works each, Gamma with one (two movements): Gamma is never held out."""
    from click.testing import CliRunner

    from musicidx.cli import cli

    src = tmp_path / "c"
    for c in ("Alpha", "Beta", "Gamma"):
        (src / c).mkdir(parents=True)
        for f in sorted((corpus_dir / c).glob("Sonata No 1_*" if c == "Gamma" else "*.mid")):
            (src / c / f.name).symlink_to(f)
    out = tmp_path / "idx"
    r = CliRunner().invoke(cli, ["build", str(src), "--out", str(out), "--workers", "1", "--no-cache"])
    assert r.exit_code == 0, r.output
    warning, uncalibrated = [ln for ln in r.stdout.splitlines() if ln.startswith("warning ")]
    assert warning.startswith("warning      Gamma has a single work (Sonata No 1_OP1; 2 track(s)), kept whole in")
    assert "how well the index recognises Gamma is untested" in warning
    (base,) = [ln for ln in r.stdout.splitlines() if ln.startswith("baseline ")]
    m = json.loads((out / "manifest.json").read_text())
    b = m["validation"]["majority_baseline"]
    assert b["composer"] in ("Alpha", "Beta") and 0.0 <= b["accuracy"] <= 1.0  # Gamma has two tracks only
    assert base == (
        f"baseline     always answering {b['composer']} (most tracks) would score accuracy {b['accuracy']:.3f}, "
        f"balanced accuracy {b['balanced_accuracy']:.3f}"
    )
    assert m["validation"]["single_work_composers"] == ["Gamma"] and m["warnings"] == [warning[13:], uncalibrated[13:]]
    assert "uncalibrated" in uncalibrated  # three held-out works of two composers back no verdict
    gamma = {r["track_id"] for r in pq.read_table(out / "clips.parquet").to_pylist() if r["composer"] == "Gamma"}
    held = set(m["novelty"]["calibrated_on"]["track_ids"])
    assert gamma and not gamma & held and held, "Gamma trains; the others are validated"
