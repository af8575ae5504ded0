"""The closed-set and open-set baseline the encoder must beat: CQT and chroma statistics per
track, a logistic regression (closed set) and k-th-nearest-track distance (open set).

    python -m benchmarks.accuracy.baseline [MIDI_DIR] [--folds 5] [--seed 0] [--k 5] [--json-out baseline.json]

Features: each track's cached clip features from ``prepare_corpus`` (the same log-CQT clips the
encoder sees; default cache ``$XDG_CACHE_HOME/musicidx``). Per clip: the mean and standard
deviation over frames of each of the 84 log-CQT bins, and a chroma: the 84 bins' magnitudes
(``exp(log-CQT)`` minus the log floor) summed into 12 pitch classes (bin 0 is C1, so bin % 12),
normalised per frame to sum 1, then mean and standard deviation over frames of each pitch
class. 84 + 84 + 12 + 12 = 192 numbers per clip; a track is the mean of its clips' vectors.

Closed set: ``StandardScaler`` + ``LogisticRegression``, with ``class_weight="balanced"`` and
without, on :func:`musicidx.evaluate.splits.grouped_folds` (grouped by work, stratified by composer:
the folds ``musicidx eval`` uses). Out-of-fold predictions of every track give
accuracy, balanced accuracy, macro-F1, per-composer recall and the confusion matrix.

Open set: :func:`musicidx.evaluate.splits.leave_one_composer_out` — for each composer, the other
composers' tracks are split with the same fold function and the first fold held out (``musicidx
eval``'s open set); the training tracks (scaled by a
``StandardScaler`` fitted on them) are the reference set. Novelty of a query track = Euclidean
distance of its standardised vector to its k-th nearest reference track. Known = the held-out
tracks of the other composers, unknown = every track of the left-out composer. AUROC (unknown
positive), FPR at 95 % TPR (share of unknown tracks accepted at the threshold that accepts 95 %
of known ones) and OSCR (with the balanced logistic regression's predictions on the known
tracks), via :func:`musicidx.evaluate.metrics.open_set_metrics`, as ``musicidx eval`` reports them.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.paths import TRAINING_CORPUS
from musicidx.encoder.frontend import LOG_FLOOR
from musicidx.evaluate.splits import grouped_folds, leave_one_composer_out

# ----------------------------------------------------------------------------- splits


def eval_splits(
    composers: list[str], groups: list[str], *, n_folds: int, seed: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """``musicidx eval``'s closed-set folds and open-set splits of these tracks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # StratifiedGroupKFold: "least populated class"
        folds = grouped_folds(composers, groups, n_folds=n_folds, seed=seed)
        splits = leave_one_composer_out(composers, groups, n_folds=n_folds, seed=seed)
    return folds, splits


# ----------------------------------------------------------------------------- features


