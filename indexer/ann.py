"""The ANN index: which FAISS kind for how many vectors, IVF-PQ made and tuned, recall measured.

``--faiss auto`` is exact search (``flat``) up to :data:`FLAT_MAX` vectors, HNSW up to
:data:`HNSW_MAX`, IVF-PQ above (:func:`choose_faiss_kind`).  :func:`index_embeddings` makes the
index of a build: it trains an IVF-PQ index on a sample, fills any kind shard by shard, chooses an
IVF-PQ index's nprobe and shortlist by the recall they measure against exact search, and returns
the manifest's ``faiss`` entry (:class:`~musicidx.indexer.manifest.FaissEntry`) with the recall@10
and the bytes per vector the index costs.  Shards of one trained IVF index merge
(:func:`merge_ivf_shards`).  Inner product throughout: the embeddings are unit vectors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from musicidx.encoder.errors import MusicIdxError
from musicidx.encoder.recipe import FAISS_KINDS

from .manifest import FaissEntry, Recall

#: ``--faiss auto``: exact search up to this many vectors, ...
FLAT_MAX = 100_000
#: ... HNSW up to this many, IVF-PQ above. HNSW M=32 costs about 800 bytes per 128-d vector
#: (the float vector, its links, the id): 0.8 GB at 10**6 clips, 8 GB at 10**7, more than this
#: shared 24 GB machine gives one index; IVF-PQ keeps about 41 in memory (plus 512 memory-mapped
#: from disk), but its recall@10 is lower: 0.90 against HNSW's 0.98 at 10**6 (BENCHMARKS.md
#: "FAISS at 10⁶ and 10⁷ clips").
HNSW_MAX = 1_000_000
#: Vectors in each chunk added to an index in turn (and in each Parquet part of the clip table).
SHARD_ROWS = 1_000_000


def choose_faiss_kind(n: int, *, flat_max: int = FLAT_MAX, hnsw_max: int = HNSW_MAX) -> str:
    """The kind ``--faiss auto`` picks for ``n`` vectors: ``flat`` up to ``flat_max``, ``hnsw``
    up to ``hnsw_max``, ``ivfpq`` above."""
    return "flat" if n <= flat_max else "hnsw" if n <= hnsw_max else "ivfpq"


def make_faiss_index(
    dim: int, n: int, kind: str = "auto", *, flat_max: int = FLAT_MAX, hnsw_max: int = HNSW_MAX
) -> tuple[Any, str]:
    """An empty inner-product FAISS index with explicit ids, sized for ``n`` vectors.

    ``auto`` is exact search (``flat``) up to ``flat_max`` vectors, HNSW up to ``hnsw_max`` and
    IVF-PQ above (:func:`choose_faiss_kind`); returns the index and the kind chosen. An
    ``ivfpq`` index comes untrained: fill it with :func:`fill_faiss_index`, which trains it.

    HNSW parameters: M=32, efConstruction=80, efSearch=128. Measured by
    ``benchmarks/faiss_bench.py`` at 10**6 clustered 128-d unit vectors (one thread, single
    queries): efSearch=64 gave recall@10 0.952 at 0.25 ms median, within sampling error of the
    0.95 target; efSearch=128 gives 0.985 at 0.40 ms (target: >= 0.95 within 5 ms). efSearch
    costs nothing at build time and is saved with the index.
    """
    import faiss

    if kind == "auto":
        kind = choose_faiss_kind(n, flat_max=flat_max, hnsw_max=hnsw_max)
    base: Any
    if kind == "flat":
        base = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        base = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = 80
        base.hnsw.efSearch = 128
    elif kind == "ivfpq":
        return ivfpq_index(dim, ivfpq_recipe(dim, n).factory), kind
    else:
        raise MusicIdxError(f"unknown FAISS index kind {kind!r}; use {', '.join(FAISS_KINDS)}")
    return faiss.IndexIDMap2(base), kind


#: PQ codes need 256 centroids per sub-quantizer, and k-means wants 39 training points each.
IVFPQ_MIN_VECTORS = 39 * 256


@dataclass(frozen=True)
class IVFPQRecipe:
    """How an IVF-PQ index is made for ``n`` vectors of dimension ``dim`` (see :func:`ivfpq_recipe`)."""

    factory: str  # faiss.index_factory string
    nlist: int  # inverted lists (coarse centroids)
    code_bytes: int  # PQ code size per vector
    train_size: int  # vectors the training sample holds
    nprobes: tuple[int, ...]  # candidates, smallest first, for the nprobe chosen by measurement
    k_factors: tuple[int, ...]  # candidates for the re-ranked shortlist (k_factor * k PQ candidates)
    target_recall: float  # the cheapest (k_factor, nprobe) reaching this recall@10 is kept


def ivfpq_recipe(dim: int, n: int) -> IVFPQRecipe:
    """The IVF-PQ recipe for ``n`` vectors: ``IVF{nlist}_HNSW32,PQ{m}np,RFlat``.

    * ``nlist``: the power of two nearest ``2 * sqrt(n)`` (2,048 at 10**6, 8,192 at 10**7), at
      most ``n / 39`` (k-means wants 39 points per centroid) and at most 65,536;
    * the coarse quantiser is HNSW (M=32) over the centroids, not a flat scan: filling 10**7
      vectors then costs minutes less and a query pays microseconds to pick its lists;
    * ``m`` = ``dim / 4`` bytes of PQ code per vector (32 at 128-d; with the 8-byte id, 40 bytes
      in memory), scanned to shortlist ``k_factor * k`` candidates, which are re-ranked exactly
      with their full float32 vectors (``RFlat``): those stay on disk, memory-mapped at load
      (:func:`~musicidx.indexer.format.read_index`), and only the shortlisted rows are read. Compressed codes alone rank
      the near neighbours of musicidx-like embeddings poorly (BENCHMARKS.md "FAISS at 10⁶ and 10⁷");
    * training on ``min(n, max(40 * nlist, 65,536))`` vectors, without FAISS's polysemous
      training of the PQ codes (``np``: it is for Hamming filtering, unused here, and took
      minutes on 2 cores);
    * ``nprobe`` and ``k_factor`` (shortlist of up to 512 * k): the cheapest pair whose recall@10
      against exact search reaches 0.95 on a sample of the index's own vectors
      (:func:`choose_search_params`). Measured at 10**7: a shortlist of 64 * k gave 0.765,
      512 * k gave 0.951 at a 9.2 ms median (BENCHMARKS.md).
    """
    if n < IVFPQ_MIN_VECTORS:
        raise MusicIdxError(
            f"an IVF-PQ index needs at least {IVFPQ_MIN_VECTORS:,} vectors to train, got {n:,}; "
            "use --faiss auto, flat or hnsw"
        )
    m = max(1, dim // 4)
    nlist = 1 << max(4, round(math.log2(2 * math.sqrt(n))))
    while nlist > 16 and 39 * nlist > n:
        nlist //= 2
    nlist = min(nlist, 65_536)
    return IVFPQRecipe(
        factory=f"IVF{nlist}_HNSW32,PQ{m}np,RFlat",
        nlist=nlist,
        code_bytes=m,
        train_size=min(n, max(40 * nlist, 65_536)),
        nprobes=(4, 8, 16, 32, 64, 128),
        k_factors=(4, 8, 16, 32, 64, 128, 256, 512),
        target_recall=0.95,
    )


def ivfpq_index(dim: int, factory: str) -> Any:
    """An empty inner-product index made from ``factory`` (``faiss.index_factory``)."""
    import faiss

    return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)


def ivf_of(index: Any) -> Any | None:
    """The ``IndexIVF`` inside ``index`` (behind an OPQ transform), or None."""
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def train_faiss_index(index: Any, sample: np.ndarray) -> None:
    """Train an untrained index (IVF-PQ) on ``sample``; nothing to do for flat and HNSW."""
    if not index.is_trained:
        index.train(np.ascontiguousarray(sample, dtype=np.float32))


def fill_faiss_index(index: Any, chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> Any:
    """Add ``(vectors, ids)`` chunks to ``index`` in turn (shard by shard); returns ``index``.

    An index that re-ranks with full vectors (``IndexRefine``) numbers its vectors itself, in the
    order they come: its ids must be consecutive, and a shard's are counted from 0 until
    :func:`merge_ivf_shards` shifts them after the shards before it."""
    import faiss

    for vectors, ids in chunks:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if isinstance(index, faiss.IndexRefine):
            if len(ids) and not np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids))):
                raise MusicIdxError("an IVF-PQ index with re-ranking takes consecutive ids only")
            index.add(x)
        else:
            index.add_with_ids(x, ids)
    return index


def merge_ivf_shards(shards: Sequence[Any]) -> Any:
    """Merge IVF indexes trained alike (clones of one trained empty index, each filled with other
    ids, in id order from shard to shard) into the first, emptying the others; returns the first.

    The inverted lists merge with ``IndexIVF.merge_from``; the re-ranking vectors of an
    IVF-PQ-with-refinement index, stored in id order, are appended shard after shard."""
    import faiss

    if not shards:
        raise ValueError("no shards to merge")
    first = shards[0]
    for other in shards[1:]:
        a, b = ivf_of(first), ivf_of(other)
        if a is None or b is None:
            raise MusicIdxError("only IVF indexes can be merged shard by shard")
        if isinstance(first, faiss.IndexRefine):
            faiss.downcast_index(first.refine_index).merge_from(faiss.downcast_index(other.refine_index), 0)
        n_other = other.ntotal
        a.merge_from(b, a.ntotal if isinstance(first, faiss.IndexRefine) else 0)
        for wrapper in _wrappers(first):
            wrapper.ntotal += n_other
    return first


def _wrappers(index: Any) -> list[Any]:
    """The indexes around the IVF index inside ``index`` (refinement, OPQ), outermost first;
    they keep their own vector counts."""
    import faiss

    out = []
    while not isinstance(index, faiss.IndexIVF):
        out.append(index)
        index = faiss.downcast_index(index.base_index if isinstance(index, faiss.IndexRefine) else index.index)
    return out


def index_bytes(index: Any) -> int:
    """Bytes the index takes serialised: codes, ids, coarse quantiser, codebooks, HNSW links."""
    import faiss

    return int(faiss.serialize_index(index).nbytes)


def exact_top_k(queries: np.ndarray, vectors: Iterable[np.ndarray], k: int) -> np.ndarray:
    """Ids of the exact top-``k`` inner products of ``queries`` among ``vectors`` given in chunks
    (ids count on from chunk to chunk); ``-1`` where fewer than ``k`` vectors exist."""
    import faiss

    q = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    offset = 0
    for chunk in vectors:
        flat = faiss.IndexFlatIP(q.shape[1])
        flat.add(np.ascontiguousarray(chunk, dtype=np.float32))
        s, i = flat.search(q, min(k, len(chunk)))
        i = np.where(i >= 0, i + offset, -1)
        offset += len(chunk)
        s_all, i_all = np.concatenate([best_s, s], 1), np.concatenate([best_i, i], 1)
        order = np.argsort(-s_all, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s_all, order, 1), np.take_along_axis(i_all, order, 1)
    return best_i


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """|found top-k ∩ true top-k| / k, averaged over queries (``-1`` padding never counts)."""
    k = truth.shape[1]
    return float(np.mean([len((set(f) & set(t)) - {-1}) / k for f, t in zip(found, truth)]))


def set_nprobe(index: Any, nprobe: int) -> None:
    ivf = ivf_of(index)
    if ivf is None:
        raise MusicIdxError("nprobe is a parameter of IVF indexes only")
    ivf.nprobe = nprobe


def choose_search_params(
    index: Any, queries: np.ndarray, truth: np.ndarray, recipe: IVFPQRecipe
) -> tuple[int, int, float]:
    """Set on ``index`` the cheapest ``(nprobe, k_factor)`` of the recipe's candidates (smaller
    shortlist first, then fewer lists) whose recall@10 against ``truth`` reaches
    ``recipe.target_recall``, else the pair of highest recall; returns it and its recall."""
    import faiss

    k = truth.shape[1]
    refine = index if isinstance(index, faiss.IndexRefine) else None
    best = (-1.0, recipe.nprobes[0], recipe.k_factors[0])
    for k_factor in recipe.k_factors if refine is not None else (1,):
        for nprobe in recipe.nprobes:
            set_nprobe(index, nprobe)
            if refine is not None:
                refine.k_factor = float(k_factor)
            recall = recall_at_k(index.search(queries, k)[1], truth)
            if recall > best[0]:
                best = (recall, nprobe, k_factor)
            if recall >= recipe.target_recall:
                return nprobe, k_factor, recall
    recall, nprobe, k_factor = best
    set_nprobe(index, nprobe)
    if refine is not None:
        refine.k_factor = float(k_factor)
    return nprobe, k_factor, recall


def refine_bytes(index: Any) -> int:
    """Bytes of the full vectors an index keeps for re-ranking (memory-mapped at load), else 0."""
    import faiss

    return int(4 * index.d * index.ntotal) if isinstance(index, faiss.IndexRefineFlat) else 0


RECALL_QUERIES = 1000


def index_embeddings(
    emb: np.ndarray,
    kind: str = "auto",
    *,
    flat_max: int = FLAT_MAX,
    hnsw_max: int = HNSW_MAX,
    shard_rows: int = SHARD_ROWS,
    seed: int = 0,
) -> tuple[Any, FaissEntry]:
    """The FAISS index of ``emb`` (ids 0..n-1) and its manifest entry.

    The kind is ``kind``, or for ``auto`` the one :func:`choose_faiss_kind` picks for ``len(emb)``.
    An IVF-PQ index is trained on a sample (``default_rng([seed, 1])``, :func:`ivfpq_recipe`).
    Every index is filled in chunks of ``shard_rows`` vectors in turn. Then, with up to 1,000 of
    its own vectors as queries (``default_rng([seed, 2])``) and their exact top-10 as truth, the
    nprobe and shortlist of an IVF-PQ index are chosen (:func:`choose_search_params`) and the
    recall@10 the index costs is measured; it goes in the entry with the bytes per vector held in
    memory (serialised size / vectors, less the re-ranking vectors) and those memory-mapped from
    disk (the re-ranking vectors of IVF-PQ; 0 for the others).
    """
    n, dim = emb.shape
    index, chosen_kind = make_faiss_index(dim, n, kind, flat_max=flat_max, hnsw_max=hnsw_max)
    recipe = ivfpq_recipe(dim, n) if chosen_kind == "ivfpq" else None
    params = _prepare(index, chosen_kind, recipe, emb, seed)
    shards = range(0, n, shard_rows)
    fill_faiss_index(index, ((emb[s : s + shard_rows], np.arange(s, min(n, s + shard_rows))) for s in shards))
    k = min(10, n)
    q_ids = np.sort(np.random.default_rng([seed, 2]).choice(n, size=min(RECALL_QUERIES, n), replace=False))
    queries = np.ascontiguousarray(emb[q_ids], dtype=np.float32)
    truth = exact_top_k(queries, (emb[s : s + shard_rows] for s in shards), k)
    if recipe is not None:
        params["nprobe"], params["k_factor"], recall = choose_search_params(index, queries, truth, recipe)
    else:
        recall = recall_at_k(index.search(queries, k)[1], truth) if n else 1.0
    if kind == "auto":
        chosen = f"auto: flat up to {flat_max:,} vectors, HNSW up to {hnsw_max:,}, IVF-PQ above"
    else:
        chosen = f"forced (--faiss {kind})"
    entry = FaissEntry(
        chosen_kind,
        "inner_product",
        int(index.ntotal),
        chosen=chosen,
        params=params,
        bytes_per_vector=round((index_bytes(index) - refine_bytes(index)) / max(n, 1), 2),
        mapped_bytes_per_vector=round(refine_bytes(index) / max(n, 1), 2),
        recall_at_10=Recall(round(recall, 4), k, len(q_ids), RECALL_HOW),
    )
    return index, entry


RECALL_HOW = "the index's own vectors (seeded sample) as queries, against exact inner-product search"


def _prepare(index: Any, kind: str, recipe: IVFPQRecipe | None, emb: np.ndarray, seed: int) -> dict[str, Any]:
    """Train an IVF-PQ index on a sample of ``emb`` (``default_rng([seed, 1])``); the parameters
    of ``index`` the manifest records (none for flat)."""
    if recipe is not None:
        n = len(emb)
        train_faiss_index(index, emb[np.sort(np.random.default_rng([seed, 1]).choice(n, recipe.train_size, False))])
        return {
            "factory": recipe.factory,
            "nlist": recipe.nlist,
            "code_bytes": recipe.code_bytes,
            "train_size": recipe.train_size,
        }
    if kind == "hnsw":
        hnsw = faiss_hnsw(index)
        return {"M": 32, "efConstruction": hnsw.efConstruction, "efSearch": hnsw.efSearch}
    return {}


def stored_vectors(index: Any, ids: np.ndarray) -> np.ndarray:
    """The vectors ``index`` holds under ``ids`` (float32, one row per id): exact for flat, HNSW
    and IVF-PQ with re-ranking vectors; decoded from their codes for a bare IVF-PQ index (for
    which a direct map is built for the call and dropped after, so that it never costs memory in
    the saved index)."""
    import faiss

    no_map = faiss.DirectMap.NoMap  # type: ignore[attr-defined]  # missing from faiss's type stubs
    ivf = ivf_of(index)
    if ivf is None or isinstance(index, faiss.IndexRefine) or ivf.direct_map.type != no_map:
        return np.stack([index.reconstruct(int(i)) for i in ids]).astype(np.float32)
    ivf.make_direct_map()
    try:
        return np.stack([index.reconstruct(int(i)) for i in ids]).astype(np.float32)
    finally:
        ivf.set_direct_map_type(no_map)


def faiss_hnsw(index: Any) -> Any:
    import faiss

    base: Any = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return base.hnsw
