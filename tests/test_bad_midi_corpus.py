"""The issue's bad-input corpus, generated here: every file ends in an answer or one clear error."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import mido
import numpy as np
import pytest
from midi_factory import write_piece

from musicidx.encoder.config import FeatureConfig
from musicidx.encoder.errors import DependencyError, InvalidMidiError, MusicIdxError
from musicidx.encoder.render import MAX_SECONDS, find_soundfont, load_midi, render_clips

CFG = FeatureConfig(clip_seconds=2.0, clips_per_track=2, min_clip_hop_seconds=1.0)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    p = write_piece(tmp_path_factory.mktemp("good") / "g.mid", np.random.default_rng(0), program=0, low=55)
    return p.read_bytes()


def _midi_with_tempo(path: Path, bpm: float) -> None:
    mf = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    # A MIDI tempo is 24 bits of microseconds per beat: 1 BPM cannot be written, and the slowest
    # tempo a file can hold (16777215 us, 3.58 BPM) stands in for it.
    tr.append(mido.MetaMessage("set_tempo", tempo=min(mido.bpm2tempo(bpm), 0xFFFFFF)))
    for k in range(8):
        tr += [
            mido.Message("note_on", note=60 + k, velocity=90, time=0),
            mido.Message("note_off", note=60 + k, time=240),
        ]
    mf.tracks.append(tr)
    mf.save(path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_midi(tmp_path: Path, good: bytes, fraction: float) -> None:
    p = tmp_path / "t.mid"
    p.write_bytes(good[: int(len(good) * fraction)])
    with pytest.raises(InvalidMidiError, match="truncated|corrupt|no notes"):
        load_midi(p)


def test_valid_header_garbage_track(tmp_path: Path) -> None:
    p = tmp_path / "g.mid"
    p.write_bytes(
        b"MThd" + struct.pack(">IHHH", 6, 1, 1, 480) + b"MTrk" + struct.pack(">I", 16) + b"\x93" + os.urandom(15)
    )
    with pytest.raises(InvalidMidiError, match=str(p.name)):
        load_midi(p)


def test_type_2_is_refused(tmp_path: Path) -> None:
    mf = mido.MidiFile(type=2)
    mf.tracks.append(
        mido.MidiTrack([mido.Message("note_on", note=60, time=0), mido.Message("note_off", note=60, time=480)])
    )
    mf.save(tmp_path / "t2.mid")
    with pytest.raises(InvalidMidiError, match="type-2"):
        load_midi(tmp_path / "t2.mid")


@pytest.mark.fluidsynth
@pytest.mark.parametrize("bpm", [1.0, 1000.0])
def test_extreme_tempos_render_or_refuse_with_a_limit(tmp_path: Path, bpm: float) -> None:
    p = tmp_path / f"tempo{bpm:g}.mid"
    _midi_with_tempo(p, bpm)
    pm = load_midi(p)  # 3.58 BPM: 8 notes of 8.4 s each; 1000 BPM: under a second
    clips = render_clips(pm, cfg=CFG, soundfont=find_soundfont(), path=p)
    assert np.isfinite(clips.audio).all() and clips.audio.shape[1] == CFG.clip_samples


def test_ten_hour_midi_is_refused_naming_the_limit(tmp_path: Path) -> None:
    mf = mido.MidiFile(ticks_per_beat=1)  # 120 BPM: a tick is half a second
    tr = mido.MidiTrack()
    for _ in range(600):  # one note a minute for ten hours
        tr += [mido.Message("note_on", note=60, velocity=80, time=118), mido.Message("note_off", note=60, time=2)]
    mf.tracks.append(tr)
    mf.save(tmp_path / "long.mid")
    with pytest.raises(InvalidMidiError, match=rf"lasts 10\.0 h, over the {MAX_SECONDS / 3600:.0f} h limit"):
        load_midi(tmp_path / "long.mid")


@pytest.mark.fluidsynth
@pytest.mark.parametrize("name", ["ünïcödé – 作曲.mid", "   spaces   .mid", b"latin1-\xe9\xff.mid"])
def test_odd_file_names_work(tmp_path: Path, good: bytes, name: str | bytes) -> None:
    p = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), name if isinstance(name, bytes) else os.fsencode(name))))
    p.write_bytes(good)
    clips = render_clips(load_midi(p), cfg=CFG, soundfont=find_soundfont(), path=p)
    assert len(clips.audio) >= 1


def test_unreadable_file(tmp_path: Path, good: bytes) -> None:
    p = tmp_path / "locked.mid"
    p.write_bytes(good)
    p.chmod(0)
    try:
        if os.geteuid() == 0:
            pytest.skip("running as root: permissions do not stop reads (CI and this machine run as root)")
        with pytest.raises(InvalidMidiError, match="cannot read file"):
            load_midi(p)
    finally:
        p.chmod(0o644)


def test_broken_soundfont_gives_one_line_with_a_hint(tmp_path: Path) -> None:
    bad = tmp_path / "broken.sf2"
    bad.write_bytes(b"not a soundfont")
    with pytest.raises(DependencyError, match="not a SoundFont .* --soundfont"):
        find_soundfont(bad)
    with pytest.raises(DependencyError, match="does not exist"):
        find_soundfont(tmp_path / "missing.sf2")


def test_missing_fluidsynth_library_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins
    import sys

    from musicidx.encoder import render

    real_import = builtins.__import__

    def no_fluidsynth(name: str, *args: object, **kwargs: object) -> object:
        if name == "fluidsynth":
            raise ImportError("Couldn't find the FluidSynth library.")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.delitem(sys.modules, "fluidsynth", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_fluidsynth)
    with pytest.raises(DependencyError, match="libfluidsynth3.*brew install fluid-synth"):
        render._import_fluidsynth()


def test_every_error_is_a_musicidx_error_with_the_path(tmp_path: Path) -> None:
    p = tmp_path / "zero.mid"
    p.write_bytes(b"")
    with pytest.raises(MusicIdxError) as info:
        load_midi(p)
    assert info.value.path == p and str(p) in str(info.value)
