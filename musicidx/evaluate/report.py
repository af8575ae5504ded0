"""What ``musicidx eval`` measured (:class:`EvalReport`), how it is put together from the seeds
finished (:func:`assemble_report`, :class:`Ledger`: also the partial report of an eval still
running) and how it is kept: ``report.json``, written whole before any plot and again after each
fit of an eval that may be stopped early (:func:`write_report`), then the plots of
:mod:`musicidx.evaluate.plots`."""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import plots as figures  # (`plots` is write_report's flag)
from .metrics import summarise

if TYPE_CHECKING:
    from musicidx.encoder.runtime import Progress
    from musicidx.indexer.prepare import Corpus


@dataclass
class EvalReport:
    """Everything ``musicidx eval`` measured; ``to_dict`` is ``report.json``.

    ``closed`` and ``open`` hold the details of the first training seed (confusion matrix,
    per-composer numbers, each orchestration); ``per_seed`` holds every seed's headline numbers
    under flat names (``closed.<orchestration>.balanced_accuracy``, ``closed.agreement``,
    ``open.<orchestration>.auroc``...), and ``summary`` their mean and std over the seeds.
    """

    composers: list[str]
    folds: int
    closed: dict[str, Any]
    open: dict[str, Any]
    config: dict[str, Any]
    seconds: float
    seeds: list[int] = field(default_factory=list)
    orchestrations: list[str] = field(default_factory=list)
    per_seed: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    #: ``None`` when every seed ran; for an eval that stopped early (a report written after each fit
    #: by ``on_partial``): fits done and planned, the seeds finished (the only ones summarised) and
    #: the folds and left-out composers finished of the seed that was running
    partial: dict[str, Any] | None = None
    # For the plots, not for report.json:
    embeddings: np.ndarray | None = None  # (n_tracks, dim) mean clip embedding, fold 0's encoder
    embedding_labels: list[str] = field(default_factory=list)
    embedding_held_out: np.ndarray | None = None  # True for fold 0's held-out tracks
    # fold 0's held-out tracks in each orchestration, embedded by the same encoder: name -> (n, dim)
    embeddings_orchestrated: dict[str, np.ndarray] = field(default_factory=dict)
    # per left-out composer: (name, novelty of known held-out tracks, of the left-out's tracks)
    novelty_loco: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("embeddings", "embedding_labels", "embedding_held_out", "embeddings_orchestrated", "novelty_loco"):
            d.pop(key)
        return d


