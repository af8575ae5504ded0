"""A labelled corpus -> a trained encoder, a calibrated novelty threshold and a FAISS index.

The build runs in three steps, each usable on its own (``musicidx eval`` fits one index per
fold on the same prepared corpus):

1. :func:`prepare_corpus` scans ``MIDI_DIR/<Composer>/*.mid`` and extracts every file's clip
   features (in parallel, through the cache); files that fail are skipped with their reason.
2. :func:`fit_index` holds out a share of the *works* (stratified by composer), trains the
   encoder on the rest keeping the epoch with the best held-out k-NN balanced accuracy,
   calibrates the novelty threshold on the held-out tracks, then indexes every track.
3. :func:`build_index` does both and saves the index directory atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig, default_cache_dir
from musicidx.encoder.errors import MusicIdxError
from musicidx.encoder.recipe import DEFAULT_RECIPE, Recipe
from musicidx.encoder.soundfont import SoundFont, find_soundfont

from .ann import index_embeddings, make_faiss_index
from .corpus import CorpusError, Track, check_corpus_folder, scan_corpus
from .destination import check_index_destination, describe_holder, index_lock
from .features import FEATURES_VERSION, TrackFeatures, extract_many
from .format import ClipSource, IndexContents, clip_table, save_index
from .manifest import (
    FORMAT_VERSION,
    SEEN_IN_TRAINING_HOW,
    CalibratedOn,
    Counts,
    EncoderOrigin,
    FaissEntry,
    Manifest,
    Novelty,
    RayRecord,
    Skipped,
    SoundFontRecord,
    TrainingRecord,
    Validation,
    package_version,
    utc_now,
)
from .neighbours import (
    MIN_CALIBRATION_TRACKS,
    MIN_CALIBRATION_WORKS,
    Neighbours,
    calibrate_threshold,
    calibration_shortfall,
    reference_kth_distances,
    relative_novelty,
    search,
    search_outside,
    track_novelty,
    vote,
)

if TYPE_CHECKING:
    from musicidx.encoder.model import EmbeddingMemo

    from .distributed import RaySession

#: ``progress(stage, done, total)``: stage is "features", "training" or "indexing".
Progress = Callable[[str, int, int], None]


@dataclass
class Corpus:
    """Tracks whose features were extracted, in the same order as ``features``."""

    tracks: list[Track]
    features: list[TrackFeatures]
    skipped: list[tuple[str, str]]  # (path, reason) of files that could not be used
    soundfont: SoundFont
    feature_config: FeatureConfig
    root: Path
    seconds: float = 0.0
    cache_base: Path | None = None  # where features (and trained encoders) are cached

    @property
    def rendered_seconds(self) -> float:
        return float(sum(f.rendered_seconds for f in self.features))

    @property
    def cached_tracks(self) -> int:
        return sum(f.cached for f in self.features)

    def clip_sources(self) -> list[ClipSource]:
        """What the clip table records of each track (see :func:`~musicidx.indexer.format.clip_table`)."""
        return [
            ClipSource(t.composer, t.work, t.rel_path, f.sha256, f.notes_sha256)
            for t, f in zip(self.tracks, self.features)
        ]

    def subset(self, idx: Sequence[int] | np.ndarray) -> Corpus:
        return Corpus(
            [self.tracks[i] for i in idx],
            [self.features[i] for i in idx],
            [],
            self.soundfont,
            self.feature_config,
            self.root,
            cache_base=self.cache_base,
        )


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def prepare_corpus(
    midi_dir: str | Path,
    *,
    features: FeatureConfig | None = None,
    soundfont: str | Path | SoundFont | None = None,
    cache_dir: str | Path | None | bool = True,
    workers: int | None = None,
    strict: bool = False,
    variants: int = 0,
    orchestrations: Sequence[str] = (),
    progress: Progress | None = None,
    ray: RaySession | None = None,
) -> Corpus:
    """Scan ``midi_dir`` and extract the features of every file (and, for ``musicidx eval``, of
    the same windows in each of the named ``orchestrations``).

    ``cache_dir``: a folder, ``True`` for the default (``$XDG_CACHE_HOME/musicidx``) or
    ``None``/``False`` for no cache.  With ``strict``, the first file that fails raises.  With
    ``ray``, the files are spread over that Ray cluster instead of local processes.
    """
    began = time.monotonic()
    cfg = features or DEFAULT_RECIPE.features
    sf = soundfont if isinstance(soundfont, SoundFont) else find_soundfont(soundfont)
    cache = default_cache_dir() if cache_dir is True else (cache_dir or None)
    tracks = scan_corpus(midi_dir)
    paths = [t.path for t in tracks]
    on_done = None if progress is None else (lambda d, n: progress("features", d, n))
    opts: dict[str, Any] = dict(
        cfg=cfg, soundfont=sf, cache_dir=cache, variants=variants, orchestrations=orchestrations, on_done=on_done
    )
    if ray is None:
        results = extract_many(paths, workers=workers or default_workers(), **opts)
    else:  # workers caps the actor pool; by default every CPU of the cluster
        results = ray.extract_many(paths, workers=workers, **opts)
    kept_t, kept_f, skipped = [], [], []
    for t, r in zip(tracks, results):
        if isinstance(r, MusicIdxError):
            if strict:
                raise r
            skipped.append((t.rel_path, r.reason))
        else:
            kept_t.append(t)
            kept_f.append(r)
    if not kept_t:
        raise CorpusError(f"none of the {len(tracks)} MIDI files could be used", path=midi_dir)
    base = None if cache is None else Path(cache)
    return Corpus(kept_t, kept_f, skipped, sf, cfg, Path(midi_dir), time.monotonic() - began, base)


def split_by_work(
    composers: Sequence[str], works: Sequence[str], *, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Track indices (train, val): works held out whole, stratified by composer.

    Every composer keeps at least one work in training: a composer with a single work is never
    validated (all its tracks train), and a composer whose works all fell on the validation side
    gets one back (the first by name).  When no composer has two works, nothing is held out
    (``val`` is empty)."""
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    y, groups = np.asarray(composers), np.asarray(works)
    if len(set(works)) < 2:
        raise CorpusError("need at least two distinct works to hold one out for validation")
    single = single_work_composers(composers, works)
    pool = np.flatnonzero(~np.isin(y, single))  # tracks of composers with two works or more
    if len(pool) == 0:
        return np.arange(len(y)), np.zeros(0, np.int64)
    yp, gp = y[pool], groups[pool]
    n_splits = max(2, int(round(1.0 / val_fraction)))
    min_members = min(int((yp == c).sum()) for c in set(yp))
    k = min(n_splits, min_members, len(set(gp)))  # >= 2 (two works each); sklearn wants k <= groups
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" on small corpora
        sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        _, val_p = next(sgkf.split(np.zeros(len(yp)), yp, gp))
    held = set(gp[val_p].tolist())
    for c in sorted(set(yp)):
        own = sorted(set(gp[yp == c].tolist()))
        if set(own) <= held:  # every work of c held out: give the first one back to training
            held.discard(own[0])
    is_val = np.isin(groups, sorted(held))
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def single_work_composers(composers: Sequence[str], works: Sequence[str]) -> list[str]:
    """The composers all of whose tracks belong to one work, sorted."""
    works_of: dict[str, set[str]] = {}
    for c, w in zip(composers, works):
        works_of.setdefault(c, set()).add(w)
    return sorted(c for c, ws in works_of.items() if len(ws) < 2)


