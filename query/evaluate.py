"""``musicidx eval``: how well an index built the default way names composers of unseen works
(closed set) and flags composers it has never seen (open set), measured where the instrumentation
of the training works cannot carry it.

* Closed set: scikit-learn's ``StratifiedGroupKFold`` grouped by work, stratified by composer;
  each fold builds on the other folds with :func:`~musicidx.indexer.build.fit_index` (the very
  build path, no second copy) and scores its held-out tracks.
* Open set: leave one composer out; build on the held-in folds of the others, score their
  held-out works (known) and every track of the left-out composer (unknown).
* Re-orchestration: every held-out track is also rendered in other orchestrations
  (:data:`~musicidx.encoder.orchestration.ORCHESTRATIONS`: all piano, strings by register, winds by
  register, a seeded random GM mapping) and asked again of the same fold's index: accuracy per
  orchestration, the agreement across them, how far novelty moves; open-set AUROC per orchestration.
* Seeds: the folds stay fixed (``seed``); the whole evaluation runs once per training seed and
  every headline number is reported as mean and standard deviation over them.
* Cross-corpus (:func:`evaluate_index`): an existing index asked about another labelled folder;
  composers it lacks count as new.

Features are extracted once (through the cache) and shared by every fold and seed.  After every
fit, ``on_partial`` may keep the report of what is finished (``musicidx eval --report`` writes it),
so an eval stopped early loses only the fit it was in.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig
from musicidx.encoder.errors import MusicIdxError, install_hint
from musicidx.encoder.orchestration import ORCHESTRATIONS
from musicidx.encoder.recipe import DEFAULT_RECIPE, Recipe
from musicidx.encoder.runtime import Progress
from musicidx.indexer.fit import fit_index
from musicidx.indexer.prepare import Corpus, prepare_corpus, stack_clips
from musicidx.indexer.scoring import TrackScores, score_tracks

from .splits import grouped_folds

if TYPE_CHECKING:
    from musicidx.encoder.model import EmbeddingMemo


class PlotError(MusicIdxError):
    """Plots were asked for but matplotlib is missing."""


def open_set_metrics(
    novelty_known: np.ndarray, novelty_unknown: np.ndarray, correct_known: np.ndarray
) -> dict[str, float]:
    """AUROC (unknown = positive, novelty = score), FPR at 95 % TPR on known tracks (the share
    of unknown tracks accepted when 95 % of known tracks are), and OSCR (Dhamija et al. 2018:
    area under correct-classification rate of known vs false-positive rate of unknown)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(novelty_known)), np.ones(len(novelty_unknown))]
    s = np.r_[novelty_known, novelty_unknown]
    auroc = float(roc_auc_score(y, s))
    t95 = np.quantile(novelty_known, 0.95, method="higher")
    fpr95 = float((novelty_unknown <= t95).mean())
    # OSCR: sweep the threshold over every observed novelty (accept when novelty <= t).
    thresholds = np.unique(s)
    ccr = np.array([((novelty_known <= t) & correct_known).mean() for t in thresholds])
    fpr = np.array([(novelty_unknown <= t).mean() for t in thresholds])
    order = np.argsort(fpr, kind="stable")
    fpr_s, ccr_s = np.r_[0.0, fpr[order], 1.0], np.r_[0.0, ccr[order], ccr[order][-1] if len(ccr) else 0.0]
    oscr = float(np.sum(np.diff(fpr_s) * (ccr_s[1:] + ccr_s[:-1]) / 2))
    return {"auroc": auroc, "fpr_at_95tpr": fpr95, "oscr": oscr}


#: The orchestration of a file as it is written (its own GM programs).
ORIGINAL = "original"


def summarise(values: list[float]) -> dict[str, Any]:
    """Mean and (population) standard deviation over seeds, with the values themselves."""
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "values": [float(v) for v in a]}


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


def _fit(corpus: Corpus, train_idx: np.ndarray, *, recipe: Recipe, memo: EmbeddingMemo | None) -> tuple[Any, float]:
    """Build on ``train_idx`` exactly as ``musicidx build`` does; the encoder and its threshold.
    A frozen recipe's encoder is the same in every fold: ``memo`` holds it, and comes back."""
    from musicidx.encoder.model import Encoder

    contents, fit = fit_index(corpus.subset(train_idx), recipe=recipe, memo=memo)
    if memo is not None:
        return memo, fit.threshold
    model = Encoder(recipe.model, corpus.feature_config)
    model.load_state_dict(contents.encoder_state)
    model.eval()
    return model, fit.threshold


