"""Run `musicidx eval` (same folds, same seed) for encoder variants and append the numbers.

    python -m benchmarks.accuracy.ablation NAME '{"train": {...}, "model": {...}, "features": {...}, "k": 10}' \\
        [REPORT_DIR] [--corpus ../shared/data/musicians]

Each run appends one JSON line to benchmarks/results/ablation.jsonl: the variant, closed-set accuracy,
balanced accuracy, macro-F1, open-set mean AUROC / FPR@95 / OSCR, and wall time. The table in
BENCHMARKS.md is made from that file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.paths import RESULTS, add_corpus_argument
from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig
from musicidx.encoder.recipe import DEFAULT_RECIPE, SCRATCH_RECIPE
from musicidx.evaluate.protocol import evaluate
from musicidx.evaluate.report import write_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("spec", nargs="?", default="{}", help="JSON overrides of the configs and k")
    ap.add_argument("report", nargs="?", type=Path, help="also write eval's report here")
    add_corpus_argument(ap)
    a = ap.parse_args()
    name, spec = a.name, json.loads(a.spec)
    model = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("model", {}).items()}
    t = time.perf_counter()
    r = evaluate(
        a.corpus,
        folds=5,
        seed=0,
        recipe=SCRATCH_RECIPE,
        features=FeatureConfig(**spec.get("features", {})),
        model_config=ModelConfig(**model),
        train_config=TrainConfig(**spec.get("train", {})),
        k=spec.get("k", DEFAULT_RECIPE.k),
    )
    if a.report is not None:
        write_report(r, a.report)
    row = {
        "variant": name,
        "spec": spec,
        "accuracy": round(r.closed["accuracy"], 3),
        "balanced_accuracy": round(r.closed["balanced_accuracy"], 3),
        "macro_f1": round(r.closed["macro_f1"], 3),
        "recall": {k: round(v, 2) for k, v in r.closed["recall"].items()},
        "auroc": round(r.open["mean"]["auroc"], 3),
        "fpr95": round(r.open["mean"]["fpr_at_95tpr"], 3),
        "oscr": round(r.open["mean"]["oscr"], 3),
        **{k: round(v, 3) for k, v in r.open["mean"].items() if k.startswith("auroc_")},
        "auroc_per_composer": {k: round(v["auroc"], 3) for k, v in r.open["per_composer"].items()},
        "seconds": round(time.perf_counter() - t),
    }
    with open(RESULTS / "ablation.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
