"""``musicidx demo``: a fresh machine, no challenge data -- an index of real music shipped by pip.

The music comes from the music21 corpus (the ``musicidx[demo]`` extra).  A fixed recipe,
``musicidx/data/demo_recipe.json``, names the pieces of each composer by music21 corpus path
(never a search, so the selection does not move with the corpus' metadata).  The demo

1. exports every piece to MIDI: the indexed ones to ``OUT/midi/<Composer>/`` (the layout
   ``musicidx build`` reads) and the held-out ones -- a few works of each known composer and
   every piece of one composer kept out entirely, the "new" composer -- to ``OUT/heldout/``;
   an export is skipped when the file is there with the content recorded in
   ``OUT/exports.json`` for the same source, settings and music21 version;
2. builds an index of ``OUT/midi`` at ``OUT/index`` (features and the trained encoder come from
   musicidx's cache on a second run);
3. scores ``OUT/heldout`` against it into ``OUT/scores.csv`` and returns the table with the true
   composers and a summary: accuracy on the known composers' held-out works, and the share of
   the new composer's pieces the index flags as new.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig, default_cache_dir
from musicidx.encoder.errors import MusicIdxError
from musicidx.encoder.fingerprints import file_sha256
from musicidx.encoder.runtime import Progress, default_workers
from musicidx.encoder.scores import (
    EXPORT_VERSION,
    ScoreError,
    export_job,
    export_key,
    music21_version,
    piece_names,
)

from .engine import SCORE_COLUMNS, ScoreRow, Searcher, list_query_files, score_files

RECIPE_VERSION = 1

#: Clip settings for short pieces: a 30-60 s chorale yields 5-8 overlapping 8 s windows; the
#: longer madrigals and movements are sampled at 8 evenly spaced windows like everything else.
DEMO_FEATURES = FeatureConfig(clip_seconds=8.0, clips_per_track=8, min_clip_hop_seconds=4.0)
#: Short training (160 steps of 3 composers x 8 clips): about a minute on two cores.  60 steps
#: left the encoder near its initialisation and the new-composer verdicts at chance.  The demo
#: keeps the batch-hard mining it was tuned and measured with: with the semi-hard default of the
#: full recipe, this 160-step run flagged 2 of 13 Mozart pieces new instead of 12.
DEMO_TRAIN = TrainConfig(epochs=10, batches_per_epoch=16, clips_per_composer=8, crop_seconds=6.0, mining="batch-hard")
#: A narrower encoder than the default: about half the compute per step, ample for four composers.
DEMO_MODEL = ModelConfig(channels=(16, 32, 64, 128))


class DemoError(ScoreError):
    """The demo recipe is invalid, or a corpus piece cannot be exported."""


# ------------------------------------------------------------------------------ the recipe

_COMPOSER = re.compile(r"^[A-Za-z][A-Za-z0-9 .'-]*$")
#: a corpus path with the extension of a format music21 reads (so "bwv66.6" is not taken for one)
_SOURCE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ ./-]*\.(mxl|xml|musicxml|krn|abc|mei|mid|midi|mus|md|rntxt|capx)$")


@dataclass(frozen=True)
class Piece:
    """One corpus piece and where it goes."""

    composer: str
    source: str  # music21 corpus path, e.g. "bach/bwv66.6.mxl"
    work: str  # movements of one work share it; the held-out split never cuts a work
    name: str  # the exported file's name
    heldout: bool

    @property
    def rel_path(self) -> str:
        """Where the export goes, relative to the demo folder."""
        return f"heldout/{self.name}" if self.heldout else f"midi/{self.composer}/{self.name}"


@dataclass(frozen=True)
class Recipe:
    """A validated demo recipe."""

    version: int
    new_composer: str
    pieces: tuple[Piece, ...]
    program: int | None  # every part played by this General MIDI program, or as music21 assigns
    features: FeatureConfig = DEMO_FEATURES
    training: TrainConfig = DEMO_TRAIN
    about: str = ""

    @property
    def known_composers(self) -> list[str]:
        return sorted({p.composer for p in self.pieces if p.composer != self.new_composer})

    def counts(self) -> dict[str, dict[str, int]]:
        """Per composer: pieces indexed and held out."""
        out: dict[str, dict[str, int]] = {}
        for p in self.pieces:
            c = out.setdefault(p.composer, {"indexed": 0, "heldout": 0})
            c["heldout" if p.heldout else "indexed"] += 1
        return out


def parse_recipe(data: Any, *, where: str = "recipe") -> Recipe:
    """Validate a recipe (the parsed JSON) into a :class:`Recipe`; raise :class:`DemoError`
    naming the first problem."""

    def bad(why: str) -> DemoError:
        return DemoError(f"invalid demo recipe ({where}): {why}")

    if not isinstance(data, dict):
        raise bad("expected a JSON object")
    known_keys = {"version", "about", "program", "new_composer", "composers", "features", "training"}
    if set(data) - known_keys:
        raise bad(f"unknown key(s) {sorted(set(data) - known_keys)}")
    version = data.get("version")
    if version != RECIPE_VERSION:
        raise bad(f"version must be {RECIPE_VERSION}, got {version!r}")
    program = data.get("program")
    if program is not None and not (isinstance(program, int) and 0 <= program <= 127):
        raise bad(f"program must be a General MIDI program 0-127 or null, got {program!r}")
    composers = data.get("composers")
    if not isinstance(composers, dict) or not composers:
        raise bad("'composers' must map composer names to their pieces")
    new = data.get("new_composer")
    if not isinstance(new, str) or new not in composers:
        raise bad(f"new_composer {new!r} is not one of the composers {sorted(composers)}")

    pieces: list[Piece] = []
    all_sources: set[str] = set()
    heldout_names: set[str] = set()
    for composer, spec in composers.items():
        if not _COMPOSER.match(composer):
            raise bad(f"composer name {composer!r} is not a plain folder name")
        if not isinstance(spec, dict) or set(spec) - {"pieces", "heldout"}:
            raise bad(f"{composer}: expected {{'pieces': [...], 'heldout': [...]}}")
        sources, held = spec.get("pieces"), spec.get("heldout", [])
        if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
            raise bad(f"{composer}: 'pieces' must be a non-empty list of music21 corpus paths")
        if not isinstance(held, list) or not all(isinstance(s, str) for s in held):
            raise bad(f"{composer}: 'heldout' must be a list of paths from 'pieces'")
        for s in sources:
            if not _SOURCE.match(s) or ".." in PurePosixPath(s).parts or len(PurePosixPath(s).parts) < 2:
                raise bad(f"{composer}: {s!r} is not a corpus path with its extension, e.g. 'bach/bwv66.6.mxl'")
            if s in all_sources:
                raise bad(f"{s!r} is listed twice")
            all_sources.add(s)
        if set(held) - set(sources):
            raise bad(f"{composer}: held-out {sorted(set(held) - set(sources))} not among its pieces")
        if composer == new and held:
            raise bad(f"{composer} is the new composer: all its pieces are held out, list no 'heldout'")
        names = piece_names(sources)
        if len({n for _, n in names}) != len(names):
            raise bad(f"{composer}: two pieces would be exported under the same file name")
        is_held = [composer == new or s in held for s in sources]
        works_in = {w for (w, _), h in zip(names, is_held) if not h}
        split = sorted({w for (w, _), h in zip(names, is_held) if h} & works_in)
        if split:
            raise bad(f"{composer}: work(s) {split} are partly held out; hold out all of a work's movements or none")
        if composer != new and len(works_in) < 2:
            raise bad(f"{composer}: needs at least two indexed works (pieces minus heldout)")
        for s, (work, name), h in zip(sources, names, is_held):
            if h:
                if name in heldout_names:
                    raise bad(f"two held-out pieces would both be exported as heldout/{name}")
                heldout_names.add(name)
            pieces.append(Piece(composer, s, work, name, h))
    if len(composers) < 3:
        raise bad("needs at least two known composers and one new composer")

    features, training = DEMO_FEATURES, DEMO_TRAIN
    try:
        if data.get("features") is not None:
            features = dataclasses.replace(DEMO_FEATURES, **dict(data["features"]))
        if data.get("training") is not None:
            training = dataclasses.replace(DEMO_TRAIN, **dict(data["training"]))
    except (TypeError, ValueError, MusicIdxError) as e:
        raise bad(f"features/training: {e}") from e
    about = data.get("about", "")
    return Recipe(version, new, tuple(pieces), program, features, training, about if isinstance(about, str) else "")


def load_recipe(path: str | Path | None = None) -> Recipe:
    """The recipe at ``path``, or the one shipped in the package (``musicidx/data/demo_recipe.json``)."""
    try:
        if path is None:
            from importlib.resources import files

            text, where = files("musicidx").joinpath("data/demo_recipe.json").read_text("utf-8"), "demo_recipe.json"
        else:
            text, where = Path(path).read_text("utf-8"), str(path)
    except OSError as e:
        raise DemoError(f"cannot read the demo recipe ({e.strerror or e})", path=path) from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DemoError(f"demo recipe is not valid JSON ({e})", path=path) from e
    return parse_recipe(data, where=where)


# ------------------------------------------------------------------------------ export


def _sha256(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


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
    record_path = out / "exports.json"
    try:
        recorded: dict[str, dict[str, str]] = json.loads(record_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = {}
    planned = {p.rel_path: p for p in recipe.pieces}
    removed = []
    for sub in ("midi", "heldout"):
        for f in sorted((out / sub).rglob("*")) if (out / sub).is_dir() else []:
            rel = f.relative_to(out).as_posix()
            if f.name.startswith(".export-") and f.suffix == ".tmp":  # left by a killed run
                f.unlink(missing_ok=True)
            if f.suffix.lower() not in (".mid", ".midi") or rel in planned:
                continue
            if rel not in recorded:
                raise DemoError(
                    "a MIDI file the demo did not make would be indexed or scored; remove it or choose another --out",
                    path=f,
                )
            f.unlink()
            removed.append(rel)

    files: dict[str, dict[str, str]] = {}
    todo: list[tuple[str, str]] = []  # (rel, key)
    for rel, p in sorted(planned.items()):
        key = export_key(p.source, recipe.program, m21)
        prev = recorded.get(rel, {})
        digest = _sha256(out / rel) if prev.get("key") == key else None
        if digest is not None and digest == prev.get("sha256"):
            files[rel] = prev
        else:
            todo.append((rel, key))
    reused = len(files)
    if progress is not None:
        progress("export", reused, len(planned))
    jobs = [(planned[rel].source, str(out / rel), recipe.program) for rel, _ in todo]
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
                _write_record(record_path, files, recorded, planned, m21)
                raise DemoError(error)
            p = planned[rel]
            digest = _sha256(out / rel) or ""
            files[rel] = {"source": p.source, "composer": p.composer, "work": p.work, "key": key, "sha256": digest}
            if progress is not None:
                progress("export", reused + n, len(planned))
            if n % 10 == 0:  # an interrupted export resumes from here
                _write_record(record_path, files, recorded, planned, m21)
    _write_record(record_path, files, recorded, planned, m21)
    return ExportReport(len(todo), reused, removed, time.monotonic() - began)


def _write_record(
    path: Path, files: dict[str, dict[str, str]], old: dict[str, dict[str, str]], planned: dict[str, Piece], m21: str
) -> None:
    # Entries not yet reached keep their old record, so an interrupted export resumes.
    merged = {**{k: v for k, v in old.items() if k in planned}, **files}
    body = {"export_version": EXPORT_VERSION, "music21": m21, "files": dict(sorted(merged.items()))}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(body, f, indent=1)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ the demo


@dataclass(frozen=True)
class DemoRow:
    """One held-out piece: the truth beside the index's answer."""

    file: str
    true_composer: str
    known: bool  # the true composer is in the index
    composer: str  # predicted
    confidence: float | None
    novelty: float | None
    is_new: bool | None
    status: str = "ok"
    error: str = ""

    @property
    def correct(self) -> bool | None:
        """For a known composer: right composer named; for the new one: flagged new."""
        if self.status != "ok":
            return None
        return self.composer == self.true_composer if self.known else bool(self.is_new)


