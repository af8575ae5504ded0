"""Print benchmarks/results/ablation.jsonl (``accuracy.ablation``) as the Markdown table in BENCHMARKS.md.

python -m benchmarks.tables.ablation_table
"""

from __future__ import annotations

import argparse
import json

from benchmarks.paths import RESULTS

ALTS = ("low_confidence", "relative", "mean_k", "nearest")


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    rows = [json.loads(line) for line in (RESULTS / "ablation.jsonl").read_text().splitlines() if line]
    print(
        "| variant | accuracy | balanced acc. | macro-F1 | recall Bach/Beeth./Brahms/Schub. | LOCO AUROC | FPR@95 "
        "| OSCR | AUROC of 1−confidence / relative k-dist / mean k-dist / nearest | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rec = "/".join(f"{v:.2f}" for v in r["recall"].values())
        alt_s = " / ".join("–" if r.get(f"auroc_{a}") is None else f"{r[f'auroc_{a}']:.3f}" for a in ALTS)
        print(
            f"| {r['variant']} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} | {r['macro_f1']:.3f} | {rec} "
            f"| {r['auroc']:.3f} | {r['fpr95']:.3f} | {r['oscr']:.3f} | {alt_s} | {r['seconds']} |"
        )


if __name__ == "__main__":
    main()