def _frozen_memo(recipe: Recipe, features: FeatureConfig) -> EmbeddingMemo | None:
    """For a frozen recipe, its encoder as a memo that embeds each clip once per evaluation."""
    from musicidx.encoder.model import EmbeddingMemo
    from musicidx.encoder.pretrained import load_pretrained

    if not recipe.frozen or recipe.encoder is None:
        return None
    return EmbeddingMemo(load_pretrained(recipe.encoder).encoder(recipe.model, features))


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


def _closed_metrics(truth: np.ndarray, pred: np.ndarray, composers: list[str]) -> dict[str, Any]:
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, recall_score

    labels = list(range(len(composers)))
    return {
        "tracks": int(len(truth)),
        "accuracy": float((truth == pred).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(truth, pred)),
        "macro_f1": float(f1_score(truth, pred, average="macro", labels=labels, zero_division=0)),
        "recall": dict(
            zip(composers, map(float, recall_score(truth, pred, average=None, labels=labels, zero_division=0)))
        ),
        "confusion_matrix": confusion_matrix(truth, pred, labels=labels).tolist(),
        "confusion_labels": composers,
    }


def _one_seed(
    corpus: Corpus,
    *,
    composers: list[str],
    label: np.ndarray,
    fold_splits: list[tuple[np.ndarray, np.ndarray]],
    recipe: Recipe,
    folds: int,
    fold_seed: int,
    open_set: bool,
    orchestrations: Sequence[str],
    step: Callable[[dict[str, Any]], None],
    keep_plots: bool,
) -> dict[str, Any]:
    """Closed and open set for one training seed; returns details, flat headline numbers and
    (with ``keep_plots``) what the plots need."""
    from musicidx.encoder.model import embed

    k = recipe.k
    n, views = len(composers), (ORIGINAL, *orchestrations)
    works = [t.group for t in corpus.tracks]
    # ---- closed set: every track is held out once; it is also asked in every orchestration
    truth = np.empty(0, np.int64)
    pred = {v: np.empty(0, np.int64) for v in views}
    novelty = {v: np.empty(0) for v in views}
    thr_of_track = np.empty(0)
    per_fold: list[dict[str, Any]] = []
    plots: dict[str, Any] = {}
    memo = _frozen_memo(recipe, corpus.feature_config)
    for f, (tr, te) in enumerate(fold_splits):
        model, thr = _fit(corpus, tr, recipe=recipe, memo=memo)
        scores = _score_views(model, corpus, tr, te, label, n_labels=n, k=k, orchestrations=orchestrations)
        truth = np.r_[truth, scores[ORIGINAL].truth]
        thr_of_track = np.r_[thr_of_track, np.full(len(te), thr)]
        for v in views:
            pred[v], novelty[v] = np.r_[pred[v], scores[v].pred], np.r_[novelty[v], scores[v].novelty]
        acc, bacc = scores[ORIGINAL].accuracy()
        per_fold.append({"fold": f, "tracks": len(te), "accuracy": acc, "balanced_accuracy": bacc})
        if f == 0 and keep_plots:  # one model's space for the map: every track embedded by fold 0's encoder
            every = stack_clips(corpus, np.arange(len(corpus.tracks)))
            e = embed(model, every.feats)
            plots["embeddings"] = np.stack([e[every.track == t].mean(axis=0) for t in range(len(corpus.tracks))])
            plots["held_out"] = np.isin(np.arange(len(corpus.tracks)), te)
            orch = {}
            for v in orchestrations:
                q = stack_clips(corpus, te, orchestration=v)
                eq = embed(model, q.feats)
                orch[v] = np.stack([eq[q.track == t].mean(axis=0) for t in te])
            plots["orchestrated"] = orch
        step({"fold": per_fold[-1]})
    closed = {**_closed_metrics(truth, pred[ORIGINAL], composers), "per_fold": per_fold}
    orch_metrics: dict[str, Any] = {}
    for v in orchestrations:
        m = _closed_metrics(truth, pred[v], composers)
        flips = (novelty[v] > thr_of_track) != (novelty[ORIGINAL] > thr_of_track)
        orch_metrics[v] = {
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
    agreement = float(np.all([pred[v] == pred[ORIGINAL] for v in views], axis=0).mean())
    closed.update(orchestrations=orch_metrics, agreement=agreement)
    flat = {
        f"closed.{ORIGINAL}.accuracy": closed["accuracy"],
        f"closed.{ORIGINAL}.balanced_accuracy": closed["balanced_accuracy"],
    }
    for v, m in orch_metrics.items():
        flat[f"closed.{v}.accuracy"], flat[f"closed.{v}.balanced_accuracy"] = m["accuracy"], m["balanced_accuracy"]
        flat[f"closed.{v}.novelty_shift_median"] = m["novelty_shift_median"]
    flat["closed.agreement"] = agreement

    # ---- open set: leave one composer out; known and unknown tracks also in every orchestration
    per_composer: dict[str, Any] = {}
    novelty_loco, thresholds = [], []
    if open_set:
        for c in range(n):
            known = np.flatnonzero(label != c)
            unknown = np.flatnonzero(label == c)
            kf = grouped_folds(
                [corpus.tracks[i].composer for i in known], [works[i] for i in known], n_folds=folds, seed=fold_seed
            )
            tr, te = known[kf[0][0]], known[kf[0][1]]
            model, thr = _fit(corpus, tr, recipe=recipe, memo=memo)
            scores = _score_views(
                model, corpus, tr, np.r_[te, unknown], label, n_labels=n, k=k, orchestrations=orchestrations
            )
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
            for v in orchestrations:
                sv = scores[v]
                ok = (sv.pred == sv.truth)[~is_unknown]
                mv = open_set_metrics(sv.novelty[~is_unknown], sv.novelty[is_unknown], ok)
                m[f"auroc_{v}"], m[f"fpr_at_95tpr_{v}"] = mv["auroc"], mv["fpr_at_95tpr"]
            per_composer[composers[c]] = m
            novelty_loco.append((composers[c], s0.novelty[~is_unknown], s0.novelty[is_unknown]))
            thresholds.append(thr)
            step({"left_out": composers[c], **m})
    open_: dict[str, Any] = {}
    if per_composer:
        keys = ["auroc", "fpr_at_95tpr", "oscr", "unknown_flagged", "known_flagged"]
        keys += sorted({key for v in per_composer.values() for key in v if key.startswith(("auroc_", "fpr_at"))})
        keys = list(dict.fromkeys(keys))
        mean = {key: float(np.mean([v[key] for v in per_composer.values()])) for key in keys}
        open_ = {"per_composer": per_composer, "mean": mean}
        for metric in ("auroc", "fpr_at_95tpr", "oscr"):
            flat[f"open.{ORIGINAL}.{metric}"] = mean[metric]
        for v in orchestrations:
            flat[f"open.{v}.auroc"], flat[f"open.{v}.fpr_at_95tpr"] = mean[f"auroc_{v}"], mean[f"fpr_at_95tpr_{v}"]
    return {
        "closed": closed,
        "open": open_,
        "flat": flat,
        "plots": plots,
        "novelty_loco": novelty_loco,
        "thresholds": thresholds,
    }


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
    mc, base_tc = r.model, r.train
    train_seeds = list(seeds) if seeds is not None else [base_tc.seed]
    if not train_seeds:
        raise MusicIdxError("give at least one training seed")
    if r.frozen:
        train_seeds = train_seeds[:1]
    corpus = prepare_corpus(
        midi_dir,
        features=r.features,
        soundfont=soundfont,
        cache_dir=cache_dir,
        workers=workers,
        variants=0 if r.frozen else base_tc.program_variants,  # the training renderings the recipe asks for
        orchestrations=orchestrations,
        progress=progress,
    )
    composers = sorted({t.composer for t in corpus.tracks})
    label = np.array([composers.index(t.composer) for t in corpus.tracks])
    works = [t.group for t in corpus.tracks]
    n = len(composers)
    splits = grouped_folds([t.composer for t in corpus.tracks], works, n_folds=folds, seed=seed)
    per_seed_fits = folds + (n if open_set else 0)
    total = len(train_seeds) * per_seed_fits
    config = {
        "features": corpus.feature_config.to_dict(),
        "model": mc.to_dict(),
        "training": base_tc.to_dict(),
        "k": r.k,
        "fold_seed": seed,
        "recipe": dataclasses.replace(r, features=corpus.feature_config).to_dict(),
    }
    runs: list[dict[str, Any]] = []  # one per finished seed
    running: dict[str, Any] = {"seed": train_seeds[0], "closed_folds": [], "open_left_out": {}}

    def done() -> int:
        return len(runs) * per_seed_fits + len(running["closed_folds"]) + len(running["open_left_out"])

    def report(partial: dict[str, Any] | None) -> EvalReport:
        finished = train_seeds[: len(runs)]
        return _assemble(runs, finished, composers, corpus, folds, config, orchestrations, began, partial)

    def checkpoint() -> None:
        if on_partial is not None and done() < total:
            unfinished = copy.deepcopy(running) if done() % per_seed_fits else None
            partial = {"fits_done": done(), "fits_total": total, "seeds_finished": train_seeds[: len(runs)]}
            on_partial(report({**partial, "unfinished_seed": unfinished}))

    def step(finished: dict[str, Any]) -> None:
        if "fold" in finished:
            running["closed_folds"].append(finished["fold"])
        else:
            running["open_left_out"][finished.pop("left_out")] = finished
        if progress is not None:
            progress("eval", done(), total)
        if done() % per_seed_fits:  # the seed's last fit is kept once its run is complete, below
            checkpoint()

    if progress is not None:
        progress("eval", 0, total)
    for i, s in enumerate(train_seeds):
        running.update(seed=s, closed_folds=[], open_left_out={})
        runs.append(
            _one_seed(
                corpus,
                composers=composers,
                label=label,
                fold_splits=splits,
                recipe=dataclasses.replace(r, train=dataclasses.replace(base_tc, seed=s)),
                folds=folds,
                fold_seed=seed,
                open_set=open_set,
                orchestrations=orchestrations,
                step=step,
                keep_plots=i == 0,
            )
        )
        running.update(closed_folds=[], open_left_out={})
        checkpoint()
    return report(None)


def _assemble(
    runs: list[dict[str, Any]],
    seeds: list[int],
    composers: list[str],
    corpus: Corpus,
    folds: int,
    config: dict[str, Any],
    orchestrations: Sequence[str],
    began: float,
    partial: dict[str, Any] | None,
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


#: What to install for the plots.
PLOTS_HINT = f"plots need matplotlib: {install_hint('plots')}"


def _use_matplotlib() -> None:
    """Select matplotlib's file-only backend; a missing matplotlib is a :class:`PlotError`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError as e:
        raise PlotError(f"{PLOTS_HINT} (or pass --no-plots)") from e


def can_plot(*, required: bool) -> bool:
    """Whether the plots can be drawn, asked before any work: ``False`` when matplotlib is missing,
    or, when they were asked for explicitly (``required``), a :class:`PlotError`."""
    try:
        _use_matplotlib()
    except PlotError:
        if required:
            raise
        return False
    return True


def _write_json(obj: dict[str, Any], path: Path) -> None:
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
    _write_json(report.to_dict(), out / "report.json")
    written = []
    if plots and report.closed:  # a partial report before its first finished seed has nothing to draw
        _use_matplotlib()
        written = [_plot_confusion(report, out), _plot_embeddings(report, out)]
        if report.novelty_loco:
            written.append(_plot_novelty(report, out))
        if report.orchestrations:
            written.append(_plot_orchestrations(report, out))
        report.plots = [p.name for p in written]
        _write_json(report.to_dict(), out / "report.json")
    return [out / "report.json", *written]


def _plot_confusion(r: EvalReport, out: Path) -> Path:
    import matplotlib.pyplot as plt

    cm = np.asarray(r.closed["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(cm)):
        for j in range(len(cm)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(cm)), r.composers, rotation=30, ha="right")
    ax.set_yticks(range(len(cm)), r.composers)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"Grouped {r.folds}-fold CV: balanced acc {r.closed['balanced_accuracy']:.2f}, acc {r.closed['accuracy']:.2f}"
    )
    fig.tight_layout()
    p = out / "confusion_matrix.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p


def _plot_embeddings(r: EvalReport, out: Path) -> Path:
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    assert r.embeddings is not None
    pca = PCA(n_components=2, random_state=0).fit(r.embeddings)
    xy = pca.transform(r.embeddings)
    orch = {v: pca.transform(e) for v, e in r.embeddings_orchestrated.items() if len(e)}
    fig, axes = plt.subplots(1, 2 if orch else 1, figsize=(12 if orch else 6, 5), squeeze=False)
    labels = np.asarray(r.embedding_labels)
    held = np.zeros(len(labels), bool) if r.embedding_held_out is None else r.embedding_held_out
    ax = axes[0, 0]
    for i, c in enumerate(r.composers):
        color = f"C{i}"
        m = labels == c
        ax.scatter(xy[m & ~held, 0], xy[m & ~held, 1], s=12, color=color, alpha=0.35, label=f"{c} ({m.sum()})")
        ax.scatter(xy[m & held, 0], xy[m & held, 1], s=28, color=color, edgecolors="k", linewidths=0.6)
    ax.legend(title="faint: training works, outlined: held-out works", fontsize=8, title_fontsize=8)
    ax.set_title("Track embeddings as written (fold 0 encoder, mean of clips), PCA", fontsize=10)
    if orch:
        ax = axes[0, 1]
        markers = dict(zip(orch, "s^Dv*P"))
        held_labels = labels[held]
        ax.scatter(xy[~held, 0], xy[~held, 1], s=8, color="0.85", label="training works as written")
        for i, c in enumerate(r.composers):
            m = held_labels == c
            ax.scatter(xy[held][m, 0], xy[held][m, 1], s=26, color=f"C{i}", marker="o", edgecolors="k", linewidths=0.5)
            for v, pts in orch.items():
                ax.scatter(pts[m, 0], pts[m, 1], s=22, color=f"C{i}", marker=markers[v], alpha=0.7)
        for v, mk in markers.items():
            ax.scatter([], [], marker=mk, color="0.4", label=v)
        ax.scatter([], [], marker="o", color="0.4", edgecolors="k", label="as written")
        ax.legend(title="held-out works, colour = composer", fontsize=8, title_fontsize=8)
        ax.set_title("The same held-out works re-orchestrated: same colour should stay together", fontsize=10)
    fig.tight_layout()
    p = out / "embeddings_pca.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def _plot_orchestrations(r: EvalReport, out: Path) -> Path:
    """Balanced accuracy (closed set) and AUROC (open set) per orchestration, mean and std over
    the training seeds."""
    import matplotlib.pyplot as plt

    views = [ORIGINAL, *r.orchestrations]
    panels = [("closed", "balanced_accuracy", "grouped-CV balanced accuracy")]
    if r.open:
        panels.append(("open", "auroc", "leave-one-composer-out AUROC"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (kind, metric, title) in zip(axes.flat, panels):
        stats = [r.summary[f"{kind}.{v}.{metric}"] for v in views]
        colors = [f"C{i}" for i in range(len(views))]
        ax.bar(views, [s["mean"] for s in stats], yerr=[s["std"] for s in stats], color=colors, capsize=4)
        for i, s in enumerate(stats):
            ax.text(i, s["mean"] + s["std"] + 0.02, f"{s['mean']:.2f}", ha="center", fontsize=8)
        chance = 1.0 / len(r.composers) if kind == "closed" else 0.5
        ax.axhline(chance, color="0.3", linestyle=":", linewidth=1, label=f"chance ({chance:.2f})")
        ax.legend(fontsize=7, loc="upper right")
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    agreement = r.summary.get("closed.agreement")
    extra = f"; agreement across orchestrations {agreement['mean']:.2f}" if agreement else ""
    fig.suptitle(
        f"Held-out tracks asked in other orchestrations (mean ± std over {len(r.seeds)} seed(s)){extra}", fontsize=10
    )
    fig.tight_layout()
    p = out / "orchestrations.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def _plot_novelty(r: EvalReport, out: Path) -> Path:
    """One panel per left-out composer: each fold has its own encoder, so its own distance scale
    and threshold; pooling them in one histogram would mix scales."""
    import matplotlib.pyplot as plt

    n = len(r.novelty_loco)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, known, unknown), thr in zip(axes.flat, r.novelty_loco, r.thresholds):
        bins = np.linspace(0, max(known.max(), unknown.max(), thr) * 1.05, 30).tolist()
        ax.hist(known, bins=bins, alpha=0.6, density=True, label=f"known composers, held-out works ({len(known)})")
        ax.hist(unknown, bins=bins, alpha=0.6, density=True, label=f"{name}, left out ({len(unknown)})")
        ax.axvline(thr, color="k", linestyle="--", label=f"calibrated threshold {thr:.3f}")
        ax.set_title(f"{name} left out: AUROC {r.open['per_composer'][name]['auroc']:.2f}", fontsize=10)
        ax.set_xlabel("track novelty (k-th neighbour distance, median over clips)", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"Leave-one-composer-out novelty: mean AUROC {r.open['mean']['auroc']:.2f}")
    fig.tight_layout()
    p = out / "novelty_hist.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


# ------------------------------------------------------------------------------ cross-corpus


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
    from .engine import Searcher

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
    truth = np.array([r["composer"] for r in rows])
    answer = np.array([r["answer"] for r in rows])
    nov = np.array([r["novelty"] for r in rows])
    conf = np.array([r["confidence"] for r in rows])
    known = np.array([r["known"] for r in rows], bool)
    known_names = sorted(set(truth[known]))
    new_names = sorted(set(truth[~known]))
    known_m: dict[str, Any] = {"tracks": int(known.sum())}
    if known.any():
        hit = answer[known] == truth[known]
        known_m.update(
            accuracy=float(hit.mean()),
            balanced_accuracy=float(np.mean([hit[truth[known] == c].mean() for c in known_names])),
            recall={c: float(hit[truth[known] == c].mean()) for c in known_names},
            answered={c: _counts(answer[known][truth[known] == c]) for c in known_names},
            flagged_new=float((nov[known] > searcher.threshold).mean()),
        )
    open_m: dict[str, Any] = {}
    if known.any() and (~known).any():
        correct = answer[known] == truth[known]
        open_m = {
            **open_set_metrics(nov[known], nov[~known], correct),
            "auroc_low_confidence": open_set_metrics(1 - conf[known], 1 - conf[~known], correct)["auroc"],
            "new_tracks": int((~known).sum()),
            "flagged_new": float((nov[~known] > searcher.threshold).mean()),
            "threshold": searcher.threshold,
            "per_new_composer": {
                c: {
                    "tracks": int((truth == c).sum()),
                    **open_set_metrics(nov[known], nov[truth == c], correct),
                    "flagged_new": float((nov[truth == c] > searcher.threshold).mean()),
                }
                for c in new_names
            },
        }
    return CrossReport(
        index=str(index_dir),
        folder=str(midi_dir),
        known_composers=known_names,
        new_composers=new_names,
        tracks=len(rows),
        known=known_m,
        open=open_m,
        skipped=corpus.skipped,
        seconds=time.monotonic() - began,
        rows=rows,
    )


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
    _write_json(report.to_dict(), out / "report.json")
    if plots and report.open:
        _use_matplotlib()
        import matplotlib.pyplot as plt

        rows = report.rows
        known = [r["novelty"] for r in rows if r["known"]]
        fig, ax = plt.subplots(figsize=(7, 4))
        groups = [("known: " + ", ".join(report.known_composers), known)]
        groups += [(c, [r["novelty"] for r in rows if r["composer"] == c]) for c in report.new_composers]
        jitter = np.random.default_rng(0)
        for i, (_, g) in enumerate(groups, 1):  # one row of dots per group, its median marked
            ax.scatter(g, i + jitter.uniform(-0.15, 0.15, len(g)), s=10, alpha=0.6, color="C0" if i == 1 else "C3")
            ax.plot([np.median(g)] * 2, [i - 0.3, i + 0.3], color="k", linewidth=2)
        ax.set_yticks(range(1, len(groups) + 1), [f"{n} ({len(g)})" for n, g in groups], fontsize=7)
        ax.axvline(report.open["threshold"], color="k", linestyle="--", label="the index's threshold")
        ax.set_xlabel("track novelty")
        ax.set_title(f"Cross-corpus: AUROC known vs new {report.open['auroc']:.2f}", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out / "cross_novelty.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
        report.plots = [p.name for p in written]
        _write_json(report.to_dict(), out / "report.json")
    return [out / "report.json", *written]
