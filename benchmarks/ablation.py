"""Run `musicidx eval` (same folds, same seed) for encoder variants and append the numbers.

    python benchmarks/ablation.py NAME '{"train": {...}, "model": {...}, "features": {...}, "k": 10}'

Each run appends one JSON line to benchmarks/ablation.jsonl: the variant, closed-set accuracy,
balanced accuracy, macro-F1, open-set mean AUROC / FPR@95 / OSCR, and wall time. The table in
BENCHMARKS.md is made from that file.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig
from musicidx.encoder.recipe import DEFAULT_RECIPE
from musicidx.query.evaluate import evaluate, write_report

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent.parent / "shared" / "data" / "musicians"


def main() -> None:
    name, spec = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
    model = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("model", {}).items()}
    t = time.perf_counter()
    r = evaluate(
        CORPUS,
        folds=5,
        seed=0,
        features=FeatureConfig(**spec.get("features", {})),
        model_config=ModelConfig(**model),
        train_config=TrainConfig(**spec.get("train", {})),
        k=spec.get("k", DEFAULT_RECIPE.k),
    )
    if len(sys.argv) > 3:
        write_report(r, sys.argv[3])
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
    with open(HERE / "ablation.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