def majority_baseline(train_labels: np.ndarray, val_labels: np.ndarray) -> tuple[int, float | None, float | None]:
    """What always answering the composer with the most training tracks scores on ``val_labels``:
    (that label, accuracy, balanced accuracy over the composers present); ``None`` without val."""
    largest = int(np.bincount(train_labels).argmax())  # ties: the first by name
    if len(val_labels) == 0:
        return largest, None, None
    present = np.unique(val_labels)
    return largest, float((val_labels == largest).mean()), float((present == largest).sum() / len(present))


@dataclass
class ClipArrays:
    """The clips of a set of tracks stacked: the rows of ``feats`` belong to ``track[i]``."""

    feats: np.ndarray
    track: np.ndarray  # index into the corpus' tracks
    start: np.ndarray
    views: tuple[np.ndarray, ...] = ()  # re-orchestrated renderings, row-aligned with feats


def stack_clips(corpus: Corpus, idx: Sequence[int] | np.ndarray, *, orchestration: str | None = None) -> ClipArrays:
    """The clips of tracks ``idx``, in their own orchestration or (with ``orchestration``) in that
    named one, rendered for evaluation by :func:`prepare_corpus`."""
    feats = [
        corpus.features[i].feats if orchestration is None else corpus.features[i].orchestrated[orchestration]
        for i in idx
    ]
    track = [np.full(len(f), i, dtype=np.int64) for i, f in zip(idx, feats)]
    starts = [corpus.features[i].starts for i in idx]
    if not feats:
        n = corpus.feature_config
        return ClipArrays(np.zeros((0, n.n_bins, n.frames_per_clip), np.float16), np.zeros(0, np.int64), np.zeros(0))
    n_views = min((len(corpus.features[i].views) for i in idx), default=0)
    views = tuple(np.concatenate([corpus.features[i].views[v] for i in idx]) for v in range(n_views))
    return ClipArrays(np.concatenate(feats), np.concatenate(track), np.concatenate(starts), views)


