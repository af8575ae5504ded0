"""Which novelty statistic and which calibration make the "new composer" verdict fire off-distribution?

    python -m benchmarks.accuracy.novelty_calibration NAME --recipe FILE [--corpus DIR] \\
        --cross m21=/work/m21-export --cross lieder=/work/lieder-export [--k 10]

For a frozen recipe (a pretrained encoder used as shipped: every clip has one embedding, so the
whole study runs on embeddings computed once), on the training folder and each cross-corpus folder:

statistics (each a k-th-neighbour statistic, the track's value the median over its clips)
  ``kth``       the distance to the k-th nearest training clip (what ``musicidx query`` reports);
  ``relative``  that distance divided by the median k-th-neighbour distance of those k neighbours
                among the other works of the index (density-normalised, local-outlier-factor style).

calibrations (all on the training folder alone; nothing is tuned on a cross-corpus set)
  ``lowo95``        the build's: the threshold accepts 95 % of the tracks, each scored against the
                    index without its own work (leave one work out);
  ``loco_youden``   composers held out in turn (leave one composer out): the threshold that best
                    separates each left-out composer's tracks from the known tracks of other works
                    (maximum of true-positive minus false-positive rate, pooled over the folds).

For each statistic: AUROC known vs new on each cross-corpus set and on leave-one-composer-out;
for each statistic and calibration: the share of new and of known pieces flagged.  Writes
``benchmarks/results/novelty_calibration.json`` (one entry per NAME); ``../shared/data/test`` and
``blind`` are never read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.paths import RESULTS, add_corpus_argument
from musicidx.encoder.model import embed
from musicidx.encoder.pretrained import load_pretrained
from musicidx.encoder.recipe import load_recipe
from musicidx.evaluate.metrics import open_set_metrics
from musicidx.indexer.ann import make_faiss_index
from musicidx.indexer.neighbours import Neighbours, clip_novelty, search
from musicidx.indexer.prepare import prepare_corpus, stack_clips

OUT = RESULTS / "novelty_calibration.json"
STATS = ("kth", "relative")


class Space:
    """The training clips' embeddings, with each clip's track, composer and work, searchable with
    any subset of them left out."""

    def __init__(self, emb: np.ndarray, track: np.ndarray, composer: np.ndarray, work: np.ndarray, k: int) -> None:
        self.emb, self.track, self.composer, self.work, self.k = emb, track, composer, work, k

    def neighbours(self, q: np.ndarray, keep: np.ndarray) -> Neighbours:
        """The k nearest of the ``keep`` clips for each row of ``q`` (ids into the whole space)."""
        ids = np.flatnonzero(keep)
        index, _ = make_faiss_index(self.emb.shape[1], len(ids), "flat")
        index.add_with_ids(np.ascontiguousarray(self.emb[ids]), ids.astype(np.int64))
        return search(index, q, self.k)

    def local_kth(self, keep: np.ndarray) -> np.ndarray:
        """Each kept clip's k-th-neighbour distance among the kept clips of *other* works (NaN
        for the others): the density the ``relative`` statistic divides by."""
        out = np.full(len(self.emb), np.nan)
        for w in np.unique(self.work[keep]):
            mine = keep & (self.work == w)
            nb = self.neighbours(self.emb[mine], keep & (self.work != w))
            out[mine] = clip_novelty(nb, self.k)
        return out

    def stats(self, q: np.ndarray, q_track: np.ndarray, keep: np.ndarray, local: np.ndarray) -> dict[str, np.ndarray]:
        """Per query track (in ``np.unique(q_track)`` order): each statistic."""
        nb = self.neighbours(q, keep)
        own = clip_novelty(nb, self.k)
        dens = np.array([np.nanmedian(local[row[row >= 0]]) for row in nb.ids])
        rel = own / np.maximum(dens, 1e-6)
        tracks = np.unique(q_track)
        return {
            "kth": np.array([np.median(own[q_track == t]) for t in tracks]),
            "relative": np.array([np.median(rel[q_track == t]) for t in tracks]),
        }


def lowo(space: Space, keep_composers: set[str] | None = None) -> dict[str, np.ndarray]:
    """Every track of the kept composers scored against the kept clips of other works."""
    keep = np.isin(space.composer, sorted(keep_composers)) if keep_composers else np.ones(len(space.emb), bool)
    local = space.local_kth(keep)
    values: dict[str, list[float]] = {s: [] for s in STATS}
    for w in np.unique(space.work[keep]):
        mine = keep & (space.work == w)
        st = space.stats(space.emb[mine], space.track[mine], keep & (space.work != w), local)
        for s in STATS:
            values[s] += list(st[s])
    return {s: np.array(v) for s, v in values.items()}


def youden(known: np.ndarray, new: np.ndarray) -> float:
    """The threshold (flag above it) maximising true-positive minus false-positive rate."""
    cands = np.unique(np.r_[known, new])
    best, best_j = float(cands[-1]), -1.0
    for t in cands:
        j = float((new > t).mean() - (known > t).mean())
        if j > best_j:
            best, best_j = float(t), j
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    add_corpus_argument(ap)
    ap.add_argument("--recipe", type=Path, required=True, help="a frozen recipe (encoder = NAME)")
    ap.add_argument("--cross", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--k", type=int, default=None, help="neighbours (default: the recipe's)")
    args = ap.parse_args()
    recipe = load_recipe(args.recipe)
    if not recipe.frozen:
        ap.error("the study needs a frozen recipe (a pretrained encoder, finetune and head false)")
    k = args.k or recipe.k
    model = load_pretrained(recipe.encoder).encoder(recipe.model, recipe.features)

    corpus = prepare_corpus(args.corpus, features=recipe.features)
    every = stack_clips(corpus, np.arange(len(corpus.tracks)))
    composer = np.array([corpus.tracks[t].composer for t in every.track])
    work = np.array([corpus.tracks[t].group for t in every.track])
    space = Space(embed(model, every.feats), every.track, composer, work, k)
    del every
    names = sorted(set(composer))

    # calibration 1: leave one work out on every composer (the build's)
    known_lowo = lowo(space)
    thresholds = {s: {"lowo95": float(np.quantile(known_lowo[s], recipe.accept_rate, method="higher"))} for s in STATS}
    # calibration 2: leave one composer out; the known tracks still leave their own work out
    loco_known: dict[str, list[float]] = {s: [] for s in STATS}
    loco_new: dict[str, list[float]] = {s: [] for s in STATS}
    loco_auroc: dict[str, list[float]] = {s: [] for s in STATS}
    for c in names:
        kept = set(names) - {c}
        known = lowo(space, kept)
        keep = composer != c
        out = composer == c
        local = space.local_kth(keep)
        new = space.stats(space.emb[out], space.track[out], keep, local)
        for s in STATS:
            loco_known[s] += list(known[s])
            loco_new[s] += list(new[s])
            loco_auroc[s].append(open_set_metrics(known[s], new[s], np.ones(len(known[s]), bool))["auroc"])
    for s in STATS:
        thresholds[s]["loco_youden"] = youden(np.array(loco_known[s]), np.array(loco_new[s]))

    result: dict[str, Any] = {
        "recipe_file": str(args.recipe),
        "encoder": recipe.encoder,
        "k": k,
        "thresholds": thresholds,
        "loco": {s: {"auroc": round(float(np.mean(loco_auroc[s])), 4)} for s in STATS},
    }
    for s in STATS:
        for cal, t in thresholds[s].items():
            result["loco"][s][f"flagged_new_{cal}"] = round(float((np.array(loco_new[s]) > t).mean()), 4)
            result["loco"][s][f"flagged_known_{cal}"] = round(float((np.array(loco_known[s]) > t).mean()), 4)
    all_keep = np.ones(len(space.emb), bool)
    local_all = space.local_kth(all_keep)
    for spec in args.cross:
        name, folder = spec.split("=", 1)
        cross = prepare_corpus(folder, features=recipe.features)
        clips = stack_clips(cross, np.arange(len(cross.tracks)))
        st = space.stats(embed(model, clips.feats), clips.track, all_keep, local_all)
        truth = np.array([cross.tracks[t].composer for t in np.unique(clips.track)])
        known = np.isin(truth, names)
        entry: dict[str, Any] = {"known_tracks": int(known.sum()), "new_tracks": int((~known).sum())}
        for s in STATS:
            m = open_set_metrics(st[s][known], st[s][~known], np.ones(int(known.sum()), bool))
            entry[s] = {"auroc": round(m["auroc"], 4)}
            for cal, t in thresholds[s].items():
                entry[s][f"flagged_new_{cal}"] = round(float((st[s][~known] > t).mean()), 4)
                entry[s][f"flagged_known_{cal}"] = round(float((st[s][known] > t).mean()), 4)
        result[name] = entry
    print(json.dumps(result, indent=1))
    everything = json.loads(OUT.read_text()) if OUT.is_file() else {}
    everything[args.name] = result
    OUT.write_text(json.dumps(everything, indent=1) + "\n")


if __name__ == "__main__":
    main()
