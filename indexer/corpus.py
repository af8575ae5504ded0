"""Scanning a labelled corpus ``MIDI_DIR/<Composer>/*.mid`` into tracks with composer and work."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from musicidx.encoder.errors import MusicIdxError

MIDI_SUFFIXES = (".mid", ".midi")
LAYOUT = "MIDI_DIR/<Composer>/*.mid"

# "<title>_<catalogue>_<number>_<rest>.mid", e.g. "Cello Suite 3_BWV1009_2217_cs3-1pre.mid"
_CHALLENGE_NAME = re.compile(r"^(?P<title>[^_]+)_(?P<catalogue>[^_]+)_(?P<number>\d+)_(?P<rest>.+)$")


class CorpusError(MusicIdxError):
    """The corpus folder is missing, empty or not laid out as ``<Composer>/*.mid``."""


@dataclass(frozen=True)
class Track:
    """One MIDI file of the corpus. ``rel_path`` is relative to the corpus root."""

    composer: str
    work: str
    path: Path
    rel_path: str

    @property
    def group(self) -> str:
        """The unit never split across train and test: a work of one composer (two composers
        may both have a "Sonata No 1_OP1")."""
        return f"{self.composer}/{self.work}"


def work_of(path: str | Path) -> str:
    """The work a file belongs to: title and catalogue id for names in the challenge's pattern
    (``Piano Sonata No 14 in C-sharp minor_OP27NO2`` for ``..._OP27NO2_2343_ps14_01.mid``),
    else the file's own stem, so that an unknown name is a work of its own."""
    stem = Path(path).stem
    m = _CHALLENGE_NAME.match(stem)
    return f"{m['title']}_{m['catalogue']}" if m else stem


def display_name(path: str | Path) -> str:
    """``path`` as text that can always be printed and stored (CSV, JSON, Parquet): the bytes of
    a name that is not UTF-8 are shown escaped (``latin1-\\xe9.mid``) instead of failing the run."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_midi_name(path: Path) -> bool:
    return path.suffix.lower() in MIDI_SUFFIXES


def list_midi(folder: str | Path) -> list[Path]:
    """MIDI-named entries of ``folder`` (not recursive), sorted; directories named ``x.mid``
    and broken links are kept so that the caller reports them file by file."""
    folder = Path(folder)
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise CorpusError(f"cannot list folder ({e.strerror or e})", path=folder) from e
    return [p for p in entries if is_midi_name(p)]


def check_corpus_folder(midi_dir: str | Path) -> Path:
    """``midi_dir`` if it is a folder; else one :class:`CorpusError` saying what it is instead."""
    root = Path(midi_dir)
    if not root.exists():
        raise CorpusError(f"corpus folder does not exist (expected {LAYOUT})", path=root)
    if not root.is_dir():
        raise CorpusError(f"is a file, not a corpus folder (expected {LAYOUT})", path=root)
    return root


def scan_corpus(midi_dir: str | Path) -> list[Track]:
    """Every MIDI file in ``midi_dir/<Composer>/``, sorted by composer then name.

    Raises :class:`CorpusError` when the folder does not exist or holds no composer folder
    with MIDI files (saying what it holds instead: MIDI files directly inside, or sub-folders
    without any).
    """
    root = check_corpus_folder(midi_dir)
    tracks: list[Track] = []
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for sub in subs:
        for f in list_midi(sub):
            rel = display_name(f.relative_to(root).as_posix())
            tracks.append(Track(display_name(sub.name), work_of(rel), f, rel))
    if not tracks:
        flat = list_midi(root)
        if flat:
            found = f"{len(flat)} MIDI file(s) directly in the folder, none in a composer sub-folder"
        elif subs:
            found = f"{len(subs)} sub-folder(s) ({', '.join(display_name(s.name) for s in subs[:3])}"
            found += f"{', ...' if len(subs) > 3 else ''}) but no .mid/.midi file directly in any of them"
        else:
            found = "no MIDI files and no sub-folders"
        raise CorpusError(
            f"no MIDI files found where expected: found {found}; expected {LAYOUT}, one sub-folder per composer "
            "named after them (the folder name is the label)",
            path=root,
        )
    return tracks
