"""`musicidx query one.mid` as a whole process, and `musicidx score` of a folder.

    python -m benchmarks.perf.query_bench --index idx [--file one.mid] [--folder ../shared/data/test] [--repeats 5]

Both are timed as a user sees them after `musicidx build`: a fresh process each time (imports,
index and encoder loading, rendering, CQT, embedding, search) with the cache the build left
(CQT kernels, SoundFont hash). Query features are never cached, so every run renders and
analyses its file; `--cold` also empties the cache for each run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.paths import TEST_FOLDER, TRAINING_CORPUS

COLD = False


def run(cmd: list[str]) -> float:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache} if COLD else dict(os.environ)
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
    if proc.returncode not in (0, 3):
        sys.exit(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--file", type=Path, default=TRAINING_CORPUS / "Bach" / "Cello Suite 3_BWV1009_2217_cs3-1pre.mid")
    ap.add_argument("--folder", type=Path, default=TEST_FOLDER)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cold", action="store_true", help="an empty cache for every run")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    global COLD
    COLD = args.cold
    exe = str(Path(sys.executable).with_name("musicidx"))
    help_t = [run([exe, "--help"]) for _ in range(args.repeats)]
    q = [run([exe, "query", str(args.file), "--index", str(args.index)]) for _ in range(args.repeats)]
    with tempfile.TemporaryDirectory() as tmp:
        s = [
            run([exe, "score", str(args.folder), "--index", str(args.index), "--out", f"{tmp}/s.csv"]) for _ in range(3)
        ]
    n = len(list(args.folder.glob("*.mid")))
    summary = {
        "cache": "empty" if COLD else "as left by musicidx build",
        "help_median_s": statistics.median(help_t),
        "query_one_file_median_s": statistics.median(q),
        "query_runs_s": q,
        "score_folder": str(args.folder),
        "score_files": n,
        "score_median_s": statistics.median(s),
        "score_runs_s": s,
    }
    print(f"musicidx --help: median {summary['help_median_s']:.2f} s")
    print(
        f"musicidx query {args.file.name}: median {summary['query_one_file_median_s']:.2f} s over {args.repeats} runs"
    )
    print(f"musicidx score {args.folder} ({n} files): median {summary['score_median_s']:.1f} s over 3 runs")
    print(json.dumps(summary, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
