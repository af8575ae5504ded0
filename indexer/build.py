"""A labelled folder -> an index directory, saved atomically: :func:`build_index`.

The build is three steps, each usable on its own (``musicidx eval`` fits one index per fold on
the same prepared corpus, ``add`` prepares the new files only):

1. :func:`~musicidx.indexer.prepare.prepare_corpus` scans ``MIDI_DIR/<Composer>/*.mid`` and
   extracts every file's clip features (in parallel, through the cache); files that fail are
   skipped with their reason.
2. :func:`~musicidx.indexer.fit.fit_index` holds out a share of the *works* (stratified by
   composer), gets the recipe's encoder (trained on the rest keeping the epoch with the best
   held-out k-NN balanced accuracy, or pretrained), calibrates the novelty threshold on tracks
   it did not train on, then indexes every track.
3. :func:`build_index` does both under the destination's lock and saves the index directory.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig
from musicidx.encoder.recipe import DEFAULT_RECIPE, Recipe
from musicidx.encoder.runtime import Progress
from musicidx.encoder.soundfont import SoundFont

from .corpus import check_corpus_folder
from .destination import check_index_destination, describe_holder, index_lock
from .fit import FitReport, fit_index
from .format import save_index
from .manifest import Manifest, RayRecord, Skipped
from .prepare import Corpus, prepare_corpus

if TYPE_CHECKING:
    from .distributed import RaySession


@dataclass
class BuildReport:
    """The summary of a build, as the CLI prints it."""

    out: Path
    fit: FitReport
    skipped: list[tuple[str, str]]
    rendered_seconds: float
    cached_tracks: int
    soundfont: SoundFont
    seconds: dict[str, float]
    cluster: str | None = None  # where the parallel stages ran, with --ray
    lock_taken_over: str | None = None  # the lock a killed build left at --out, taken over (its holder)


def build_index(
    midi_dir: str | Path,
    *,
    out: str | Path,
    recipe: Recipe | None = None,
    features: FeatureConfig | None = None,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    k: int | None = None,
    accept_rate: float | None = None,
    workers: int | None = None,
    cache_dir: str | Path | None | bool = True,
    soundfont: str | Path | None = None,
    strict: bool = False,
    faiss_kind: str | None = None,
    progress: Progress | None = None,
    ray: str | None = None,
    wait: bool = False,
) -> BuildReport:
    """Build an index of ``midi_dir`` at ``out`` (replacing any index there atomically) with
    ``recipe`` (default :data:`~musicidx.encoder.recipe.DEFAULT_RECIPE`); the keyword configs,
    when given, replace its parts.

    ``out`` must be new, empty, or an index musicidx wrote, and must neither be, lie inside nor
    contain ``midi_dir``; anything else is refused before any work (see
    :func:`~musicidx.indexer.destination.check_index_destination`).

    ``ray``: ``"auto"`` or a cluster address to run feature extraction and embedding as Ray
    Data stages (see :mod:`musicidx.indexer.distributed`); the index is the one a local build
    makes.  ``None`` (the default) never imports Ray.

    One build at a time writes ``out``: another one holding its lock (:func:`~musicidx.indexer.destination.index_lock`)
    is an :class:`~musicidx.indexer.destination.IndexBusyError` before any work, or with ``wait`` is waited for."""
    began = time.monotonic()
    check_corpus_folder(midi_dir)
    check_index_destination(out, source=midi_dir)  # fail now, not after training; never destroy a user's folder
    r = (recipe or DEFAULT_RECIPE).replace(
        features=features, model=model_config, train=train_config, k=k, accept_rate=accept_rate, faiss=faiss_kind
    )
    r.check_encoder()
    with index_lock(out, wait=wait) as lock, _cluster(ray) as session:
        check_index_destination(out, source=midi_dir)  # again: a build we waited for may have changed it
        corpus = prepare_corpus(
            midi_dir,
            features=r.features,
            soundfont=soundfont,
            cache_dir=cache_dir,
            workers=workers,
            strict=strict,
            variants=r.training_renderings,
            progress=progress,
            ray=session,
        )
        contents, fit = fit_index(corpus, recipe=r, progress=progress, ray=session)
        contents.manifest = _with_build_record(contents.manifest, corpus, midi_dir, session)
        t0 = time.monotonic()
        save_index(contents, out)
        saved = time.monotonic() - t0
        return _build_report(out, corpus, fit, session, lock.taken_over, save_seconds=saved, began=began)


def _build_report(
    out: str | Path,
    corpus: Corpus,
    fit: FitReport,
    session: RaySession | None,
    taken_over: dict[str, Any] | None,
    *,
    save_seconds: float,
    began: float,
) -> BuildReport:
    """The summary of a build that has just saved its index (``began``: its start, monotonic)."""
    seconds = {"features": corpus.seconds, **fit.seconds, "save": save_seconds}
    seconds["total"] = time.monotonic() - began
    return BuildReport(
        Path(out),
        fit,
        corpus.skipped,
        corpus.rendered_seconds,
        corpus.cached_tracks,
        corpus.soundfont,
        seconds,
        None if session is None else session.describe(),
        describe_holder(taken_over) if taken_over else None,
    )


def _with_build_record(m: Manifest, corpus: Corpus, midi_dir: str | Path, session: RaySession | None) -> Manifest:
    """``m`` with what the build saw besides the fit: the files it skipped, the folder the clip
    table's paths are relative to, the Ray cluster, and the seconds of audio it rendered."""
    return dataclasses.replace(
        m,
        skipped=tuple(Skipped(p, why) for p, why in corpus.skipped),
        corpus_root=str(Path(midi_dir).resolve()),
        ray=None if session is None else RayRecord(session.nodes, session.cpus, session.started),
        soundfont=dataclasses.replace(m.soundfont, rendered_seconds=corpus.rendered_seconds),
    )


def _cluster(address: str | None) -> AbstractContextManager[RaySession | None]:
    """A Ray session for ``--ray ADDRESS`` (Ray imported only then), else nothing."""
    if address is None:
        return nullcontext()
    from .distributed import ray_session

    return ray_session(address)
