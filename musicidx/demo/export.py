"""The demo's music: every piece of the recipe exported from the music21 corpus to MIDI under the
demo folder (``midi/<Composer>/`` indexed, ``heldout/`` scored), in parallel processes.

``OUT/exports.json`` records each export's source, settings, music21 version and content; a piece
whose file is there as recorded is not exported again, an export the recipe no longer names is
removed, and an interrupted export resumes from the record."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from musicidx.encoder.fingerprints import file_sha256
from musicidx.encoder.runtime import Progress, default_workers
from musicidx.encoder.scores import EXPORT_VERSION, export_job, export_key, music21_version

from .recipe import DemoError, Piece, Recipe


@dataclass
class ExportReport:
    exported: int
    reused: int
    removed: list[str]
    seconds: float


def export_corpus(
    recipe: Recipe, out: str | Path, *, workers: int | None = None, progress: Progress | None = None
) -> ExportReport:
    """Export every piece of ``recipe`` under ``out`` (``midi/<Composer>/``, ``heldout/``), reusing
    the exports recorded in ``out/exports.json``; exports the recipe no longer names are removed.

    A MIDI file under ``midi/`` or ``heldout/`` that the demo did not make is refused, since
    the build and the scoring would silently include it.
    """
    began = time.monotonic()
    out = Path(out)
    m21 = music21_version()
    record = _Record.read(out / "exports.json", planned={p.rel_path: p for p in recipe.pieces}, m21=m21)
    removed = _remove_unplanned(out, record)
    todo = _reuse(recipe, out, record)
    reused = len(record.files)
    if progress is not None:
        progress("export", reused, len(record.planned))
    _export(todo, recipe.program, out, record, workers=workers, progress=progress)
    record.write()
    return ExportReport(len(todo), reused, removed, time.monotonic() - began)


@dataclass
class _Record:
    """``exports.json``: what was recorded before this run (``old``), the pieces planned, and the
    exports known good so far (``files``)."""

    path: Path
    old: dict[str, dict[str, str]]
    planned: dict[str, Piece]
    m21: str
    files: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path, *, planned: dict[str, Piece], m21: str) -> _Record:
        try:
            recorded: dict[str, dict[str, str]] = json.loads(path.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            recorded = {}
        return cls(path, recorded, planned, m21)

    def write(self) -> None:
        # Entries not yet reached keep their old record, so an interrupted export resumes.
        merged = {**{k: v for k, v in self.old.items() if k in self.planned}, **self.files}
        body = {"export_version": EXPORT_VERSION, "music21": self.m21, "files": dict(sorted(merged.items()))}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(body, f, indent=1)
        os.replace(tmp, self.path)


def _remove_unplanned(out: Path, record: _Record) -> list[str]:
    """Remove the demo's exports the recipe no longer names (and temporary files a killed run
    left); a MIDI file the demo did not make is a :class:`DemoError`."""
    removed = []
    for sub in ("midi", "heldout"):
        for f in sorted((out / sub).rglob("*")) if (out / sub).is_dir() else []:
            rel = f.relative_to(out).as_posix()
            if f.name.startswith(".export-") and f.suffix == ".tmp":  # left by a killed run
                f.unlink(missing_ok=True)
            if f.suffix.lower() not in (".mid", ".midi") or rel in record.planned:
                continue
            if rel not in record.old:
                raise DemoError(
                    "a MIDI file the demo did not make would be indexed or scored; remove it or choose another --out",
                    path=f,
                )
            f.unlink()
            removed.append(rel)
    return removed


def _reuse(recipe: Recipe, out: Path, record: _Record) -> list[tuple[str, str]]:
    """Keep in ``record.files`` every export that is there as recorded, for the same key; the
    rest, ``(rel, key)``, are to be exported."""
    todo: list[tuple[str, str]] = []  # (rel, key)
    for rel, p in sorted(record.planned.items()):
        key = export_key(p.source, recipe.program, record.m21)
        prev = record.old.get(rel, {})
        digest = _sha256(out / rel) if prev.get("key") == key else None
        if digest is not None and digest == prev.get("sha256"):
            record.files[rel] = prev
        else:
            todo.append((rel, key))
    return todo


def _export(
    todo: list[tuple[str, str]],
    program: int | None,
    out: Path,
    record: _Record,
    *,
    workers: int | None,
    progress: Progress | None,
) -> None:
    """Export ``todo`` (in spawned processes when more than one worker is useful), recording each
    export; the record is written every ten, and before the error of a piece that fails."""
    reused = len(record.files)
    jobs = [(record.planned[rel].source, str(out / rel), program) for rel, _ in todo]
    n_workers = min(workers or default_workers(), len(jobs))
    with contextlib.ExitStack() as stack:
        if n_workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            pool = stack.enter_context(ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn")))
            results: Iterator[str | None] = pool.map(export_job, jobs)
        else:
            results = map(export_job, jobs)
        for n, ((rel, key), error) in enumerate(zip(todo, results), 1):
            if error is not None:
                record.write()
                raise DemoError(error)
            p = record.planned[rel]
            digest = _sha256(out / rel) or ""
            record.files[rel] = {
                "source": p.source,
                "composer": p.composer,
                "work": p.work,
                "key": key,
                "sha256": digest,
            }
            if progress is not None:
                progress("export", reused + n, len(record.planned))
            if n % 10 == 0:  # an interrupted export resumes from here
                record.write()


def _sha256(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None