def thin_clips(clips: ClipArrays, *, per_track: int) -> ClipArrays:
    """At most ``per_track`` clips of each track, evenly spaced (deterministic)."""
    keep = []
    for t in np.unique(clips.track):
        rows = np.flatnonzero(clips.track == t)
        keep.append(rows[np.unique(np.linspace(0, len(rows) - 1, min(per_track, len(rows))).round().astype(int))])
    idx = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return ClipArrays(clips.feats[idx], clips.track[idx], clips.start[idx])


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


class TrainedCache:
    """Trained encoders keyed by everything training depends on: the content, composer and work
    of every track in order, the feature, model and training configs, k and the code version.

    Training is deterministic given those, so an unchanged rebuild reuses the encoder instead
    of training again; any change to a file, a label or a config trains anew.
    """

    VERSION = 1

    def __init__(self, base: Path | None) -> None:
        self.root = None if base is None else base / f"encoders-v{self.VERSION}"

    @staticmethod
    def key(corpus: Corpus, mc: ModelConfig, tc: TrainConfig, k: int, start: str | None = None) -> str:
        """``start``: the sha256 of the pretrained weights training starts from (None: random)."""
        h = hashlib.sha256()
        for t, f in zip(corpus.tracks, corpus.features):
            h.update(f"{f.sha256}|{t.composer}|{t.work}\n".encode())
        parts = [corpus.feature_config.digest(), corpus.soundfont.sha256, mc.to_dict(), tc.to_dict(), k]
        if start is not None:  # keeps the keys of encoders trained from scratch as they were
            parts.append(start)
        h.update(json.dumps([*parts, FEATURES_VERSION, TrainedCache.VERSION], sort_keys=True).encode())
        return h.hexdigest()

    def get(self, key: str, features: FeatureConfig, mc: ModelConfig) -> Any:
        if self.root is None:
            return None
        import torch

        from musicidx.encoder.model import Encoder
        from musicidx.encoder.train import EpochStats, TrainResult

        try:
            meta = json.loads((self.root / f"{key}.json").read_text())
            state = torch.load(self.root / f"{key}.pt", map_location="cpu", weights_only=True)
            model = Encoder(mc, features)
            model.load_state_dict(state)
        except Exception:  # missing or damaged (EOFError, UnpicklingError...): train again
            return None
        model.eval()
        return TrainResult(model, int(meta["best_epoch"]), [EpochStats(**h) for h in meta["history"]])

    def put(self, key: str, result: Any) -> None:
        if self.root is None:
            return
        import torch

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for suffix, write in (
                (".pt", lambda f: torch.save(result.model.state_dict(), f)),
                (
                    ".json",
                    lambda f: f.write(
                        json.dumps(
                            {"best_epoch": result.best_epoch, "history": [h.__dict__ for h in result.history]}
                        ).encode()
                    ),
                ),
            ):
                fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
                with os.fdopen(fd, "wb") as f:
                    write(f)
                os.replace(tmp, self.root / f"{key}{suffix}")
        except OSError:
            pass  # a read-only or full cache must not fail the build


