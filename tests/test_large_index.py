"""Indexes for large collections: the kind ``auto`` picks by size, IVF-PQ trained on a sample and
filled shard by shard, the clip table as Parquet parts, format 2 indexes still loading, and the
memory and recall figures the manifest and ``musicidx info`` report.

IVF-PQ is forced on a few thousand clustered random vectors by lowering the size thresholds, so
these tests stay fast; ``benchmarks/perf/faiss_large.py`` measures the real sizes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from tiny import SyntheticIndex

from musicidx.cli import cli
from musicidx.encoder.errors import MusicIdxError
from musicidx.indexer.ann import (
    IVFPQ_MIN_VECTORS,
    choose_faiss_kind,
    exact_top_k,
    fill_faiss_index,
    index_embeddings,
    ivf_of,
    ivfpq_recipe,
    make_faiss_index,
    merge_ivf_shards,
    recall_at_k,
    stored_vectors,
    train_faiss_index,
)
from musicidx.indexer.format import read_index, save_index
from musicidx.indexer.manifest import FORMAT_VERSION, CalibratedOn, IndexFormatError, Novelty

DIM = 32
N = IVFPQ_MIN_VECTORS + 16  # the fewest vectors IVF-PQ trains on, and a few more


def _clustered(rng: np.random.Generator, n: int, dim: int = DIM, clusters: int = 40) -> np.ndarray:
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return _clustered(np.random.default_rng(11), N)


@pytest.fixture(scope="module")
def trained_empty(vectors: np.ndarray) -> Any:
    index, kind = make_faiss_index(DIM, N, "ivfpq")
    assert kind == "ivfpq" and not index.is_trained
    train_faiss_index(index, vectors[::2])
    return index


def test_auto_chooses_by_size() -> None:
    assert [choose_faiss_kind(n) for n in (1, 100_000, 100_001, 1_000_000, 1_000_001, 10**8)] == [
        "flat",
        "flat",
        "hnsw",
        "hnsw",
        "ivfpq",
        "ivfpq",
    ]
    assert choose_faiss_kind(50, flat_max=10, hnsw_max=40) == "ivfpq"
    assert make_faiss_index(8, 100_000)[1] == "flat" and make_faiss_index(8, 100_001)[1] == "hnsw"
    assert make_faiss_index(DIM, 2_000_000)[1] == "ivfpq"
    with pytest.raises(MusicIdxError, match=r"IVF-PQ index needs at least 9,984 vectors to train, got 9,983"):
        make_faiss_index(DIM, IVFPQ_MIN_VECTORS - 1, "ivfpq")
    with pytest.raises(MusicIdxError, match=r"unknown FAISS index kind 'ivf'; use auto, flat, hnsw, ivfpq"):
        make_faiss_index(DIM, 10, "ivf")


def test_recipe_fits_the_memory_budget_and_grows_its_lists_with_n() -> None:
    small, large = ivfpq_recipe(128, 10**6), ivfpq_recipe(128, 10**7)
    assert small.code_bytes + 8 <= 64 and large.code_bytes == small.code_bytes
    assert small.nlist < large.nlist <= 65_536 and 39 * small.nlist <= 10**6
    assert f"IVF{large.nlist}" in large.factory and large.train_size <= 10**7
    assert ivfpq_recipe(DIM, N).nlist * 39 <= N  # k-means gets its 39 points per centroid


def test_sharded_fill_and_merged_shards_equal_the_one_shot_fill(vectors: np.ndarray, trained_empty: Any) -> None:
    ids = np.arange(N, dtype=np.int64)
    one_shot = fill_faiss_index(faiss.clone_index(trained_empty), [(vectors, ids)])
    chunked = fill_faiss_index(
        faiss.clone_index(trained_empty), [(vectors[s : s + 1000], ids[s : s + 1000]) for s in range(0, N, 1000)]
    )
    bounds = [0, 3000, 7000, N]
    shards = [
        fill_faiss_index(faiss.clone_index(trained_empty), [(vectors[a:b], ids[a:b])])
        for a, b in zip(bounds, bounds[1:])
    ]
    merged = merge_ivf_shards(shards)
    queries = _clustered(np.random.default_rng(5), 200)
    for index in (one_shot, chunked, merged):
        ivf_of(index).nprobe = 8
    expected = one_shot.search(queries, 10)
    for index in (chunked, merged):
        assert index.ntotal == N
        got = index.search(queries, 10)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])
    assert faiss.serialize_index(chunked).tobytes() == faiss.serialize_index(one_shot).tobytes()


def test_merging_refuses_what_is_not_ivf(trained_empty: Any) -> None:
    flat, _ = make_faiss_index(DIM, 10, "flat")
    with pytest.raises(MusicIdxError, match="only IVF indexes can be merged"):
        merge_ivf_shards([faiss.clone_index(trained_empty), flat])


def test_exact_top_k_in_chunks_and_recall() -> None:
    rng = np.random.default_rng(2)
    x, q = _clustered(rng, 500), _clustered(rng, 20)
    one = faiss.IndexFlatIP(DIM)
    one.add(x)
    np.testing.assert_array_equal(exact_top_k(q, [x[:123], x[123:400], x[400:]], 10), one.search(q, 10)[1])
    truth = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    assert recall_at_k(np.array([[3, 2, 9, 9], [4, 5, 6, 7]]), truth) == pytest.approx((0.5 + 1.0) / 2)
    assert recall_at_k(np.array([[-1, -1, -1, -1], [7, 6, 5, -1]]), truth) == pytest.approx(0.75 / 2)
    assert exact_top_k(q[:1], [x[:3]], 5)[0, 3:].tolist() == [-1, -1]


@pytest.mark.slow  # IVF-PQ trained and its recall measured on thousands of vectors
def test_index_embeddings_measures_memory_and_recall(vectors: np.ndarray) -> None:
    index, entry = index_embeddings(vectors, "auto", flat_max=100, hnsw_max=1000, shard_rows=3000)
    assert entry.type == "ivfpq" and entry.ntotal == index.ntotal == N
    assert entry.chosen == "auto: flat up to 100 vectors, HNSW up to 1,000, IVF-PQ above"
    ivf = ivf_of(index)
    assert entry.params is not None and entry.params["nprobe"] == ivf.nprobe and entry.params["nlist"] == ivf.nlist
    assert entry.mapped_bytes_per_vector == 4 * DIM  # the float32 vectors re-ranking reads
    assert entry.bytes_per_vector == round((len(faiss.serialize_index(index)) - 4 * DIM * N) / N, 2)
    assert ivfpq_recipe(DIM, N).code_bytes + 8 <= entry.bytes_per_vector < 4 * DIM  # under raw float32
    assert entry.params["k_factor"] == index.k_factor
    # the recall in the entry is the one a re-measurement on the same queries gives
    q_ids = np.sort(np.random.default_rng([0, 2]).choice(N, size=1000, replace=False))
    r = entry.recall_at_10
    truth = faiss.IndexFlatIP(DIM)
    truth.add(vectors)
    expected = recall_at_k(index.search(vectors[q_ids], 10)[1], truth.search(vectors[q_ids], 10)[1])
    assert r is not None and (r.queries, r.k, r.value) == (1000, 10, round(expected, 4))
    assert r.value >= 0.95 or entry.params["k_factor"] == 512  # the target, or the largest shortlist
    np.testing.assert_array_equal(stored_vectors(index, np.array([0, 5, N - 1])), vectors[[0, 5, N - 1]])
    assert ivf.direct_map.type == faiss.DirectMap.NoMap
    # the codes alone (a shortlist of k) rank worse than the re-ranked shortlist
    index.k_factor = 1.0
    assert recall_at_k(index.search(vectors[q_ids], 10)[1], truth.search(vectors[q_ids], 10)[1]) < r.value

    flat, flat_entry = index_embeddings(vectors[:500], "auto")
    assert flat_entry.recall_at_10 is not None
    assert (flat_entry.type, flat_entry.recall_at_10.value, flat_entry.recall_at_10.queries) == (
        "flat",
        1.0,
        500,
    )
    assert flat_entry.bytes_per_vector is not None and flat_entry.bytes_per_vector >= 4 * DIM + 8
    assert flat_entry.mapped_bytes_per_vector == 0


def _for_info(m: dict[str, Any]) -> dict[str, Any]:
    """The hand-made index's manifest with the fields a build writes and ``info`` shows."""
    m.update(musicidx_version="0.1.0", created="2026-11-25T00:00:00+00:00")
    m["novelty"] = {"threshold": 0.5, "accept_rate": 0.95, "calibrated_on": {"tracks": 2, "works": 2}}
    return m


