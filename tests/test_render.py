"""MIDI parsing limits, clip windows, SoundFont discovery and FluidSynth rendering."""

from __future__ import annotations

import builtins
import dataclasses
import sys
from pathlib import Path

import midi_factory
import numpy as np
import pretty_midi
import pytest

from musicidx.encoder import render
from musicidx.encoder.config import FeatureConfig
from musicidx.encoder.errors import ConfigMismatchError, DependencyError, InvalidMidiError, SynthesisError
from musicidx.encoder.render import (
    clip_starts,
    find_soundfont,
    load_midi,
    matching_soundfont,
    render_clips,
    reorchestration,
    sounding_span,
)


def _pm(*notes: tuple[float, float]) -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(0)
    inst.notes = [pretty_midi.Note(90, 60, s, e) for s, e in notes]
    pm.instruments.append(inst)
    return pm


# ------------------------------------------------------------------------------ clip windows


def test_clip_starts_spread_evenly_over_the_sounding_part(features: FeatureConfig) -> None:
    pm = _pm((3.0, 4.0), (20.0, 23.0))  # sounds from 3 s to 23 s
    assert sounding_span(pm) == (3.0, 23.0)
    np.testing.assert_allclose(clip_starts(pm, features), [3.0, 12.0, 21.0])  # last window ends at 23 s


def test_clip_starts_of_a_short_piece_overlap_by_at_most_the_minimum_hop(features: FeatureConfig) -> None:
    # 3.5 s sounding, 2 s clips, windows at least 1 s apart: 1 + (3.5 - 2) // 1 = 2 windows
    np.testing.assert_allclose(clip_starts(_pm((1.0, 4.5)), features), [1.0, 2.5])


@pytest.mark.parametrize("span", [0.005, 1.0, 2.0])
def test_a_piece_no_longer_than_a_clip_gets_one_window_at_its_first_note(features: FeatureConfig, span: float) -> None:
    np.testing.assert_array_equal(clip_starts(_pm((0.5, 0.5 + span)), features), [0.5])


def test_clip_starts_are_deterministic(corpus_dir: Path, features: FeatureConfig) -> None:
    f = next(corpus_dir.glob("Beta/*.mid"))
    a, b = clip_starts(load_midi(f), features), clip_starts(load_midi(f), features)
    np.testing.assert_array_equal(a, b)
    assert len(a) == features.clips_per_track


def test_clips_per_track_caps_the_windows() -> None:
    cfg = FeatureConfig(clip_seconds=2.0, clips_per_track=5, min_clip_hop_seconds=1.0)
    assert len(clip_starts(_pm((0.0, 600.0)), cfg)) == 5


# ------------------------------------------------------------------------------ MIDI limits


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
    monkeypatch.setattr(render, "MAX_MESSAGES", 10)
    with pytest.raises(InvalidMidiError, match=r"\d+ MIDI messages, over the 10 limit"):
        load_midi(good_midi)


def test_note_count_limit(good_midi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "MAX_NOTES", 5)
    with pytest.raises(InvalidMidiError, match=r"\d+ notes, over the 5 limit"):
        load_midi(good_midi)


# ------------------------------------------------------------------------------ SoundFont


def test_find_soundfont_uses_the_environment_then_explicit_choice(tmp_path: Path) -> None:
    sf = find_soundfont()  # $MUSICIDX_SOUNDFONT, set by conftest
    assert sf.name == "TimGM6mb.sf2" and len(sf.sha256) == 64
    assert sf.to_dict() == {"name": "TimGM6mb.sf2", "path": str(sf.path), "sha256": sf.sha256}
    copy = tmp_path / "mine.sf2"
    copy.write_bytes(sf.path.read_bytes())
    mine = find_soundfont(copy)
    assert mine.path == copy.resolve() and mine.sha256 == sf.sha256