@dataclass
class TrackScores:
    """Per query track: true label, predicted label and novelty."""

    truth: np.ndarray
    pred: np.ndarray
    novelty: np.ndarray
    confidence: np.ndarray  # the winning composer's share of the votes
    # Candidate novelty statistics measured alongside (``musicidx eval`` reports their AUROC):
    # "relative" (k-th distance over the neighbours' own, median over clips), "mean_k" (mean
    # distance to the k neighbours, median over clips), "nearest" (distance to the nearest).
    alternatives: dict[str, np.ndarray] = field(default_factory=dict)
    novelty_by_k: dict[int, np.ndarray] = field(default_factory=dict)  # the novelty at each k asked for

    def accuracy(self) -> tuple[float, float]:
        """(accuracy, balanced accuracy = mean recall over the composers present)."""
        if len(self.truth) == 0:
            return float("nan"), float("nan")
        hit = self.pred == self.truth
        return float(hit.mean()), float(np.mean([hit[self.truth == c].mean() for c in np.unique(self.truth)]))


def score_tracks(
    model: Any,
    ref: ClipArrays,
    ref_clip_label: np.ndarray,
    query: ClipArrays,
    track_label: np.ndarray,
    *,
    n_labels: int,
    k: int,
    alternatives: bool = False,
    ks: Sequence[int] = (),
    vote_power: float = 1.0,
) -> TrackScores:
    """Index ``ref``'s clips, then vote and measure novelty for every track of ``query``,
    exactly as a query against a saved index does; with ``alternatives``, also the candidate
    novelty statistics of :attr:`TrackScores.alternatives` (for ``musicidx eval``); with ``ks``,
    the novelty at each of those k too (:attr:`TrackScores.novelty_by_k`, for calibration).
    ``vote_power``: the class-size correction of the vote (see
    :func:`~musicidx.indexer.neighbours.vote`; 1, what queries use, unless measuring another)."""
    from musicidx.encoder.model import embed

    index, _ = make_faiss_index(model.config.embedding_dim, len(ref.feats), "flat")
    ref_emb = embed(model, ref.feats)
    index.add_with_ids(ref_emb, np.arange(len(ref.feats), dtype=np.int64))
    ref_kth = reference_kth_distances(index, ref_emb, k) if alternatives else None
    q_emb = embed(model, query.feats)
    tracks = np.unique(query.track)
    pred, novelty, confidence = np.empty(len(tracks), np.int64), np.empty(len(tracks)), np.empty(len(tracks))
    alt = {name: np.empty(len(tracks)) for name in ("relative", "mean_k", "nearest")} if alternatives else {}
    by_k = {kk: np.empty(len(tracks)) for kk in ks}
    for i, t in enumerate(tracks):
        wide = search(index, q_emb[query.track == t], max([k, *ks]))
        nb = Neighbours(wide.ids[:, :k], wide.dist[:, :k])
        for kk, values in by_k.items():
            values[i] = track_novelty(wide, kk)
        votes = vote(nb, ref_clip_label, n_labels, power=vote_power)
        pred[i], confidence[i] = int(np.argmax(votes)), float(votes.max())
        novelty[i] = track_novelty(nb, k)
        if ref_kth is not None:
            alt["relative"][i] = float(np.median(relative_novelty(nb, ref_kth, k)))
            finite = np.where(np.isfinite(nb.dist[:, :k]), nb.dist[:, :k], np.nan)
            alt["mean_k"][i] = float(np.median(np.nanmean(finite, axis=1)))
            alt["nearest"][i] = float(np.median(nb.dist[:, 0]))
    return TrackScores(track_label[tracks], pred, novelty, confidence, alt, by_k)


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
    memo: EmbeddingMemo | None = None,
) -> tuple[IndexContents, FitReport]:
    """Get the encoder (trained on ``corpus``, fine-tuned from pretrained weights, or the
    pretrained weights as they are), calibrate the novelty threshold, index every track.

    ``recipe`` (default :data:`~musicidx.encoder.recipe.DEFAULT_RECIPE`) says which; the keyword
    configs, when given, replace its parts.  Returns the index contents (not yet saved) and a
    report.  With ``ray``, the clips to index are embedded on that Ray cluster (training stays here).
    ``memo``, for a frozen recipe only, embeds through the memo of that recipe's weights (an
    evaluation re-fits many folds with them); a recipe that trains ignores it.
    """
    import torch

    from musicidx.encoder.model import embed

    r = (recipe or DEFAULT_RECIPE).replace(
        model=model_config, train=train_config, k=k, accept_rate=accept_rate, faiss=faiss_kind
    )
    r = dataclasses.replace(r, features=corpus.feature_config)
    if len({t.composer for t in corpus.tracks}) < 2:
        raise CorpusError("need usable MIDI files of at least two composers to train", path=corpus.root)
    torch.set_num_threads(default_workers())
    composers = sorted({t.composer for t in corpus.tracks})
    track_label = np.array([composers.index(t.composer) for t in corpus.tracks])
    groups = [t.group for t in corpus.tracks]
    timings: dict[str, float] = {}

    t0 = time.monotonic()
    if r.frozen:  # nothing is trained on this folder: every work can be held out for calibration
        tr_idx, val_idx = np.arange(len(corpus.tracks)), np.zeros(0, np.int64)
    else:
        tr_idx, val_idx = split_by_work(
            [t.composer for t in corpus.tracks], groups, val_fraction=r.train.val_fraction, seed=r.train.seed
        )
    tr, va = stack_clips(corpus, tr_idx), stack_clips(corpus, val_idx)

    def held_out(model: Any, ref: ClipArrays = tr, ks: Sequence[int] = ()) -> TrackScores:
        return score_tracks(model, ref, track_label[ref.track], va, track_label, n_labels=len(composers), k=r.k, ks=ks)

    result, pretrained = _encoder(corpus, r, tr, track_label, held_out if len(val_idx) else None, progress)
    model = result.model
    timings["train"] = time.monotonic() - t0

    t0 = time.monotonic()
    every = stack_clips(corpus, np.arange(len(corpus.tracks)))
    # a frozen encoder calibrates on every clip, the very ones it indexes: embed them once
    emb = embed(memo if memo is not None else model, every.feats) if r.frozen and ray is None else None
    cal = _calibrate(model, r, tr, va, held_out, track_label, np.array(groups, dtype=object), n=len(composers), emb=emb)
    validated = val_idx if not r.frozen else tr_idx  # a frozen encoder validates every track
    largest, base_acc, base_bacc = majority_baseline(track_label[tr_idx], track_label[validated])
    baseline = {"composer": composers[largest], "accuracy": base_acc, "balanced_accuracy": base_bacc}
    single = single_work_composers([t.composer for t in corpus.tracks], groups)
    shortfall = calibration_shortfall(cal.tracks, cal.works, seen_in_training=cal.seen_in_training)
    warnings = small_corpus_warnings(
        corpus,
        single,
        validated=len(val_idx) > 0 or r.frozen,
        uncalibrated=shortfall,
        val_fraction=r.train.val_fraction,
    )
    timings["calibrate"] = time.monotonic() - t0

    t0 = time.monotonic()
    if emb is None:
        emb = (
            embed(model, every.feats) if ray is None else ray.embed(model, every.feats, threads=torch.get_num_threads())
        )
    index, faiss_entry = index_embeddings(emb, r.faiss, seed=r.train.seed)
    if progress is not None:
        progress("indexing", 1, 1)
    clips = clip_table(corpus.clip_sources(), every.track, every.start, clip_seconds=corpus.feature_config.clip_seconds)
    timings["index"] = time.monotonic() - t0

    report = FitReport(
        composers=composers,
        n_tracks=len(corpus.tracks),
        n_clips=len(emb),
        n_works=len(set(groups)),
        val_tracks=cal.tracks if cal.accuracy is not None else 0,  # calibrated on trained works: no validation
        val_accuracy=cal.accuracy,
        val_balanced_accuracy=cal.balanced_accuracy,
        threshold=cal.thresholds[r.k],
        accept_rate=r.accept_rate,
        k=r.k,
        best_epoch=result.best_epoch,
        history=[h.__dict__ for h in result.history],
        faiss_kind=faiss_entry.type,
        seconds=timings,
        thresholds_by_k=cal.thresholds,
        baseline=baseline,
        single_work_composers=single,
        warnings=warnings,
        encoder=None if pretrained is None else EncoderOrigin(**pretrained, finetuned=r.finetune, head=r.head),
        uncalibrated_reason=shortfall,
    )
    ids = val_idx if len(val_idx) else tr_idx
    manifest = _manifest(corpus, r, report, faiss_entry, cal, [int(i) for i in ids])
    return IndexContents(manifest, index, clips, model.state_dict()), report


