"""The Python API at the top of the package: load an index, query a file, score a folder, build.

The names say what they take (``query_file``, ``score_folder``, ``build_index``): a bare
``musicidx.query`` is the query stage's subpackage and could not also be a function.

Re-exported lazily by :mod:`musicidx` (``musicidx.load_index`` ...), so ``import musicidx`` stays
light; torch, FAISS and FluidSynth load when one of these is first called.  Like the rest of the
library they return data (dataclasses) and raise :class:`~musicidx.encoder.errors.MusicIdxError`
subclasses with the path and the reason; nothing prints.
"""

from __future__ import annotations

from pathlib import Path

from musicidx.indexer.build import build_index
from musicidx.query.engine import QueryResult, ScoreRow, Searcher

#: ``musicidx.build_index(midi_dir, *, out, ...)``: train, calibrate and write an index (a BuildReport).
__all__ = ["build_index", "load_index", "query_file", "score_folder"]


def load_index(index: str | Path, *, k: int | None = None, soundfont: str | Path | None = None) -> Searcher:
    """An index loaded for querying (index and encoder read once): ``.query(file)`` answers a
    MIDI file, ``.score(folder)`` every MIDI file under a folder.  ``k`` must be one the index
    calibrated a threshold for (default: the index's own)."""
    return Searcher(index, k=k, soundfont=soundfont)


def query_file(file: str | Path, *, index: str | Path, k: int | None = None) -> QueryResult:
    """The answer for one MIDI file (loads the index each call: use :func:`load_index` for many)."""
    return load_index(index, k=k).query(file)


def score_folder(folder: str | Path, *, index: str | Path) -> list[ScoreRow]:
    """One row per MIDI file under ``folder`` (an error row for a file that fails)."""
    return load_index(index).score(folder)
