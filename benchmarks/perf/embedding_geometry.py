"""How an index's embeddings fill their space: effective dimensionality and what PQ codes keep.

    python -m benchmarks.perf.embedding_geometry IDX [IDX ...] [--json-out FILE]

For each index (every vector, in id order):

* the participation ratio of the covariance spectrum, ``(sum l)^2 / sum l^2`` -- the number of
  equally used dimensions that would give the same spread (1: all variance on one axis; 128: all
  axes alike) -- and how many principal axes hold 95 % and 99 % of the variance;
* the median cosine distance to the 1st and 10th neighbour;
* recall@10 of PQ codes alone (``IndexPQ``, 32 sub-quantisers of 8 bits: the 32-byte codes of the
  IVF-PQ recipe, without the re-ranking) against exact search, every vector a query of the
  others -- at this size (thousands of vectors) an optimistic figure: what codes lose grows with n.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from musicidx.indexer.format import read_index


def geometry(vectors: np.ndarray) -> dict[str, Any]:
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    lam = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1], 0, None)
    share = np.cumsum(lam) / lam.sum()
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    sim, truth = exact.search(x, 11)
    pq = faiss.IndexPQ(x.shape[1], 32, 8, faiss.METRIC_INNER_PRODUCT)
    pq.train(x)
    pq.add(x)
    _, got = pq.search(x, 11)
    recall = np.mean([len(set(t[1:]) & set(g[g != i][:10])) / 10 for i, (t, g) in enumerate(zip(truth, got))])
    return {
        "vectors": len(x),
        "participation_ratio": float(lam.sum() ** 2 / (lam**2).sum()),
        "dims_95": int(np.searchsorted(share, 0.95) + 1),
        "dims_99": int(np.searchsorted(share, 0.99) + 1),
        "median_distance_1st": float(np.median(1 - sim[:, 1])),
        "median_distance_10th": float(np.median(1 - sim[:, 10])),
        "pq32_codes_recall_at_10": float(recall),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("indexes", nargs="+", type=Path)
    ap.add_argument("--json-out", type=Path)
    a = ap.parse_args()
    out = {}
    for d in a.indexes:
        ix = read_index(d).faiss_index
        g = geometry(ix.reconstruct_n(0, ix.ntotal))
        out[str(d)] = g
        print(f"{d}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in g.items()))
    if a.json_out:
        a.json_out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