def _encoder(
    corpus: Corpus,
    r: Recipe,
    tr: ClipArrays,
    track_label: np.ndarray,
    held_out: Callable[..., TrackScores] | None,
    progress: Progress | None,
) -> tuple[Any, dict[str, Any] | None]:
    """The recipe's encoder and, when it starts from shipped weights, what the manifest records
    of them: the weights as they are (frozen), with their last layer retrained on ``tr`` (head;
    seconds, so not cached), or trained on ``tr`` (from them or from scratch) through the cache of
    trained encoders."""
    from musicidx.encoder.pretrained import load_pretrained
    from musicidx.encoder.train import TrainingData, TrainResult, train_encoder, train_head

    pre = None if r.encoder is None else load_pretrained(r.encoder)
    if (r.frozen or r.head) and pre is not None:
        model = pre.encoder(r.model, corpus.feature_config)
        if r.head:
            data = TrainingData(tr.feats, track_label[tr.track], tr.track)
            on_epoch = None if progress is None else (lambda s: progress("training", s.epoch, r.train.epochs))
            return train_head(model, data, train_config=r.train, on_epoch=on_epoch), pre.to_dict()
        if progress is not None:
            progress("training", 1, 1)
        return TrainResult(model, 0, []), pre.to_dict()
    start = None if pre is None else pre.state_dict()
    cache = TrainedCache(corpus.cache_base)
    key = cache.key(corpus, r.model, r.train, r.k, None if pre is None else pre.sha256)
    result = cache.get(key, corpus.feature_config, r.model)
    if result is None:
        tr_few = thin_clips(tr, per_track=3)  # per-epoch validation: a cheaper reference set
        result = train_encoder(
            TrainingData(tr.feats, track_label[tr.track], tr.track, tr.views),
            features=corpus.feature_config,
            model_config=r.model,
            train_config=r.train,
            validate=None if held_out is None else (lambda m: held_out(m, tr_few).accuracy()),
            on_epoch=None if progress is None else (lambda s: progress("training", s.epoch, r.train.epochs)),
            init_state=start,
        )
        cache.put(key, result)
    elif progress is not None:
        progress("training", r.train.epochs, r.train.epochs)
    return result, None if pre is None else pre.to_dict()