def clip_statistics(feats: np.ndarray) -> np.ndarray:
    """``(n_clips, 84, frames)`` log-CQT -> ``(n_clips, 192)``: per-bin mean and std, then the
    mean and std of the 12-pitch-class chroma (normalised per frame)."""
    x = feats.astype(np.float32)
    n, bins, frames = x.shape
    mag = np.clip(np.exp(x) - LOG_FLOOR, 0.0, None)
    chroma = mag.reshape(n, bins // 12, 12, frames).sum(axis=1)  # bin 0 = C1, 12 bins per octave
    chroma /= chroma.sum(axis=1, keepdims=True) + 1e-8
    return np.concatenate([x.mean(axis=2), x.std(axis=2), chroma.mean(axis=2), chroma.std(axis=2)], axis=1)


def track_vectors(corpus: Any) -> np.ndarray:
    return np.stack([clip_statistics(f.feats).mean(axis=0) for f in corpus.features])


# ----------------------------------------------------------------------------- models


def logistic(balanced: bool, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        LogisticRegression(max_iter=5000, class_weight="balanced" if balanced else None, random_state=seed),
    )


def closed_set(
    x: np.ndarray,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    names: list[str],
    balanced: bool,
    seed: int,
) -> dict[str, Any]:
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, recall_score

    pred = np.full(len(y), -1)
    per_fold = []
    for f, (tr, te) in enumerate(folds):
        model = logistic(balanced, seed).fit(x[tr], y[tr])
        pred[te] = model.predict(x[te])
        per_fold.append(
            {
                "fold": f,
                "tracks": int(len(te)),
                "accuracy": float((pred[te] == y[te]).mean()),
                "balanced_accuracy": float(balanced_accuracy_score(y[te], pred[te])),
            }
        )
    labels = list(range(len(names)))
    return {
        "class_weight": "balanced" if balanced else None,
        "tracks": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", labels=labels, zero_division=0)),
        "recall": dict(zip(names, map(float, recall_score(y, pred, average=None, labels=labels, zero_division=0)))),
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
        "confusion_labels": names,
        "per_fold": per_fold,
    }


def open_set(
    x: np.ndarray,
    y: np.ndarray,
    splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    k: int,
    seed: int,
) -> dict[str, Any]:
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler

    from musicidx.evaluate.metrics import open_set_metrics

    per: dict[str, Any] = {}
    for c, (ref, known, unknown) in splits.items():
        scaler = StandardScaler().fit(x[ref])
        nn = NearestNeighbors(n_neighbors=k).fit(scaler.transform(x[ref]))
        d_known = nn.kneighbors(scaler.transform(x[known]))[0][:, k - 1]
        d_unknown = nn.kneighbors(scaler.transform(x[unknown]))[0][:, k - 1]
        correct = logistic(True, seed).fit(x[ref], y[ref]).predict(x[known]) == y[known]
        m = open_set_metrics(d_known, d_unknown, correct)
        m.update(
            reference_tracks=int(len(ref)),
            known_tracks=int(len(known)),
            unknown_tracks=int(len(unknown)),
            known_accuracy=float(correct.mean()),
        )
        per[c] = m
    keys = ("auroc", "fpr_at_95tpr", "oscr", "known_accuracy")
    return {
        "k": k,
        "novelty": "Euclidean distance of the standardised track vector to its k-th nearest reference track",
        "per_composer": per,
        "mean": {key: float(np.mean([v[key] for v in per.values()])) for key in keys},
    }


# ----------------------------------------------------------------------------- report


def print_closed(r: dict[str, Any], names: list[str]) -> None:
    print(
        f"\nclosed set, class_weight={r['class_weight']}: accuracy {r['accuracy']:.3f}, "
        f"balanced accuracy {r['balanced_accuracy']:.3f}, macro-F1 {r['macro_f1']:.3f}"
    )
    print(
        "  per fold (acc / bal. acc): "
        + ", ".join(f"{f['accuracy']:.2f}/{f['balanced_accuracy']:.2f}" for f in r["per_fold"])
    )
    w = max(len(n) for n in names)
    head = "true \\ predicted"
    print(f"  {head:<{w + 2}}" + "".join(f"{n[:9]:>10}" for n in names) + "    recall")
    for n, row in zip(names, r["confusion_matrix"]):
        print(f"  {n:<{w + 2}}" + "".join(f"{v:>10}" for v in row) + f"    {r['recall'][n]:.2f}")


def fold_seed_spread(
    x: np.ndarray, y: np.ndarray, composers: list[str], groups: list[str], names: list[str], args: Any
) -> dict[str, Any]:
    """The same measurements with fold seeds ``0..spread-1``: how much the numbers move with
    the luck of the split alone (the minority composers have 17-25 tracks)."""
    runs: dict[str, list[float]] = {}
    for seed in range(args.spread):
        folds, splits = eval_splits(composers, groups, n_folds=args.folds, seed=seed)
        for balanced in (True, False):
            r = closed_set(x, y, folds, names, balanced, args.seed)
            tag = "balanced" if balanced else "none"
            for key in ("accuracy", "balanced_accuracy", "macro_f1"):
                runs.setdefault(f"{key} ({tag})", []).append(r[key])
        o = open_set(x, y, splits, args.k, args.seed)["mean"]
        runs.setdefault("open-set mean AUROC", []).append(o["auroc"])
        runs.setdefault("open-set mean FPR@95TPR", []).append(o["fpr_at_95tpr"])
    print(f"\nspread over fold seeds 0..{args.spread - 1} (class_weight in brackets):")
    print("| metric | mean | sd | min | max |")
    print("|---|---|---|---|---|")
    out = {}
    for key, v in runs.items():
        a = np.asarray(v)
        out[key] = {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "values": v}
        print(f"| {key} | {a.mean():.3f} | {out[key]['sd']:.3f} | {a.min():.3f} | {a.max():.3f} |")
    return {"seeds": list(range(args.spread)), **out}


def main() -> None:
    """Parse, load, split, measure, print, write. Over 60 lines because it is the script's whole run in
    order, each step a few lines that print as they go; the measurements themselves are functions above."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("midi_dir", nargs="?", type=Path, default=TRAINING_CORPUS, help=f"[{TRAINING_CORPUS}]")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=5, help="open set: novelty = distance to the k-th nearest track")
    ap.add_argument(
        "--spread", type=int, default=10, metavar="N", help="also rerun with fold seeds 0..N-1 (0: skip) for the spread"
    )
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()

    from musicidx.indexer.prepare import prepare_corpus

    began = time.monotonic()
    corpus = prepare_corpus(args.midi_dir, cache_dir=True)
    load_s = time.monotonic() - began
    names = sorted({t.composer for t in corpus.tracks})
    composers = [t.composer for t in corpus.tracks]
    groups = [t.group for t in corpus.tracks]
    y = np.array([names.index(c) for c in composers])
    x = track_vectors(corpus)
    folds, splits = eval_splits(composers, groups, n_folds=args.folds, seed=args.seed)
    print(
        f"{len(corpus.tracks)} tracks ({', '.join(f'{n} {composers.count(n)}' for n in names)}), "
        f"{len(set(groups))} works, {len(corpus.skipped)} skipped; features loaded in {load_s:.1f} s "
        f"({corpus.cached_tracks} from the cache); {x.shape[1]} numbers per track"
    )
    print(f"{args.folds} folds (musicidx eval's), test tracks per fold {[len(te) for _, te in folds]}")
    closed = [closed_set(x, y, folds, names, balanced, args.seed) for balanced in (True, False)]
    for r in closed:
        print_closed(r, names)
    opened = open_set(x, y, splits, args.k, args.seed)
    print(f"\nopen set, leave one composer out, novelty = distance to the {args.k}-th nearest training track:")
    print("| left out | reference / known / unknown tracks | AUROC | FPR@95TPR | OSCR | known acc. |")
    print("|---|---|---|---|---|---|")
    for c, m in opened["per_composer"].items():
        print(
            f"| {c} | {m['reference_tracks']} / {m['known_tracks']} / {m['unknown_tracks']} | {m['auroc']:.3f} "
            f"| {m['fpr_at_95tpr']:.3f} | {m['oscr']:.3f} | {m['known_accuracy']:.3f} |"
        )
    mean = opened["mean"]
    print(
        f"| mean | | {mean['auroc']:.3f} | {mean['fpr_at_95tpr']:.3f} | {mean['oscr']:.3f} "
        f"| {mean['known_accuracy']:.3f} |"
    )
    spread = fold_seed_spread(x, y, composers, groups, names, args) if args.spread else {}
    seconds = time.monotonic() - began
    print(f"\n{seconds:.1f} s in all")
    if args.json_out:
        result = {
            "corpus": str(args.midi_dir),
            "tracks": len(corpus.tracks),
            "composers": {n: composers.count(n) for n in names},
            "works": len(set(groups)),
            "skipped": [{"path": p, "reason": r} for p, r in corpus.skipped],
            "features": "per clip: 84 log-CQT bin means + stds, 12 chroma means + stds; track = mean over clips",
            "feature_config": corpus.feature_config.to_dict(),
            "folds": {
                "n_splits": args.folds,
                "seed": args.seed,
                "test_tracks": [int(len(te)) for _, te in folds],
                "same_as_musicidx_eval": True,  # the same function, musicidx.evaluate.splits.grouped_folds
            },
            "closed": {r["class_weight"] or "none": r for r in closed},
            "open": opened,
            "fold_seed_spread": spread,
            "seconds": seconds,
        }
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
