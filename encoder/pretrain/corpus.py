"""Stage 1 of ``musicidx pretrain``: which pieces, and each as a MIDI file in the work folder.

:func:`plan_corpus` lists the pieces of the recipe's music21 folders and of OpenScore Lieder,
less everything in ``encoder/pretrain/heldout.json`` (the evaluation sets' pieces, the training
folder's works, and the composers an evaluation counts as new: never a label; the Lieder ones
never heard at all). :func:`export_corpus` writes each piece to ``WORK/midi/`` through
:func:`~musicidx.encoder.scores.export_many`, recording each file's sha256 in
``WORK/pieces.json`` as it goes, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
import unicodedata
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from ..runtime import Progress
from .config import CorpusSpec, PretrainError

#: Formats that hold a score, in order of preference when a piece exists in several.
FORMATS = ("mxl", "musicxml", "xml", "krn", "abc", "mei")


@dataclass(frozen=True)
class Piece:
    """One piece to learn from: ``source`` is a music21 corpus path or a path under the Lieder
    copy (``lieder:scores/...``); ``label`` its composer class or ``None`` (unlabelled)."""

    source: str
    collection: str  # "music21/palestrina", "lieder/Schumann,_Robert"
    label: str | None
    midi: str  # path of the export under WORK/midi/

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_heldout() -> dict[str, Any]:
    """The shipped hold-out list (see ``benchmarks/data/heldout_list.py``)."""
    try:
        text = resources.files(__package__ or "musicidx.encoder.pretrain").joinpath("heldout.json").read_text()
        data: dict[str, Any] = json.loads(text)
    except (OSError, ValueError) as e:
        raise PretrainError(f"the hold-out list heldout.json is missing or damaged ({e}); reinstall musicidx") from e
    return data


#: OpenScore Lieder composer folder -> the challenge training folder's name for that composer.
LIEDER_KNOWN = {"Beethoven,_Ludwig_van": "Beethoven", "Schubert,_Franz": "Schubert", "Brahms,_Johannes": "Brahms"}


def lieder_display_name(folder: str) -> str:
    """``Schumann,_Clara`` -> ``Clara Schumann``; the known composers keep the training folder's name."""
    if folder in LIEDER_KNOWN:
        return LIEDER_KNOWN[folder]
    last, _, first = folder.partition(",_")
    ascii_name = unicodedata.normalize("NFKD", f"{first} {last}".replace("_", " ")).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9 .'-]", "", ascii_name).strip() or folder


def _fold(name: str) -> str:
    """A name compared across spellings: ASCII, lower case, letters only (``Schumann,_Robert``,
    ``schumann_robert`` and ``Robert Schumann`` share ``schumann``)."""
    ascii_s = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z]", "", ascii_s)


def _slug(s: str) -> str:
    ascii_s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9.-]+", "-", ascii_s).strip("-")[:80] or "piece"


def music21_pieces(directory: str) -> list[str]:
    """music21 corpus paths under ``directory``, one per piece (the preferred format), sorted."""
    from ..scores import import_music21

    music21 = import_music21()
    best: dict[str, str] = {}
    for p in music21.corpus.getComposer(directory):
        rel = Path(p).as_posix().split("/corpus/")[-1]
        base, _, ext = rel.rpartition(".")
        if ext not in FORMATS or "choraleAnalyses" in rel:
            continue
        if base not in best or FORMATS.index(ext) < FORMATS.index(best[base].rpartition(".")[2]):
            best[base] = rel
    return sorted(best.values())


