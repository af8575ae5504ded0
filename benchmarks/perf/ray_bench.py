"""The Ray build beside the local build, on this machine: throughput, overhead, and equality.

    python -m benchmarks.perf.ray_bench features CORPUS [--work DIR] [--out results.json]
    python -m benchmarks.perf.ray_bench build CORPUS --test TEST_DIR [--work DIR] [--out results.json]

``features``: the feature stage of a build (parse, render the clip windows, CQT, write the
cache) over every file of CORPUS, first with the local process pool and then as a Ray Data
stage on a single-node Ray cluster started for it (its start-up is part of its time, and also
given alone); each from an empty cache.  Prints files/s, audio seconds rendered per second, the
ratio Ray/local (the issue's target: at most 1.25), and how many files' features are bit for
bit equal between the two.

``build``: two whole ``musicidx build`` processes, each from an empty cache, the local one and
``--ray auto``, with their wall times; then ``musicidx score TEST_DIR`` with each index, and
whether the two CSVs (composer, votes, novelty of every file) and the two indexes are identical.

Both modes write the numbers as JSON (``--out``), and nothing else outside ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import ray

    return {
        "cpu": cpu,
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "ray": ray.__version__,
    }


def features(corpus: Path, work: Path) -> dict[str, Any]:
    from musicidx.encoder.runtime import default_workers
    from musicidx.indexer.distributed import ray_session, track_features_equal
    from musicidx.indexer.prepare import prepare_corpus

    t0 = time.monotonic()
    local = prepare_corpus(corpus, cache_dir=work / "cache-local")
    t_local = time.monotonic() - t0
    t0 = time.monotonic()
    with ray_session("auto") as session:
        t_start = time.monotonic() - t0
        dist = prepare_corpus(corpus, cache_dir=work / "cache-ray", ray=session)
        cluster = session.describe()
    t_ray = time.monotonic() - t0
    same = sum(track_features_equal(a, b) for a, b in zip(local.features, dist.features))
    clips = sum(len(f.feats) for f in local.features)
    return {
        "mode": "features",
        "corpus": str(corpus),
        "files": len(local.tracks) + len(local.skipped),
        "usable_files": len(local.tracks),
        "skipped": {"local": len(local.skipped), "ray": len(dist.skipped)},
        "clips": clips,
        "rendered_audio_s": round(local.rendered_seconds, 1),
        "local": {
            "workers": default_workers(),
            "wall_s": round(t_local, 2),
            "files_per_s": len(local.tracks) / t_local,
        },
        "ray": {
            "cluster": cluster,
            "wall_s": round(t_ray, 2),
            "cluster_start_s": round(t_start, 2),
            "files_per_s": len(dist.tracks) / t_ray,
        },
        "ray_over_local": round(t_ray / t_local, 3),
        "features_bit_identical": f"{same} of {len(local.tracks)}",
        "same_files_kept": [t.rel_path for t in local.tracks] == [t.rel_path for t in dist.tracks],
    }


def _run(cmd: list[str]) -> tuple[float, str]:
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return time.monotonic() - t0, r.stdout


def build(corpus: Path, test: Path, work: Path) -> dict[str, Any]:
    import numpy as np

    from musicidx.indexer.format import read_index

    exe = [sys.executable, "-m", "musicidx"]
    out: dict[str, Any] = {"mode": "build", "corpus": str(corpus), "test": str(test)}
    for name, extra in (("local", []), ("ray", ["--ray", "auto"])):
        idx, cache = work / f"idx-{name}", work / f"cache-{name}"
        wall, stdout = _run(
            [*exe, "build", str(corpus), "--out", str(idx), "--cache-dir", str(cache), "--json", *extra]
        )
        report = json.loads(stdout)
        score_wall, _ = _run([*exe, "score", str(test), "--index", str(idx), "--out", str(work / f"{name}.csv")])
        out[name] = {
            "build_wall_s": round(wall, 1),
            "stages_s": {k: round(v, 1) for k, v in report["seconds"].items()},
            "val_balanced_accuracy": report["val_balanced_accuracy"],
            "novelty_threshold": report["novelty_threshold"],
            "clips": report["clips"],
            "ray": report.get("ray"),
            "score_wall_s": round(score_wall, 1),
        }
    a, b = read_index(work / "idx-local"), read_index(work / "idx-ray")
    out["ray_over_local"] = round(out["ray"]["build_wall_s"] / out["local"]["build_wall_s"], 3)
    out["index_vectors_identical"] = bool(
        np.array_equal(
            a.faiss_index.reconstruct_n(0, a.faiss_index.ntotal), b.faiss_index.reconstruct_n(0, b.faiss_index.ntotal)
        )
    )
    out["clips_tables_identical"] = a.clips.equals(b.clips)
    la, lb = (work / "local.csv").read_text(), (work / "ray.csv").read_text()
    out["score_csv_identical"] = la == lb
    out["test_files_scored"] = len(la.splitlines()) - 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["features", "build"])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--test", type=Path, help="folder to score with both indexes (build mode)")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed after)")
    ap.add_argument("--out", type=Path, help="write the JSON here too")
    a = ap.parse_args(argv)
    if a.mode == "build" and a.test is None:
        ap.error("build needs --test")
    work = a.work or Path(tempfile.mkdtemp(prefix="ray-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        res = features(a.corpus, work) if a.mode == "features" else build(a.corpus, a.test, work)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    res["machine"] = machine()
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
