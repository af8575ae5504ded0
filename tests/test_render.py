"""Clip windows and FluidSynth rendering (and the hint when the FluidSynth library is missing)."""

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
from musicidx.encoder.deps import import_fluidsynth
from musicidx.encoder.errors import DependencyError, SynthesisError
from musicidx.encoder.midi import load_midi, sounding_span
from musicidx.encoder.render import clip_starts, render_clips
from musicidx.encoder.soundfont import SoundFont


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


def test_missing_fluidsynth_library_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_fluidsynth(name: str, *args: object, **kwargs: object) -> object:
        if name == "fluidsynth":
            raise ImportError("Couldn't find the FluidSynth library.")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.delitem(sys.modules, "fluidsynth", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_fluidsynth)
    with pytest.raises(DependencyError, match=r"cannot load FluidSynth .*libfluidsynth3.*brew install fluid-synth"):
        import_fluidsynth()


# ------------------------------------------------------------------------------ rendering


@pytest.mark.fluidsynth
def test_render_program_plays_every_melodic_part_with_that_program(
    features: FeatureConfig, soundfont: SoundFont
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
    corpus_dir: Path, features: FeatureConfig, soundfont: SoundFont
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
    corpus_dir: Path, features: FeatureConfig, soundfont: SoundFont
) -> None:
    pm = load_midi(next(corpus_dir.glob("Gamma/*.mid")))
    a = render_clips(pm, cfg=features, soundfont=soundfont)
    render_clips(load_midi(next(corpus_dir.glob("Beta/*.mid"))), cfg=features, soundfont=soundfont)
    b = render_clips(pm, cfg=features, soundfont=soundfont)
    np.testing.assert_array_equal(a.audio, b.audio)


@pytest.mark.fluidsynth
def test_a_piece_shorter_than_a_clip_gives_one_clip_padded_with_silence(
    tmp_path: Path, features: FeatureConfig, soundfont: SoundFont
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
    tmp_path: Path, features: FeatureConfig, soundfont: SoundFont, notes: midi_factory.Notes, kwargs: dict
) -> None:
    f = midi_factory.write_notes(tmp_path / "quiet.mid", notes, **kwargs)
    with pytest.raises(SynthesisError, match=r"quiet\.mid: renders to silence \(are its instruments missing"):
        render_clips(load_midi(f), cfg=features, soundfont=soundfont, path=f)


@pytest.mark.fluidsynth
def test_silent_windows_are_dropped_and_kept_when_asked(
    tmp_path: Path, features: FeatureConfig, soundfont: SoundFont
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
    edge_midis: dict[str, Path], features: FeatureConfig, soundfont: SoundFont
) -> None:
    for name in ("drums_only", "blip"):
        clips = render_clips(load_midi(edge_midis[name]), cfg=features, soundfont=soundfont)
        assert len(clips.audio) >= 1 and np.isfinite(clips.audio).all()
        assert np.sqrt((clips.audio[0] ** 2).mean()) > features.silence_rms


@pytest.mark.fluidsynth
def test_render_time_limit(
    good_midi: Path, features: FeatureConfig, soundfont: SoundFont, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(render, "MAX_RENDER_SECONDS", -1.0)
    with pytest.raises(SynthesisError, match=r"good\.mid: rendering took over the -1 s limit"):
        render_clips(load_midi(good_midi), cfg=features, soundfont=soundfont, path=good_midi)
