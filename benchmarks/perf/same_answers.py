"""The same answers before and after a change: two index folders built from the same corpus (by the
old code and the new), and optionally their ``musicidx score --out`` tables, compared.

    python -m benchmarks.perf.same_answers OLD_INDEX NEW_INDEX [--scores OLD.csv NEW.csv]

Compared, and printed as a table (one row each, then the differences):

* vectors: every vector of ``index.faiss`` under its id, bit for bit (flat and HNSW indexes behind
  an id map, IVF-PQ with its re-ranking vectors, or a bare IVF decoded from its codes); the file's
  own bytes are shown beside them but do not count (an HNSW graph built on several threads may be
  laid out otherwise around the same vectors);
* the clip table: the rows of ``clips.parquet`` or of the parts in ``clips/``, and which of the two;
* the manifests: every field, in order; the time an index was written (``created``, each
  addition's ``when``) and the seconds of audio the build had to render (``soundfont.rendered_seconds``:
  0 when the feature cache had every file) are listed but do not count;
* the score tables, byte for byte (with the rows that differ when they do).

Exit status 0 when all that counts is identical, 1 when anything differs (2: a usage error). The
script reads the files with FAISS, pyarrow and json only, never with musicidx, so the old and the
new code's indexes are read the same way whatever the change did to the package. How to build the
two indexes: benchmarks/README.md ("The same answers before and after a change").
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Manifest fields that say when or how long, not what: listed, never counted as differences.
IGNORED_FIELDS = (
    re.compile(r"created"),
    re.compile(r"additions\.\d+\.when"),
    re.compile(r"soundfont\.rendered_seconds"),
)
NEWLINE = b"\n"
#: How many differing rows or fields each check prints at most.
SHOWN = 10


@dataclass
class Check:
    """One row of the table: what was compared, what each side holds, and the differences."""

    what: str
    old: str
    new: str
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # shown, never counted

    @property
    def same(self) -> bool:
        return not self.differences


# ------------------------------------------------------------------------------------ vectors


def read_vectors(index_file: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """``(ids, vectors, kind)`` of a FAISS index file: the ids ascending, row i the vector of ids[i]."""
    import faiss

    index = faiss.read_index(str(index_file))
    n = index.ntotal
    if isinstance(index, faiss.IndexIDMap | faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        vectors, kind = inner.reconstruct_n(0, n), f"{type(inner).__name__} behind an id map"
    elif isinstance(index, faiss.IndexRefine):  # IVF-PQ re-ranked with full vectors, numbered in order
        ids = np.arange(n, dtype=np.int64)
        vectors = faiss.downcast_index(index.refine_index).reconstruct_n(0, n)
        kind = f"{type(faiss.downcast_index(index.base_index)).__name__} + re-ranking vectors"
    else:
        ivf = _ivf_of(index)
        if ivf is None:
            ids, vectors = np.arange(n, dtype=np.int64), index.reconstruct_n(0, n)
        else:  # a bare IVF: its ids from the inverted lists, its vectors decoded from the codes
            ids = np.concatenate([np.zeros(0, np.int64), *_list_ids(ivf)])
            ivf.make_direct_map()
            vectors = np.stack([index.reconstruct(int(i)) for i in ids]) if n else np.zeros((0, index.d), np.float32)
        kind = type(index).__name__
    order = np.argsort(ids, kind="stable")
    return ids[order], np.asarray(vectors, dtype=np.float32).reshape(n, index.d)[order], kind


def _ivf_of(index: Any) -> Any | None:
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _list_ids(ivf: Any) -> list[np.ndarray]:
    import faiss

    lists = ivf.invlists
    return [
        faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).astype(np.int64).copy()
        for i in range(ivf.nlist)
        if lists.list_size(i)
    ]


def compare_vectors(old: Path, new: Path) -> Check:
    a_ids, a, a_kind = read_vectors(old / "index.faiss")
    b_ids, b, b_kind = read_vectors(new / "index.faiss")
    check = Check("vectors", f"{len(a)} x {a.shape[1]}, {a_kind}", f"{len(b)} x {b.shape[1]}, {b_kind}")
    if a_kind != b_kind:
        check.differences.append(f"index kind: {a_kind} -> {b_kind}")
    if a.shape != b.shape:
        check.differences.append(f"shape: {a.shape} -> {b.shape}")
    elif not np.array_equal(a_ids, b_ids):
        check.differences.append(f"ids: {int((a_ids != b_ids).sum())} of {len(a_ids)} differ")
    elif a.tobytes() != b.tobytes():
        rows = np.flatnonzero((a.view(np.uint32) != b.view(np.uint32)).any(axis=1))
        worst = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
        shown = ", ".join(str(int(a_ids[r])) for r in rows[:SHOWN])
        check.differences.append(
            f"{len(rows)} of {len(a)} vectors differ (largest difference {worst:.3g}); ids {shown}"
            + (" ..." if len(rows) > SHOWN else "")
        )
    same_file = (old / "index.faiss").read_bytes() == (new / "index.faiss").read_bytes()
    check.notes.append(f"index.faiss files {'byte-identical' if same_file else 'differ in their bytes'}")
    return check


# ------------------------------------------------------------------------------- clip table


def read_clip_table(folder: Path) -> tuple[Any, str]:
    """The clip table of an index folder and where it was (``clips.parquet`` or ``clips/ (N parts)``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted((folder / "clips").glob("part-*.parquet"))
    if parts:
        return pa.concat_tables([pq.read_table(p) for p in parts]), f"clips/ ({len(parts)} parts)"
    return pq.read_table(folder / "clips.parquet"), "clips.parquet"


def compare_clip_tables(old: Path, new: Path) -> Check:
    a, a_where = read_clip_table(old)
    b, b_where = read_clip_table(new)
    check = Check(
        "clip table",
        f"{a.num_rows} rows x {a.num_columns} columns, {a_where}",
        f"{b.num_rows} rows x {b.num_columns} columns, {b_where}",
    )
    if a_where != b_where:
        check.differences.append(f"stored as {a_where} -> {b_where}")
    if not a.schema.equals(b.schema):
        check.differences.append(f"schema: {_schema(a)} -> {_schema(b)}")
        return check
    if a.num_rows != b.num_rows:
        check.differences.append(f"rows: {a.num_rows} -> {b.num_rows}")
    for name in a.column_names:
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        rows = [i for i, (u, v) in enumerate(zip(x, y)) if u != v]
        if rows:
            i = rows[0]
            check.differences.append(f"column {name}: {len(rows)} row(s) differ, first row {i}: {x[i]!r} -> {y[i]!r}")
    return check


def _schema(table: Any) -> str:
    return ", ".join(f"{f.name} {f.type}" for f in table.schema)


# --------------------------------------------------------------------------------- manifest


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``[(dotted.path, leaf value), ...]`` in the document's order (list items by position)."""
    if isinstance(value, dict):
        items: Sequence[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        items = list(enumerate(value))
    else:
        return [(prefix, value)]
    if not items:
        return [(prefix, value)]
    return [leaf for key, v in items for leaf in flatten(v, f"{prefix}.{key}" if prefix else str(key))]


ABSENT = object()  # a field one manifest has and the other lacks


def ignored(path: str) -> bool:
    return any(p.fullmatch(path) for p in IGNORED_FIELDS)


def compare_manifests(old: Path, new: Path) -> Check:
    a = flatten(json.loads((old / "manifest.json").read_text(encoding="utf-8")))
    b = flatten(json.loads((new / "manifest.json").read_text(encoding="utf-8")))
    check = Check("manifest", f"{len(a)} fields", f"{len(b)} fields")
    da, db = dict(a), dict(b)
    for path in dict.fromkeys([p for p, _ in a] + [p for p, _ in b]):
        u, v = da.get(path, ABSENT), db.get(path, ABSENT)
        if u == v:
            continue
        line = f"{path}: {_short(u)} -> {_short(v)}"
        (check.notes if ignored(path) else check.differences).append(line)
    if not check.differences and [p for p, _ in a if not ignored(p)] != [p for p, _ in b if not ignored(p)]:
        check.differences.append("the same fields in another order")
    return check


def _short(value: Any, width: int = 60) -> str:
    text = "(absent)" if value is ABSENT else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


# ------------------------------------------------------------------------------- score CSVs


def compare_scores(old: Path, new: Path) -> Check:
    a, b = old.read_bytes(), new.read_bytes()

    def describe(data: bytes) -> str:
        return f"{data.count(NEWLINE)} lines, sha256 {hashlib.sha256(data).hexdigest()[:12]}"

    check = Check("score CSV", describe(a), describe(b))
    if a == b:
        return check
    rows_a, rows_b = (list(csv.DictReader(io.StringIO(d.decode("utf-8")))) for d in (a, b))
    by_file_b = {r.get("file"): r for r in rows_b}
    differing = []
    for r in rows_a:
        other = by_file_b.pop(r.get("file"), None)
        if other is None:
            differing.append(f"{r.get('file')}: only in the old table")
        elif other != r:
            cols = [c for c in dict.fromkeys([*r, *other]) if r.get(c) != other.get(c)]
            differing.append(f"{r.get('file')}: " + ", ".join(f"{c} {r.get(c)!r} -> {other.get(c)!r}" for c in cols))
    differing += [f"{f}: only in the new table" for f in by_file_b]
    if not differing:  # the same rows, other bytes: order, header, quoting or line endings
        differing.append("the same rows, written otherwise (order, header, quoting or line endings)")
    check.differences += differing
    return check


# ------------------------------------------------------------------------------------- main


def compare(old: Path, new: Path, scores: tuple[Path, Path] | None = None) -> list[Check]:
    """Every check of two index folders (and two score tables, when given)."""
    checks = [compare_vectors(old, new), compare_clip_tables(old, new), compare_manifests(old, new)]
    if scores is not None:
        checks.append(compare_scores(*scores))
    return checks


def render(checks: list[Check], old_name: str, new_name: str) -> str:
    rows = [("", old_name, new_name, "result")]
    rows += [(c.what, c.old, c.new, "identical" if c.same else "DIFFERENT") for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, [*widths, 0])).rstrip() for r in rows] + [""]
    for c in checks:
        for d in c.differences[:SHOWN]:
            lines.append(f"{c.what}: differs: {d}")
        if len(c.differences) > SHOWN:
            lines.append(f"{c.what}: ... and {len(c.differences) - SHOWN} more differences")
        for note in c.notes:
            lines.append(f"{c.what}: not counted: {note}")
    lines.append("same answers" if all(c.same for c in checks) else "NOT the same answers")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path, help="index folder built by the old code")
    ap.add_argument("new", type=Path, help="index folder built by the new code from the same corpus")
    ap.add_argument(
        "--scores", nargs=2, type=Path, metavar=("OLD_CSV", "NEW_CSV"), help="the two `musicidx score --out` tables"
    )
    args = ap.parse_args(argv)
    for p in (args.old / "manifest.json", args.new / "manifest.json", *(args.scores or ())):
        if not p.is_file():
            ap.error(f"{p}: no such file")
    checks = compare(args.old, args.new, tuple(args.scores) if args.scores else None)
    print(render(checks, f"old: {args.old}", f"new: {args.new}"))
    return 0 if all(c.same for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
