"""The index directory on disk: write atomically, load with every consistency check.

::

    INDEX/manifest.json    format_version, configs, SoundFont, composers, counts, FAISS type, k,
                           novelty threshold and its calibration, training summary, encoder sha256
    INDEX/index.faiss      FAISS index; ids = clips.parquet's clip_id
    INDEX/clips.parquet    clip_id, track_id, composer, work, path, sha256, start_s, dur_s
    INDEX/encoder.pt       the encoder's state_dict, loaded with weights_only=True

An index is written into a temporary sibling directory and swapped into place, so a build
interrupted at any moment leaves the previous index (or none) at the target, never half of one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as _dt
import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from musicidx.encoder.config import FeatureConfig, ModelConfig
from musicidx.encoder.errors import MusicIdxError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FAISS_FILE = "index.faiss"
CLIPS_FILE = "clips.parquet"
ENCODER_FILE = "encoder.pt"

CLIPS_SCHEMA = pa.schema(
    [
        ("clip_id", pa.int64()),
        ("track_id", pa.int32()),
        ("composer", pa.string()),
        ("work", pa.string()),
        ("path", pa.string()),
        ("sha256", pa.string()),
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
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def make_faiss_index(dim: int, n: int, kind: str = "auto") -> tuple[Any, str]:
    """An empty inner-product FAISS index with explicit ids, sized for ``n`` vectors.

    ``auto`` is exact search (``flat``) up to 100,000 vectors and HNSW above; returns the
    index and the kind chosen.

    HNSW parameters: M=32, efConstruction=80, efSearch=128. Measured by
    ``benchmarks/faiss_bench.py`` at 10**6 clustered 128-d unit vectors (one thread, single
    queries): efSearch=64 gave recall@10 0.952 at 0.25 ms median, within sampling error of the
    0.95 target; efSearch=128 gives 0.985 at 0.40 ms (target: >= 0.95 within 5 ms). efSearch
    costs nothing at build time and is saved with the index.
    """
    import faiss

    if kind == "auto":
        kind = "flat" if n <= 100_000 else "hnsw"
    base: Any
    if kind == "flat":
        base = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        base = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = 80
        base.hnsw.efSearch = 128
    else:
        raise MusicIdxError(f"unknown FAISS index kind {kind!r}; use auto, flat or hnsw")
    return faiss.IndexIDMap2(base), kind


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


def save_index(contents: IndexContents, out: str | Path) -> Path:
    """Write ``contents`` to ``out`` atomically; an existing index there is replaced whole."""
    import faiss

    out = check_index_destination(out, probe=False)  # creating the temporary folder is the probe
    _remove_stale_temporaries(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    except OSError as e:
        raise MusicIdxError(f"cannot write the index here: {e.strerror or e}", path=out) from e
    try:
        blob = encoder_bytes(contents.encoder_state)
        (tmp / ENCODER_FILE).write_bytes(blob)
        manifest = dict(contents.manifest)
        manifest["encoder_sha256"] = hashlib.sha256(blob).hexdigest()
        faiss.write_index(contents.faiss_index, str(tmp / FAISS_FILE))
        pq.write_table(contents.clips.cast(CLIPS_SCHEMA), tmp / CLIPS_FILE)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
        _swap_into_place(tmp, out)
    except (OSError, RuntimeError) as e:  # disk full, quota...; faiss reports I/O as RuntimeError
        raise MusicIdxError(f"could not write the index (any previous one is intact): {e}", path=out) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after a swap, tmp holds the previous index
    return out


def check_index_destination(out: str | Path, *, probe: bool = True) -> Path:
    """Make sure an index can be written at ``out`` before any work is done for it.

    Creates the parent folder if needed and (with ``probe``) proves it writable with a
    throw-away temporary folder; raises :class:`MusicIdxError` naming ``out`` when it cannot be.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise IndexFormatError("exists and is not a directory; choose another --out", path=out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if probe:
            os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=out.parent))
    except OSError as e:
        raise MusicIdxError(f"cannot write the index here: {e.strerror or e}", path=out) from e
    return out


def _remove_stale_temporaries(out: Path) -> None:
    """Delete ``.NAME.tmp-PID-*`` folders left by builds that were killed (their PID is gone)."""
    for d in out.parent.glob(f".{out.name}.tmp-*"):
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


def load_index(path: str | Path) -> IndexContents:
    """Load and check an index directory; raise :class:`IndexFormatError` on any inconsistency."""
    import faiss
    import torch

    d = Path(path)
    if not d.is_dir():
        raise IndexFormatError("no index here (build one with 'musicidx build MIDI_DIR --out INDEX')", path=d)
    for name in (MANIFEST, FAISS_FILE, CLIPS_FILE, ENCODER_FILE):
        if not (d / name).is_file():
            raise IndexFormatError(f"incomplete index: {name} is missing; rebuild it", path=d)
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
    if version < FORMAT_VERSION:
        raise IndexFormatError(f"index format_version {version} is too old; rebuild it", path=d)
    try:
        FeatureConfig.from_dict(manifest["features"])
        model_cfg = ModelConfig.from_dict(manifest["model"])
        dim = int(manifest["embedding_dim"])
    except (KeyError, TypeError, ValueError, MusicIdxError) as e:
        raise IndexFormatError(f"manifest.json is missing or has bad fields ({e})", path=d / MANIFEST) from e
    try:
        index = faiss.read_index(str(d / FAISS_FILE))
    except Exception as e:  # faiss raises RuntimeError with a C++ message
        raise IndexFormatError(f"index.faiss is damaged ({str(e).splitlines()[0][:200]})", path=d / FAISS_FILE) from e
    try:
        clips = pq.read_table(d / CLIPS_FILE)
    except Exception as e:
        raise IndexFormatError(f"clips.parquet is damaged ({e})", path=d / CLIPS_FILE) from e
    if not clips.schema.equals(CLIPS_SCHEMA):
        raise IndexFormatError("clips.parquet has an unexpected schema", path=d / CLIPS_FILE)
    if index.ntotal != clips.num_rows:
        raise IndexFormatError(
            f"index.faiss holds {index.ntotal} vectors but clips.parquet has {clips.num_rows} rows; rebuild the index",
            path=d,
        )
    if index.d != dim or dim != model_cfg.embedding_dim:
        raise IndexFormatError(f"index.faiss has dimension {index.d}, the manifest says {dim}", path=d)
    ids = clips.column("clip_id").to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise IndexFormatError("clips.parquet clip_id is not 0..n-1 in order", path=d / CLIPS_FILE)
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
