"""FAISS at 10**6 and 10**7 clips: build time, bytes per vector, single-query latency, recall@10.

    python -m benchmarks.perf.faiss_large --n 1000000 [--data local|gmm|isotropic] [--factory F ...]
                                          [--shards 1] [--nprobes 8 16 32 64] [--queries 1000]
                                          [--json-out results.json]

Vectors never exist all at once: chunk ``c`` of ``--chunk`` vectors is drawn with its own seeded
generator (``SeedSequence(seed).spawn``), so any chunk can be drawn again identically.

* data ``local`` (default) and ``gmm``: the generators of ``benchmarks/data/embedding_model.py``
  fitted to the embeddings of a real musicidx index (``benchmarks/results/embedding_local.npz``,
  ``embedding_gmm.npz``); ``isotropic``: the 256-cluster mixture of ``faiss_bench.py`` (for
  continuity with the earlier table);
* queries: ``--queries`` fresh draws from the same generator (not index vectors);
* ground truth: exact inner-product top-10 of the queries, merged chunk by chunk over all
  ``n`` vectors (``musicidx.indexer.ann.exact_top_k``), in the same pass that fills the index;
* index: ``--factory`` (default: the recipe ``musicidx`` uses for ``n``, ``ivfpq_recipe``),
  inner product; trained on the first ``train_size`` vectors (a random sample, chunks being
  i.i.d.), then ``--shards`` clones of the trained empty index each filled chunk by chunk and
  merged into the first (``merge_ivf_shards``), as a multi-node build would;
* build time: train + fill + merge, wall clock, both threads; generation and ground truth are
  timed apart and not counted;
* bytes per vector: the serialised index divided by ``n``, split into what stays in memory
  (codes, ids, coarse quantiser and its HNSW links, codebooks) and the float32 vectors kept for
  re-ranking, memory-mapped (``IO_FLAG_MMAP_IFC``) so that only shortlisted rows are read; RSS
  growth after loading and after the queries is reported too;
* latency: ``faiss.omp_set_num_threads(1)``, each query searched alone after 20 warm-ups,
  p50/p95/p99, for each ``--nprobes`` value (IVF) on the same index; recall@10 =
  |returned top-10 ∩ true top-10| / 10, mean over the queries;
* the nprobe and shortlist ``musicidx build`` would store (``choose_search_params`` on 1,000 of
  the index's own vectors as queries, exact truth from the same chunks) and their latency and
  recall on the fresh queries are reported first; ``k_factor`` 1 is the IVF-PQ codes alone;
  last, the same with a cold page cache (the index file's cached pages dropped with
  ``posix_fadvise(DONTNEED)``, no warm-up), where every shortlisted vector is read from disk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benchmarks.data import embedding_model
from benchmarks.perf.faiss_bench import CLUSTERS, DIM, mixture, rss_bytes, timed_searches
from musicidx.indexer.ann import (
    choose_search_params,
    exact_top_k,
    fill_faiss_index,
    ivf_of,
    ivfpq_index,
    ivfpq_recipe,
    merge_ivf_shards,
    recall_at_k,
    refine_bytes,
    set_nprobe,
    train_faiss_index,
)

K = 10


class Source:
    """Seeded, chunked, re-drawable vectors of one kind."""

    def __init__(self, kind: str, seed: int, chunk: int, suffix: str = "") -> None:
        self.kind, self.seed, self.chunk = kind, seed, chunk
        if kind in ("local", "gmm"):
            gmm, local = embedding_model.model_paths(suffix)
            self.model = embedding_model.load(local if kind == "local" else gmm)
        else:
            rng = np.random.default_rng(0)
            c = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
            self.centres = c / np.linalg.norm(c, axis=1, keepdims=True)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.kind != "isotropic":
            return embedding_model.sample(self.model, n, rng)
        return mixture(n, rng, self.centres)

    def chunks(self, n: int, start_chunk: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_id, vectors)`` for ids ``start_chunk * chunk`` .. ``n - 1``."""
        seqs = np.random.SeedSequence(self.seed).spawn((n + self.chunk - 1) // self.chunk)
        for c in range(start_chunk, len(seqs)):
            m = min(self.chunk, n - c * self.chunk)
            yield c * self.chunk, self.draw(m, np.random.default_rng(seqs[c]))

    def queries(self, n: int) -> np.ndarray:
        return self.draw(n, np.random.default_rng([self.seed, 1_000_003]))


def single_queries(index: Any, queries: np.ndarray, truth: np.ndarray, warm_up: int = 20) -> dict[str, float]:
    lat, found = timed_searches(index, queries, warm_up=warm_up)
    return {
        "latency_p50_ms": round(1000 * statistics.median(lat), 3),
        "latency_p95_ms": round(1000 * float(np.percentile(lat, 95)), 3),
        "latency_p99_ms": round(1000 * float(np.percentile(lat, 99)), 3),
        "recall_at_10": round(recall_at_k(found, truth), 4),
    }


def build(args: argparse.Namespace, factory: str) -> Path:
    """Build one index, write it and its queries and truth under ``--workdir``; returns the folder."""
    threads = faiss.omp_get_max_threads()
    src = Source(args.data, args.seed, args.chunk, args.model_suffix)
    n = args.n
    recipe = ivfpq_recipe(DIM, n)
    queries = src.queries(args.queries)
    self_ids = np.random.default_rng(args.seed + 7).choice(n, size=min(1000, n), replace=False)
    self_ids.sort()
    self_q = np.empty((len(self_ids), DIM), np.float32)

    train = np.concatenate([v for _, v in src.chunks(min(n, recipe.train_size + args.chunk))])[: recipe.train_size]
    empty = ivfpq_index(DIM, factory)
    t = time.perf_counter()
    train_faiss_index(empty, train)
    train_s = time.perf_counter() - t
    del train

    shard_of = np.minimum(
        np.arange((n + args.chunk - 1) // args.chunk) * args.shards * args.chunk // n, args.shards - 1
    )
    shards = [faiss.clone_index(empty) for _ in range(args.shards)]
    fill_s = truth_s = 0.0
    best_s = np.full((len(queries), K), -np.inf, np.float32)
    best_i = np.full((len(queries), K), -1, np.int64)
    for c, (first, v) in enumerate(src.chunks(n)):
        t = time.perf_counter()
        fill_faiss_index(shards[shard_of[c]], [(v, np.arange(first, first + len(v), dtype=np.int64))])
        fill_s += time.perf_counter() - t
        t = time.perf_counter()
        inside = (self_ids >= first) & (self_ids < first + len(v))
        self_q[inside] = v[self_ids[inside] - first]
        best_s, best_i = _merge(best_s, best_i, queries, v, first)
        truth_s += time.perf_counter() - t
        if args.progress:
            print(f"chunk {c + 1}: {first + len(v):,} vectors, fill {fill_s:.0f}s", file=sys.stderr, flush=True)
    t = time.perf_counter()
    index = merge_ivf_shards(shards) if args.shards > 1 else shards[0]
    merge_s = time.perf_counter() - t
    del shards
    truth = best_i
    # the index's own vectors as queries: exact truth in a second pass over the same chunks
    t = time.perf_counter()
    self_truth = exact_top_k(self_q, (v for _, v in src.chunks(n)), K)
    self_truth_s = time.perf_counter() - t

    work = _workdir(args, factory)
    work.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(work / "index.faiss"))
    size = (work / "index.faiss").stat().st_size
    mapped = refine_bytes(index)
    del index
    for name, arr in (("queries", queries), ("truth", truth), ("self_q", self_q), ("self_truth", self_truth)):
        np.save(work / f"{name}.npy", arr)
    row: dict[str, Any] = {
        "n": n,
        "data": args.data,
        "factory": factory,
        "shards": args.shards,
        "chunk": args.chunk,
        "train_size": recipe.train_size,
        "build_threads": threads,
        "train_s": round(train_s, 1),
        "fill_s": round(fill_s, 1),
        "merge_s": round(merge_s, 2),
        "build_s": round(train_s + fill_s + merge_s, 1),
        "truth_s": round(truth_s, 1),
        "self_truth_s": round(self_truth_s, 1),
        "index_bytes": size,
        "bytes_per_vector": round(size / n, 2),
        "ram_bytes_per_vector": round((size - mapped) / n, 2),
        "mapped_bytes_per_vector": round(mapped / n, 2),
    }
    (work / "build.json").write_text(json.dumps(row, indent=2) + "\n")
    return work


def _workdir(args: argparse.Namespace, factory: str) -> Path:
    return args.workdir / f"{args.data}-{args.n}-{factory.replace(',', '_')}-s{args.shards}"


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Latency and recall of a built index (read with its re-ranking vectors memory-mapped)."""
    threads = faiss.omp_get_max_threads()
    row = json.loads((work / "build.json").read_text())
    n = row["n"]
    recipe = ivfpq_recipe(DIM, n)
    queries, truth, self_q, self_truth = (
        np.load(work / f"{name}.npy") for name in ("queries", "truth", "self_q", "self_truth")
    )
    rss0 = rss_bytes()
    index = faiss.read_index(str(work / "index.faiss"), faiss.IO_FLAG_MMAP_IFC)
    row["rss_after_load_bytes_per_vector"] = round((rss_bytes() - rss0) / n, 2)
    ivf = ivf_of(index)
    if ivf is not None:
        row["nlist"] = int(ivf.nlist)
        sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)])
        row["list_size_max_over_mean"] = round(float(sizes.max() / sizes.mean()), 1)
        faiss.omp_set_num_threads(threads)
        nprobe, k_factor, r = choose_search_params(index, self_q, self_truth, recipe)
        row["build_choice"] = {"nprobe": nprobe, "k_factor": k_factor, "self_recall_at_10": round(r, 4)}
        row["build_choice"].update(single_queries(index, queries, truth))
        print(json.dumps({"n": n, "build_choice": row["build_choice"]}), file=sys.stderr, flush=True)
        sweep = []
        refine = index if isinstance(index, faiss.IndexRefine) else None
        for nprobe in args.nprobes:
            for kf in args.k_factors if refine is not None else [None]:
                set_nprobe(index, nprobe)
                if refine is not None:
                    refine.k_factor = kf
                point = {"nprobe": nprobe, **({"k_factor": kf} if kf is not None else {})}
                sweep.append({**point, **single_queries(index, queries, truth)})
                print(json.dumps({"n": n, "factory": row["factory"], **sweep[-1]}), file=sys.stderr, flush=True)
        row["sweep"] = sweep
    else:
        row.update(single_queries(index, queries, truth))
    faiss.omp_set_num_threads(threads)
    row["rss_after_queries_bytes_per_vector"] = round((rss_bytes() - rss0) / n, 2)
    if isinstance(index, faiss.IndexRefine):
        # cold page cache: unmap, drop this file's cached pages, map again, same parameters
        del index, refine
        with open(work / "index.faiss", "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        index = faiss.read_index(str(work / "index.faiss"), faiss.IO_FLAG_MMAP_IFC)
        set_nprobe(index, row["build_choice"]["nprobe"])
        index.k_factor = float(row["build_choice"]["k_factor"])
        row["build_choice_cold_cache"] = single_queries(index, queries, truth, warm_up=0)
        print(json.dumps({"n": n, "cold": row["build_choice_cold_cache"]}), file=sys.stderr, flush=True)
        faiss.omp_set_num_threads(threads)
    return row


def _merge(
    best_s: np.ndarray, best_i: np.ndarray, q: np.ndarray, v: np.ndarray, first: int
) -> tuple[np.ndarray, np.ndarray]:
    flat = faiss.IndexFlatIP(v.shape[1])
    flat.add(v)
    s, i = flat.search(q, K)
    s_all, i_all = np.concatenate([best_s, s], 1), np.concatenate([best_i, i + first], 1)
    order = np.argsort(-s_all, axis=1, kind="stable")[:, :K]
    return np.take_along_axis(s_all, order, 1), np.take_along_axis(i_all, order, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--data", choices=["local", "gmm", "isotropic"], default="local")
    ap.add_argument("--model-suffix", default="", help="the embedding model embedding_model.py --suffix wrote")
    ap.add_argument("--factory", nargs="+", help="faiss index_factory strings [musicidx's IVF-PQ recipe for n]")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=250_000)
    ap.add_argument("--nprobes", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--k-factors", type=float, nargs="+", default=[1, 8, 32, 64], help="shortlist / k (RFlat)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=Path("faiss-large"), help="where indexes and truth are kept")
    ap.add_argument(
        "--phase",
        choices=["build", "measure", "both"],
        default="both",
        help="build (and write) only, measure an index built before, or both",
    )
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()

    meta = {
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "queries": args.queries,
        "latency_threads": 1,
        "argv": sys.argv[1:],
    }
    print(json.dumps(meta), flush=True)
    rows = []
    for factory in args.factory or [ivfpq_recipe(DIM, args.n).factory]:
        work = build(args, factory) if args.phase in ("build", "both") else _workdir(args, factory)
        if args.phase == "build":
            print(work, flush=True)
            continue
        row = measure(args, work)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json_out:
            args.json_out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