@dataclass
class Calibration:
    thresholds: dict[int, float]
    tracks: int
    works: int
    accuracy: float | None
    balanced_accuracy: float | None
    how: str
    seen_in_training: bool = False  # calibrated on works the encoder trained on (too few pieces called new)


def _calibrate(
    model: Any,
    r: Recipe,
    tr: ClipArrays,
    va: ClipArrays,
    held_out: Callable[..., TrackScores],
    track_label: np.ndarray,
    track_group: np.ndarray,
    *,
    n: int,
    emb: np.ndarray | None = None,
) -> Calibration:
    """Novelty thresholds at every k a query may use, from tracks the encoder did not train on:
    the held-out works (a trained encoder) or every track against the other works (a frozen one)."""
    ks = calibration_ks(r.k, len(tr.feats))
    val_tracks = np.unique(va.track)
    acc: float | None
    bacc: float | None
    if len(val_tracks):
        scores = held_out(model, ks=ks)
        acc, bacc = scores.accuracy()
        how = "held-out works of known composers, scored against an index of the other works"
        by_k, works = scores.novelty_by_k, len(set(track_group[val_tracks]))
    elif r.frozen:
        by_k, scores = leave_one_work_out_scores(model, tr, track_label, track_group, ks, k=r.k, n_labels=n, emb=emb)
        # a single-work composer's track, its work left out, has no composer left in the index: a new
        # composer, not a known one -- it neither calibrates nor validates
        tracks = np.unique(tr.track)
        works_of = {c: set(track_group[track_label == c]) for c in set(track_label.tolist())}
        keep = np.array([len(works_of[int(track_label[t])]) > 1 for t in tracks])
        by_k = {kk: v[keep] for kk, v in by_k.items()}
        scores = TrackScores(scores.truth[keep], scores.pred[keep], scores.novelty[keep], scores.confidence[keep])
        acc, bacc = scores.accuracy()
        how = "every track against an index of the other works (the pretrained encoder never trained on them)"
        val_tracks = tracks[keep]
        works = len(set(track_group[val_tracks]))
    else:  # nothing could be held out: each training track against the others' works
        by_k = leave_one_work_out_novelties(model, tr, track_group, ks)
        acc = bacc = None
        how = f"{SEEN_IN_TRAINING_HOW}: each track against an index of the other works, all seen in training"
        val_tracks = np.unique(tr.track)
        works = len(set(track_group[val_tracks]))
    thresholds = {kk: calibrate_threshold(v, r.accept_rate) for kk, v in by_k.items()}
    seen = not len(va.track) and not r.frozen
    return Calibration(thresholds, len(val_tracks), works, acc, bacc, how, seen_in_training=seen)


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


