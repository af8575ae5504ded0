"""Judge an encoder recipe by the three measurements a shortcut cannot pass, over several seeds.

    python -m benchmarks.accuracy.recipes NAME '{"features": {...}, "model": {...}, "train": {...}, "k": 10}' \\
        [--seeds 3] [--cross DIR] [--report DIR] [--skip-eval] [--no-open] [--corpus DIR]

For one recipe (the JSON overrides FeatureConfig / ModelConfig / TrainConfig fields; ``{}`` is
recipe R0, the configs' own defaults -- not today's default recipe S3, which
``accuracy.encoder_eval`` judges from recipe files):

1. ``musicidx eval`` on the challenge training folder (``--corpus``, ``../shared/data/musicians``
   by default), the same folds as always (fold seed 0), every held-out track also asked in the
   four re-orchestrations, once per training seed 0..N-1: balanced accuracy per orchestration,
   agreement across them, leave-one-composer-out AUROC per orchestration — mean ± std over the
   seeds;
2. with ``--cross DIR`` (a labelled folder, e.g. the music21 export of ``data.export_music21``):
   for each seed, build an index of the whole training folder with the recipe and evaluate it on
   DIR (``musicidx eval --index``): accuracy on the known composers, AUROC known vs new.

Appends one JSON line per run to ``benchmarks/results/recipes.jsonl``; ``tables.recipes_table``
prints the table in BENCHMARKS.md. ``../shared/data/test`` and ``blind`` are never read.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.paths import RESULTS, add_corpus_argument
from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig
from musicidx.encoder.recipe import DEFAULT_RECIPE, SCRATCH_RECIPE
from musicidx.evaluate.cross import evaluate_index
from musicidx.evaluate.metrics import summarise
from musicidx.evaluate.protocol import evaluate
from musicidx.evaluate.report import write_report
from musicidx.indexer.build import build_index


def configs(spec: dict[str, Any]) -> tuple[FeatureConfig, ModelConfig, TrainConfig, int]:
    model = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("model", {}).items()}
    return (
        FeatureConfig(**spec.get("features", {})),
        ModelConfig(**model),
        TrainConfig(**spec.get("train", {})),
        int(spec.get("k", DEFAULT_RECIPE.k)),
    )


def run_eval(
    corpus: Path, spec: dict[str, Any], seeds: int, report: Path | None, *, open_set: bool = True
) -> dict[str, Any]:
    features, model, train, k = configs(spec)
    t = time.perf_counter()
    r = evaluate(
        corpus,
        folds=5,
        seed=0,
        seeds=range(seeds),
        recipe=SCRATCH_RECIPE,
        features=features,
        model_config=model,
        train_config=train,
        k=k,
        open_set=open_set,
    )
    if report is not None:
        write_report(r, report)
    return {
        "summary": {key: {"mean": round(v["mean"], 4), "std": round(v["std"], 4)} for key, v in r.summary.items()},
        "recall_seed0": {c: round(v, 3) for c, v in r.closed["recall"].items()},
        "auroc_per_composer_seed0": {c: round(m["auroc"], 3) for c, m in r.open.get("per_composer", {}).items()},
        "eval_seconds": round(time.perf_counter() - t),
    }


def run_cross(corpus: Path, spec: dict[str, Any], seeds: int, folder: Path) -> dict[str, Any]:
    features, model, train, k = configs(spec)
    per_seed, build_s = [], []
    for s in range(seeds):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            build_index(
                corpus,
                out=Path(tmp) / "idx",
                recipe=SCRATCH_RECIPE,
                features=features,
                model_config=model,
                train_config=TrainConfig(**{**train.to_dict(), "seed": s}),
                k=k,
            )
            build_s.append(time.perf_counter() - t)
            c = evaluate_index(Path(tmp) / "idx", folder)
        per_seed.append(
            {
                "accuracy": c.known["accuracy"],
                "balanced_accuracy": c.known["balanced_accuracy"],
                "auroc": c.open["auroc"],
                "fpr_at_95tpr": c.open["fpr_at_95tpr"],
                "recall": c.known["recall"],
                "auroc_per_new": {n: m["auroc"] for n, m in c.open["per_new_composer"].items()},
            }
        )
    out: dict[str, Any] = {
        key: {k2: round(v, 4) for k2, v in summarise([p[key] for p in per_seed]).items() if k2 != "values"}
        for key in ("accuracy", "balanced_accuracy", "auroc", "fpr_at_95tpr")
    }
    out["recall_mean"] = {
        c: round(float(np.mean([p["recall"][c] for p in per_seed])), 3) for c in per_seed[0]["recall"]
    }
    out["build_seconds_median"] = round(float(np.median(build_s)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("spec", nargs="?", default="{}")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cross", type=Path, help="labelled folder for the cross-corpus evaluation")
    ap.add_argument("--report", type=Path, help="write eval's report.json and plots here")
    ap.add_argument("--skip-eval", action="store_true", help="only the cross-corpus evaluation")
    ap.add_argument("--no-open", action="store_true", help="closed set only (a quick screen)")
    add_corpus_argument(ap)
    a = ap.parse_args()
    spec = json.loads(a.spec)
    row: dict[str, Any] = {"variant": a.name, "spec": spec, "seeds": a.seeds}
    if not a.skip_eval:
        row["eval"] = run_eval(a.corpus, spec, a.seeds, a.report, open_set=not a.no_open)
    if a.cross is not None:
        row["cross"] = run_cross(a.corpus, spec, a.seeds, a.cross)
    with open(RESULTS / "recipes.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
