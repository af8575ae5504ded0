"""Kill `musicidx build` with SIGKILL at random moments; the index at --out must always load.

Builds a small generated corpus (``benchmarks.data.tiny_corpus``) once (the "previous index"),
then for each trial starts a build of the same corpus with another seed into the same --out and
kills it after a random delay drawn uniformly over a full build's duration. After each kill,
`read_index(--out)` must succeed with every consistency check, and be either the previous index
or a complete new one.

    python -m benchmarks.perf.kill_trials [--trials 25] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.data.tiny_corpus import write_tiny_corpus


def build_cmd(corpus: Path, out: Path, seed: int) -> list[str]:
    exe = Path(sys.executable).with_name("musicidx")
    return [
        str(exe),
        "build",
        str(corpus),
        "--out",
        str(out),
        "--seed",
        str(seed),
        "--epochs",
        "2",
        "--workers",
        "1",
        "--clips-per-track",
        "3",
        "--no-cache",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    from musicidx.indexer.format import read_index

    rnd = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        corpus, out = Path(tmp) / "corpus", Path(tmp) / "idx"
        write_tiny_corpus(corpus)
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
        t = time.perf_counter()
        subprocess.run(build_cmd(corpus, out, 0), env=env, check=True, capture_output=True)
        full = time.perf_counter() - t
        seen = {read_index(out).manifest.encoder_sha256}
        results = {"trials": 0, "loaded": 0, "previous": 0, "new": 0, "completed_before_kill": 0, "full_build_s": full}
        for trial in range(1, args.trials + 1):
            before = read_index(out).manifest.encoder_sha256
            delay = rnd.uniform(0.0, full * 1.05)
            proc = subprocess.Popen(
                build_cmd(corpus, out, trial), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            time.sleep(delay)
            finished = proc.poll() is not None
            if not finished:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
            results["trials"] += 1
            results["completed_before_kill"] += finished
            try:
                after = read_index(out).manifest.encoder_sha256
            except Exception as e:  # the whole point: this must never happen
                print(f"trial {trial}: kill after {delay:.2f}s left a broken index: {e}")
                continue
            results["loaded"] += 1
            results["previous" if after == before else "new"] += 1
            seen.add(after)
            print(
                f"trial {trial:2d}: killed after {delay:5.2f}s {'(build had finished)' if finished else ''}"
                f"-> index loads, {'previous' if after == before else 'new'} one",
                flush=True,
            )
        leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".idx.tmp-")]
        results["temporary_dirs_left"] = len(leftovers)
    print(json.dumps(results, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    if results["loaded"] != results["trials"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
