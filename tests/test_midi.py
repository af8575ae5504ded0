"""MIDI parsing: what the edge cases parse to, and the limits on hostile files.

Real MIDI with many ticks is read, not refused: the limits are seconds, notes and messages.
music21 writes 10,080 ticks per beat, so its export of a whole quartet movement passes the
10**7 ticks pretty_midi refuses as "likely corrupt"; ``load_midi`` re-times such a file on a
coarser grid.  A file whose ticks describe an absurdly long piece is still refused, cheaply.
"""

from __future__ import annotations

import time
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest
from tiny import FEATURES

from musicidx.encoder import midi
from musicidx.encoder.errors import InvalidMidiError
from musicidx.encoder.midi import load_midi


def test_edge_cases_parse_to_what_they_are(edge_midis: dict[str, Path]) -> None:
    with pytest.raises(InvalidMidiError, match="contains no notes") as info:
        load_midi(edge_midis["no_notes"])
    assert info.value.path == edge_midis["no_notes"] and str(edge_midis["no_notes"]) in str(info.value)
    drums = load_midi(edge_midis["drums_only"])
    assert [i.is_drum for i in drums.instruments] == [True]
    blip = load_midi(edge_midis["blip"])
    (note,) = blip.instruments[0].notes
    assert note.end - note.start == pytest.approx(0.005, abs=0.002)


def test_unreadable_file_is_an_invalid_midi_error(good_midi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user without read permission gets (simulated: these tests run as root, who reads anyway)."""

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(InvalidMidiError, match=r"cannot read file \(Permission denied\)"):
        load_midi(good_midi)


def test_message_count_limit(good_midi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(midi, "MAX_MESSAGES", 10)
    with pytest.raises(InvalidMidiError, match=r"\d+ MIDI messages, over the 10 limit"):
        load_midi(good_midi)


def test_note_count_limit(good_midi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(midi, "MAX_NOTES", 5)
    with pytest.raises(InvalidMidiError, match=r"\d+ notes, over the 5 limit"):
        load_midi(good_midi)


# ---------------------------------------------------------------------- many ticks

TPB = 10_080  # music21's ticks per beat
BEATS = 1_100  # 11.1 million ticks: 9 min 10 s at 120 BPM
VOICES = (48, 55, 64, 72)


def quartet_like(path: Path, *, beats: int = BEATS) -> Path:
    """A type-1 file as music21 writes one: 10,080 ticks per beat, a tempo track and four voices
    of one-beat notes, each voice on its own program and channel."""
    mf = mido.MidiFile(type=1, ticks_per_beat=TPB)
    mf.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120), time=0)]))
    for ch, (low, program) in enumerate(zip(VOICES, (40, 40, 41, 42))):
        tr = mido.MidiTrack([mido.Message("program_change", channel=ch, program=program, time=0)])
        for b in range(beats):
            pitch = low + (b * 5 + ch) % 12
            tr += [
                mido.Message("note_on", channel=ch, note=pitch, velocity=80, time=0),
                mido.Message("note_off", channel=ch, note=pitch, time=TPB),
            ]
        mf.tracks.append(tr)
    mf.save(path)
    return path


def largest_tick(path: Path) -> int:
    return max(sum(m.time for m in tr) for tr in mido.MidiFile(path).tracks)


def test_a_file_past_pretty_midis_tick_limit_is_read_with_its_timing(tmp_path: Path) -> None:
    f = quartet_like(tmp_path / "quartet.mid")
    assert largest_tick(f) > pretty_midi.pretty_midi.MAX_TICK  # what pretty_midi alone refuses
    with pytest.raises(ValueError, match="it is likely corrupt"):
        pretty_midi.PrettyMIDI(str(f))
    pm = load_midi(f)
    assert pm.resolution < TPB and pm.get_end_time() == pytest.approx(BEATS * 0.5, abs=1e-3)
    assert sorted(len(i.notes) for i in pm.instruments) == [BEATS] * len(VOICES)
    starts = np.array(sorted(n.start for i in pm.instruments for n in i.notes))
    exact = np.repeat(np.arange(BEATS) * 0.5, len(VOICES))
    assert np.abs(starts - exact).max() < 1e-3  # re-timed by under a millisecond


def test_the_tick_grid_is_kept_below_pretty_midis_limit() -> None:
    assert midi.MAX_TICKS < pretty_midi.pretty_midi.MAX_TICK


def _one_note_then(path: Path, *, tpb: int, rest_ticks: int) -> Path:
    """One note, then silence for ``rest_ticks`` (in deltas MIDI can hold) before the end."""
    mf = mido.MidiFile(ticks_per_beat=tpb)
    tr = mido.MidiTrack(
        [mido.Message("note_on", note=60, velocity=80, time=0), mido.Message("note_off", note=60, time=tpb)]
    )
    left = rest_ticks
    while left > 0:
        step = min(left, 0x0FFFFFFF)
        tr.append(mido.MetaMessage("text", text="rest", time=step))
        left -= step
    tr.append(mido.Message("note_on", note=62, velocity=80, time=0))
    tr.append(mido.Message("note_off", note=62, time=tpb))
    mf.tracks.append(tr)
    mf.save(path)
    return path


def test_an_absurd_tick_count_is_refused_for_its_length_without_a_huge_allocation(tmp_path: Path) -> None:
    f = _one_note_then(tmp_path / "billion.mid", tpb=480, rest_ticks=10**9)  # 1e9 ticks: 289 h at 120 BPM
    began = time.monotonic()
    with pytest.raises(InvalidMidiError, match=r"lasts 289\.4 h, over the 3 h limit") as info:
        load_midi(f)
    assert info.value.path == f and time.monotonic() - began < 5.0  # no 8 GB tick table


def test_too_many_beats_even_at_one_tick_per_beat_is_refused(tmp_path: Path) -> None:
    f = _one_note_then(tmp_path / "beats.mid", tpb=1, rest_ticks=20_000_000)
    with pytest.raises(
        InvalidMidiError,
        match=r"20000002 beats long, over the 9999999-beat limit \(largest tick 20000002 at 1 ticks per",
    ):
        load_midi(f)


@pytest.mark.fluidsynth
def test_a_high_resolution_file_is_featurised_and_answered(tmp_path: Path, synthetic_index: object) -> None:
    from musicidx.query.engine import Searcher

    f = quartet_like(tmp_path / "quartet.mid")
    r = Searcher(synthetic_index.path, cache_dir=None).query(f)  # type: ignore[attr-defined]
    assert r.clips == FEATURES.clips_per_track and np.isfinite(r.novelty) and r.composer in r.votes


@pytest.mark.slow
@pytest.mark.fluidsynth
def test_music21_export_of_a_whole_quartet_movement_is_read(tmp_path: Path, synthetic_index: object) -> None:
    """Beethoven, String Quartet Op. 59 No. 1, first movement: 16.1 million ticks (~8 s to export)."""
    pytest.importorskip("music21")
    from musicidx.encoder.scores import export_score as export_piece  # it refuses an export load_midi would refuse
    from musicidx.query.engine import Searcher

    f = tmp_path / "op59no1-1.mid"
    export_piece("beethoven/opus59no1/movement1", f)
    assert largest_tick(f) > pretty_midi.pretty_midi.MAX_TICK
    pm = load_midi(f)
    assert len(pm.instruments) == 4 and 500 < pm.get_end_time() < 1200
    r = Searcher(synthetic_index.path, cache_dir=None).query(f)  # type: ignore[attr-defined]
    assert r.clips == FEATURES.clips_per_track and np.isfinite(r.novelty)