def leave_one_work_out_scores(
    model: Any,
    clips: ClipArrays,
    track_label: np.ndarray,
    track_group: np.ndarray,
    ks: Sequence[int],
    *,
    k: int,
    n_labels: int,
    emb: np.ndarray | None = None,
) -> tuple[dict[int, np.ndarray], TrackScores]:
    """Each track of ``clips`` against an index of the other works' clips: its novelty at each k
    of ``ks`` and its vote at ``k`` (the calibration and validation of a frozen encoder). ``emb``:
    the clips' embeddings, when the caller has them."""
    from musicidx.encoder.model import embed

    emb = embed(model, clips.feats) if emb is None else emb
    index, _ = make_faiss_index(model.config.embedding_dim, len(emb), "flat")
    index.add_with_ids(emb, np.arange(len(emb), dtype=np.int64))
    clip_group, clip_label = track_group[clips.track], track_label[clips.track]
    tracks = np.unique(clips.track)
    nbs = [search_outside(index, emb[clips.track == t], clip_group, track_group[t], max(ks)) for t in tracks]
    preds, conf = np.empty(len(tracks), np.int64), np.empty(len(tracks))
    for i, nb in enumerate(nbs):
        votes = vote(Neighbours(nb.ids[:, :k], nb.dist[:, :k]), clip_label, n_labels)
        preds[i], conf[i] = int(np.argmax(votes)), float(votes.max())
    novelty = np.array([track_novelty(nb, k) for nb in nbs])
    by_k = {kk: np.array([track_novelty(nb, kk) for nb in nbs]) for kk in ks}
    return by_k, TrackScores(track_label[tracks], preds, novelty, conf)


def leave_one_work_out_novelties(
    model: Any, clips: ClipArrays, track_group: np.ndarray, ks: Sequence[int]
) -> dict[int, np.ndarray]:
    """Each track's novelty at each k of ``ks`` against an index of ``clips`` without its own
    work's clips (the calibration when no work could be held out of training)."""
    from musicidx.encoder.model import embed

    emb = embed(model, clips.feats)
    index, _ = make_faiss_index(model.config.embedding_dim, len(emb), "flat")
    index.add_with_ids(emb, np.arange(len(emb), dtype=np.int64))
    clip_group = track_group[clips.track]
    nbs = [
        search_outside(index, emb[clips.track == t], clip_group, track_group[t], max(ks))
        for t in np.unique(clips.track)
    ]
    return {k: np.array([track_novelty(nb, k) for nb in nbs]) for k in ks}


