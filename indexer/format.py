"""The index directory's contents: the clip table, and an index saved and read whole.

:class:`IndexContents` is everything an index directory holds, in memory: the
:class:`~musicidx.indexer.manifest.Manifest`, the FAISS index, the clip table and the encoder's
weights.  :func:`save_index` writes it atomically (:func:`~musicidx.indexer.destination.write_atomically`);
:func:`read_index` reads it back with every consistency check (``ntotal`` against the clip table's
rows, the dimension, the clip ids, the encoder's sha256, weights that are a plain ``state_dict``).
:func:`clip_table` is the one builder of the clip table's rows, for a build and for ``add``.
The layout of the folder and the manifest are :mod:`.manifest`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from musicidx.encoder.config import FeatureConfig, ModelConfig

from .ann import SHARD_ROWS
from .destination import write_atomically
from .manifest import (
    CLIPS_DIR,
    CLIPS_FILE,
    ENCODER_FILE,
    FAISS_FILE,
    FORMAT_VERSION,
    INDEX_FILES,
    MANIFEST,
    IndexFormatError,
    Manifest,
    read_manifest,
    write_manifest,
)

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


@dataclass(frozen=True)
class ClipSource:
    """What the clip table records of a track: its composer and work, its path relative to the
    corpus folder, and the sha256 of its file and of its notes."""

    composer: str
    work: str
    path: str
    sha256: str
    notes_sha256: str


def clip_table(
    tracks: Sequence[ClipSource],
    track: np.ndarray,
    start: np.ndarray,
    *,
    clip_seconds: float,
    first_clip: int = 0,
    first_track: int = 0,
) -> pa.Table:
    """The clip table of clips that belong to ``tracks[track[i]]`` and start at ``start[i]``
    seconds: one row per clip, clip ids from ``first_clip``, track ids ``track`` -- or, for the
    rows ``add`` appends to an index (``first_clip`` or ``first_track`` given), the tracks
    numbered in order from ``first_track``."""
    track_id = track
    if first_clip or first_track:
        order = {int(t): first_track + j for j, t in enumerate(np.unique(track))}
        track_id = np.array([order[int(t)] for t in track], dtype=np.int64)
    rows = [tracks[t] for t in track]
    return pa.table(
        {
            "clip_id": np.arange(first_clip, first_clip + len(track), dtype=np.int64),
            "track_id": track_id.astype(np.int32),
            "composer": [r.composer for r in rows],
            "work": [r.work for r in rows],
            "path": [r.path for r in rows],
            "sha256": [r.sha256 for r in rows],
            "notes_sha256": [r.notes_sha256 for r in rows],
            "start_s": start.astype(np.float64),
            "dur_s": np.full(len(track), clip_seconds),
        },
        schema=CLIPS_SCHEMA,
    )


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


@dataclass
class IndexContents:
    """Everything an index directory holds, in memory."""

    manifest: Manifest
    faiss_index: Any
    clips: pa.Table
    encoder_state: dict[str, Any]

    @property
    def feature_config(self) -> FeatureConfig:
        return self.manifest.features

    @property
    def model_config(self) -> ModelConfig:
        return self.manifest.model


def encoder_bytes(state_dict: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.getvalue()


def save_index(contents: IndexContents, out: str | Path, *, shard_rows: int = SHARD_ROWS) -> Path:
    """Write ``contents`` to ``out`` atomically; an existing index there is replaced whole.

    ``out`` must pass :func:`~musicidx.indexer.destination.check_index_destination`: a folder
    holding anything but a musicidx index is refused, never overwritten.  The clip table is one
    file up to ``shard_rows`` rows and a folder of parts above (:func:`write_clips`); the index is
    written in this version's format, whatever format it was read from, and the manifest records
    the sha256 of the encoder written."""
    import faiss

    def write(tmp: Path) -> None:
        blob = encoder_bytes(contents.encoder_state)
        (tmp / ENCODER_FILE).write_bytes(blob)
        sha = hashlib.sha256(blob).hexdigest()
        manifest = dataclasses.replace(contents.manifest, encoder_sha256=sha, format_version=FORMAT_VERSION)
        faiss.write_index(contents.faiss_index, str(tmp / FAISS_FILE))
        write_clips(contents.clips, tmp, shard_rows=shard_rows)
        write_manifest(manifest, tmp)

    return write_atomically(Path(out), write)


def read_index(path: str | Path, *, mmap: bool = True) -> IndexContents:
    """Read an index directory and check it; raise :class:`IndexFormatError` on any inconsistency.

    With ``mmap``, the full vectors an IVF-PQ index keeps for re-ranking are memory-mapped from
    ``index.faiss`` rather than read (only the pages queries touch come into memory); an index
    that will be added to needs ``mmap=False``."""
    d = Path(path)
    _check_files(d)
    manifest = read_manifest(d)
    if manifest.format_version < 3 and not (d / CLIPS_FILE).is_file():
        raise IndexFormatError(
            f"incomplete index: {CLIPS_FILE} is missing; build the index again into a new folder", path=d
        )
    index = _read_faiss(d / FAISS_FILE, mmap=mmap and manifest.faiss.type == "ivfpq")
    clips = read_clips(d)
    table_name = CLIPS_FILE if (d / CLIPS_FILE).exists() else f"{CLIPS_DIR}/"
    if index.ntotal != clips.num_rows:
        raise IndexFormatError(
            f"index.faiss holds {index.ntotal} vectors but {table_name} has {clips.num_rows} rows; rebuild the index",
            path=d,
        )
    dim = manifest.embedding_dim
    if index.d != dim or dim != manifest.model.embedding_dim:
        raise IndexFormatError(f"index.faiss has dimension {index.d}, the manifest says {dim}", path=d)
    ids = clips.column("clip_id").to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise IndexFormatError(f"{table_name} clip_id is not 0..n-1 in order", path=d / table_name)
    return IndexContents(manifest, index, clips, _read_encoder(d / ENCODER_FILE, manifest.encoder_sha256))


def _check_files(d: Path) -> None:
    """A folder with a manifest, the FAISS index and the encoder, else one line saying what is not there."""
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


def _read_faiss(path: Path, *, mmap: bool) -> Any:
    import faiss

    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
    except Exception as e:  # faiss raises RuntimeError with a C++ message
        raise IndexFormatError(f"index.faiss is damaged ({str(e).splitlines()[0][:200]})", path=path) from e


def _read_encoder(path: Path, sha256: str | None) -> dict[str, Any]:
    """The encoder's ``state_dict``: its bytes must have the manifest's sha256, and it is loaded
    with ``weights_only=True`` (a pickle that would run code is refused, never run)."""
    import torch

    blob = path.read_bytes()
    if sha256 != hashlib.sha256(blob).hexdigest():
        raise IndexFormatError("encoder.pt does not match the sha256 in manifest.json; rebuild the index", path=path)
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        raise IndexFormatError(f"encoder.pt is not a plain state_dict ({type(e).__name__})", path=path) from e
    if not isinstance(state, dict):
        raise IndexFormatError("encoder.pt is not a state_dict", path=path)
    return state
