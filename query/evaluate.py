"""``musicidx eval``: how well an index built the default way names composers of unseen works
(closed set) and flags composers it has never seen (open set).

* Closed set: scikit-learn's ``StratifiedGroupKFold`` grouped by work, stratified by composer;
  each fold builds on the other folds with :func:`~musicidx.indexer.build.fit_index` (the very
  build path, no second copy) and scores its held-out tracks.
* Open set: leave one composer out; build on the held-in folds of the others, score their
  held-out works (known) and every track of the left-out composer (unknown).

Features are extracted once (through the cache) and shared by every fold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig
from musicidx.encoder.errors import MusicIdxError
from musicidx.indexer.build import Corpus, Progress, TrackScores, fit_index, prepare_corpus, score_tracks, stack_clips


class PlotError(MusicIdxError):
    """Plots were asked for but matplotlib is missing."""


def grouped_folds(
    composers: list[str], works: list[str], *, n_folds: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) track indices: works never straddle a split, composers stratified."""
    from sklearn.model_selection import StratifiedGroupKFold

    for c in sorted(set(composers)):
        n_works = len({w for w, k in zip(works, composers) if k == c})
        if n_works < n_folds:
            raise MusicIdxError(
                f"composer {c} has {n_works} work(s); grouped {n_folds}-fold CV needs {n_folds} (use --folds)"
            )
    sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(np.sort(a), np.sort(b)) for a, b in sgkf.split(np.zeros(len(composers)), composers, works)]


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


@dataclass
class EvalReport:
    """Everything ``musicidx eval`` measured; ``to_dict`` is ``report.json``."""

    composers: list[str]
    folds: int
    closed: dict[str, Any]
    open: dict[str, Any]
    config: dict[str, Any]
    seconds: float
    plots: list[str] = field(default_factory=list)
    # For the plots, not for report.json:
    embeddings: np.ndarray | None = None  # (n_tracks, dim) mean clip embedding, fold 0's encoder
    embedding_labels: list[str] = field(default_factory=list)
    embedding_held_out: np.ndarray | None = None  # True for fold 0's held-out tracks
    # per left-out composer: (name, novelty of known held-out tracks, of the left-out's tracks)
    novelty_loco: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("embeddings", "embedding_labels", "embedding_held_out", "novelty_loco"):
            d.pop(key)
        return d


def _fit_and_score(
    corpus: Corpus,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    label: np.ndarray,
    *,
    n_labels: int,
    model_config: ModelConfig,
    train_config: TrainConfig,
    k: int,
) -> tuple[TrackScores, float, Any]:
    from musicidx.encoder.model import Encoder

    contents, fit = fit_index(corpus.subset(train_idx), model_config=model_config, train_config=train_config, k=k)
    model = Encoder(model_config, corpus.feature_config)
    model.load_state_dict(contents.encoder_state)
    model.eval()
    ref, query = stack_clips(corpus, train_idx), stack_clips(corpus, test_idx)
    scores = score_tracks(model, ref, label[ref.track], query, label, n_labels=n_labels, k=k, alternatives=True)
    return scores, fit.threshold, model


