"""Enrolment without retraining, on the challenge data.

Build an index without COMPOSER; `musicidx add` most of COMPOSER's works (grouped by work, so
held-out movements never share a work with enrolled ones); then query COMPOSER's held-out works
and report how many are named COMPOSER. For comparison, the same held-out works are queried
against the index before enrolment (where COMPOSER cannot be named, and should look new).

    python -m benchmarks.accuracy.enrol_experiment [--composer Schubert] [--held-out-works 2] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.paths import add_corpus_argument


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--composer", default="Schubert")
    ap.add_argument("--held-out-works", type=int, default=3)
    ap.add_argument("--json-out", type=Path)
    add_corpus_argument(ap)
    args = ap.parse_args()
    corpus = args.corpus
    from musicidx.indexer.corpus import work_of

    exe = str(Path(sys.executable).with_name("musicidx"))
    files = sorted((corpus / args.composer).glob("*.mid"))
    works = sorted({work_of(f) for f in files})
    held = set(works[:: max(1, len(works) // args.held_out_works)][: args.held_out_works])
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        base, enrol, query = t / "base", t / "enrol" / args.composer, t / "query"
        for d in (base, enrol, query):
            d.mkdir(parents=True)
        for c in sorted(p.name for p in corpus.iterdir() if p.is_dir() and p.name != args.composer):
            os.symlink(corpus / c, base / c)
        for f in files:
            os.symlink(f, (query if work_of(f) in held else enrol) / f.name)
        run = lambda *a: subprocess.run([exe, *a], check=True, capture_output=True, text=True).stdout  # noqa: E731
        run("build", str(base), "--out", str(t / "idx"))
        before = json.loads(run("query", *map(str, sorted(query.glob("*.mid"))), "--index", str(t / "idx"), "--json"))
        added = json.loads(run("add", str(t / "enrol"), "--index", str(t / "idx"), "--json"))
        after = json.loads(run("query", *map(str, sorted(query.glob("*.mid"))), "--index", str(t / "idx"), "--json"))
    before = before if isinstance(before, list) else [before]
    after = after if isinstance(after, list) else [after]
    result = {
        "composer": args.composer,
        "held_out_works": sorted(held),
        "held_out_tracks": len(after),
        "enrolled_tracks": added["added_tracks"],
        "threshold_before_after": [added["threshold_before"], added["threshold_after"]],
        "before_add_flagged_new": sum(a["is_new"] for a in before),
        "after_add_named_correctly": sum(a["composer"] == args.composer for a in after),
        "after_add_flagged_new": sum(a["is_new"] for a in after),
        "answers_after": [
            {
                "file": Path(a["file"]).name,
                "composer": a["composer"],
                "confidence": round(a["confidence"], 3),
                "is_new": a["is_new"],
            }
            for a in after
        ],
    }
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
