"""The index directory on disk: write atomically, load with every consistency check.

::

    INDEX/manifest.json    format_version, configs, SoundFont, composers, counts, FAISS type, k,
                           novelty threshold (and one per calibrated k) and its calibration,
                           training summary, warnings, encoder sha256
    INDEX/index.faiss      FAISS index; ids = the clip table's clip_id
    INDEX/clips.parquet    clip_id, track_id, composer, work, path, sha256, notes_sha256, start_s, dur_s
      or INDEX/clips/part-00000.parquet ...   the same table in parts of SHARD_ROWS rows (large indexes)
    INDEX/encoder.pt       the encoder's state_dict, loaded with weights_only=True

Format 3 (this version) adds the clip table in parts and, in the manifest's ``faiss`` entry, how
the index kind was chosen, its parameters, its bytes per vector and the recall@10 it costs; format
2 indexes (one ``clips.parquet``, no such fields) still load.

An index is written into a temporary sibling directory and swapped into place, so a build
interrupted at any moment leaves the previous index (or none) at the target, never half of one.

Nothing else is ever replaced: :func:`check_index_destination` accepts as a destination only a
new or empty folder, or a folder that holds a musicidx index and nothing else; any other folder
(the user's files, the MIDI input itself) is refused before any work is done.  A temporary
folder carries the marker file ``.musicidx-partial`` from its first moment, and only folders
with that marker are ever cleaned up as leftovers of an interrupted build.

One writer at a time: a build (and ``add``) holds :func:`index_lock`, an exclusive ``flock`` on
``.NAME.lock`` beside the folder, from before its first step until the swap; a second writer is
refused at once with the holder's pid, host and start time.  The kernel releases the lock of a
process that dies, so a killed build never blocks the next.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as _dt
import hashlib
import io
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from musicidx.encoder.config import FeatureConfig, ModelConfig
from musicidx.encoder.errors import MusicIdxError

#: 2: clips.parquet has ``notes_sha256``, the fingerprint of each track's notes.
#: 3: the clip table may be a folder of Parquet parts; the manifest's ``faiss`` entry gains
#:    ``chosen``, ``params``, ``bytes_per_vector`` and ``recall_at_10``.
FORMAT_VERSION = 3
#: The oldest format this version reads.
OLDEST_FORMAT_VERSION = 2
MANIFEST = "manifest.json"
FAISS_FILE = "index.faiss"
CLIPS_FILE = "clips.parquet"
CLIPS_DIR = "clips"
ENCODER_FILE = "encoder.pt"
INDEX_FILES = (MANIFEST, FAISS_FILE, CLIPS_FILE, CLIPS_DIR, ENCODER_FILE)
#: Marks a temporary folder as musicidx's own half-written index (safe to delete once its build is gone).
PARTIAL_MARK = ".musicidx-partial"

CLIPS_SCHEMA = pa.schema(
    [
        ("clip_id", pa.int64()),
        ("track_id", pa.int32()),
        ("composer", pa.string()),
        ("work", pa.string()),
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("notes_sha256", pa.string()),
        ("start_s", pa.float64()),
        ("dur_s", pa.float64()),
    ]
)


class IndexFormatError(MusicIdxError):
    """An index directory that is missing, damaged, or of a format this version cannot read."""


def package_version() -> str:
    try:
        return metadata.version("musicidx")
    except metadata.PackageNotFoundError:
        return "unknown"


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


#: ``--faiss auto``: exact search up to this many vectors, ...
FLAT_MAX = 100_000
#: ... HNSW up to this many, IVF-PQ above. HNSW M=32 costs about 800 bytes per 128-d vector
#: (the float vector, its links, the id): 0.8 GB at 10**6 clips, 8 GB at 10**7, more than this
#: shared 24 GB machine gives one index; IVF-PQ keeps about 41 in memory (plus 512 memory-mapped
#: from disk), but its recall@10 is lower: 0.90 against HNSW's 0.98 at 10**6 (BENCHMARKS.md
#: "FAISS at 10⁶ and 10⁷ clips").
HNSW_MAX = 1_000_000
FAISS_KINDS = ("auto", "flat", "hnsw", "ivfpq")
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
      (:func:`load_index`), and only the shortlisted rows are read. Compressed codes alone rank
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
) -> tuple[Any, dict[str, Any]]:
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
    asked = kind
    index, kind = make_faiss_index(dim, n, kind, flat_max=flat_max, hnsw_max=hnsw_max)
    params: dict[str, Any] = {}
    recipe = None
    if kind == "ivfpq":
        recipe = ivfpq_recipe(dim, n)
        sample = emb[np.sort(np.random.default_rng([seed, 1]).choice(n, size=recipe.train_size, replace=False))]
        train_faiss_index(index, sample)
        del sample
        params = {"factory": recipe.factory, "nlist": recipe.nlist, "code_bytes": recipe.code_bytes}
        params["train_size"] = recipe.train_size
    elif kind == "hnsw":
        hnsw = faiss_hnsw(index)
        params = {"M": 32, "efConstruction": hnsw.efConstruction, "efSearch": hnsw.efSearch}
    chunks = [
        (emb[s : s + shard_rows], np.arange(s, min(n, s + shard_rows), dtype=np.int64)) for s in range(0, n, shard_rows)
    ]
    fill_faiss_index(index, chunks)
    k = min(10, n)
    q_ids = np.sort(np.random.default_rng([seed, 2]).choice(n, size=min(RECALL_QUERIES, n), replace=False))
    queries = np.ascontiguousarray(emb[q_ids], dtype=np.float32)
    truth = exact_top_k(queries, (emb[s : s + shard_rows] for s in range(0, n, shard_rows)), k)
    if recipe is not None:
        params["nprobe"], params["k_factor"], recall = choose_search_params(index, queries, truth, recipe)
    else:
        recall = recall_at_k(index.search(queries, k)[1], truth) if n else 1.0
    if asked == "auto":
        chosen = f"auto: flat up to {flat_max:,} vectors, HNSW up to {hnsw_max:,}, IVF-PQ above"
    else:
        chosen = f"forced (--faiss {asked})"
    entry = {
        "type": kind,
        "metric": "inner_product",
        "ntotal": int(index.ntotal),
        "chosen": chosen,
        "params": params,
        "bytes_per_vector": round((index_bytes(index) - refine_bytes(index)) / max(n, 1), 2),
        "mapped_bytes_per_vector": round(refine_bytes(index) / max(n, 1), 2),
        "recall_at_10": {
            "value": round(recall, 4),
            "k": k,
            "queries": len(q_ids),
            "how": "the index's own vectors (seeded sample) as queries, against exact inner-product search",
        },
    }
    return index, entry


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


def encoder_bytes(state_dict: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.getvalue()


@dataclass
class IndexContents:
    """Everything an index directory holds, in memory."""

    manifest: dict[str, Any]
    faiss_index: Any
    clips: pa.Table
    encoder_state: dict[str, Any]

    @property
    def feature_config(self) -> FeatureConfig:
        return FeatureConfig.from_dict(self.manifest["features"])

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.manifest["model"])


def write_clips(clips: pa.Table, folder: Path, *, shard_rows: int = SHARD_ROWS) -> str:
    """Write the clip table into ``folder``: ``clips.parquet`` when it has at most ``shard_rows``
    rows, else ``clips/part-00000.parquet``, ... of ``shard_rows`` rows each, in clip_id order.
    Returns the name written."""
    table = clips.cast(CLIPS_SCHEMA)
    if table.num_rows <= shard_rows:
        pq.write_table(table, folder / CLIPS_FILE)
        return CLIPS_FILE
    parts = folder / CLIPS_DIR
    parts.mkdir()
    for i, start in enumerate(range(0, table.num_rows, shard_rows)):
        pq.write_table(table.slice(start, shard_rows), parts / f"part-{i:05d}.parquet")
    return CLIPS_DIR


def read_clips(folder: Path) -> pa.Table:
    """The clip table of an index folder, from ``clips.parquet`` or the parts in ``clips/``
    (read in name order); raises :class:`IndexFormatError` when it is missing or damaged."""
    single, parts = folder / CLIPS_FILE, folder / CLIPS_DIR
    if single.exists() and parts.exists():
        raise IndexFormatError(f"holds both {CLIPS_FILE} and {CLIPS_DIR}/; rebuild the index", path=folder)
    if parts.is_dir():
        files = sorted(parts.glob("part-*.parquet"))
        if not files:
            raise IndexFormatError("incomplete index: clips/ holds no part-*.parquet", path=parts)
    elif single.is_file():
        files = [single]
    else:
        raise IndexFormatError(
            f"incomplete index: {CLIPS_FILE} is missing; build the index again into a new folder", path=folder
        )
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f))
        except Exception as e:
            raise IndexFormatError(f"{f.name} is damaged ({e})", path=f) from e
        if not tables[-1].schema.equals(CLIPS_SCHEMA):
            raise IndexFormatError(f"{f.name} has an unexpected schema", path=f)
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def save_index(contents: IndexContents, out: str | Path, *, shard_rows: int = SHARD_ROWS) -> Path:
    """Write ``contents`` to ``out`` atomically; an existing index there is replaced whole.

    ``out`` must pass :func:`check_index_destination`: a folder holding anything but a musicidx
    index is refused, never overwritten.  An existing folder keeps its permissions; a new one
    gets the usual ones (0777 less the umask).  The clip table is one file up to ``shard_rows``
    rows and a folder of parts above (:func:`write_clips`); the index is written in this
    version's format, whatever format it was read from."""
    import faiss

    out = check_index_destination(out, probe=False)  # creating the temporary folder is the probe
    mode = stat.S_IMODE(out.stat().st_mode) if out.is_dir() else _default_dir_mode()
    _remove_stale_temporaries(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    except OSError as e:
        raise MusicIdxError(f"cannot write the index here: {e.strerror or e}", path=out) from e
    try:
        (tmp / PARTIAL_MARK).touch()
        blob = encoder_bytes(contents.encoder_state)
        (tmp / ENCODER_FILE).write_bytes(blob)
        manifest = dict(contents.manifest)
        manifest["encoder_sha256"] = hashlib.sha256(blob).hexdigest()
        manifest["format_version"] = FORMAT_VERSION
        faiss.write_index(contents.faiss_index, str(tmp / FAISS_FILE))
        write_clips(contents.clips, tmp, shard_rows=shard_rows)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        (tmp / PARTIAL_MARK).unlink()
        for f in [*tmp.iterdir(), *(tmp / CLIPS_DIR).glob("*")]:
            _fsync(f)
        os.chmod(tmp, mode)
        _fsync(tmp)
        _swap_into_place(tmp, out)
        if tmp.is_dir():  # now the previous index: marked, so a kill before the clean-up below is cleaned later
            (tmp / PARTIAL_MARK).touch()
    except (OSError, RuntimeError) as e:  # disk full, quota...; faiss reports I/O as RuntimeError
        raise MusicIdxError(f"could not write the index (any previous one is intact): {e}", path=out) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after a swap, tmp holds the previous index
    return out


def _default_dir_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def is_index_dir(path: str | Path) -> bool:
    """True when ``path`` holds a musicidx manifest (a dict with an integer ``format_version``
    and the ``features`` and ``model`` configs), whatever the state of its other files."""
    try:
        m = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(m, dict)
        and isinstance(m.get("format_version"), int)
        and isinstance(m.get("features"), dict)
        and isinstance(m.get("model"), dict)
    )


