"""Print benchmarks/results/recipes.jsonl (``accuracy.recipes``) as the Markdown table in BENCHMARKS.md,
with the note-statistics peer (``accuracy.note_baseline``, ``results/note_baseline.json``) as its
first row.

    python -m benchmarks.tables.recipes_table
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from benchmarks.paths import RESULTS

VIEWS = ("original", "piano", "strings", "winds", "random")


def ms(d: dict[str, Any] | None, key: str) -> str:
    if d is None or key not in d:
        return "–"
    v = d[key]
    return f"{v['mean']:.3f} ± {v['std']:.3f}" if v.get("std") else f"{v['mean']:.3f}"


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    head = (
        "| recipe | seeds | CV bal. acc. as written | piano | strings | winds | random GM | agreement "
        "| LOCO AUROC as written | LOCO AUROC piano / strings / winds / random | cross acc. (known) | cross AUROC "
        "| eval s | build s |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    nb = json.loads((RESULTS / "note_baseline.json").read_text())
    loco = nb["open"]["mean"]["knn"]["auroc"]
    print(
        f"| peer: note statistics + logistic regression (reads the MIDI; timbre-blind) | – "
        f"| {nb['closed']['balanced_accuracy']:.3f} | = | = | = | = | 1 (by construction) | {loco:.3f} | = "
        f"| {nb['cross']['accuracy']:.3f} | {nb['cross']['overall']['knn']['auroc']:.3f} | {nb['seconds']:.0f} | – |"
    )
    path = RESULTS / "recipes.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x] if path.exists() else []
    for r in rows:
        s = r.get("eval", {}).get("summary")
        c = r.get("cross")
        orch = " / ".join(ms(s, f"open.{v}.auroc") for v in VIEWS[1:])
        print(
            f"| {r['variant']} | {r['seeds']} | "
            + " | ".join(ms(s, f"closed.{v}.balanced_accuracy") for v in VIEWS)
            + f" | {ms(s, 'closed.agreement')} | {ms(s, 'open.original.auroc')} | {orch} "
            f"| {ms(c, 'accuracy')} | {ms(c, 'auroc')} | {r.get('eval', {}).get('eval_seconds', '–')} "
            f"| {c.get('build_seconds_median', '–') if c else '–'} |"
        )


if __name__ == "__main__":
    main()
