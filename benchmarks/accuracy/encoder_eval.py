"""Judge an encoder variant (a recipe file) by every measurement of the pretraining issue.

    python -m benchmarks.accuracy.encoder_eval NAME [--recipe FILE] [--seeds 3] [--corpus DIR] \\
        [--cross m21=/work/m21-export] [--cross lieder=/work/lieder-export] [--skip-eval] [--no-open]

1. ``musicidx eval`` on the challenge training folder (``--corpus``) with the recipe: grouped 5-fold CV (fold
   seed 0) as written and in the four re-orchestrations, agreement, leave-one-composer-out
   AUROC -- over ``--seeds`` training seeds (one for a frozen recipe: it trains nothing);
2. for each ``--cross NAME=DIR`` (a labelled folder: ``data.export_music21``, ``data.export_lieder``):
   an index of the whole training folder built with the recipe (per seed), asked about DIR:
   accuracy and balanced accuracy on the known composers, AUROC known vs new, the share of new
   and of known pieces the calibrated threshold flags, and the same AUROC and flag rate over the
   new composers the pretrained encoder never heard (:func:`heard`: none of their music is in the
   pieces its card lists).

Appends one JSON line to ``benchmarks/results/encoders.jsonl``; ``tables.encoders_table`` prints the
table in BENCHMARKS.md. ``../shared/data/test`` and ``blind`` are never read.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.data.export_music21 import NEW
from benchmarks.paths import RESULTS, add_corpus_argument
from musicidx.encoder.config import FEATURES_VERSION
from musicidx.encoder.recipe import DEFAULT_RECIPE, Recipe, load_recipe
from musicidx.evaluate.cross import evaluate_index
from musicidx.evaluate.metrics import open_set_metrics, summarise
from musicidx.evaluate.protocol import evaluate
from musicidx.indexer.build import build_index

OUT = RESULTS / "encoders.jsonl"


def heard(recipe: Recipe) -> set[str]:
    """New composers of the music21 evaluation whose other pieces the recipe's pretrained encoder
    learned from (unlabelled), read off its card; every other new composer of either set it never
    heard (the Lieder ones are held out whole). music21's ``trecento`` folder holds Ciconia's
    works (PMFC 24)."""
    if recipe.encoder is None:
        return set()
    from musicidx.encoder.pretrained import load_pretrained

    collections = {p["collection"] for p in load_pretrained(recipe.encoder).card["pieces"]}
    out = {c for c, d in NEW.items() if f"music21/{d}" in collections}
    return out | ({"Ciconia"} if "music21/trecento" in collections else set())


def run_eval(corpus: Path, recipe: Recipe, seeds: int, *, open_set: bool) -> dict[str, Any]:
    t = time.perf_counter()
    r = evaluate(corpus, folds=5, seed=0, seeds=range(seeds), recipe=recipe, open_set=open_set)
    return {
        "seeds_run": len(r.seeds),
        "summary": {k: {"mean": round(v["mean"], 4), "std": round(v["std"], 4)} for k, v in r.summary.items()},
        "recall_seed0": {c: round(v, 3) for c, v in r.closed["recall"].items()},
        "flagged_loco": {k: round(r.open["mean"][k], 3) for k in ("unknown_flagged", "known_flagged") if r.open},
        "eval_seconds": round(time.perf_counter() - t),
    }


def cross_numbers(c: Any, heard_composers: set[str]) -> dict[str, Any]:
    rows = c.rows
    known = np.array([r["known"] for r in rows], bool)
    nov = np.array([r["novelty"] for r in rows])
    never = np.array([(not r["known"]) and r["composer"] not in heard_composers for r in rows], bool)
    correct = np.array([r["answer"] == r["composer"] for r in rows])[known]
    flag = np.array([bool(r["is_new"]) for r in rows])
    out = {
        "accuracy": c.known.get("accuracy"),
        "balanced_accuracy": c.known.get("balanced_accuracy"),
        "auroc": c.open.get("auroc"),
        "flagged_new": c.open.get("flagged_new"),
        "flagged_known": c.known.get("flagged_new"),
        "known_tracks": int(known.sum()),
        "new_tracks": int((~known).sum()),
        "never_heard_tracks": int(never.sum()),
        "recall": c.known.get("recall", {}),
    }
    if never.any() and known.any():
        out["auroc_never_heard"] = open_set_metrics(nov[known], nov[never], correct)["auroc"]
        out["flagged_never_heard"] = float(flag[never].mean())
    return out


def run_cross(corpus: Path, recipe: Recipe, seeds: int, folders: dict[str, Path]) -> dict[str, Any]:
    per: dict[str, list[dict[str, Any]]] = {name: [] for name in folders}
    build_s = []
    for s in range(1 if recipe.frozen else seeds):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            r = recipe.replace(train=recipe.train.__class__(**{**recipe.train.to_dict(), "seed": s}))
            build_index(corpus, out=Path(tmp) / "idx", recipe=r)
            build_s.append(time.perf_counter() - t)
            for name, folder in folders.items():
                per[name].append(cross_numbers(evaluate_index(Path(tmp) / "idx", folder), heard(recipe)))
    out: dict[str, Any] = {"build_seconds_median": round(float(np.median(build_s)))}
    for name, runs in per.items():
        keys = [k for k, v in runs[0].items() if isinstance(v, float | int) and v is not None]
        out[name] = {
            k: {k2: round(v, 4) for k2, v in summarise([float(x[k]) for x in runs]).items() if k2 != "values"}
            for k in keys
        }
        out[name]["recall_seed0"] = runs[0]["recall"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("--recipe", type=Path, help="recipe file over the default (none: the default recipe)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cross", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--no-open", action="store_true", help="closed set only")
    add_corpus_argument(ap)
    a = ap.parse_args()
    recipe = DEFAULT_RECIPE if a.recipe is None else load_recipe(a.recipe)
    folders = {c.split("=", 1)[0]: Path(c.split("=", 1)[1]) for c in a.cross}
    row: dict[str, Any] = {
        "variant": a.name,
        "recipe_file": None if a.recipe is None else str(a.recipe),
        "recipe": recipe.to_dict(),
        "seeds": 1 if recipe.frozen else a.seeds,
        "features_version": FEATURES_VERSION,  # 2: FluidSynth's dithered 16-bit output; 3: its float output
    }
    if not a.skip_eval:
        row["eval"] = run_eval(a.corpus, recipe, a.seeds, open_set=not a.no_open)
    if folders:
        row["cross"] = run_cross(a.corpus, recipe, a.seeds, folders)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
