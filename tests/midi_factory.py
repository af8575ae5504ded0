"""Tiny MIDI files made on the spot, so tests never need downloaded data.

Three "composers" with audibly different styles, a labelled corpus in the challenge's
``<Composer>/<title>_<catalogue>_<number>_<rest>.mid`` layout, the edge cases every stage must
have an answer for, and the bad-input corpus (each case with the outcome the library defines).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np
import pretty_midi

Notes = list[tuple[int, float, float]]  # (pitch, start s, end s)

C_MAJOR = (0, 2, 4, 5, 7, 9, 11)


def write_notes(
    path: Path, notes: Notes, *, program: int = 0, is_drum: bool = False, velocity: int = 90, tempo: float = 120.0
) -> Path:
    """One instrument playing ``notes``; returns ``path``."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    inst = pretty_midi.Instrument(program=program, is_drum=is_drum)
    inst.notes = [pretty_midi.Note(velocity, p, s, e) for p, s, e in notes]
    pm.instruments.append(inst)
    pm.write(str(path))
    return path


def scale_piece(path: Path, rng: np.random.Generator, *, seconds: float = 5.0) -> Path:
    """Composer "Alpha": piano (program 0) scales in C major, up and down, in a random octave."""
    tonic = 48 + 12 * int(rng.integers(0, 3))
    step = float(rng.uniform(0.12, 0.2))
    degrees = [*range(15), *range(13, 0, -1)]
    notes, t, i = [], 0.0, 0
    while t < seconds:
        d = degrees[i % len(degrees)]
        notes.append((tonic + 12 * (d // 7) + C_MAJOR[d % 7], t, t + step * 0.9))
        t, i = t + step, i + 1
    return write_notes(path, notes, program=0, velocity=int(rng.integers(70, 100)))


def arpeggio_piece(path: Path, rng: np.random.Generator, *, seconds: float = 5.0) -> Path:
    """Composer "Beta": violin (program 40) broken triads, high, on a random root."""
    root = 64 + int(rng.integers(0, 8))
    step = float(rng.uniform(0.18, 0.3))
    shape = (0, 4, 7, 12, 7, 4)
    notes, t, i = [], 0.0, 0
    while t < seconds:
        chord = root + (5 if (i // 12) % 2 else 0)
        notes.append((chord + shape[i % len(shape)], t, t + step))
        t, i = t + step, i + 1
    return write_notes(path, notes, program=40, velocity=int(rng.integers(80, 110)))


def chord_piece(path: Path, rng: np.random.Generator, *, seconds: float = 5.0) -> Path:
    """Composer "Gamma": church organ (program 19) low sustained block chords."""
    notes, t = [], 0.0
    while t < seconds:
        root = 36 + int(rng.integers(0, 12))
        d = float(rng.uniform(0.8, 1.4))
        notes += [(root + iv, t, t + d) for iv in (0, 7, 12, 16)]
        t += d
    return write_notes(path, notes, program=19, velocity=80)


STYLES: dict[str, Callable[..., Path]] = {"Alpha": scale_piece, "Beta": arpeggio_piece, "Gamma": chord_piece}

#: Challenge-style names: the first two are movements of one work, so four tracks make three works.
TRACK_NAMES = (
    "Sonata No 1_OP1_1001_s1-1.mid",
    "Sonata No 1_OP1_1002_s1-2.mid",
    "Sonata No 2_OP2_1003_s2-1.mid",
    "Etude in C_OP10_1004_e1.mid",
)


def write_corpus(root: Path, rng: np.random.Generator, *, composers: tuple[str, ...] = tuple(STYLES)) -> list[Path]:
    """``root/<Composer>/<TRACK_NAMES>``, every file a few seconds in its composer's style."""
    paths = []
    for composer in composers:
        (root / composer).mkdir(parents=True, exist_ok=True)
        for name in TRACK_NAMES:
            paths.append(STYLES[composer](root / composer / name, rng))
    return paths


# ------------------------------------------------------------------------------- edge cases


def no_notes(path: Path) -> Path:
    """A valid MIDI file with one (empty) piano track."""
    return write_notes(path, [])


def drums_only(path: Path) -> Path:
    """Six seconds of a rock beat on the drum channel (kick, snare, closed hi-hat)."""
    notes = []
    for k in range(24):
        t = 0.25 * k
        notes.append((42, t, t + 0.1))
        if k % 4 == 0:
            notes.append((36, t, t + 0.1))
        if k % 4 == 2:
            notes.append((38, t, t + 0.1))
    return write_notes(path, notes, is_drum=True, velocity=110)


def blip(path: Path) -> Path:
    """A single piano note 5 ms long."""
    return write_notes(path, [(60, 0.0, 0.005)], velocity=100)


def with_tempo(path: Path, bpm: float, *, notes: int = 8) -> Path:
    """Half-beat notes at ``bpm``, written with mido so the tempo event is exactly what we ask.

    A MIDI tempo is 24 bits of microseconds per beat: the slowest tempo a file can hold is
    16,777,215 us (3.58 BPM), which stands in for 1 BPM (60,000,000 us cannot be written).
    """
    mf = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    tr.append(mido.MetaMessage("set_tempo", tempo=min(mido.bpm2tempo(bpm), 0xFFFFFF)))
    for k in range(notes):
        tr += [
            mido.Message("note_on", note=60 + k, velocity=90, time=0),
            mido.Message("note_off", note=60 + k, time=240),
        ]
    mf.tracks.append(tr)
    mf.save(path)
    return path


def ten_hours(path: Path) -> Path:
    """One short note a minute for ten hours (600 notes: a small file describing a huge piece)."""
    mf = mido.MidiFile(ticks_per_beat=1)  # 120 BPM: a tick is half a second
    tr = mido.MidiTrack()
    for _ in range(600):
        tr += [mido.Message("note_on", note=60, velocity=80, time=118), mido.Message("note_off", note=60, time=2)]
    mf.tracks.append(tr)
    mf.save(path)
    return path


def type_2(path: Path) -> Path:
    """A type-2 MIDI file (independent sequences), which pretty_midi cannot interpret."""
    mf = mido.MidiFile(type=2)
    for k in range(2):
        mf.tracks.append(
            mido.MidiTrack(
                [
                    mido.Message("note_on", note=60 + k, velocity=90, time=0),
                    mido.Message("note_off", note=60 + k, time=480),
                ]
            )
        )
    mf.save(path)
    return path


def garbage_track(path: Path, rng: np.random.Generator) -> Path:
    """A valid ``MThd`` header and an ``MTrk`` chunk of random bytes behind an absurd length."""
    header = b"MThd" + struct.pack(">IHHH", 6, 1, 1, 480)
    body = b"\x00\xf7\x8f\xff\xff\x7f" + rng.bytes(26)  # delta 0, a sysex escape claiming 32 MiB
    path.write_bytes(header + b"MTrk" + struct.pack(">I", len(body)) + body)
    return path


def garbage_status(path: Path) -> Path:
    """A valid header and track chunk whose first event is a data byte with no status before it."""
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480)
    body = b"\x00\x3c\x40\x00\xff\x2f\x00"  # delta 0, "note 60 velocity 64" without a status byte
    path.write_bytes(header + b"MTrk" + struct.pack(">I", len(body)) + body)
    return path


# ------------------------------------------------------------------------------- bad corpus


@dataclass(frozen=True)
class Case:
    """One file of the bad-input corpus and the outcome the library defines for it.

    ``error`` is ``None`` when the file is legitimately usable (it must render and be
    answered); otherwise the name of the :class:`MusicIdxError` subclass raised and a regex its
    reason must match.
    """

    key: str  # an ASCII id for test names
    path: Path
    error: str | None
    reason: str = ""

    @property
    def name(self) -> str:
        return self.path.name


#: Every case :func:`write_bad_corpus` makes (``latin1-name`` only where the file system allows it).
CASE_KEYS = (
    "zero-bytes",
    "random-bytes",
    "truncated-10",
    "truncated-50",
    "truncated-90",
    "garbage-track",
    "garbage-status",
    "no-notes",
    "ten-hours",
    "type-2",
    "huge-sparse",
    "folder",
    "loop-a",
    "loop-b",
    "dangling",
    "drums-only",
    "blip-5ms",
    "tempo-1bpm",
    "tempo-1000bpm",
    "unicode-name",
    "spaces-name",
    "latin1-name",
    "locked",
)


def write_bad_corpus(folder: Path, good: bytes, rng: np.random.Generator) -> list[Case]:
    """Every kind of bad (or merely odd) input in ``folder``; ``good`` is a valid MIDI file's bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(key: str, error: str | None, reason: str = "", name: str | None = None) -> Path:
        p = folder / (name or f"{key}.mid")
        cases.append(Case(key, p, error, reason))
        return p

    add("zero-bytes", "InvalidMidiError", r"file is empty \(0 bytes\)").write_bytes(b"")
    add("random-bytes", "InvalidMidiError", r"not a MIDI file \(no 'MThd' header\)").write_bytes(rng.bytes(700))
    for pct in (10, 50, 90):
        add(
            f"truncated-{pct}", "InvalidMidiError", r"truncated MIDI data \(the file ends inside a track\)"
        ).write_bytes(good[: len(good) * pct // 100])
    garbage_track(
        add("garbage-track", "InvalidMidiError", r"corrupt MIDI data \(OSError: Message length \d+ exceeds"), rng
    )
    garbage_status(add("garbage-status", "InvalidMidiError", r"corrupt MIDI data \(OSError: running status"))
    no_notes(add("no-notes", "InvalidMidiError", r"contains no notes"))
    ten_hours(add("ten-hours", "InvalidMidiError", r"lasts 10\.0 h, over the 3 h limit"))
    type_2(add("type-2", "InvalidMidiError", r"type-2 MIDI \(independent sequences\) is not supported"))
    with open(add("huge-sparse", "InvalidMidiError", r"file is 33 MiB, over the 32 MiB limit"), "wb") as f:
        f.write(b"MThd")
        f.truncate(33 * 2**20)  # sparse: costs no disk, and must be refused before it is read
    # load_midi says "is a directory, not a MIDI file"; reading it for its hash first says "Is a directory"
    add("folder", "InvalidMidiError", r"[Ii]s a directory").mkdir()
    a = add("loop-a", "InvalidMidiError", r"cannot read file \(Too many levels of symbolic links\)")
    b = add("loop-b", "InvalidMidiError", r"cannot read file \(Too many levels of symbolic links\)")
    a.symlink_to(b.name)
    b.symlink_to(a.name)
    add("dangling", "InvalidMidiError", r"cannot read file \(No such file or directory\)").symlink_to("gone.mid")

    # Odd but valid: each must render and be answered.
    drums_only(add("drums-only", None))  # General MIDI SoundFonts have a drum kit (bank 128)
    blip(add("blip-5ms", None))  # the note's release still sounds
    with_tempo(add("tempo-1bpm", None), 1.0)
    with_tempo(add("tempo-1000bpm", None), 1000.0)
    add("unicode-name", None, name="ünïcödé – 作曲.mid").write_bytes(good)
    add("spaces-name", None, name="   spaces   .mid").write_bytes(good)
    try:  # a name that is not UTF-8 (latin-1 bytes), where the file system allows it
        raw = os.path.join(os.fsencode(folder), b"latin1-\xe9\xff.mid")
        with open(raw, "wb") as f:
            f.write(good)
        cases.append(Case("latin1-name", Path(os.fsdecode(raw)), None))
    except OSError:
        pass
    locked = folder / "locked.mid"
    locked.write_bytes(good)
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads it anyway: then it is just a good file
        cases.append(Case("locked", locked, None))
    else:
        cases.append(Case("locked", locked, "InvalidMidiError", r"cannot read file \(Permission denied\)"))
    return cases
