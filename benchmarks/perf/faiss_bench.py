"""FAISS latency and recall@10 against exact search, for the index musicidx builds at each size.

    python -m benchmarks.perf.faiss_bench [--sizes 10000 100000 1000000] [--queries 1000]
                                          [--ef-sweep 16 32 64 128 256] [--json-out faiss.json]

Vectors: 128-d unit vectors drawn from a mixture of 256 Gaussian clusters (unit-norm centres,
isotropic noise of total norm ~0.35 around each, then renormalised). Real clip embeddings
cluster by piece and composer, so uniform noise would be the wrong test; within a cluster the
noise is isotropic, which makes the nearest neighbours nearly equidistant and is, if anything,
harder for HNSW than real embeddings. Queries are fresh draws from the same mixture (not
database vectors), seed 0.

Index: the one ``make_faiss_index(128, n, "auto")`` chooses (exact inner product up to 100,000
vectors, HNSW above), wrapped in ``IndexIDMap2`` exactly as a build makes it.

* ground truth: ``IndexFlatIP`` batch search of all queries at once (all cores);
* build: ``add_with_ids`` of all vectors, wall time, all cores (FAISS's OpenMP default);
* latency: ``faiss.omp_set_num_threads(1)``, then each query searched alone
  (``search(q[None], 10)``, the query path's case) after 20 warm-up queries; median and p95;
* recall@10: share of the exact top-10 ids found in the index's top 10, mean over queries;
* memory: the serialised index size, and the process RSS growth while building it;
* for HNSW, ``--ef-sweep`` re-measures latency and recall at other efSearch values on the same
  built index (the default is restored afterwards).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from musicidx.indexer.ann import make_faiss_index

DIM = 128
K = 10
CLUSTERS = 256
NOISE = 0.35  # total norm of the within-cluster noise before renormalising


def mixture(n: int, rng: np.random.Generator, centres: np.ndarray, chunk: int = 100_000) -> np.ndarray:
    """``n`` unit vectors from the Gaussian mixture around ``centres`` (generated in chunks)."""
    out = np.empty((n, centres.shape[1]), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = centres[rng.integers(0, len(centres), m)]
        x = x + (NOISE / np.sqrt(centres.shape[1])) * rng.standard_normal((m, centres.shape[1])).astype(np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def timed_searches(index: Any, queries: np.ndarray, *, warm_up: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Each query searched alone on one thread after ``warm_up`` untimed ones (page in the index,
    settle the allocator): the latencies in seconds and the top-``K`` ids found."""
    faiss.omp_set_num_threads(1)
    for q in queries[:warm_up]:
        index.search(q[None, :], K)
    lat = np.empty(len(queries))
    found = np.empty((len(queries), K), np.int64)
    for i, q in enumerate(queries):
        t = time.perf_counter()
        _, ids = index.search(q[None, :], K)
        lat[i] = time.perf_counter() - t
        found[i] = ids[0]
    return lat, found


def single_query_timing(index: Any, queries: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Median and p95 single-query latency (ms) on one thread, and recall@10 against ``truth``."""
    lat, found = timed_searches(index, queries)
    recall = float(np.mean([len(set(f) & set(g)) / K for f, g in zip(found, truth)]))
    return {
        "latency_median_ms": round(1000 * statistics.median(lat), 3),
        "latency_p95_ms": round(1000 * float(np.percentile(lat, 95)), 3),
        "recall_at_10": round(recall, 4),
    }


def hnsw_of(index: Any) -> Any | None:
    base = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return base.hnsw if isinstance(base, faiss.IndexHNSW) else None


def bench_size(n: int, n_queries: int, ef_sweep: list[int], rng: np.random.Generator, centres: np.ndarray) -> dict:
    data = mixture(n, rng, centres)
    queries = mixture(n_queries, rng, centres)
    threads = faiss.omp_get_max_threads()

    t = time.perf_counter()
    exact = faiss.IndexFlatIP(DIM)
    exact.add(data)
    _, truth = exact.search(queries, K)
    truth_s = time.perf_counter() - t
    del exact

    rss0 = rss_bytes()
    t = time.perf_counter()
    index, kind = make_faiss_index(DIM, n, "auto")
    index.add_with_ids(data, np.arange(n, dtype=np.int64))
    build_s = time.perf_counter() - t
    rss_growth = rss_bytes() - rss0
    size = int(faiss.serialize_index(index).nbytes)

    row: dict[str, Any] = {"n": n, "index": kind}
    hnsw = hnsw_of(index)
    if hnsw is not None:
        row["hnsw"] = {"M": (hnsw.nb_neighbors(1)), "efConstruction": hnsw.efConstruction, "efSearch": hnsw.efSearch}
    row.update(
        build_s=round(build_s, 2),
        build_threads=threads,
        exact_batch_search_s=round(truth_s, 2),
        index_mb=round(size / 2**20, 1),
        rss_growth_mb=round(rss_growth / 2**20, 1),
        **single_query_timing(index, queries, truth),
    )
    if hnsw is not None and ef_sweep:
        default_ef = hnsw.efSearch
        sweep = []
        for ef in ef_sweep:
            hnsw.efSearch = ef
            sweep.append({"efSearch": ef, **single_query_timing(index, queries, truth)})
        hnsw.efSearch = default_ef
        row["ef_sweep"] = sweep
    faiss.omp_set_num_threads(threads)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--ef-sweep", type=int, nargs="*", default=[16, 32, 64, 128, 256], help="HNSW only; none: skip")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    meta = {
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": faiss.omp_get_max_threads(),
        "data": f"{DIM}-d unit vectors, mixture of {CLUSTERS} Gaussians (noise norm {NOISE}), seed 0",
        "queries": args.queries,
        "latency_threads": 1,
    }
    print(json.dumps(meta), flush=True)
    rows = []
    for n in args.sizes:
        row = bench_size(n, args.queries, args.ef_sweep, rng, centres)
        rows.append(row)
        print(json.dumps(row), flush=True)

    print()
    print("| vectors | index | build | index size | RSS growth | latency median | latency p95 | recall@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = r["index"] + (" M={M} efC={efConstruction} ef={efSearch}".format(**r["hnsw"]) if "hnsw" in r else "")
        print(
            f"| {r['n']:,} | {name} | {r['build_s']} s | {r['index_mb']} MB | {r['rss_growth_mb']} MB "
            f"| {r['latency_median_ms']} ms | {r['latency_p95_ms']} ms | {r['recall_at_10']} |"
        )
    for r in rows:
        if "ef_sweep" in r:
            print(f"\nefSearch sweep at {r['n']:,} (same index):\n")
            print("| efSearch | latency median | latency p95 | recall@10 |")
            print("|---|---|---|---|")
            for s in r["ef_sweep"]:
                ms = f"{s['latency_median_ms']} ms | {s['latency_p95_ms']} ms"
                print(f"| {s['efSearch']} | {ms} | {s['recall_at_10']} |")
    if args.json_out:
        args.json_out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
