"""``benchmarks/perf/same_answers.py``, the before/after identity check of issue 18: a copy of an index
is the same answers, and a changed vector, clip row, manifest field or score row is not.

The script is loaded from its file (the benchmarks are not an installed package); it reads indexes
with FAISS and pyarrow only, so a hand-made index (``synthetic_index``) is all it needs here."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny import SyntheticIndex

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "perf" / "same_answers.py"
pytestmark = pytest.mark.skipif(not SCRIPT.is_file(), reason="needs the source checkout")

CSV = (
    "file,composer,confidence,novelty,is_new,nearest_track,same_composition,status,error\n"
    "a.mid,Alpha,0.5,0.1,False,Alpha/x.mid,False,ok,\n"
    "b.mid,Beta,0.75,0.2,True,Beta/y.mid,False,ok,\n"
)


@pytest.fixture(scope="module")
def same_answers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("same_answers", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["same_answers"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def pair(synthetic_index: SyntheticIndex, tmp_path: Path) -> tuple[Path, Path]:
    """The index and a copy of it, written a second later (its ``created`` differs), with a score table each."""
    old, new = synthetic_index.path, Path(shutil.copytree(synthetic_index.path, tmp_path / "copy"))
    for folder, created in ((old, "2026-01-01T00:00:00+00:00"), (new, "2026-01-01T00:00:01+00:00")):
        m = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps({**m, "created": created}))
    (tmp_path / "old.csv").write_text(CSV)
    (tmp_path / "new.csv").write_text(CSV)
    return old, new


def _run(module: ModuleType, old: Path, new: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    folder = new.parent
    code = module.main([str(old), str(new), "--scores", str(folder / "old.csv"), str(folder / "new.csv")])
    return code, capsys.readouterr().out.splitlines()


def _result(lines: list[str], what: str) -> str:
    (row,) = [ln for ln in lines if ln.startswith(f"{what}  ")]
    return row.split()[-1]


def test_a_copy_is_the_same_answers(
    same_answers: ModuleType, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = _run(same_answers, *pair, capsys)
    assert code == 0, lines
    assert [_result(lines, w) for w in ("vectors", "clip table", "manifest", "score CSV")] == ["identical"] * 4
    assert "vectors     12 x 32, IndexFlatIP behind an id map" in lines[1]
    assert 'manifest: not counted: created: "2026-01-01T00:00:00+00:00" -> "2026-01-01T00:00:01+00:00"' in lines
    assert lines[-1] == "same answers"


def _change_a_vector(new: Path) -> None:
    import faiss

    index = faiss.read_index(str(new / "index.faiss"))
    flat = faiss.downcast_index(index.index)
    faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d)[5 * flat.d] += 0.5  # one float of clip 5
    faiss.write_index(index, str(new / "index.faiss"))


def _change_a_clip(new: Path) -> None:
    t = pq.read_table(new / "clips.parquet")
    composer = t.column("composer").to_pylist()
    composer[7] = "Delta"
    pq.write_table(
        t.set_column(t.schema.get_field_index("composer"), "composer", pa.array(composer)), new / "clips.parquet"
    )


def _change_the_manifest(new: Path) -> None:
    m = json.loads((new / "manifest.json").read_text())
    m["format_version"] += 1
    (new / "manifest.json").write_text(json.dumps(m))


def _change_a_score(new: Path) -> None:
    (new.parent / "new.csv").write_text(CSV.replace("0.75", "0.76"))


@pytest.mark.parametrize(
    ("change", "what", "says"),
    [
        (_change_a_vector, "vectors", "1 of 12 vectors differ (largest difference 0.5); ids 5"),
        (_change_a_clip, "clip table", "column composer: 1 row(s) differ, first row 7: 'Beta' -> 'Delta'"),
        (_change_the_manifest, "manifest", "format_version: "),
        (_change_a_score, "score CSV", "b.mid: confidence '0.75' -> '0.76'"),
    ],
    ids=["vector", "clip", "manifest", "score"],
)
def test_a_change_is_found_and_named(
    same_answers: ModuleType,
    pair: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    change: object,
    what: str,
    says: str,
) -> None:
    change(pair[1])  # type: ignore[operator]
    code, lines = _run(same_answers, *pair, capsys)
    assert code == 1 and lines[-1] == "NOT the same answers"
    results = {w: _result(lines, w) for w in ("vectors", "clip table", "manifest", "score CSV")}
    assert results == {w: "DIFFERENT" if w == what else "identical" for w in results}
    (line,) = [ln for ln in lines if ln.startswith(f"{what}: differs: ")]
    assert says in line, line


def test_the_same_rows_stored_in_parts_or_written_otherwise_still_differ(
    same_answers: ModuleType, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = pair
    t = pq.read_table(new / "clips.parquet")
    (new / "clips.parquet").unlink()
    (new / "clips").mkdir()
    pq.write_table(t.slice(0, 5), new / "clips" / "part-00000.parquet")
    pq.write_table(t.slice(5), new / "clips" / "part-00001.parquet")
    (new.parent / "new.csv").write_bytes(CSV.replace("\n", "\r\n").encode())
    code, lines = _run(same_answers, old, new, capsys)
    assert code == 1
    assert "clip table: differs: stored as clips.parquet -> clips/ (2 parts)" in lines  # and no row differs
    assert not [ln for ln in lines if ln.startswith("clip table: differs: column")]
    assert "score CSV: differs: the same rows, written otherwise (order, header, quoting or line endings)" in lines


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq-refined", "ivfpq"])
def test_vectors_are_read_by_id_from_every_kind_of_index(
    same_answers: ModuleType, tmp_path: Path, rng: np.random.Generator, kind: str
) -> None:
    import faiss

    x = rng.normal(size=(300, 16)).astype(np.float32)
    ids = rng.permutation(300).astype(np.int64)
    if kind == "hnsw":
        index = faiss.IndexIDMap2(faiss.IndexHNSWFlat(16, 8, faiss.METRIC_INNER_PRODUCT))
        index.add_with_ids(x, ids)
    else:  # as musicidx fills them: numbered in order (the refined kind) or by explicit ids
        index = faiss.index_factory(16, "IVF4,PQ4x4np" + (",RFlat" if kind == "ivfpq-refined" else ""))
        index.train(x)
        if kind == "ivfpq-refined":
            index.add(x)
            ids = np.arange(300)
        else:
            index.add_with_ids(x, ids)
    faiss.write_index(index, str(tmp_path / "index.faiss"))
    got_ids, got, _ = same_answers.read_vectors(tmp_path / "index.faiss")
    want = x[np.argsort(ids)]
    assert np.array_equal(got_ids, np.arange(300)) and got.shape == (300, 16)
    if kind == "ivfpq":  # decoded from 4-bit codes: near, not equal
        assert np.abs(got - want).mean() < np.abs(want).mean()
    else:
        assert np.array_equal(got, want)


def test_it_runs_as_a_module_from_the_repository_root(pair: tuple[Path, Path]) -> None:
    old, new = pair
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.perf.same_answers", str(old), str(new)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "same answers", proc.stdout + proc.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "benchmarks.perf.same_answers", str(old), str(new.parent / "none")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and f"{new.parent / 'none' / 'manifest.json'}: no such file" in missing.stderr


def test_only_times_are_left_out_of_the_manifest(same_answers: ModuleType) -> None:
    assert [
        p for p in ("created", "additions.2.when", "soundfont.rendered_seconds") if not same_answers.ignored(p)
    ] == []
    kept = ("k", "features.clip_seconds", "soundfont.sha256", "training.history.0.loss", "additions.0.tracks")
    assert [p for p in kept if same_answers.ignored(p)] == []
    assert same_answers.flatten({"a": {"b": [1, 2]}, "h": [{"e": 1}], "z": {}}) == [
        ("a.b", [1, 2]),
        ("h.0.e", 1),
        ("z", {}),
    ]