def spread(items: list[Any], n: int) -> list[Any]:
    """``n`` items evenly spaced over ``items`` (all of them if there are no more than ``n``)."""
    if n <= 0 or len(items) <= n:
        return list(items)
    return [items[(i * len(items)) // n] for i in range(n)]


def plan_corpus(spec: CorpusSpec, *, lieder: Path | None) -> list[Piece]:
    """The pieces of the recipe, held-out ones removed; refuses a recipe that would label a
    composer an evaluation counts as new, or use the Lieder without a copy of them."""
    held = load_heldout()
    never = set(held["music21_eval"]) | set(held["music21_training_works"])
    labels = dict(spec.music21_labels)
    new_names = set(held["music21_new_composers"]) | set(held["lieder_new_composers"])
    bad = sorted(set(labels.values()) & new_names)
    if bad:
        raise PretrainError(f"the recipe labels {bad}, which an evaluation counts as new composers")
    never_heard = {_fold(n.split()[-1]) for n in held["lieder_new_composers"]}
    heard_dirs = [d for d in spec.music21 if any(n in _fold(d) for n in never_heard)]
    if heard_dirs:  # e.g. music21's schumann_robert: the Lieder evaluation counts Schumann as never heard
        raise PretrainError(f"music21 folder(s) {heard_dirs} hold a composer the Lieder evaluation counts as new")
    pieces: list[Piece] = []
    for d in spec.music21:
        for s in music21_pieces(d):
            parts = PurePosixPath(s).parts
            if s in never or any(s.startswith(w.rsplit(".", 1)[0]) for w in held["music21_training_works"]):
                continue
            midi = f"music21/{d}/{_slug('_'.join(parts[1:]).rsplit('.', 1)[0])}.mid"
            pieces.append(Piece(s, f"music21/{d}", labels.get(d), midi))
    if spec.lieder:
        if lieder is None or not (lieder / "scores").is_dir():
            raise PretrainError(
                "the recipe uses OpenScore Lieder: pass --lieder DIR, a copy of github.com/OpenScore/Lieder "
                "(or set lieder = false in [corpus])",
                path=lieder,
            )
        pieces += _lieder_pieces(spec, lieder, held)
    pieces = _interleave(pieces)
    if spec.max_pieces > 0:  # a prefix: what a smaller corpus shares with a larger one is exported once
        pieces = pieces[: spec.max_pieces]
    # a Lieder composer is a class only with enough songs in the corpus as cut
    n_songs: dict[str, int] = {}
    for p in pieces:
        n_songs[p.collection] = n_songs.get(p.collection, 0) + 1
    pieces = [
        dataclasses.replace(p, label=None)
        if p.collection.startswith("lieder/") and n_songs[p.collection] < spec.lieder_min_labelled
        else p
        for p in pieces
    ]
    if not pieces:
        raise PretrainError("the recipe plans no piece: name music21 folders or use the Lieder")
    return pieces


def _interleave(pieces: list[Piece]) -> list[Piece]:
    """Interleave the collections, each in its own order, so that any prefix of the list --
    what a run stopped early has exported, or ``max_pieces`` -- samples every collection."""
    groups: dict[str, list[Piece]] = {}
    for p in pieces:
        groups.setdefault(p.collection.split("/")[0] + "/" + (p.label or p.collection), []).append(p)
    order = sorted(groups.values(), key=lambda g: g[0].collection)
    # a collection of n pieces takes its turns spread over the whole list (every len/n places)
    keyed = [((i + 0.5) / len(g), j, p) for j, g in enumerate(order) for i, p in enumerate(g)]
    return [p for _, _, p in sorted(keyed, key=lambda t: (t[0], t[1]))]


def _lieder_pieces(spec: CorpusSpec, root: Path, held: dict[str, Any]) -> list[Piece]:
    evaluated = set(held["lieder_eval"])
    new_folders = set(held["lieder_new_composer_folders"])
    m21_new = {_fold(n.split()[-1]) for n in held["music21_new_composers"]}  # "haydn", "beach", ...
    by_folder: dict[str, list[str]] = {}
    for p in sorted((root / "scores").glob("*/**/*.mxl")):
        rel = p.relative_to(root).as_posix()
        folder = rel.split("/")[1]
        # a song by a composer the music21 evaluation counts as new (Haydn, Beach...) is never heard either
        if folder in new_folders or rel in evaluated or _fold(folder.split(",_")[0]) in m21_new:
            continue
        by_folder.setdefault(folder, []).append(rel)
    out = []
    for folder, songs in sorted(by_folder.items()):
        chosen = spread(songs, spec.lieder_per_composer)
        label = lieder_display_name(folder)  # dropped by plan_corpus if too few songs are kept
        for rel in chosen:
            stem = f"{_slug(rel.split('/')[-2])}_{Path(rel).stem}"
            out.append(Piece(f"lieder:{rel}", f"lieder/{folder}", label, f"lieder/{_slug(folder)}/{stem}.mid"))
    return out


# ----------------------------------------------------------------------------- export


def export_corpus(
    pieces: list[Piece],
    work: Path,
    *,
    lieder: Path | None,
    workers: int,
    timeout: float,
    progress: Progress | None = None,
) -> tuple[list[tuple[Piece, str]], dict[str, str]]:
    """Export every piece not yet in ``WORK/pieces.json`` (or whose file changed); returns the
    exported pieces with their MIDI files' sha256, and the reason of every piece skipped. (61
    lines: the resumable record -- read, skip what is current, export, write after each piece --
    is kept in one place so that its order is plain.)"""
    from ..fingerprints import file_sha256
    from ..scores import export_key, export_many, music21_version

    m21 = music21_version()
    record_path = work / "pieces.json"
    try:
        record: dict[str, Any] = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    done: dict[str, dict[str, Any]] = record.get("files", {})
    failed: dict[str, str] = record.get("failed", {})

    def current(p: Piece) -> bool:
        entry = done.get(p.source)
        f = work / "midi" / p.midi
        return bool(entry and entry["key"] == export_key(p.source, None, m21) and f.is_file())

    todo = [p for p in pieces if not current(p) and p.source not in failed]
    by_source = {p.source: p for p in pieces}

    def absolute(p: Piece) -> str:
        if p.source.startswith("lieder:"):
            assert lieder is not None  # plan_corpus refused a Lieder piece without a copy
            return str((lieder / p.source.removeprefix("lieder:")).resolve())
        return p.source

    jobs = [(absolute(p), str(work / "midi" / p.midi), None) for p in todo]
    source_of = {j[0]: p.source for j, p in zip(jobs, todo)}
    n_done = len(pieces) - len(todo)
    if progress is not None:
        progress("export", n_done, len(pieces))

    def on_done(src: str, err: str | None, _sec: float) -> None:
        nonlocal n_done
        s = source_of[src]
        if err is None:
            f = work / "midi" / by_source[s].midi
            done[s] = {"key": export_key(s, None, m21), "sha256": file_sha256(f), **by_source[s].to_dict()}
        else:
            failed[s] = err
        n_done += 1
        if progress is not None:
            progress("export", n_done, len(pieces))
        if n_done % 20 == 0:
            _write(record_path, m21, done, failed)

    export_many(jobs, workers=workers, timeout=timeout, on_done=on_done)
    _write(record_path, m21, done, failed)
    kept = [(p, done[p.source]["sha256"]) for p in pieces if p.source in done]
    return kept, {s: failed[s] for s in by_source if s in failed}


def _write(path: Path, m21: str, done: dict[str, Any], failed: dict[str, str]) -> None:
    write_json(path, {"music21": m21, "files": dict(sorted(done.items())), "failed": dict(sorted(failed.items()))})


def write_json(path: Path, body: Any) -> None:
    """``body`` as JSON at ``path``, atomically (readable by everyone: it may be package data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(body, indent=1) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
