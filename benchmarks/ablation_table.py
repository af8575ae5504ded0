"""Print benchmarks/ablation.jsonl as the Markdown table in BENCHMARKS.md."""

from __future__ import annotations

import json
from pathlib import Path

rows = [
    json.loads(line) for line in (Path(__file__).resolve().parent / "ablation.jsonl").read_text().splitlines() if line
]
print(
    "| variant | accuracy | balanced acc. | macro-F1 | recall Bach/Beeth./Brahms/Schub. | LOCO AUROC | FPR@95 | OSCR "
    "| AUROC of 1−confidence | wall s |"
)
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    rec = "/".join(f"{v:.2f}" for v in r["recall"].values())
    alt = r.get("auroc_low_confidence")
    alt_s = "" if alt is None else f"{alt:.3f}"
    print(
        f"| {r['variant']} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} | {r['macro_f1']:.3f} | {rec} "
        f"| {r['auroc']:.3f} | {r['fpr95']:.3f} | {r['oscr']:.3f} | {alt_s} | {r['seconds']} |"
    )