def check_index_destination(out: str | Path, *, source: str | Path | None = None, probe: bool = True) -> Path:
    """Make sure an index can be written at ``out`` without destroying anything, before any work
    is done for it; returns ``out`` as an absolute path.

    Accepted: a path that does not exist yet, an empty folder, or a folder that holds a musicidx
    index and nothing else (which a build then replaces whole).  Refused with
    :class:`IndexFormatError` naming ``out``: a file; any folder holding other files; the current
    directory; and, given the input folder ``source``, ``out`` equal to it, inside it, or
    containing it.  Creates the parent folder if needed and (with ``probe``) proves it writable
    with a throw-away temporary folder.
    """
    given = Path(out)
    if given.exists() and not given.is_dir():
        raise IndexFormatError("exists and is not a directory; choose another --out", path=given)
    target = given.resolve()
    if source is not None:
        src = Path(source).resolve()
        if target == src:
            raise IndexFormatError("is the input MIDI folder; write the index to a folder of its own", path=given)
        if src in target.parents:
            raise IndexFormatError(f"is inside the input MIDI folder {source}; write the index outside it", path=given)
        if target in src.parents:
            raise IndexFormatError(f"contains the input MIDI folder {source}; write the index elsewhere", path=given)
    if target.is_dir():
        if target == Path.cwd().resolve():
            raise IndexFormatError("is the current directory; give the index a folder of its own", path=given)
        entries = sorted(p.name for p in target.iterdir())
        foreign = [e for e in entries if e not in INDEX_FILES]
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise IndexFormatError(
                f"holds files that are not part of a musicidx index ({shown}); musicidx replaces only an index "
                "it wrote: choose a new or empty folder for --out",
                path=given,
            )
        if entries and not is_index_dir(target):
            raise IndexFormatError(
                "is not a musicidx index (no musicidx manifest.json); musicidx replaces only an index it wrote: "
                "choose a new or empty folder for --out, or delete this one yourself",
                path=given,
            )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if probe:
            os.rmdir(tempfile.mkdtemp(prefix=f".{target.name}.probe-", dir=target.parent))
    except OSError as e:
        raise MusicIdxError(f"cannot write the index here: {e.strerror or e}", path=given) from e
    return target


