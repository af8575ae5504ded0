"""What identifies a file: its bytes (:func:`file_sha256`) and what it plays (:func:`notes_sha256`)."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pretty_midi


@lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (memoised per process on path, size and mtime)."""
    st = os.stat(path)
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


#: The grid note times are rounded to before :func:`notes_sha256` compares them.
NOTE_GRID_SECONDS = 0.01


def notes_sha256(pm: pretty_midi.PrettyMIDI) -> str:
    """A fingerprint of what is played: the sha256 of every note as (drum or not, pitch, onset,
    offset), times rounded to :data:`NOTE_GRID_SECONDS`, sorted.

    Programs, instrument names, velocities and track order do not count, so a copy re-saved by
    another program or re-orchestrated with the same notes has the same fingerprint; another
    movement, or one changed note, has another.  Times are compared on the grid: a copy written
    on another tick grid (other resolution or tempo map) matches only if no time moved across a
    grid line, which re-timing by a fraction of a millisecond may do.
    """
    rows = [(i.is_drum, n.pitch, n.start, n.end) for i in pm.instruments for n in i.notes]
    a = np.array(rows, dtype=np.float64).reshape(-1, 4)
    a[:, 2:] = np.rint(a[:, 2:] / NOTE_GRID_SECONDS)
    keys = a.astype("<i8")
    keys = keys[np.lexsort(keys.T[::-1])]
    return hashlib.sha256(b"notes-v1:" + keys.tobytes()).hexdigest()
