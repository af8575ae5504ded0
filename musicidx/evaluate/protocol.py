"""``musicidx eval``: how well an index built the default way names composers of unseen works
(closed set) and flags composers it has never seen (open set), measured where the instrumentation
of the training works cannot carry it.

* Closed set: :func:`~musicidx.evaluate.splits.grouped_folds` (scikit-learn's
  ``StratifiedGroupKFold`` grouped by work, stratified by composer); each fold builds on the other
  folds with :func:`~musicidx.indexer.fit.fit_index` (the very build path, no second copy) and
  scores its held-out tracks.
* Open set: :func:`~musicidx.evaluate.splits.leave_one_composer_out`; build on the held-in folds of
  the others, score their held-out works (known) and every track of the left-out composer (unknown).
* Re-orchestration: every held-out track is also rendered in other orchestrations
  (:data:`~musicidx.encoder.orchestration.ORCHESTRATIONS`: all piano, strings by register, winds by
  register, a seeded random GM mapping) and asked again of the same fold's index: accuracy per
  orchestration, the agreement across them, how far novelty moves; open-set AUROC per orchestration.
* Seeds: the folds stay fixed (``seed``); the whole evaluation runs once per training seed and
  every headline number is reported as mean and standard deviation over them.

Features are extracted once (through the cache) and shared by every fold and seed; a recipe that
keeps the shipped encoder's body (frozen, or head: only the last layer retrained per fold) also runs
each clip through that body once per evaluation (:class:`~musicidx.encoder.model.PooledMemo`).
After every fit, ``on_partial`` may keep the report of what is finished (``musicidx eval --report``
writes it), so an eval stopped early loses only the fit it was in.  The cross-corpus evaluation of an existing
index is :mod:`musicidx.evaluate.cross`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig
from musicidx.encoder.errors import MusicIdxError
from musicidx.encoder.orchestration import ORCHESTRATIONS
from musicidx.encoder.recipe import DEFAULT_RECIPE, Recipe
from musicidx.encoder.runtime import Progress
from musicidx.indexer.fit import fit_index
from musicidx.indexer.prepare import Corpus, prepare_corpus, stack_clips
from musicidx.indexer.scoring import TrackScores, score_tracks

from .metrics import ORIGINAL, closed_metrics, open_set_metrics
from .report import EvalReport, Ledger, assemble_report
from .splits import grouped_folds, leave_one_composer_out

if TYPE_CHECKING:
    from musicidx.encoder.model import PooledMemo

#: (reference, known_test, unknown) track indices per left-out composer
OpenSplits = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


def evaluate(
    midi_dir: str | Path,
    *,
    folds: int = 5,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    recipe: Recipe | None = None,
    features: FeatureConfig | None = None,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    k: int | None = None,
    open_set: bool = True,
    orchestrations: Sequence[str] = ORCHESTRATIONS,
    cache_dir: str | Path | None | bool = True,
    workers: int | None = None,
    soundfont: str | Path | None = None,
    progress: Progress | None = None,
    on_partial: Callable[[EvalReport], None] | None = None,
) -> EvalReport:
    """Closed-set grouped cross-validation and leave-one-composer-out open-set evaluation, with
    every held-out track also asked in each of ``orchestrations``, over several training seeds.

    ``recipe`` (default :data:`~musicidx.encoder.recipe.DEFAULT_RECIPE`; the keyword configs,
    when given, replace its parts) is what each fold builds with.  ``seed`` fixes the folds (the
    same folds for every recipe); ``seeds`` are the training seeds (default: the recipe's), each a
    full run whose headline numbers are summarised as mean and standard deviation.  A frozen
    recipe (pretrained weights, nothing trained in ``build``) gives the same answers for every
    training seed, so it runs once.

    ``progress("eval", done, total)`` is called before the first fit and after each (a fit is one
    fold or one left-out composer of one seed); ``on_partial`` gets, after each fit, the report of
    what is finished so far (:attr:`EvalReport.partial` set), so that an eval stopped early keeps it.
    """
    began = time.monotonic()
    r = (recipe or DEFAULT_RECIPE).replace(features=features, model=model_config, train=train_config, k=k)
    r.check_encoder()
    train_seeds = _training_seeds(r, seeds)
    corpus = prepare_corpus(
        midi_dir,
        features=r.features,
        soundfont=soundfont,
        cache_dir=cache_dir,
        workers=workers,
        variants=r.training_renderings,
        orchestrations=orchestrations,
        progress=progress,
    )
    study = _Study.of(corpus, folds=folds, seed=seed, open_set=open_set)
    assemble = functools.partial(
        assemble_report, composers=study.composers, corpus=corpus, folds=folds, config=_config(r, corpus, seed),
        orchestrations=orchestrations, began=began,
    )  # fmt: skip
    ledger = Ledger(train_seeds, study.fits_per_seed, assemble, progress=progress, on_partial=on_partial)
    memo = _body_memo(r, corpus.feature_config)
    for i, s in enumerate(train_seeds):
        ledger.begin_seed(s)
        seeded = dataclasses.replace(r, train=dataclasses.replace(r.train, seed=s))
        run = _Seed(study, seeded, orchestrations, step=ledger.step, memo=memo)
        ledger.finish_seed(_one_seed(run, keep_plots=i == 0))
    return ledger.report(None)


def _training_seeds(r: Recipe, seeds: Sequence[int] | None) -> list[int]:
    """The training seeds to run (default: the recipe's); one for a frozen recipe."""
    train_seeds = list(seeds) if seeds is not None else [r.train.seed]
    if not train_seeds:
        raise MusicIdxError("give at least one training seed")
    if r.frozen:
        train_seeds = train_seeds[:1]
    return train_seeds


def _config(r: Recipe, corpus: Corpus, fold_seed: int) -> dict[str, Any]:
    """The report's ``config``: what every fold built with, and the seed of the folds."""
    return {
        "features": corpus.feature_config.to_dict(),
        "model": r.model.to_dict(),
        "training": r.train.to_dict(),
        "k": r.k,
        "fold_seed": fold_seed,
        "recipe": dataclasses.replace(r, features=corpus.feature_config).to_dict(),
    }


@dataclass(frozen=True)
class _Study:
    """What every seed of an evaluation shares: the corpus, its composers (sorted) and each
    track's label (its composer's position), the closed set's folds and the open set's splits."""

    corpus: Corpus
    composers: list[str]
    label: np.ndarray
    fold_splits: list[tuple[np.ndarray, np.ndarray]]
    open_splits: OpenSplits

    @classmethod
    def of(cls, corpus: Corpus, *, folds: int, seed: int, open_set: bool) -> _Study:
        composers = sorted({t.composer for t in corpus.tracks})
        label = np.array([composers.index(t.composer) for t in corpus.tracks])
        names, works = [t.composer for t in corpus.tracks], [t.group for t in corpus.tracks]
        fold_splits = grouped_folds(names, works, n_folds=folds, seed=seed)
        open_splits = leave_one_composer_out(names, works, n_folds=folds, seed=seed) if open_set else {}
        return cls(corpus, composers, label, fold_splits, open_splits)

    @property
    def fits_per_seed(self) -> int:
        """A fit per fold and one per left-out composer."""
        return len(self.fold_splits) + len(self.open_splits)


@dataclass
class _Seed:
    """One training seed's evaluation: the study, the recipe with that seed, the orchestrations
    asked, ``step``, told of every fit finished, and ``memo``, the memo of the shipped body that
    every fit of every seed shares when the recipe keeps it (see :func:`_body_memo`)."""

    study: _Study
    recipe: Recipe
    orchestrations: Sequence[str]
    step: Callable[[dict[str, Any]], None]
    memo: PooledMemo | None = None

    @property
    def corpus(self) -> Corpus:
        return self.study.corpus

    @property
    def composers(self) -> list[str]:
        return self.study.composers

    @property
    def views(self) -> tuple[str, ...]:
        return (ORIGINAL, *self.orchestrations)

    def fit_and_score(self, train_idx: np.ndarray, test_idx: np.ndarray) -> tuple[Any, float, dict[str, TrackScores]]:
        """Build on ``train_idx``; score ``test_idx`` as written and in every orchestration."""
        model, thr = _fit(self.corpus, train_idx, recipe=self.recipe, memo=self.memo)
        scores = _score_views(
            model, self.corpus, train_idx, test_idx, self.study.label, n_labels=len(self.composers),
            k=self.recipe.k, orchestrations=self.orchestrations,
        )  # fmt: skip
        return model, thr, scores


def _fit(corpus: Corpus, train_idx: np.ndarray, *, recipe: Recipe, memo: PooledMemo | None) -> tuple[Any, float]:
    """Build on ``train_idx`` exactly as ``musicidx build`` does; the encoder and its threshold.
    With ``memo`` (a recipe that keeps the shipped body: the same in every fold), the encoder comes
    back as its last layer over the memo, which answers for the clips it has seen."""
    from musicidx.encoder.model import EmbeddingMemo, Encoder

    contents, fit = fit_index(corpus.subset(train_idx), recipe=recipe, memo=memo)
    model = Encoder(recipe.model, corpus.feature_config)
    model.load_state_dict(contents.encoder_state)
    model.eval()
    return (model if memo is None else EmbeddingMemo(model, memo)), fit.threshold


def _body_memo(recipe: Recipe, features: FeatureConfig) -> PooledMemo | None:
    """For a recipe that keeps the shipped body (frozen, or head: only the last layer retrained),
    a memo of that body, so that each clip runs through it once per evaluation, not once per fold,
    seed and role."""
    from musicidx.encoder.model import PooledMemo
    from musicidx.encoder.pretrained import load_pretrained

    if not recipe.frozen_body or recipe.encoder is None:
        return None
    return PooledMemo(load_pretrained(recipe.encoder).encoder(recipe.model, features))


def _score_views(
    model: Any,
    corpus: Corpus,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    label: np.ndarray,
    *,
    n_labels: int,
    k: int,
    orchestrations: Sequence[str],
) -> dict[str, TrackScores]:
    """Score the test tracks against an index of the training tracks (in their own
    orchestration), once as written and once in each named orchestration."""
    ref = stack_clips(corpus, train_idx)
    out = {}
    for name in (ORIGINAL, *orchestrations):
        query = stack_clips(corpus, test_idx, orchestration=None if name == ORIGINAL else name)
        out[name] = score_tracks(
            model, ref, label[ref.track], query, label, n_labels=n_labels, k=k, alternatives=name == ORIGINAL
        )
    return out


def _one_seed(run: _Seed, *, keep_plots: bool) -> dict[str, Any]:
    """Closed and open set for one training seed; returns details, flat headline numbers and
    (with ``keep_plots``) what the plots need."""
    closed, plots = _closed_set(run, keep_plots=keep_plots)
    per_composer, novelty_loco, thresholds = _open_set(run)
    open_ = _open_summary(per_composer)
    return {
        "closed": closed,
        "open": open_,
        "flat": {**_closed_flat(closed), **_open_flat(open_, run.orchestrations)},
        "plots": plots,
        "novelty_loco": novelty_loco,
        "thresholds": thresholds,
    }


def _closed_set(run: _Seed, *, keep_plots: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every track is held out once; it is also asked in every orchestration.  The closed-set
    details and (with ``keep_plots``) what the plots need of fold 0."""
    truth = np.empty(0, np.int64)
    pred = {v: np.empty(0, np.int64) for v in run.views}
    novelty = {v: np.empty(0) for v in run.views}
    thr_of_track = np.empty(0)
    per_fold: list[dict[str, Any]] = []
    plots: dict[str, Any] = {}
    for f, (tr, te) in enumerate(run.study.fold_splits):
        model, thr, scores = run.fit_and_score(tr, te)
        truth = np.r_[truth, scores[ORIGINAL].truth]
        thr_of_track = np.r_[thr_of_track, np.full(len(te), thr)]
        for v in run.views:
            pred[v], novelty[v] = np.r_[pred[v], scores[v].pred], np.r_[novelty[v], scores[v].novelty]
        acc, bacc = scores[ORIGINAL].accuracy()
        per_fold.append({"fold": f, "tracks": len(te), "accuracy": acc, "balanced_accuracy": bacc})
        if f == 0 and keep_plots:
            plots = _plot_data(model, run.corpus, te, run.orchestrations)
        run.step({"fold": per_fold[-1]})
    closed = {**closed_metrics(truth, pred[ORIGINAL], run.composers), "per_fold": per_fold}
    orch_metrics = {
        v: _reorchestrated(v, truth, pred, novelty, thr_of_track, run.composers) for v in run.orchestrations
    }
    agreement = float(np.all([pred[v] == pred[ORIGINAL] for v in run.views], axis=0).mean())
    closed.update(orchestrations=orch_metrics, agreement=agreement)
    return closed, plots


def _reorchestrated(
    v: str,
    truth: np.ndarray,
    pred: dict[str, np.ndarray],
    novelty: dict[str, np.ndarray],
    thr_of_track: np.ndarray,
    composers: list[str],
) -> dict[str, Any]:
    """The closed set asked in orchestration ``v``: its accuracy and recall, its agreement with
    the answers as written, and how far novelty and the verdict move."""
    m = closed_metrics(truth, pred[v], composers)
    flips = (novelty[v] > thr_of_track) != (novelty[ORIGINAL] > thr_of_track)
    return {
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "macro_f1": m["macro_f1"],
        "recall": m["recall"],
        "agrees_with_original": float((pred[v] == pred[ORIGINAL]).mean()),
        # how far a track's novelty moves, in units of its fold's calibrated threshold
        "novelty_shift_median": float(
            np.median(np.abs(novelty[v] - novelty[ORIGINAL]) / np.maximum(thr_of_track, 1e-12))
        ),
        "verdict_flips": float(flips.mean()),
    }


def _plot_data(model: Any, corpus: Corpus, te: np.ndarray, orchestrations: Sequence[str]) -> dict[str, Any]:
    """One model's space for the map: every track embedded by fold 0's encoder (mean of its
    clips), which tracks fold 0 held out, and those tracks embedded in each orchestration."""
    from musicidx.encoder.model import embed

    every = stack_clips(corpus, np.arange(len(corpus.tracks)))
    e = embed(model, every.feats)
    embeddings = np.stack([e[every.track == t].mean(axis=0) for t in range(len(corpus.tracks))])
    orch = {}
    for v in orchestrations:
        q = stack_clips(corpus, te, orchestration=v)
        eq = embed(model, q.feats)
        orch[v] = np.stack([eq[q.track == t].mean(axis=0) for t in te])
    return {"embeddings": embeddings, "held_out": np.isin(np.arange(len(corpus.tracks)), te), "orchestrated": orch}


def _closed_flat(closed: dict[str, Any]) -> dict[str, float]:
    """The closed set's headline numbers under flat names (``closed.<orchestration>.<metric>``)."""
    flat = {
        f"closed.{ORIGINAL}.accuracy": closed["accuracy"],
        f"closed.{ORIGINAL}.balanced_accuracy": closed["balanced_accuracy"],
    }
    for v, m in closed["orchestrations"].items():
        flat[f"closed.{v}.accuracy"], flat[f"closed.{v}.balanced_accuracy"] = m["accuracy"], m["balanced_accuracy"]
        flat[f"closed.{v}.novelty_shift_median"] = m["novelty_shift_median"]
    flat["closed.agreement"] = closed["agreement"]
    return flat


def _open_set(run: _Seed) -> tuple[dict[str, Any], list[tuple[str, np.ndarray, np.ndarray]], list[float]]:
    """Leave one composer out; known and unknown tracks also in every orchestration.  Per
    left-out composer: its numbers, the novelties of known and unknown tracks, the threshold."""
    per_composer: dict[str, Any] = {}
    novelty_loco, thresholds = [], []
    for name, (tr, te, unknown) in run.study.open_splits.items():
        m, known_novelty, unknown_novelty, thr = _left_out(run, run.composers.index(name), tr, te, unknown)
        per_composer[name] = m
        novelty_loco.append((name, known_novelty, unknown_novelty))
        thresholds.append(thr)
        run.step({"left_out": name, **m})
    return per_composer, novelty_loco, thresholds


def _left_out(
    run: _Seed, c: int, tr: np.ndarray, te: np.ndarray, unknown: np.ndarray
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, float]:
    """Composer ``c`` left out: an index of ``tr`` asked about the known ``te`` and the ``unknown``
    tracks; the open-set numbers (also of the candidate novelty statistics and per orchestration),
    the novelties of the known and the unknown tracks, and the fit's threshold."""
    _, thr, scores = run.fit_and_score(tr, np.r_[te, unknown])
    s0 = scores[ORIGINAL]
    is_unknown = s0.truth == c
    correct = (s0.pred == s0.truth)[~is_unknown]
    m = open_set_metrics(s0.novelty[~is_unknown], s0.novelty[is_unknown], correct)
    candidates = {"low_confidence": 1 - s0.confidence, **s0.alternatives}
    for name, values in candidates.items():  # candidate novelty statistics, AUROC only
        m[f"auroc_{name}"] = open_set_metrics(values[~is_unknown], values[is_unknown], correct)["auroc"]
    m.update(
        threshold=thr,
        known_tracks=int((~is_unknown).sum()),
        unknown_tracks=int(is_unknown.sum()),
        unknown_flagged=float((s0.novelty[is_unknown] > thr).mean()),
        known_flagged=float((s0.novelty[~is_unknown] > thr).mean()),
    )
    for v in run.orchestrations:
        sv = scores[v]
        ok = (sv.pred == sv.truth)[~is_unknown]
        mv = open_set_metrics(sv.novelty[~is_unknown], sv.novelty[is_unknown], ok)
        m[f"auroc_{v}"], m[f"fpr_at_95tpr_{v}"] = mv["auroc"], mv["fpr_at_95tpr"]
    return m, s0.novelty[~is_unknown], s0.novelty[is_unknown], thr


def _open_summary(per_composer: dict[str, Any]) -> dict[str, Any]:
    """The open set's details: per left-out composer and the mean over them (``{}`` without any)."""
    if not per_composer:
        return {}
    keys = ["auroc", "fpr_at_95tpr", "oscr", "unknown_flagged", "known_flagged"]
    keys += sorted({key for v in per_composer.values() for key in v if key.startswith(("auroc_", "fpr_at"))})
    keys = list(dict.fromkeys(keys))
    mean = {key: float(np.mean([v[key] for v in per_composer.values()])) for key in keys}
    return {"per_composer": per_composer, "mean": mean}


def _open_flat(open_: dict[str, Any], orchestrations: Sequence[str]) -> dict[str, float]:
    """The open set's headline numbers under flat names (``open.<orchestration>.<metric>``)."""
    if not open_:
        return {}
    mean = open_["mean"]
    flat = {f"open.{ORIGINAL}.{metric}": mean[metric] for metric in ("auroc", "fpr_at_95tpr", "oscr")}
    for v in orchestrations:
        flat[f"open.{v}.auroc"], flat[f"open.{v}.fpr_at_95tpr"] = mean[f"auroc_{v}"], mean[f"fpr_at_95tpr_{v}"]
    return flat