class IndexBusyError(MusicIdxError):
    """Another build (or ``add``) is writing the same index folder."""


def lock_path(out: str | Path) -> Path:
    """The lock of index folder ``out``: a hidden file beside it, ``.NAME.lock`` (inside it, it would be
    a foreign file, and the swap replaces the folder whole)."""
    target = Path(out).resolve()
    return target.with_name(f".{target.name}.lock")


class IndexLock:
    """An exclusive lock on writing one index folder, held by a build from before its first step to
    after the swap (:func:`index_lock`).

    ``flock`` on :func:`lock_path`: the kernel releases it when its process ends, however it ends,
    so a killed build never blocks the next one.  The file holds its holder (pid, host, start time)
    for the refusal message, and is deleted on release; a file still there when the lock is free was
    left by a build that was killed, whose details are kept in :attr:`taken_over`."""

    def __init__(self, out: str | Path, *, wait: bool = False) -> None:
        self.path = lock_path(out)
        self.out = Path(out)
        self.wait = wait
        self.fd: int | None = None
        self.taken_over: dict[str, Any] | None = None  # the holder a killed build left in the file

    def __enter__(self) -> IndexLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise MusicIdxError(f"cannot lock the index here: {e.strerror or e}", path=self.out) from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise IndexBusyError(
                    f"another musicidx build or add is writing this index ({describe_holder(holder)}; lock "
                    f"{self.path}): try again when it is done, or pass --wait to wait for it",
                    path=self.out,
                ) from None
            except BaseException:
                os.close(fd)
                raise
            try:  # the holder before us may have deleted the file on release: lock the file that is there
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        self.taken_over = _read_holder(fd)  # anything there now was left by a build that died holding the lock
        me = {"pid": os.getpid(), "host": _hostname(), "started": utc_now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)  # while still holding it: a waiter then retries on a new file
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None


