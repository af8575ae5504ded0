"""Tiny MIDI files made on the spot, so tests never need downloaded data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi


def write_piece(path: Path, rng: np.random.Generator, *, program: int, low: int, notes: int = 30) -> Path:
    """A few seconds of one instrument playing random notes in the octave above ``low``."""
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program)
    t = 0.0
    for _ in range(notes):
        d = float(rng.uniform(0.1, 0.3))
        inst.notes.append(pretty_midi.Note(int(rng.integers(60, 110)), low + int(rng.integers(0, 12)), t, t + d))
        t += d
    pm.instruments.append(inst)
    pm.write(str(path))
    return path
