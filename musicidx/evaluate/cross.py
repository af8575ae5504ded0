"""Cross-corpus evaluation (``musicidx eval --index IDX DIR``): an existing index asked about
another labelled folder, each track answered as ``musicidx query`` answers it; composers the index
lacks count as new.  Nothing is trained: the index is the one under test."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from musicidx.encoder.runtime import Progress
from musicidx.indexer.prepare import Corpus, prepare_corpus

from . import plots as figures  # (`plots` is write_cross_report's flag)
from .metrics import open_set_metrics
from .report import write_json

if TYPE_CHECKING:
    from musicidx.query.engine import Searcher


@dataclass
class CrossReport:
    """An existing index asked about another labelled folder (``musicidx eval --index``).

    Known tracks are those whose composer the index holds (accuracy, balanced accuracy, recall);
    tracks of every other composer count as new (AUROC, FPR at 95 % TPR and OSCR of the
    novelty, overall and per new composer; shares flagged at the index's threshold).
    """

    index: str
    folder: str
    known_composers: list[str]
    new_composers: list[str]
    tracks: int
    known: dict[str, Any]
    open: dict[str, Any]
    skipped: list[tuple[str, str]]
    seconds: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_index(
    index_dir: str | Path,
    midi_dir: str | Path,
    *,
    workers: int | None = None,
    cache_dir: str | Path | None | bool = True,
    soundfont: str | Path | None = None,
    progress: Progress | None = None,
) -> CrossReport:
    """Score every track of ``midi_dir/<Composer>/*.mid`` with the index at ``index_dir``,
    rendered with the index's own features and SoundFont, and measure it against the folder's
    labels; composers the index lacks count as new. Each track is answered as ``musicidx query``
    answers it (a note-identical copy of a training track takes that track's composer)."""
    from musicidx.query.engine import Searcher

    began = time.monotonic()
    searcher = Searcher(index_dir, soundfont=soundfont)
    corpus = prepare_corpus(
        midi_dir,
        features=searcher.features,
        soundfont=searcher.soundfont,
        cache_dir=cache_dir,
        workers=workers,
        progress=progress,
    )
    rows = _answer_rows(searcher, corpus, progress)
    answers = _Answers.of(rows)
    known_m = _known_metrics(answers, searcher.threshold)
    open_m = _new_metrics(answers, searcher.threshold)
    return CrossReport(
        index=str(index_dir),
        folder=str(midi_dir),
        known_composers=answers.known_names,
        new_composers=answers.new_names,
        tracks=len(rows),
        known=known_m,
        open=open_m,
        skipped=corpus.skipped,
        seconds=time.monotonic() - began,
        rows=rows,
    )


def _answer_rows(searcher: Searcher, corpus: Corpus, progress: Progress | None) -> list[dict[str, Any]]:
    """Every track of ``corpus`` answered by ``searcher``: its label beside the answer."""
    rows = []
    for i, (t, f) in enumerate(zip(corpus.tracks, corpus.features), 1):
        r = searcher.query_features(f.feats, f.starts, name=t.rel_path, notes_sha256=f.notes_sha256)
        rows.append(
            {
                "path": t.rel_path,
                "composer": t.composer,
                "known": t.composer in searcher.composers,
                "answer": r.composer,
                "confidence": r.confidence,
                "novelty": r.novelty,
                "is_new": r.is_new,
            }
        )
        if progress is not None:
            progress("scoring", i, len(corpus.tracks))
    return rows


@dataclass(frozen=True)
class _Answers:
    """The rows as arrays: true composer, answer, novelty, confidence, whether the index knows it."""

    truth: np.ndarray
    answer: np.ndarray
    nov: np.ndarray
    conf: np.ndarray
    known: np.ndarray

    @classmethod
    def of(cls, rows: list[dict[str, Any]]) -> _Answers:
        return cls(
            truth=np.array([r["composer"] for r in rows]),
            answer=np.array([r["answer"] for r in rows]),
            nov=np.array([r["novelty"] for r in rows]),
            conf=np.array([r["confidence"] for r in rows]),
            known=np.array([r["known"] for r in rows], bool),
        )

    @property
    def known_names(self) -> list[str]:
        return sorted(set(self.truth[self.known]))

    @property
    def new_names(self) -> list[str]:
        return sorted(set(self.truth[~self.known]))


def _known_metrics(a: _Answers, threshold: float) -> dict[str, Any]:
    """The tracks of composers the index holds: accuracy, balanced accuracy, recall and what was
    answered per composer, and the share wrongly flagged new."""
    truth, answer, nov, known = a.truth, a.answer, a.nov, a.known
    known_m: dict[str, Any] = {"tracks": int(known.sum())}
    if known.any():
        known_names = a.known_names
        hit = answer[known] == truth[known]
        known_m.update(
            accuracy=float(hit.mean()),
            balanced_accuracy=float(np.mean([hit[truth[known] == c].mean() for c in known_names])),
            recall={c: float(hit[truth[known] == c].mean()) for c in known_names},
            answered={c: _counts(answer[known][truth[known] == c]) for c in known_names},
            flagged_new=float((nov[known] > threshold).mean()),
        )
    return known_m


def _new_metrics(a: _Answers, threshold: float) -> dict[str, Any]:
    """Known against new tracks (``{}`` unless there are both): the open-set numbers of the
    novelty overall and per new composer, and the shares flagged at the index's threshold."""
    truth, answer, nov, conf, known = a.truth, a.answer, a.nov, a.conf, a.known
    if not (known.any() and (~known).any()):
        return {}
    correct = answer[known] == truth[known]
    return {
        **open_set_metrics(nov[known], nov[~known], correct),
        "auroc_low_confidence": open_set_metrics(1 - conf[known], 1 - conf[~known], correct)["auroc"],
        "new_tracks": int((~known).sum()),
        "flagged_new": float((nov[~known] > threshold).mean()),
        "threshold": threshold,
        "per_new_composer": {
            c: {
                "tracks": int((truth == c).sum()),
                **open_set_metrics(nov[known], nov[truth == c], correct),
                "flagged_new": float((nov[truth == c] > threshold).mean()),
            }
            for c in a.new_names
        },
    }


def _counts(values: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(values, return_counts=True)
    return {str(a): int(n) for a, n in zip(names, counts)}


def write_cross_report(report: CrossReport, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write ``report.json`` and (with matplotlib) ``cross_novelty.png``: the novelty of the
    known composers' tracks against each new composer's, with the index's threshold."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    report.plots = []
    write_json(report.to_dict(), out / "report.json")
    if plots and report.open:
        figures.use_matplotlib()
        written.append(figures.plot_cross_novelty(report, out))
        report.plots = [p.name for p in written]
        write_json(report.to_dict(), out / "report.json")
    return [out / "report.json", *written]