def write_json(obj: dict[str, Any], path: Path) -> None:
    """``path`` replaced whole (a report rewritten after every fit is never seen half-written)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_report(report: EvalReport, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write ``report.json`` and then (with matplotlib) the PNGs, listed in ``report.json`` once
    drawn; returns the paths written.  The numbers are on disk before any plot is tried."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report.plots = []
    write_json(report.to_dict(), out / "report.json")
    written = []
    if plots and report.closed:  # a partial report before its first finished seed has nothing to draw
        figures.use_matplotlib()
        written = [figures.plot_confusion(report, out), figures.plot_embeddings(report, out)]
        if report.novelty_loco:
            written.append(figures.plot_novelty(report, out))
        if report.orchestrations:
            written.append(figures.plot_orchestrations(report, out))
        report.plots = [p.name for p in written]
        write_json(report.to_dict(), out / "report.json")
    return [out / "report.json", *written]


class Ledger:
    """What an evaluation has finished, for ``progress`` and ``on_partial``: the runs of the
    finished seeds and, of the seed running, its folds and left-out composers.  ``assemble(runs,
    seeds, partial)`` makes the report (:func:`assemble_report` with the evaluation's particulars);
    ``progress("eval", 0, total)`` is said at once, then after each fit."""

    def __init__(
        self,
        seeds: list[int],
        per_seed_fits: int,
        assemble: Callable[..., EvalReport],
        *,
        progress: Progress | None,
        on_partial: Callable[[EvalReport], None] | None,
    ) -> None:
        self.seeds, self.per_seed_fits, self.assemble = seeds, per_seed_fits, assemble
        self.progress, self.on_partial = progress, on_partial
        self.total = len(seeds) * per_seed_fits
        self.runs: list[dict[str, Any]] = []  # one per finished seed
        self.running: dict[str, Any] = {"seed": seeds[0], "closed_folds": [], "open_left_out": {}}
        if progress is not None:
            progress("eval", 0, self.total)

    def done(self) -> int:
        return (
            len(self.runs) * self.per_seed_fits + len(self.running["closed_folds"]) + len(self.running["open_left_out"])
        )

    def report(self, partial: dict[str, Any] | None) -> EvalReport:
        return self.assemble(self.runs, self.seeds[: len(self.runs)], partial)

    def checkpoint(self) -> None:
        if self.on_partial is not None and self.done() < self.total:
            unfinished = copy.deepcopy(self.running) if self.done() % self.per_seed_fits else None
            partial = {
                "fits_done": self.done(),
                "fits_total": self.total,
                "seeds_finished": self.seeds[: len(self.runs)],
            }
            self.on_partial(self.report({**partial, "unfinished_seed": unfinished}))

    def step(self, finished: dict[str, Any]) -> None:
        """One fit finished: a fold (``{"fold": ...}``) or a left-out composer (``{"left_out": name, ...}``)."""
        if "fold" in finished:
            self.running["closed_folds"].append(finished["fold"])
        else:
            self.running["open_left_out"][finished.pop("left_out")] = finished
        if self.progress is not None:
            self.progress("eval", self.done(), self.total)
        if self.done() % self.per_seed_fits:  # the seed's last fit is kept once its run is complete, below
            self.checkpoint()

    def begin_seed(self, seed: int) -> None:
        self.running.update(seed=seed, closed_folds=[], open_left_out={})

    def finish_seed(self, run: dict[str, Any]) -> None:
        self.runs.append(run)
        self.running.update(closed_folds=[], open_left_out={})
        self.checkpoint()


def assemble_report(
    runs: list[dict[str, Any]],
    seeds: list[int],
    partial: dict[str, Any] | None,
    *,
    composers: list[str],
    corpus: Corpus,
    folds: int,
    config: dict[str, Any],
    orchestrations: Sequence[str],
    began: float,
) -> EvalReport:
    """The report of the finished ``runs`` (one per seed of ``seeds``); with ``partial``, of an eval
    still running or stopped, whose unfinished seed is only listed in ``partial``."""
    per_seed = [{"seed": float(s), **r["flat"]} for s, r in zip(seeds, runs)]
    summary = {key: summarise([r["flat"][key] for r in runs]) for key in runs[0]["flat"]} if runs else {}
    first: dict[str, Any] = runs[0] if runs else {"closed": {}, "open": {}, "novelty_loco": [], "thresholds": []}
    plots = first.get("plots") or {"embeddings": None, "held_out": None, "orchestrated": {}}
    if partial is not None:
        partial = {
            **partial,
            "note": "stopped early: only the seeds in seeds_finished are in closed, open, per_seed and summary; "
            "unfinished_seed holds the folds and left-out composers finished of the seed that was running",
        }
    return EvalReport(
        composers=composers,
        folds=folds,
        closed=first["closed"],
        open=first["open"],
        config=config,
        seconds=time.monotonic() - began,
        seeds=list(seeds),
        orchestrations=list(orchestrations),
        per_seed=per_seed,
        summary=summary,
        partial=partial,
        embeddings=plots["embeddings"],
        embedding_labels=[t.composer for t in corpus.tracks],
        embedding_held_out=plots["held_out"],
        embeddings_orchestrated=plots["orchestrated"],
        novelty_loco=first["novelty_loco"],
        thresholds=first["thresholds"],
    )
