"""``musicidx demo``: a fresh machine, no challenge data -- an index of real music shipped by pip.

The music comes from the music21 corpus (the ``musicidx[demo]`` extra).  A fixed recipe,
``musicidx/data/demo_recipe.json``, names the pieces of each composer by music21 corpus path
(never a search, so the selection does not move with the corpus' metadata).  The demo

1. exports every piece to MIDI: the indexed ones to ``OUT/midi/<Composer>/`` (the layout
   ``musicidx build`` reads) and the held-out ones -- a few works of each known composer and
   every piece of one composer kept out entirely, the "new" composer -- to ``OUT/heldout/``;
   an export is skipped when the file is there with the content recorded in
   ``OUT/exports.json`` for the same source, settings and music21 version
   (:mod:`musicidx.demo.export`);
2. builds an index of ``OUT/midi`` at ``OUT/index`` (features and the trained encoder come from
   musicidx's cache on a second run);
3. scores ``OUT/heldout`` against it into ``OUT/scores.csv`` and returns the table with the true
   composers and a summary: accuracy on the known composers' held-out works, and the share of
   the new composer's pieces the index flags as new.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicidx.encoder.config import default_cache_dir
from musicidx.encoder.runtime import Progress
from musicidx.query.engine import SCORE_COLUMNS, ScoreRow, Searcher, list_query_files, score_files

from .export import ExportReport, export_corpus
from .recipe import DEMO_MODEL, Recipe, load_recipe


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
    from musicidx.encoder.recipe import SCRATCH_RECIPE
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
        recipe=SCRATCH_RECIPE,  # trained on the demo's folder: its pieces are in the pretraining corpus
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
    searcher = Searcher(index_dir, cache_dir=cache)
    rows = _score_heldout(searcher, recipe, out / "heldout", out / "scores.csv", progress)
    score_s = time.monotonic() - t0
    seconds = {"export": export.seconds, "build": build_s, "score": score_s, "total": time.monotonic() - began}
    return _result(recipe, out, rows, threshold=searcher.threshold, export=export, build=build, seconds=seconds)


def _score_heldout(
    searcher: Searcher, recipe: Recipe, heldout_dir: Path, scores_csv: Path, progress: Progress | None
) -> list[DemoRow]:
    """Score every held-out piece, beside its true composer (known composers first), into ``scores_csv``."""
    on_done = None if progress is None else (lambda d, n: progress("scoring", d, n))
    scored = score_files(searcher, list_query_files(heldout_dir), root=heldout_dir, on_done=on_done)
    truth = {p.name: p.composer for p in recipe.pieces if p.heldout}
    rows = [_row(s, truth.get(s.file, ""), recipe.new_composer) for s in scored]
    order = sorted(range(len(rows)), key=lambda i: (not rows[i].known, rows[i].true_composer, rows[i].file))
    rows, scored = [rows[i] for i in order], [scored[i] for i in order]
    _write_scores(scores_csv, rows, scored)
    return rows


def _result(
    recipe: Recipe,
    out: Path,
    rows: list[DemoRow],
    *,
    threshold: float,
    export: ExportReport,
    build: Any,
    seconds: dict[str, float],
) -> DemoResult:
    known = [r for r in rows if r.known and r.status == "ok"]
    new = [r for r in rows if not r.known and r.status == "ok"]
    return DemoResult(
        out=out,
        midi_dir=out / "midi",
        heldout_dir=out / "heldout",
        index_dir=out / "index",
        scores_csv=out / "scores.csv",
        known_composers=recipe.known_composers,
        new_composer=recipe.new_composer,
        counts=recipe.counts(),
        rows=rows,
        known_accuracy=_share([r.composer == r.true_composer for r in known]),
        known_flagged_new=_share([bool(r.is_new) for r in known]),
        new_flagged=_share([bool(r.is_new) for r in new]),
        threshold=threshold,
        export=export,
        build=build,
        seconds=seconds,
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