def test_find_soundfont_falls_back_to_the_one_pretty_midi_ships(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUSICIDX_SOUNDFONT")
    monkeypatch.setattr(render, "soundfont_candidates", lambda: [])
    assert find_soundfont().path == render.bundled_soundfont().resolve()


def test_broken_or_missing_soundfont_gives_one_line_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "broken.sf2"
    bad.write_bytes(b"not a soundfont")
    with pytest.raises(DependencyError, match=r"not a SoundFont \(no RIFF header\); pass another with --soundfont"):
        find_soundfont(bad)
    with pytest.raises(DependencyError, match="SoundFont given by --soundfont does not exist"):
        find_soundfont(tmp_path / "missing.sf2")
    monkeypatch.setenv("MUSICIDX_SOUNDFONT", str(tmp_path / "missing.sf2"))
    with pytest.raises(DependencyError, match=r"SoundFont given by \$MUSICIDX_SOUNDFONT does not exist"):
        find_soundfont()


def test_matching_soundfont_refuses_another_one_naming_both(tmp_path: Path, soundfont: render.SoundFont) -> None:
    other = tmp_path / "Other.sf2"
    other.write_bytes(b"RIFF" + bytes(100))
    assert matching_soundfont(soundfont.to_dict(), None) == soundfont
    with pytest.raises(
        ConfigMismatchError, match=r"rendered with SoundFont TimGM6mb\.sf2 .* this run found Other\.sf2"
    ):
        matching_soundfont(soundfont.to_dict(), other)


def test_missing_fluidsynth_library_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_fluidsynth(name: str, *args: object, **kwargs: object) -> object:
        if name == "fluidsynth":
            raise ImportError("Couldn't find the FluidSynth library.")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.delitem(sys.modules, "fluidsynth", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_fluidsynth)
    with pytest.raises(DependencyError, match=r"cannot load FluidSynth .*libfluidsynth3.*brew install fluid-synth"):
        render._import_fluidsynth()


def test_reorchestration_is_deterministic_and_moves_every_program() -> None:
    key = "ab" * 32
    a = reorchestration([0, 40, 40, 73], key=key, variant=1)
    assert a == reorchestration([73, 0, 40], key=key, variant=1)
    assert set(a) == {0, 40, 73} and all(a[p] != p for p in a) and all(0 <= q < 128 for q in a.values())
    assert any(reorchestration([0, 40, 73], key=key, variant=v) != a for v in range(2, 6))


# ------------------------------------------------------------------------------ rendering


@pytest.mark.fluidsynth
def test_render_program_plays_every_melodic_part_with_that_program(
    features: FeatureConfig, soundfont: render.SoundFont
) -> None:
    def ensemble(violin: int, cello: int) -> pretty_midi.PrettyMIDI:
        pm = pretty_midi.PrettyMIDI()
        for program, pitch in ((violin, 76), (cello, 48)):
            inst = pretty_midi.Instrument(program)
            inst.notes = [pretty_midi.Note(90, pitch + i % 3, 0.3 * i, 0.3 * i + 0.28) for i in range(8)]
            pm.instruments.append(inst)
        return pm

    piano = dataclasses.replace(features, render_program=0)
    strings = render_clips(ensemble(40, 42), cfg=piano, soundfont=soundfont).audio
    np.testing.assert_array_equal(strings, render_clips(ensemble(0, 0), cfg=features, soundfont=soundfont).audio)
    assert not np.array_equal(strings, render_clips(ensemble(40, 42), cfg=features, soundfont=soundfont).audio)


@pytest.mark.fluidsynth
def test_rendered_audio_is_finite_non_silent_and_clip_sized(
    corpus_dir: Path, features: FeatureConfig, soundfont: render.SoundFont
) -> None:
    f = next(corpus_dir.glob("Alpha/*.mid"))
    pm = load_midi(f)
    clips = render_clips(pm, cfg=features, soundfont=soundfont, path=f)
    assert clips.audio.shape == (3, features.clip_samples) and clips.audio.dtype == np.float32
    assert np.isfinite(clips.audio).all() and np.abs(clips.audio).max() <= 1.0
    rms = np.sqrt((clips.audio.astype(np.float64) ** 2).mean(axis=1))
    assert (rms > 10 * features.silence_rms).all()
    np.testing.assert_array_equal(clips.starts, clip_starts(pm, features))
    assert clips.duration == pytest.approx(pm.get_end_time())
    assert clips.rendered_seconds == pytest.approx(3 * 2.0 + 2 * features.preroll_seconds)


@pytest.mark.fluidsynth
def test_rendering_is_bit_identical_across_calls(
    corpus_dir: Path, features: FeatureConfig, soundfont: render.SoundFont
) -> None:
    pm = load_midi(next(corpus_dir.glob("Gamma/*.mid")))
    a = render_clips(pm, cfg=features, soundfont=soundfont)
    render_clips(load_midi(next(corpus_dir.glob("Beta/*.mid"))), cfg=features, soundfont=soundfont)
    b = render_clips(pm, cfg=features, soundfont=soundfont)
    np.testing.assert_array_equal(a.audio, b.audio)


@pytest.mark.fluidsynth
def test_a_piece_shorter_than_a_clip_gives_one_clip_padded_with_silence(
    tmp_path: Path, features: FeatureConfig, soundfont: render.SoundFont
) -> None:
    f = midi_factory.write_notes(tmp_path / "short.mid", [(60, 0.2, 0.5)])
    clips = render_clips(load_midi(f), cfg=features, soundfont=soundfont, path=f)
    assert clips.audio.shape == (1, features.clip_samples)
    np.testing.assert_allclose(clips.starts, [0.2])  # MIDI ticks: 0.2 s up to rounding
    head, tail = clips.audio[0, : features.sample_rate // 4], clips.audio[0, -features.sample_rate // 2 :]
    assert np.sqrt((head**2).mean()) > 10 * features.silence_rms
    assert np.sqrt((tail**2).mean()) < features.silence_rms


@pytest.mark.fluidsynth
@pytest.mark.parametrize(
    ("notes", "kwargs"),
    [
        ([(60, 0.0, 1.0)], {"velocity": 1}),  # far too quiet to hear
        ([(0, 0.0, 1.0)], {"is_drum": True}),  # a drum key the General MIDI kit leaves empty
    ],
    ids=["velocity-1", "empty-drum-key"],
)
def test_silence_is_a_synthesis_error(
    tmp_path: Path, features: FeatureConfig, soundfont: render.SoundFont, notes: midi_factory.Notes, kwargs: dict
) -> None:
    f = midi_factory.write_notes(tmp_path / "quiet.mid", notes, **kwargs)
    with pytest.raises(SynthesisError, match=r"quiet\.mid: renders to silence \(are its instruments missing"):
        render_clips(load_midi(f), cfg=features, soundfont=soundfont, path=f)


@pytest.mark.fluidsynth
def test_silent_windows_are_dropped_and_kept_when_asked(
    tmp_path: Path, features: FeatureConfig, soundfont: render.SoundFont
) -> None:
    # one note, then 10 s of nothing but an inaudible one: the middle window is silent
    f = midi_factory.write_notes(tmp_path / "gap.mid", [(60, 0.0, 1.0), (60, 10.0, 12.0)])
    pm = load_midi(f)
    pm.instruments[0].notes[1].velocity = 1
    clips = render_clips(pm, cfg=features, soundfont=soundfont)
    assert clips.starts.tolist() == [0.0]  # windows at 0, 5 and 10 s; only the first sounds
    forced = render_clips(pm, cfg=features, soundfont=soundfont, starts=np.array([0.0, 5.0]))
    assert forced.starts.tolist() == [0.0, 5.0] and forced.audio.shape == (2, features.clip_samples)


@pytest.mark.fluidsynth
def test_drums_only_and_a_5ms_note_render_to_sound(
    edge_midis: dict[str, Path], features: FeatureConfig, soundfont: render.SoundFont
) -> None:
    for name in ("drums_only", "blip"):
        clips = render_clips(load_midi(edge_midis[name]), cfg=features, soundfont=soundfont)
        assert len(clips.audio) >= 1 and np.isfinite(clips.audio).all()
        assert np.sqrt((clips.audio[0] ** 2).mean()) > features.silence_rms


@pytest.mark.fluidsynth
def test_render_time_limit(
    good_midi: Path, features: FeatureConfig, soundfont: render.SoundFont, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(render, "MAX_RENDER_SECONDS", -1.0)
    with pytest.raises(SynthesisError, match=r"good\.mid: rendering took over the -1 s limit"):
        render_clips(load_midi(good_midi), cfg=features, soundfont=soundfont, path=good_midi)


def _notes(pm: pretty_midi.PrettyMIDI) -> list[tuple[int, float, float, int]]:
    return sorted((n.pitch, n.start, n.end, n.velocity) for i in pm.instruments if not i.is_drum for n in i.notes)


def test_orchestrations_keep_every_note_and_change_only_the_instruments() -> None:
    from musicidx.encoder.render import ORCHESTRATIONS, STRING_BANDS, WIND_BANDS, orchestrate

    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes = [pretty_midi.Note(90, p, 0.1 * i, 0.1 * i + 0.5) for i, p in enumerate((30, 40, 50, 60, 70, 80))]
    piano.control_changes = [pretty_midi.ControlChange(64, 127, 0.0)]
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes = [pretty_midi.Note(100, 36, 0.0, 0.1)]
    pm.instruments = [piano, drums]
    key = "ab" * 32
    for name in ORCHESTRATIONS:
        out = orchestrate(pm, name, key=key)
        assert _notes(out) == _notes(pm), name
        assert [[(n.pitch, n.start) for n in i.notes] for i in out.instruments if i.is_drum] == [[(36, 0.0)]]
    assert _notes(pm) and pm.instruments[0].program == 0  # the input is not changed
    assert [i.program for i in orchestrate(pm, "piano", key=key).instruments] == [0, 0]
    strings = orchestrate(pm, "strings", key=key)
    by_program = {i.program: sorted(n.pitch for n in i.notes) for i in strings.instruments if not i.is_drum}
    assert by_program == {40: [60, 70, 80], 41: [50], 42: [40], 43: [30]}
    assert {p for _, p in STRING_BANDS} >= set(by_program)
    assert all(not i.control_changes for i in strings.instruments if not i.is_drum)  # no piano pedal on strings
    winds = orchestrate(pm, "winds", key=key)
    assert {i.program for i in winds.instruments if not i.is_drum} <= {p for _, p in WIND_BANDS}
    a, b = orchestrate(pm, "random", key=key), orchestrate(pm, "random", key=key, seed=1)
    assert [i.program for i in a.instruments] == [i.program for i in orchestrate(pm, "random", key=key).instruments]
    assert (
        a.instruments[0].program in render.ORCHESTRATION_POOL and b.instruments[0].program in render.ORCHESTRATION_POOL
    )
    with pytest.raises(ValueError, match="unknown orchestration 'brass'"):
        orchestrate(pm, "brass", key=key)
