"""Exact copies win: a query playing a training track's notes is that track's composition.

"Same composition" comes from the notes (:func:`~musicidx.encoder.fingerprints.notes_sha256`, kept per
track in ``clips.parquet``), not from closeness in an embedding trained to group a composer's
pieces: a re-saved or re-orchestrated copy is answered with its track's composer, confidence 1;
a piece with other notes (another movement, one note changed) is not the same composition.
"""

from __future__ import annotations

from pathlib import Path

import midi_factory
import numpy as np
import pretty_midi
import pyarrow.parquet as pq
import pytest
from midi_factory import TRACK_NAMES

from musicidx.encoder.fingerprints import notes_sha256
from musicidx.encoder.midi import load_midi

# ------------------------------------------------------------------------------ the fingerprint


def _copy(src: Path, dest: Path, *, split: bool = False, program: int = 0) -> Path:
    """``src``'s notes re-saved by pretty_midi on its tick grid, with another program and
    instrument name, new velocities, and with ``split`` spread over two instruments listed high
    part first (a re-orchestration)."""
    pm = pretty_midi.PrettyMIDI(str(src))
    notes = [n for i in pm.instruments for n in i.notes]
    parts = [pretty_midi.Instrument(program=program, name="copy")]
    if split:
        parts.insert(0, pretty_midi.Instrument(program=73, name="upper"))
    for n in notes:
        parts[0 if split and n.pitch >= 60 else -1].notes.append(pretty_midi.Note(64, n.pitch, n.start, n.end))
    pm.instruments = parts
    pm.write(str(dest))
    return dest


def test_the_fingerprint_ignores_how_the_notes_are_written(tmp_path: Path, rng: np.random.Generator) -> None:
    src = midi_factory.scale_piece(tmp_path / "src.mid", rng)
    fp = notes_sha256(load_midi(src))
    assert len(fp) == 64
    assert notes_sha256(load_midi(_copy(src, tmp_path / "violin.mid", program=40))) == fp
    assert notes_sha256(load_midi(_copy(src, tmp_path / "split.mid", split=True))) == fp


def test_the_fingerprint_changes_with_a_pitch_or_a_moved_note(tmp_path: Path, rng: np.random.Generator) -> None:
    src = midi_factory.scale_piece(tmp_path / "src.mid", rng)
    pm = load_midi(src)
    fp = notes_sha256(pm)
    pm.instruments[0].notes[3].pitch += 1
    assert notes_sha256(pm) != fp
    pm.instruments[0].notes[3].pitch -= 1
    pm.instruments[0].notes[3].start += 0.02
    assert notes_sha256(pm) != fp
    drums = load_midi(src)
    drums.instruments[0].is_drum = True
    assert notes_sha256(drums) != fp


def test_the_fingerprint_is_kept_in_the_feature_cache(
    tmp_path: Path, corpus_dir: Path, features: object, soundfont: object
) -> None:
    """A cached entry without a fingerprint (written before they were kept) is a miss: the file is
    parsed for its notes, its features reused, and the entry completed."""
    pytest.importorskip("fluidsynth")
    from musicidx.indexer.features import FeatureCache, extract_file

    f = corpus_dir / "Alpha" / TRACK_NAMES[0]
    fp = notes_sha256(load_midi(f))
    cache = FeatureCache(tmp_path / "cache")
    first = extract_file(f, cfg=features, soundfont=soundfont, cache=cache)  # type: ignore[arg-type]
    assert first.notes_sha256 == fp and not first.cached
    assert extract_file(f, cfg=features, soundfont=soundfont, cache=cache).notes_sha256 == fp  # type: ignore[arg-type]
    key = FeatureCache.key(first.sha256, features, soundfont)  # type: ignore[arg-type]
    cache.put(key, first.feats, first.starts, first.duration)  # as an older musicidx wrote it
    again = extract_file(f, cfg=features, soundfont=soundfont, cache=cache)  # type: ignore[arg-type]
    assert (again.cached, again.rendered_seconds, again.notes_sha256) == (False, 0.0, fp)
    assert np.array_equal(again.feats, first.feats)
    assert extract_file(f, cfg=features, soundfont=soundfont, cache=cache).cached  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ answers


@pytest.mark.fluidsynth
def test_the_index_keeps_each_tracks_note_fingerprint(built_index: Path, corpus_dir: Path) -> None:
    rows = pq.read_table(built_index / "clips.parquet", columns=["path", "notes_sha256"]).to_pylist()
    by_path = {r["path"]: r["notes_sha256"] for r in rows}
    assert by_path == {p: notes_sha256(load_midi(corpus_dir / p)) for p in by_path}
    assert len(set(by_path.values())) == len(by_path) == 12


@pytest.mark.fluidsynth
def test_a_note_identical_copy_is_answered_with_its_tracks_composer(
    built_index: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    from musicidx.query.engine import Searcher

    s = Searcher(built_index)
    track = f"Beta/{TRACK_NAMES[2]}"
    for copy in (
        _copy(corpus_dir / track, tmp_path / "piano copy.mid", program=0),  # violin -> piano, renamed
        _copy(corpus_dir / track, tmp_path / "split copy.mid", split=True),  # flute + piano
    ):
        r = s.query(copy)
        assert (r.composer, r.confidence, r.same_composition, r.same_track) == ("Beta", 1.0, True, track), copy
        assert r.votes == {"Alpha": 0.0, "Beta": 1.0, "Gamma": 0.0} and not r.is_new and np.isfinite(r.novelty)


@pytest.mark.fluidsynth
def test_another_movement_or_one_changed_note_is_not_the_same_composition(
    built_index: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    from musicidx.query.engine import Searcher

    s = Searcher(built_index, k=1)
    first, second = (f"Alpha/{TRACK_NAMES[i]}" for i in (0, 1))  # two movements of Sonata No 1
    r = s.query(corpus_dir / second)
    assert r.same_composition and r.same_track == second  # the movement itself, never its sibling
    pm = load_midi(corpus_dir / first)
    pm.instruments[0].notes[5].pitch += 2  # a near-identical rendering of other notes
    pm.write(str(tmp_path / "variant.mid"))
    v = s.query(tmp_path / "variant.mid")
    assert not v.same_composition and v.same_track is None
    assert v.nearest[0].path == first  # the embedding still finds the movement it resembles