def _as_format_2(path: Path) -> None:
    m = _for_info(json.loads((path / "manifest.json").read_text()))
    m["format_version"] = 2
    m["faiss"] = {k: m["faiss"][k] for k in ("type", "metric", "ntotal")}
    (path / "manifest.json").write_text(json.dumps(m))


def test_clip_table_in_parts_round_trips(synthetic_index: SyntheticIndex, tmp_path: Path) -> None:
    out = save_index(synthetic_index.contents, tmp_path / "parts", shard_rows=5)
    parts = sorted(p.name for p in (out / "clips").iterdir())
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert not (out / "clips.parquet").exists()
    loaded = read_index(out)
    assert loaded.clips.equals(synthetic_index.contents.clips) and loaded.manifest.format_version == 3
    save_index(loaded, out)  # replaced by a one-file table: nothing of the parts is left
    assert sorted(p.name for p in out.iterdir()) == ["clips.parquet", "encoder.pt", "index.faiss", "manifest.json"]
    assert read_index(out).clips.equals(synthetic_index.contents.clips)


def test_clip_table_parts_are_checked(synthetic_index: SyntheticIndex, tmp_path: Path) -> None:
    out = save_index(synthetic_index.contents, tmp_path / "parts", shard_rows=5)
    (out / "clips" / "part-00001.parquet").unlink()
    with pytest.raises(IndexFormatError, match=r"index.faiss holds 12 vectors but clips/ has 7 rows"):
        read_index(out)
    (out / "clips" / "part-00000.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(IndexFormatError, match=r"part-00000.parquet is damaged"):
        read_index(out)
    (out / "clips.parquet").write_bytes(b"")
    with pytest.raises(IndexFormatError, match=r"holds both clips.parquet and clips/"):
        read_index(out)


def test_format_2_index_with_one_clips_parquet_still_loads(synthetic_index: SyntheticIndex) -> None:
    path = synthetic_index.path
    _as_format_2(path)
    loaded = read_index(path)
    assert loaded.manifest.format_version == 2 and loaded.clips.equals(synthetic_index.contents.clips)
    out = CliRunner().invoke(cli, ["info", "--index", str(path)])
    assert out.exit_code == 0, out.output
    assert "format 2," in out.output and "no memory or recall figures (built before format 3)" in out.output
    # a format 2 index is one clips.parquet: parts are format 3 only
    (path / "clips.parquet").rename(path / "elsewhere.parquet")
    (path / "clips").mkdir()
    (path / "elsewhere.parquet").rename(path / "clips" / "part-00000.parquet")
    with pytest.raises(IndexFormatError, match=r"incomplete index: clips.parquet is missing"):
        read_index(path)


@pytest.mark.slow  # IVF-PQ trained and its recall measured on thousands of vectors
def test_manifest_and_info_report_memory_and_recall(
    synthetic_index: SyntheticIndex, vectors: np.ndarray, tmp_path: Path
) -> None:
    contents = synthetic_index.contents
    contents.faiss_index, entry = index_embeddings(vectors, "ivfpq")
    contents.manifest = dataclasses.replace(
        contents.manifest,
        musicidx_version="0.1.0",
        created="2026-11-25T00:00:00+00:00",
        faiss=entry,
        novelty=Novelty(0.5, accept_rate=0.95, calibrated_on=CalibratedOn(tracks=2, works=2)),
    )
    contents.clips = pa.concat_tables([contents.clips] * (N // 12) + [contents.clips.slice(0, N % 12)])
    contents.clips = contents.clips.set_column(0, "clip_id", pa.array(np.arange(N, dtype=np.int64)))
    save_index(contents, tmp_path / "idx", shard_rows=4000)
    assert sorted(p.name for p in (tmp_path / "idx" / "clips").iterdir())[-1] == "part-00002.parquet"
    loaded = read_index(tmp_path / "idx")
    m = loaded.manifest
    assert m.format_version == FORMAT_VERSION == 3 and m.faiss == entry
    queries = vectors[:50] + 0.01
    np.testing.assert_array_equal(
        loaded.faiss_index.search(queries, 10)[1], contents.faiss_index.search(queries, 10)[1]
    )
    out = CliRunner().invoke(cli, ["info", "--index", str(tmp_path / "idx")])
    assert out.exit_code == 0, out.output
    f = m.faiss
    assert f"  memory       {f.bytes_per_vector:g} bytes per vector in memory (codes, ids, quantiser)" in out.output
    assert f"+ {f.mapped_bytes_per_vector:g} memory-mapped from disk" in out.output
    assert f.recall_at_10 is not None
    r = f.recall_at_10.value
    assert f"  recall@10    {r:.4f} against exact search (1000 of its own vectors as queries)" in out.output
    assert f"  chosen       forced (--faiss ivfpq); factory {ivfpq_recipe(DIM, N).factory}, nlist" in out.output
