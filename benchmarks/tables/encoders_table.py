"""Print ``benchmarks/results/encoders.jsonl`` (``accuracy.encoder_eval``) as the table in
BENCHMARKS.md, the note-statistics peer (``accuracy.note_baseline``, one results file per
cross-corpus set) first.

    python -m benchmarks.tables.encoders_table [--peer m21=benchmarks/results/note_baseline_m21.json ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.paths import RESULTS

VIEWS = ("original", "piano", "strings", "winds", "random")
SETS = ("m21", "lieder")


def ms(d: dict[str, Any] | None, key: str) -> str:
    if not d or key not in d or d[key] is None:
        return "–"
    v = d[key]
    if not isinstance(v, dict):
        return f"{v:.3f}"
    return f"{v['mean']:.3f} ± {v['std']:.3f}" if v.get("std") else f"{v['mean']:.3f}"


def cross_cells(c: dict[str, Any] | None, pretrained: bool) -> str:
    """The cross-corpus cells; "never heard" only means something for a pretrained encoder."""
    cells = []
    for s in SETS:
        d = (c or {}).get(s)
        never = ms(d, "auroc_never_heard") if pretrained else "–"
        cells += [ms(d, "accuracy"), ms(d, "auroc"), never, ms(d, "flagged_new"), ms(d, "flagged_known")]
    return " | ".join(cells)


#: How each FEATURES_VERSION rendered (rows written before the field existed are version 2).
RENDERERS = {2: "16-bit", 3: "float"}


def merged_rows(path: Path) -> list[dict[str, Any]]:
    """One row per variant: a later line's parts (eval, cross) complete or replace an earlier one's."""
    rows: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.strip():
            r = json.loads(line)
            rows.setdefault(r["variant"], {}).update(r)
    return list(rows.values())


def peer_row(peers: dict[str, Path]) -> str:
    first = json.loads(next(iter(peers.values())).read_text())
    loco = first["open"]["mean"]["knn"]["auroc"]
    cells = []
    for s in SETS:
        if s not in peers:
            cells += ["–"] * 5
            continue
        cr = json.loads(peers[s].read_text())["cross"]
        cells += [f"{cr['accuracy']:.3f}", f"{cr['overall']['knn']['auroc']:.3f}", "–", "–", "–"]
    return (
        "| peer: note statistics + logistic regression (reads the MIDI) | – | – "
        f"| {first['closed']['balanced_accuracy']:.3f}"
        f" | = | = | = | = | 1 | {loco:.3f} | " + " | ".join(cells) + " | – |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--peer", action="append", default=[], metavar="SET=FILE", help="accuracy.note_baseline's --json-out for a set"
    )
    a = ap.parse_args()
    peers = {p.split("=", 1)[0]: Path(p.split("=", 1)[1]) for p in a.peer}
    head = (
        "| variant | audio | seeds | CV bal. acc. as written | piano | strings | winds | random GM "
        "| agreement | LOCO AUROC "
        + "".join(
            f"| {s} acc. (known) | {s} AUROC | {s} AUROC never-heard | {s} new flagged | {s} known flagged "
            for s in SETS
        )
        + "| eval s |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    if peers:
        print(peer_row(peers))
    for r in merged_rows(RESULTS / "encoders.jsonl"):
        s = r.get("eval", {}).get("summary")
        print(
            f"| {r['variant']} | {RENDERERS[r.get('features_version', 2)]} | {r['seeds']} | "
            + " | ".join(ms(s, f"closed.{v}.balanced_accuracy") for v in VIEWS)
            + f" | {ms(s, 'closed.agreement')} | {ms(s, 'open.original.auroc')} "
            f"| {cross_cells(r.get('cross'), r['recipe'].get('encoder') is not None)} "
            f"| {r.get('eval', {}).get('eval_seconds', '–')} |"
        )


if __name__ == "__main__":
    main()