def index_lock(out: str | Path, *, wait: bool = False) -> IndexLock:
    """Hold the write lock of index folder ``out`` (``with index_lock(out): ...``); another holder
    is an :class:`IndexBusyError` naming it, at once, or (with ``wait``) is waited for."""
    return IndexLock(out, wait=wait)


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe_holder(holder: dict[str, Any] | None) -> str:
    """``pid 123 on host h, started 2026-...``, from a lock file's contents."""
    if not holder:
        return "holder not recorded yet"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"


def _remove_stale_temporaries(out: Path) -> None:
    """Delete ``.NAME.tmp-PID-*`` folders left by builds that were killed (their PID is gone and
    the folder carries musicidx's :data:`PARTIAL_MARK`; a folder without it is never touched)."""
    for d in out.parent.glob(f".{out.name}.tmp-*"):
        if not (d / PARTIAL_MARK).is_file():
            continue
        try:
            pid = int(d.name[len(f".{out.name}.tmp-") :].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2


def _swap_into_place(new: Path, out: Path) -> None:
    """Make ``new`` appear at ``out``; the old ``out`` (if any) ends up at ``new``.

    On Linux an existing target is exchanged in one ``renameat2(RENAME_EXCHANGE)``, so there
    is no moment without an index at ``out``; elsewhere two renames are used.
    """
    if not out.exists():
        os.replace(new, out)
        return
    libc_name = ctypes.util.find_library("c")
    renameat2 = getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None
    if renameat2 is not None:
        at_fdcwd = -100
        if renameat2(at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(out), _RENAME_EXCHANGE) == 0:
            return
    aside = new.with_name(new.name + ".old")
    os.replace(out, aside)
    try:
        os.replace(new, out)
    except OSError:
        os.replace(aside, out)  # put the previous index back
        raise
    os.replace(aside, new)


def thresholds_by_k(manifest: dict[str, Any]) -> dict[int, float]:
    """The novelty thresholds an index calibrated, by k (``novelty.thresholds_by_k``; an index
    written before that field has the one for its own ``k``)."""
    nov = manifest["novelty"]
    by_k = nov.get("thresholds_by_k") or {str(manifest["k"]): nov["threshold"]}
    return {int(k): float(t) for k, t in sorted(by_k.items(), key=lambda kv: int(kv[0]))}


#: How the build describes a calibration made on trained works (``novelty.calibrated_on.how``).
SEEN_IN_TRAINING_HOW = "no work could be held out"


def novelty_calibration(manifest: dict[str, Any]) -> tuple[bool, str | None]:
    """(calibrated, why not): whether the index's novelty threshold may back a "new composer?"
    verdict (see :func:`~musicidx.indexer.neighbours.calibration_shortfall`).  An index that
    records the answer (``novelty.calibrated``) is taken at its word; an older one is judged by
    its ``calibrated_on`` counts; one recording no calibration at all by nothing."""
    from .neighbours import calibration_shortfall

    nov = manifest["novelty"]
    if "calibrated" in nov:
        return bool(nov["calibrated"]), nov.get("uncalibrated_reason")
    on = nov.get("calibrated_on")
    if not isinstance(on, dict):
        return True, None
    seen = bool(on.get("seen_in_training")) or str(on.get("how", "")).startswith(SEEN_IN_TRAINING_HOW)
    reason = calibration_shortfall(int(on.get("tracks", 0)), int(on.get("works", 0)), seen_in_training=seen)
    return reason is None, reason


def load_index(path: str | Path, *, mmap: bool = True) -> IndexContents:
    """Load and check an index directory; raise :class:`IndexFormatError` on any inconsistency.

    With ``mmap``, the full vectors an IVF-PQ index keeps for re-ranking are memory-mapped from
    ``index.faiss`` rather than read (only the pages queries touch come into memory); an index
    that will be added to needs ``mmap=False``."""
    import faiss
    import torch

    d = Path(path)
    if not d.is_dir():
        raise IndexFormatError("no index here (build one with 'musicidx build MIDI_DIR --out INDEX')", path=d)
    entries = {p.name for p in d.iterdir()}
    if MANIFEST not in entries and not (entries and entries <= set(INDEX_FILES)):
        raise IndexFormatError(
            "is not a musicidx index (no manifest.json); pass --index the folder that 'musicidx build' wrote",
            path=d,
        )
    for name in (MANIFEST, FAISS_FILE, ENCODER_FILE):
        if not (d / name).is_file():
            raise IndexFormatError(
                f"incomplete index: {name} is missing; build the index again into a new folder", path=d
            )
    try:
        manifest = json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"manifest.json is not valid JSON ({e})", path=d / MANIFEST) from e
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if not isinstance(version, int):
        raise IndexFormatError("manifest.json has no integer format_version", path=d / MANIFEST)
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"index format_version {version} is newer than this musicidx reads ({FORMAT_VERSION}); upgrade musicidx",
            path=d,
        )
    if version < OLDEST_FORMAT_VERSION:
        raise IndexFormatError(f"index format_version {version} is too old; rebuild it", path=d)
    if version < 3 and not (d / CLIPS_FILE).is_file():
        raise IndexFormatError(
            f"incomplete index: {CLIPS_FILE} is missing; build the index again into a new folder", path=d
        )
    try:
        FeatureConfig.from_dict(manifest["features"])
        model_cfg = ModelConfig.from_dict(manifest["model"])
        dim = int(manifest["embedding_dim"])
    except (KeyError, TypeError, ValueError, MusicIdxError) as e:
        raise IndexFormatError(f"manifest.json is missing or has bad fields ({e})", path=d / MANIFEST) from e
    try:
        flags = faiss.IO_FLAG_MMAP_IFC if mmap and manifest.get("faiss", {}).get("type") == "ivfpq" else 0
        index = faiss.read_index(str(d / FAISS_FILE), flags)
    except Exception as e:  # faiss raises RuntimeError with a C++ message
        raise IndexFormatError(f"index.faiss is damaged ({str(e).splitlines()[0][:200]})", path=d / FAISS_FILE) from e
    clips = read_clips(d)
    table_name = CLIPS_FILE if (d / CLIPS_FILE).exists() else f"{CLIPS_DIR}/"
    if index.ntotal != clips.num_rows:
        raise IndexFormatError(
            f"index.faiss holds {index.ntotal} vectors but {table_name} has {clips.num_rows} rows; rebuild the index",
            path=d,
        )
    if index.d != dim or dim != model_cfg.embedding_dim:
        raise IndexFormatError(f"index.faiss has dimension {index.d}, the manifest says {dim}", path=d)
    ids = clips.column("clip_id").to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise IndexFormatError(f"{table_name} clip_id is not 0..n-1 in order", path=d / table_name)
    blob = (d / ENCODER_FILE).read_bytes()
    if manifest.get("encoder_sha256") != hashlib.sha256(blob).hexdigest():
        raise IndexFormatError(
            "encoder.pt does not match the sha256 in manifest.json; rebuild the index", path=d / ENCODER_FILE
        )
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        raise IndexFormatError(
            f"encoder.pt is not a plain state_dict ({type(e).__name__})", path=d / ENCODER_FILE
        ) from e
    if not isinstance(state, dict):
        raise IndexFormatError("encoder.pt is not a state_dict", path=d / ENCODER_FILE)
    return IndexContents(manifest, index, clips, state)
