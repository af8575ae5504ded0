"""A prepared corpus -> the contents of an index (not yet saved) and a report, in four steps:

1. **encoder** -- hold out a share of the works (:mod:`.holdout`; a frozen recipe holds out
   nothing, since it trains nothing) and get the recipe's encoder (:mod:`.training`);
2. **calibrate** -- the novelty threshold at every k a query may use (:mod:`.calibration`), with the
   validation accuracy, the majority baseline and what a small corpus leaves untested;
3. **index** -- embed every clip, make the FAISS index (:mod:`.ann`) and the clip table;
4. **report** -- the :class:`FitReport` and the typed :class:`~musicidx.indexer.manifest.Manifest`.

``musicidx eval`` fits one index per fold with :func:`fit_index` on the same prepared corpus.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from musicidx.encoder.config import ModelConfig, TrainConfig
from musicidx.encoder.recipe import DEFAULT_RECIPE, Recipe
from musicidx.encoder.runtime import Progress, set_torch_threads

from .ann import index_embeddings
from .calibration import (
    MIN_CALIBRATION_TRACKS,
    MIN_CALIBRATION_WORKS,
    Calibration,
    calibrate,
    calibration_shortfall,
    small_corpus_warnings,
)
from .corpus import CorpusError
from .format import IndexContents, clip_table
from .holdout import majority_baseline, single_work_composers, split_by_work
from .manifest import (
    FORMAT_VERSION,
    CalibratedOn,
    Counts,
    EncoderOrigin,
    FaissEntry,
    Manifest,
    Novelty,
    SoundFontRecord,
    TrainingRecord,
    Validation,
    package_version,
    utc_now,
)
from .prepare import ClipArrays, Corpus, stack_clips
from .scoring import TrackScores, score_tracks
from .training import recipe_encoder

if TYPE_CHECKING:
    from musicidx.encoder.model import PooledMemo

    from .distributed import RaySession


@dataclass
class FitReport:
    """What a fit did, for the manifest and the CLI summary."""

    composers: list[str]
    n_tracks: int
    n_clips: int
    n_works: int
    val_tracks: int
    val_accuracy: float | None
    val_balanced_accuracy: float | None
    threshold: float
    accept_rate: float
    k: int
    best_epoch: int
    history: list[dict[str, Any]]
    faiss_kind: str
    seconds: dict[str, float] = field(default_factory=dict)
    thresholds_by_k: dict[int, float] = field(default_factory=dict)  # one per k a query may use
    #: what always answering the composer with most training tracks scores on the validation
    #: tracks: {"composer", "accuracy", "balanced_accuracy"} (``None`` scores without validation)
    baseline: dict[str, Any] = field(default_factory=dict)
    single_work_composers: list[str] = field(default_factory=list)  # never validated: all in training
    warnings: list[str] = field(default_factory=list)  # what the corpus leaves untested, in words
    encoder: EncoderOrigin | None = None  # the pretrained weights started from, and how they were used
    #: why the threshold cannot back a verdict (too few held-out tracks or works), ``None`` when it can
    uncalibrated_reason: str | None = None

    @property
    def calibrated(self) -> bool:
        return self.uncalibrated_reason is None


def fit_index(
    corpus: Corpus,
    *,
    recipe: Recipe | None = None,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    k: int | None = None,
    accept_rate: float | None = None,
    faiss_kind: str | None = None,
    progress: Progress | None = None,
    ray: RaySession | None = None,
    memo: PooledMemo | None = None,
) -> tuple[IndexContents, FitReport]:
    """Get the encoder (trained on ``corpus``, fine-tuned from pretrained weights, or the
    pretrained weights as they are), calibrate the novelty threshold, index every track.

    ``recipe`` (default :data:`~musicidx.encoder.recipe.DEFAULT_RECIPE`) says which; the keyword
    configs, when given, replace its parts.  Returns the index contents (not yet saved) and a
    report.  With ``ray``, the clips to index are embedded on that Ray cluster (training stays here).
    ``memo``: for a recipe that keeps the shipped body (frozen or head), the memo of that body's
    pooled features (an evaluation re-fits many folds with it): the head trains on them and every
    clip is embedded as the last layer over them; a recipe that trains the whole encoder ignores
    it, and so does a build on ``ray`` (it embeds there, as without a memo).
    """
    from musicidx.encoder.model import EmbeddingMemo, embed

    r = (recipe or DEFAULT_RECIPE).replace(
        model=model_config, train=train_config, k=k, accept_rate=accept_rate, faiss=faiss_kind
    )
    r = dataclasses.replace(r, features=corpus.feature_config)
    if len({t.composer for t in corpus.tracks}) < 2:
        raise CorpusError("need usable MIDI files of at least two composers to train", path=corpus.root)
    threads = set_torch_threads()

    t0 = time.monotonic()  # 1. encoder
    s = FitSplit.of(corpus, r)
    held = s.held_out if len(s.val_idx) else None
    memo = memo if r.frozen_body and ray is None else None
    result, pretrained = recipe_encoder(corpus, r, s.tr, s.track_label, held, progress, memo=memo)
    model = result.model if memo is None else EmbeddingMemo(result.model, memo)  # what embeds here
    timings = {"train": time.monotonic() - t0}

    t0 = time.monotonic()  # 2. calibrate
    every = stack_clips(corpus, np.arange(len(corpus.tracks)))
    # a frozen encoder calibrates on every clip, the very ones it indexes: embed them once
    emb = embed(model, every.feats) if r.frozen and ray is None else None
    groups = np.array(s.groups, dtype=object)
    cal = calibrate(model, r, s.tr, s.va, s.held_out, s.track_label, groups, n=len(s.composers), emb=emb)
    assessed = _assess(corpus, r, s, cal)
    timings["calibrate"] = time.monotonic() - t0

    t0 = time.monotonic()  # 3. index
    emb, index, faiss_entry, clips = _index(corpus, r, every, model, emb, ray, threads, progress)
    timings["index"] = time.monotonic() - t0

    report = _report(corpus, r, s, cal, assessed, result, pretrained, faiss_entry, n_clips=len(emb), seconds=timings)
    ids = s.val_idx if len(s.val_idx) else s.tr_idx
    manifest = _manifest(corpus, r, report, faiss_entry, cal, [int(i) for i in ids])
    return IndexContents(manifest, index, clips, result.model.state_dict()), report


@dataclass
class FitSplit:
    """The tracks of a fit by role: composers (sorted), each track's label and work, the indices
    and stacked clips of the tracks that train (``tr``) and that validate (``va``)."""

    composers: list[str]
    track_label: np.ndarray
    groups: list[str]
    tr_idx: np.ndarray
    val_idx: np.ndarray
    tr: ClipArrays
    va: ClipArrays
    k: int

    @classmethod
    def of(cls, corpus: Corpus, r: Recipe) -> FitSplit:
        """Held-out works by :func:`~.holdout.split_by_work`; none for a frozen recipe, which
        trains nothing on this folder, so that every work can be held out for calibration."""
        composers = sorted({t.composer for t in corpus.tracks})
        track_label = np.array([composers.index(t.composer) for t in corpus.tracks])
        groups = [t.group for t in corpus.tracks]
        if r.frozen:
            tr_idx, val_idx = np.arange(len(corpus.tracks)), np.zeros(0, np.int64)
        else:
            tr_idx, val_idx = split_by_work(
                [t.composer for t in corpus.tracks], groups, val_fraction=r.train.val_fraction, seed=r.train.seed
            )
        tr, va = stack_clips(corpus, tr_idx), stack_clips(corpus, val_idx)
        return cls(composers, track_label, groups, tr_idx, val_idx, tr, va, r.k)

    def held_out(self, model: Any, ref: ClipArrays | None = None, ks: Sequence[int] = ()) -> TrackScores:
        """The validation tracks scored against an index of ``ref`` (default: every training clip)."""
        ref = self.tr if ref is None else ref
        labels = self.track_label
        return score_tracks(
            model, ref, labels[ref.track], self.va, labels, n_labels=len(self.composers), k=self.k, ks=ks
        )


def _index(
    corpus: Corpus,
    r: Recipe,
    every: ClipArrays,
    model: Any,
    emb: np.ndarray | None,
    ray: RaySession | None,
    threads: int,
    progress: Progress | None,
) -> tuple[np.ndarray, Any, FaissEntry, pa.Table]:
    """Every clip's embedding (``emb`` when calibration already made them; on ``ray`` with the
    driver's ``threads``), the recipe's FAISS index of them and the clip table."""
    from musicidx.encoder.model import embed

    if emb is None:
        emb = embed(model, every.feats) if ray is None else ray.embed(model, every.feats, threads=threads)
    index, faiss_entry = index_embeddings(emb, r.faiss, seed=r.train.seed)
    if progress is not None:
        progress("indexing", 1, 1)
    clips = clip_table(corpus.clip_sources(), every.track, every.start, clip_seconds=corpus.feature_config.clip_seconds)
    return emb, index, faiss_entry, clips


@dataclass
class _Assessment:
    """What the calibration leaves to say: the majority baseline on the validated tracks, the
    single-work composers, why the threshold cannot back a verdict (``None``: it can), warnings."""

    baseline: dict[str, Any]
    single: list[str]
    shortfall: str | None
    warnings: list[str]


def _assess(corpus: Corpus, r: Recipe, s: FitSplit, cal: Calibration) -> _Assessment:
    validated = s.val_idx if not r.frozen else s.tr_idx  # a frozen encoder validates every track
    largest, base_acc, base_bacc = majority_baseline(s.track_label[s.tr_idx], s.track_label[validated])
    baseline = {"composer": s.composers[largest], "accuracy": base_acc, "balanced_accuracy": base_bacc}
    single = single_work_composers([t.composer for t in corpus.tracks], s.groups)
    shortfall = calibration_shortfall(cal.tracks, cal.works, seen_in_training=cal.seen_in_training)
    warnings = small_corpus_warnings(
        corpus,
        single,
        validated=len(s.val_idx) > 0 or r.frozen,
        uncalibrated=shortfall,
        val_fraction=r.train.val_fraction,
    )
    return _Assessment(baseline, single, shortfall, warnings)


def _report(
    corpus: Corpus,
    r: Recipe,
    s: FitSplit,
    cal: Calibration,
    assessed: _Assessment,
    result: Any,
    pretrained: dict[str, Any] | None,
    faiss_entry: FaissEntry,
    *,
    n_clips: int,
    seconds: dict[str, float],
) -> FitReport:
    return FitReport(
        composers=s.composers,
        n_tracks=len(corpus.tracks),
        n_clips=n_clips,
        n_works=len(set(s.groups)),
        val_tracks=cal.tracks if cal.accuracy is not None else 0,  # calibrated on trained works: no validation
        val_accuracy=cal.accuracy,
        val_balanced_accuracy=cal.balanced_accuracy,
        threshold=cal.thresholds[r.k],
        accept_rate=r.accept_rate,
        k=r.k,
        best_epoch=result.best_epoch,
        history=[h.__dict__ for h in result.history],
        faiss_kind=faiss_entry.type,
        seconds=seconds,
        thresholds_by_k=cal.thresholds,
        baseline=assessed.baseline,
        single_work_composers=assessed.single,
        warnings=assessed.warnings,
        encoder=None if pretrained is None else EncoderOrigin(**pretrained, finetuned=r.finetune, head=r.head),
        uncalibrated_reason=assessed.shortfall,
    )


def _manifest(
    corpus: Corpus, r: Recipe, report: FitReport, faiss_entry: FaissEntry, cal: Calibration, ids: list[int]
) -> Manifest:
    on = CalibratedOn(cal.tracks, cal.works, cal.how, tuple(ids), cal.seen_in_training)
    baseline = report.baseline
    return Manifest(
        format_version=FORMAT_VERSION,
        musicidx_version=package_version(),
        created=utc_now(),
        recipe=r,
        features=corpus.feature_config,
        model=r.model,
        encoder=report.encoder or EncoderOrigin(None),
        training=TrainingRecord(r.train, report.best_epoch, tuple(report.history)),
        embedding_dim=r.model.embedding_dim,
        soundfont=SoundFontRecord.from_dict(corpus.soundfont.to_dict()),
        composers={c: sum(t.composer == c for t in corpus.tracks) for c in report.composers},
        counts=Counts(report.n_tracks, report.n_clips, report.n_works),
        faiss=faiss_entry,
        k=r.k,
        novelty=Novelty(
            report.threshold,
            thresholds_by_k=dict(cal.thresholds),
            statistic="median over a track's clips of the cosine distance to the k-th nearest index clip",
            accept_rate=r.accept_rate,
            calibrated_on=on,
            # whether the threshold may back a verdict (queries give none when it may not)
            calibrated=report.uncalibrated_reason is None,
            uncalibrated_reason=report.uncalibrated_reason,
            min_calibration={"tracks": MIN_CALIBRATION_TRACKS, "works": MIN_CALIBRATION_WORKS},
        ),
        validation=Validation(
            report.val_tracks, cal.accuracy, cal.balanced_accuracy, baseline, tuple(report.single_work_composers)
        ),
        warnings=tuple(report.warnings),
    )