@dataclass
class DemoResult:
    """What the demo built and how the held-out pieces fared."""

    out: Path
    midi_dir: Path
    heldout_dir: Path
    index_dir: Path
    scores_csv: Path
    known_composers: list[str]
    new_composer: str
    counts: dict[str, dict[str, int]]  # per composer: pieces indexed and held out
    rows: list[DemoRow]
    known_accuracy: float | None  # right composer named, over the known composers' held-out works
    known_flagged_new: float | None  # of those, share wrongly flagged new
    new_flagged: float | None  # share of the new composer's pieces flagged new
    threshold: float
    export: ExportReport
    build: Any  # musicidx.indexer.build.BuildReport
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "midi_dir": str(self.midi_dir),
            "heldout_dir": str(self.heldout_dir),
            "index_dir": str(self.index_dir),
            "scores_csv": str(self.scores_csv),
            "known_composers": self.known_composers,
            "new_composer": self.new_composer,
            "counts": self.counts,
            "rows": [{**dataclasses.asdict(r), "correct": r.correct} for r in self.rows],
            "known_accuracy": self.known_accuracy,
            "known_flagged_new": self.known_flagged_new,
            "new_flagged": self.new_flagged,
            "novelty_threshold": self.threshold,
            "exported": self.export.exported,
            "exports_reused": self.export.reused,
            "index_validation_balanced_accuracy": self.build.fit.val_balanced_accuracy,
            "cached_tracks": self.build.cached_tracks,
            "seconds": self.seconds,
        }


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def run_demo(
    out: str | Path = "musicidx-demo",
    *,
    recipe: Recipe | None = None,
    workers: int | None = None,
    cache_dir: str | Path | None | bool = True,
    progress: Progress | None = None,
) -> DemoResult:
    """Export the recipe's pieces under ``out``, build ``out/index`` from the known composers'
    indexed pieces and score ``out/heldout`` into ``out/scores.csv``."""
    from musicidx.indexer.build import build_index

    began = time.monotonic()
    recipe = recipe or load_recipe()
    out = Path(out)
    cache = default_cache_dir() if cache_dir is True else (cache_dir or None)
    export = export_corpus(recipe, out, workers=workers, progress=progress)

    t0 = time.monotonic()
    index_dir = out / "index"
    build = build_index(
        out / "midi",
        out=index_dir,
        features=recipe.features,
        model_config=DEMO_MODEL,
        train_config=recipe.training,
        workers=workers,
        cache_dir=cache if cache is not None else False,
        strict=True,  # every demo piece is known to render; a failure is a bug worth seeing
        progress=progress,
    )
    build_s = time.monotonic() - t0

    t0 = time.monotonic()
    heldout_dir = out / "heldout"
    searcher = Searcher(index_dir, cache_dir=cache)
    on_done = None if progress is None else (lambda d, n: progress("scoring", d, n))
    scored = score_files(searcher, list_query_files(heldout_dir), root=heldout_dir, on_done=on_done)
    truth = {p.name: p.composer for p in recipe.pieces if p.heldout}
    rows = [_row(s, truth.get(s.file, ""), recipe.new_composer) for s in scored]
    order = sorted(range(len(rows)), key=lambda i: (not rows[i].known, rows[i].true_composer, rows[i].file))
    rows, scored = [rows[i] for i in order], [scored[i] for i in order]
    scores_csv = out / "scores.csv"
    _write_scores(scores_csv, rows, scored)
    score_s = time.monotonic() - t0

    known = [r for r in rows if r.known and r.status == "ok"]
    new = [r for r in rows if not r.known and r.status == "ok"]
    return DemoResult(
        out=out,
        midi_dir=out / "midi",
        heldout_dir=heldout_dir,
        index_dir=index_dir,
        scores_csv=scores_csv,
        known_composers=recipe.known_composers,
        new_composer=recipe.new_composer,
        counts=recipe.counts(),
        rows=rows,
        known_accuracy=_share([r.composer == r.true_composer for r in known]),
        known_flagged_new=_share([bool(r.is_new) for r in known]),
        new_flagged=_share([bool(r.is_new) for r in new]),
        threshold=searcher.threshold,
        export=export,
        build=build,
        seconds={
            "export": export.seconds,
            "build": build_s,
            "score": score_s,
            "total": time.monotonic() - began,
        },
    )


def _row(s: ScoreRow, true_composer: str, new_composer: str) -> DemoRow:
    return DemoRow(
        s.file,
        true_composer,
        true_composer != new_composer,
        s.composer,
        s.confidence,
        s.novelty,
        s.is_new,
        s.status,
        s.error,
    )


def _write_scores(path: Path, rows: list[DemoRow], scored: list[ScoreRow]) -> None:
    cols = ["file", "true_composer", *SCORE_COLUMNS[1:]]
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r, s in zip(rows, scored):
            w.writerow({**s.to_dict(), "true_composer": r.true_composer})
    os.replace(tmp, path)
