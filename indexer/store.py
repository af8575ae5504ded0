"""The index directory on disk: write atomically, load with every consistency check.

::

    INDEX/manifest.json    format_version, configs, SoundFont, composers, counts, FAISS type, k,
                           novelty threshold (and one per calibrated k) and its calibration,
                           training summary, warnings, encoder sha256
    INDEX/index.faiss      FAISS index; ids = clips.parquet's clip_id
    INDEX/clips.parquet    clip_id, track_id, composer, work, path, sha256, notes_sha256, start_s, dur_s
    INDEX/encoder.pt       the encoder's state_dict, loaded with weights_only=True

An index is written into a temporary sibling directory and swapped into place, so a build
interrupted at any moment leaves the previous index (or none) at the target, never half of one.

Nothing else is ever replaced: :func:`check_index_destination` accepts as a destination only a
new or empty folder, or a folder that holds a musicidx index and nothing else; any other folder
(the user's files, the MIDI input itself) is refused before any work is done.  A temporary
folder carries the marker file ``.musicidx-partial`` from its first moment, and only folders
with that marker are ever cleaned up as leftovers of an interrupted build.
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
import stat
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

#: 2: clips.parquet has ``notes_sha256``, the fingerprint of each track's notes.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
FAISS_FILE = "index.faiss"
CLIPS_FILE = "clips.parquet"
ENCODER_FILE = "encoder.pt"
INDEX_FILES = (MANIFEST, FAISS_FILE, CLIPS_FILE, ENCODER_FILE)
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
    """Write ``contents`` to ``out`` atomically; an existing index there is replaced whole.

    ``out`` must pass :func:`check_index_destination`: a folder holding anything but a musicidx
    index is refused, never overwritten.  An existing folder keeps its permissions; a new one
    gets the usual ones (0777 less the umask)."""
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
        faiss.write_index(contents.faiss_index, str(tmp / FAISS_FILE))
        pq.write_table(contents.clips.cast(CLIPS_SCHEMA), tmp / CLIPS_FILE)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        (tmp / PARTIAL_MARK).unlink()
        for f in tmp.iterdir():
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


def load_index(path: str | Path) -> IndexContents:
    """Load and check an index directory; raise :class:`IndexFormatError` on any inconsistency."""
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
    for name in INDEX_FILES:
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
