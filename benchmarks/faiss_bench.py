"""FAISS latency and recall@10 against exact search, for the index musicidx builds at each size.

    python benchmarks/faiss_bench.py [--sizes 10000 100000 1000000] [--queries 1000]

Vectors: 128-d unit vectors drawn from a mixture of 256 Gaussian clusters (real clip
embeddings cluster by piece and composer; uniform noise would flatter neither exact nor
approximate search). Queries are fresh draws from the same mixture. The index is the one
`make_faiss_index(128, n, "auto")` chooses (exact inner product up to 100,000 vectors, HNSW
above). Latency: single queries issued one at a time on one thread (the query path's case);
recall@10: share of the exact top-10 ids found by the index's top 10.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import faiss
import numpy as np

from musicidx.indexer.store import make_faiss_index


def mixture(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(
        dim
    )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    dim = 128
    centres = rng.standard_normal((256, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    results = []
    for n in args.sizes:
        data = mixture(n, dim, rng, centres)
        queries = mixture(args.queries, dim, rng, centres)
        exact = faiss.IndexFlatIP(dim)
        exact.add(data)
        faiss.omp_set_num_threads(2)
        _, truth = exact.search(queries, 10)
        t = time.perf_counter()
        index, kind = make_faiss_index(dim, n, "auto")
        index.add_with_ids(data, np.arange(n, dtype=np.int64))
        build_s = time.perf_counter() - t
        faiss.omp_set_num_threads(1)
        lat, found = [], []
        for q in queries:
            t = time.perf_counter()
            _, ids = index.search(q[None, :], 10)
            lat.append(time.perf_counter() - t)
            found.append(ids[0])
        recall = float(np.mean([len(set(f) & set(g)) / 10 for f, g in zip(found, truth)]))
        row = {
            "n": n,
            "index": kind,
            "build_s": round(build_s, 2),
            "latency_median_ms": round(1000 * statistics.median(lat), 3),
            "latency_p95_ms": round(1000 * float(np.percentile(lat, 95)), 3),
            "recall_at_10": round(recall, 4),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
        del index, exact, data
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