#: The k a build calibrates a novelty threshold for (besides its own): ``query --k`` accepts these.
CALIBRATED_KS = (1, 3, 5, 10, 20, 50, 100)


def calibration_ks(k: int, n_reference: int) -> list[int]:
    """The build's ``k`` and every :data:`CALIBRATED_KS` up to ``n_reference`` (the clips of the
    index calibration searches), sorted."""
    return sorted({k, *(x for x in CALIBRATED_KS if x <= n_reference)})


def small_corpus_warnings(
    corpus: Corpus,
    single: Sequence[str],
    *,
    validated: bool,
    uncalibrated: str | None = None,
    val_fraction: float = 0.2,
) -> list[str]:
    """In words, what a corpus too small to hold a work of every composer out leaves untested, and
    (given why the threshold is uncalibrated) how many works per composer a calibrated verdict needs."""
    out = []
    for c in single:
        work = next(t.work for t in corpus.tracks if t.composer == c)
        n = sum(t.composer == c for t in corpus.tracks)
        out.append(
            f"{c} has a single work ({work}; {n} track(s)), kept whole in training: no unseen work of {c} is in "
            f"the validation or the novelty calibration, so how well the index recognises {c} is untested"
        )
    if not validated:
        out.append(
            "no composer has two works, so nothing was held out: there is no validation accuracy, and the novelty "
            "threshold was calibrated on works the encoder trained on (it will call too few pieces new)"
        )
    if uncalibrated is not None:
        composers = len({t.composer for t in corpus.tracks})
        per_work = len(corpus.tracks) / max(1, len({t.group for t in corpus.tracks}))
        need = works_needed_per_composer(composers, tracks_per_work=per_work, val_fraction=val_fraction)
        out.append(
            f"the novelty threshold is uncalibrated ({uncalibrated}), so answers show the novelty but no "
            f"new-composer verdict; a calibrated verdict needs about {need} works per composer here "
            f"({composers} composers, {per_work:.1f} tracks per work, {val_fraction:.0%} of the works held out)"
        )
    return out


def works_needed_per_composer(composers: int, *, tracks_per_work: float, val_fraction: float) -> int:
    """About how many works each composer needs for the held-out share (``val_fraction`` of every
    composer's works) to reach the minimum calibration of :func:`calibration_shortfall`."""
    held = max(MIN_CALIBRATION_WORKS, math.ceil(MIN_CALIBRATION_TRACKS / max(tracks_per_work, 1e-9)))
    return max(2, math.ceil(held / (max(composers, 1) * val_fraction) - 1e-9))  # 8 / (4 x 0.2) is 10, not 11


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
    is an :class:`~musicidx.indexer.destination.IndexBusyError` before any work, or with ``wait`` is waited for.

    (Over 60 lines for its 17 keyword options and this docstring; the steps are the functions it calls.)"""
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
            variants=0 if r.frozen else r.train.program_variants,
            progress=progress,
            ray=session,
        )
        contents, fit = fit_index(corpus, recipe=r, progress=progress, ray=session)
        contents.manifest = _with_build_record(contents.manifest, corpus, midi_dir, session)
        cluster = None if session is None else session.describe()
        t0 = time.monotonic()
        save_index(contents, out)
        seconds = {"features": corpus.seconds, **fit.seconds, "save": time.monotonic() - t0}
        seconds["total"] = time.monotonic() - began
        return BuildReport(
            Path(out),
            fit,
            corpus.skipped,
            corpus.rendered_seconds,
            corpus.cached_tracks,
            corpus.soundfont,
            seconds,
            cluster,
            describe_holder(lock.taken_over) if lock.taken_over else None,
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