def evaluate(
    midi_dir: str | Path,
    *,
    folds: int = 5,
    seed: int = 0,
    features: FeatureConfig | None = None,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    k: int = 10,
    open_set: bool = True,
    cache_dir: str | Path | None | bool = True,
    workers: int | None = None,
    soundfont: str | Path | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Closed-set grouped cross-validation and leave-one-composer-out open-set evaluation."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, recall_score

    from musicidx.encoder.model import embed

    began = time.monotonic()
    mc, tc = model_config or ModelConfig(), train_config or TrainConfig(seed=seed)
    corpus = prepare_corpus(
        midi_dir, features=features, soundfont=soundfont, cache_dir=cache_dir, workers=workers, progress=progress
    )
    composers = sorted({t.composer for t in corpus.tracks})
    label = np.array([composers.index(t.composer) for t in corpus.tracks])
    works = [t.group for t in corpus.tracks]
    n = len(composers)
    step: Callable[[int, int], None] = (lambda d, t: progress("eval", d, t)) if progress else (lambda d, t: None)
    total_fits = folds + (n if open_set else 0)

    # ---- closed set
    truth, pred, per_fold = np.empty(0, np.int64), np.empty(0, np.int64), []
    dim = mc.embedding_dim
    track_emb = np.zeros((len(corpus.tracks), dim), np.float32)
    map_held_out = np.zeros(len(corpus.tracks), bool)
    for f, (tr, te) in enumerate(grouped_folds([t.composer for t in corpus.tracks], works, n_folds=folds, seed=seed)):
        scores, _, model = _fit_and_score(corpus, tr, te, label, n_labels=n, model_config=mc, train_config=tc, k=k)
        truth, pred = np.r_[truth, scores.truth], np.r_[pred, scores.pred]
        acc, bacc = scores.accuracy()
        per_fold.append({"fold": f, "tracks": len(te), "accuracy": acc, "balanced_accuracy": bacc})
        if f == 0:  # one model's space for the map: every track embedded by fold 0's encoder
            every = stack_clips(corpus, np.arange(len(corpus.tracks)))
            e = embed(model, every.feats)
            for t in range(len(corpus.tracks)):
                track_emb[t] = e[every.track == t].mean(axis=0)
            map_held_out = np.isin(np.arange(len(corpus.tracks)), te)
        step(f + 1, total_fits)
    labels = list(range(n))
    closed = {
        "tracks": int(len(truth)),
        "accuracy": float((truth == pred).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(truth, pred)),
        "macro_f1": float(f1_score(truth, pred, average="macro", labels=labels, zero_division=0)),
        "recall": dict(
            zip(composers, map(float, recall_score(truth, pred, average=None, labels=labels, zero_division=0)))
        ),
        "confusion_matrix": confusion_matrix(truth, pred, labels=labels).tolist(),
        "confusion_labels": composers,
        "per_fold": per_fold,
    }

    # ---- open set: leave one composer out
    per_composer: dict[str, Any] = {}
    novelty_loco, thresholds = [], []
    if open_set:
        for c in range(n):
            known = np.flatnonzero(label != c)
            unknown = np.flatnonzero(label == c)
            kf = grouped_folds(
                [corpus.tracks[i].composer for i in known], [works[i] for i in known], n_folds=folds, seed=seed
            )
            tr, te = known[kf[0][0]], known[kf[0][1]]
            test = np.r_[te, unknown]
            scores, thr, _ = _fit_and_score(corpus, tr, test, label, n_labels=n, model_config=mc, train_config=tc, k=k)
            is_unknown = scores.truth == c
            correct = (scores.pred == scores.truth)[~is_unknown]
            m = open_set_metrics(scores.novelty[~is_unknown], scores.novelty[is_unknown], correct)
            candidates = {"low_confidence": 1 - scores.confidence, **scores.alternatives}
            for name, values in candidates.items():  # candidate novelty statistics, AUROC only
                m[f"auroc_{name}"] = open_set_metrics(values[~is_unknown], values[is_unknown], correct)["auroc"]
            m.update(
                threshold=thr,
                known_tracks=int((~is_unknown).sum()),
                unknown_tracks=int(is_unknown.sum()),
                unknown_flagged=float((scores.novelty[is_unknown] > thr).mean()),
                known_flagged=float((scores.novelty[~is_unknown] > thr).mean()),
            )
            per_composer[composers[c]] = m
            novelty_loco.append((composers[c], scores.novelty[~is_unknown], scores.novelty[is_unknown]))
            thresholds.append(thr)
            step(folds + c + 1, total_fits)
    keys = ["auroc", "fpr_at_95tpr", "oscr", "unknown_flagged", "known_flagged"]
    keys += sorted({key for v in per_composer.values() for key in v if key.startswith("auroc_")})
    open_ = (
        {
            "per_composer": per_composer,
            "mean": {key: float(np.mean([v[key] for v in per_composer.values()])) for key in keys},
        }
        if per_composer
        else {}
    )

    return EvalReport(
        composers=composers,
        folds=folds,
        closed=closed,
        open=open_,
        config={
            "features": corpus.feature_config.to_dict(),
            "model": mc.to_dict(),
            "training": tc.to_dict(),
            "k": k,
            "seed": seed,
        },
        seconds=time.monotonic() - began,
        embeddings=track_emb,
        embedding_labels=[t.composer for t in corpus.tracks],
        embedding_held_out=map_held_out,
        novelty_loco=novelty_loco,
        thresholds=thresholds,
    )


def write_report(report: EvalReport, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write ``report.json`` and (with matplotlib) the three PNGs; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if plots:
        try:
            import matplotlib

            matplotlib.use("Agg")
        except ImportError as e:
            raise PlotError("plots need matplotlib: pip install 'musicidx[plots]' (or pass --no-plots)") from e
        written = [_plot_confusion(report, out), _plot_embeddings(report, out)]
        if report.novelty_loco:
            written.append(_plot_novelty(report, out))
    report.plots = [p.name for p in written]
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
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
    xy = PCA(n_components=2, random_state=0).fit_transform(r.embeddings)
    fig, ax = plt.subplots(figsize=(6, 5))
    labels = np.asarray(r.embedding_labels)
    held = np.zeros(len(labels), bool) if r.embedding_held_out is None else r.embedding_held_out
    for i, c in enumerate(r.composers):
        color = f"C{i}"
        m = labels == c
        ax.scatter(xy[m & ~held, 0], xy[m & ~held, 1], s=12, color=color, alpha=0.35, label=f"{c} ({m.sum()})")
        ax.scatter(xy[m & held, 0], xy[m & held, 1], s=28, color=color, edgecolors="k", linewidths=0.6)
    ax.legend(title="faint: training works, outlined: held-out works", fontsize=8, title_fontsize=8)
    ax.set_title("Track embeddings (fold 0 encoder, mean of clips), PCA")
    fig.tight_layout()
    p = out / "embeddings_pca.png"
    fig.savefig(p, dpi=120)
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
