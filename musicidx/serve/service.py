"""The server without HTTP: an index loaded once, a bounded pool of worker processes, admission.

:class:`QueryService` keeps the current :class:`Generation` -- a loaded
:class:`~musicidx.query.engine.Searcher` and the identity of the index directory it came from.
A rebuild replaces the directory in one atomic swap (``renameat2`` in
:func:`~musicidx.indexer.format.save_index`), which gives the path a new inode:
:meth:`QueryService.maybe_reload` notices that, loads the new index off the event loop and
switches to it only once it is loaded.  A request keeps the generation it started with, so the
requests in flight at the swap finish on the index they began with and none is dropped.

Rendering and the CQT -- most of a query's time -- run in ``workers`` processes (one torch thread
each: the work of one file is single-threaded, so files in parallel scale with cores).  Their
features come back to the server process, where one thread embeds, searches and answers with
:meth:`Searcher.query_features`: the very code ``musicidx query`` runs, with the same torch thread
count, so an answer is the CLI's to the last digit (the embedding's float sums depend on the
thread count; the CQT features do not).  At most ``workers + queue`` files are admitted at once;
beyond that a request is refused at once (:class:`Busy`, HTTP 503 with Retry-After) rather than
queued without bound.

Uploads live only in a private folder (mode 0700) made for the process, one sub-folder per
request, deleted when the answer is made.  Library code: nothing here prints or imports the web
framework.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import math
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicidx.encoder.errors import MusicIdxError
from musicidx.encoder.midi import MAX_FILE_BYTES
from musicidx.encoder.runtime import default_workers

from .errors import BadInput, Busy, NotFound, ServeError
from .workers import file_features, init_worker, render_wav, trim, warm, warm_up_piece

#: Files admitted beyond those being worked on (the queue), by default.
DEFAULT_QUEUE = 32
#: Files one request may carry, by default.
DEFAULT_MAX_FILES = 16


#: The server's worker processes by default: one per usable core, at most this many (the work of
#: one file is single-threaded; each worker holds a synthesiser and its SoundFont in memory).
MAX_DEFAULT_WORKERS = 4


def serve_workers() -> int:
    """The server's worker processes by default: :func:`~musicidx.encoder.runtime.default_workers`,
    at most :data:`MAX_DEFAULT_WORKERS`."""
    return min(MAX_DEFAULT_WORKERS, default_workers())


# ------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class ServeConfig:
    """What ``musicidx serve`` was asked for."""

    index_dir: Path
    workers: int = field(default_factory=serve_workers)
    queue: int = DEFAULT_QUEUE
    max_upload_bytes: int = MAX_FILE_BYTES
    max_files: int = DEFAULT_MAX_FILES
    token: str | None = None
    #: Folders the training MIDI may be found in (the clip player); the build's own corpus folder,
    #: recorded in the manifest as ``corpus_root``, is tried after these.
    midi_dirs: tuple[Path, ...] = ()
    soundfont: Path | None = None
    reload_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.workers < 1 or self.queue < 0 or self.max_files < 1 or self.max_upload_bytes < 1:
            raise MusicIdxError("workers, max_files and max_upload_bytes must be >= 1 and queue >= 0")


# ------------------------------------------------------------------------------ generations


def index_key(index_dir: Path) -> tuple[int, ...] | None:
    """The identity of what is at ``index_dir`` now: the folder's and the manifest's inodes and the
    manifest's mtime and size (an atomic swap gives the path another folder); None when absent."""
    try:
        d = os.stat(index_dir)
        m = os.stat(index_dir / "manifest.json")
    except OSError:
        return None
    return (d.st_dev, d.st_ino, m.st_ino, m.st_mtime_ns, m.st_size)


class Generation:
    """One loaded index: the searcher and the identity of the folder it was read from."""

    def __init__(self, searcher: Any, key: tuple[int, ...], number: int) -> None:
        from musicidx.indexer.manifest import utc_now

        self.searcher = searcher
        self.key = key
        self.number = number
        self.loaded_at = utc_now()
        clips = searcher.contents.clips
        self._clips: dict[str, list[tuple[float, str]]] = {}  # training path -> [(start_s, sha256)]
        for path, start, sha in zip(
            clips.column("path").to_pylist(), clips.column("start_s").to_pylist(), clips.column("sha256").to_pylist()
        ):
            self._clips.setdefault(path, []).append((float(start), sha))

    def clip(self, track: str, start: float) -> tuple[float, str]:
        """The exact start and the file's sha256 of the clip of the training file ``track`` that
        starts at ``start`` seconds (as answers round it: to the millisecond); :class:`NotFound`
        when the index holds no such clip."""
        for s, sha in self._clips.get(track, []):
            if abs(s - start) <= 1e-3:
                return s, sha
        raise NotFound(f"the index has no clip of {track!r} starting at {start:g} s")


def load_generation(config: ServeConfig, number: int) -> Generation:
    """Load the index at ``config.index_dir``; retried when the folder changes while it is read."""
    from musicidx.query.engine import Searcher

    last: MusicIdxError | None = None
    for _ in range(3):
        before = index_key(config.index_dir)
        try:
            searcher = Searcher(config.index_dir, soundfont=config.soundfont)
        except MusicIdxError as e:
            if index_key(config.index_dir) == before:
                raise
            last = e  # swapped while it was read: read it again
            continue
        if before is not None and index_key(config.index_dir) == before:
            return Generation(searcher, before, number)
    raise MusicIdxError(f"the index kept changing while it was loaded ({last}); try again", path=config.index_dir)


# ------------------------------------------------------------------------------ the service


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the name the client gave it and where it sits in the private folder."""

    name: str
    path: Path


@dataclass
class QueryOutcome:
    """The answers to one request, in upload order: each what ``query --json`` prints for that
    file (an answer, or ``{"file", "error"}``); ``failures`` the errors behind the error objects;
    ``audio`` (when asked) each answer's best-matching query clip as a WAV data URL, else None."""

    answers: list[dict[str, Any]]
    failures: list[tuple[str, MusicIdxError]]
    generation: int  # the index generation that answered
    audio: list[dict[str, Any] | None] | None = None


class QueryService:
    """The index, the worker pool and admission; every public coroutine runs on one event loop."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.workdir = Path(tempfile.mkdtemp(prefix="musicidx-serve-"))  # mode 0700
        try:
            self.generation = load_generation(config, 1)
        except BaseException:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        self.capacity = config.workers + config.queue
        self.in_flight = 0
        self.reloads = 0
        self.reload_error: str | None = None
        self.answered = 0
        self._task_seconds = 0.5  # running mean of a file's worker time, for Retry-After
        self._last_check = time.monotonic()
        self._reloading = False
        self.pool = self._new_pool()
        self._answerer = ThreadPoolExecutor(1, thread_name_prefix="musicidx-answer")  # embedding + search
        self._closed = False

    # -------------------------------------------------------------- life cycle

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn: forking a process that has started torch's and FAISS's threads is unsafe
        return ProcessPoolExecutor(self.config.workers, mp_context=mp.get_context("spawn"), initializer=init_worker)

    def warm_up(self) -> None:
        """Start every worker process and have each render a short piece (SoundFont, CQT kernels,
        allocator), and answer it once here (the encoder's first pass): the first requests then
        pay none of it, and a missing FluidSynth is an error at start, not at the first request."""
        s = self.generation.searcher
        piece = warm_up_piece(self.workdir / "warm-up.mid")
        try:
            futures = [self.pool.submit(warm, str(piece), s.features, s.soundfont) for _ in range(self.config.workers)]
            results = [f.result() for f in futures]
            for got in results:
                if isinstance(got, MusicIdxError):
                    raise got
                s.query_features(got.feats, got.starts, name=piece.name, notes_sha256=got.notes_sha256)
        finally:
            piece.unlink()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._answerer.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def worker_pids(self) -> list[int]:
        return [p.pid for p in getattr(self.pool, "_processes", {}).values() if p.pid is not None]

    # -------------------------------------------------------------- the index

    async def maybe_reload(self, *, force: bool = False) -> bool:
        """Load the index again if the folder at ``index_dir`` is no longer the one loaded (checked
        at most every ``reload_seconds``); True when a new generation was switched to.  A folder
        that cannot be loaded keeps the current one serving and is tried again at the next check."""
        now = time.monotonic()
        if self._reloading or (not force and now - self._last_check < self.config.reload_seconds):
            return False
        self._last_check = now
        key = index_key(self.config.index_dir)
        if key is None or key == self.generation.key:
            return False
        self._reloading = True
        try:
            gen = await asyncio.to_thread(load_generation, self.config, self.generation.number + 1)
        except Exception as e:  # a half-copied or damaged folder: keep serving, try again at the next check
            self.reload_error = str(e) if isinstance(e, MusicIdxError) else f"unexpected {type(e).__name__}: {e}"
            return False
        finally:
            self._reloading = False
        self.generation, self.reload_error = gen, None
        self.reloads += 1
        return True

    def info(self) -> dict[str, Any]:
        """The manifest's summary, the generation serving and the server's limits."""
        gen = self.generation
        s = gen.searcher
        m = s.manifest
        return {
            "index": str(self.config.index_dir),
            "generation": gen.number,
            "loaded_at": gen.loaded_at,
            "format_version": m.format_version,
            "musicidx_version": m.musicidx_version,
            "created": m.created,
            "composers": m.composers,
            "counts": m.counts.to_dict(),
            "k": s.k,
            "threshold": s.threshold,
            "calibrated": s.calibrated,  # False: answers carry the novelty but no verdict (is_new null)
            "uncalibrated_reason": s.uncalibrated_reason,
            "thresholds_by_k": {str(k): t for k, t in s.thresholds_by_k.items()},
            "accept_rate": m.novelty.accept_rate,
            "features": m.features.to_dict(),
            "soundfont": m.soundfont.name,
            "faiss": m.faiss.to_dict(),
            "validation": None if m.validation is None else m.validation.to_dict(),
            "warnings": list(m.warnings or ()),
            "corpus_root": m.corpus_root,
            "limits": {
                "workers": self.config.workers,
                "queue": self.config.queue,
                "max_upload_bytes": self.config.max_upload_bytes,
                "max_files": self.config.max_files,
            },
        }

    def summary(self) -> str:
        """One line: what is served and by how many workers."""
        m = self.generation.searcher.manifest
        return (
            f"{len(m.composers)} composers, {m.counts.clips} clips; {self.config.workers} "
            f"worker{'' if self.config.workers == 1 else 's'}, "
            f"queue {self.config.queue}"
        )

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "generation": self.generation.number,
            "in_flight": self.in_flight,
            "capacity": self.capacity,
            "answered": self.answered,
            "reloads": self.reloads,
            "reload_error": self.reload_error,
        }

    # -------------------------------------------------------------- admission and the pool

    def retry_after(self) -> int:
        """Seconds until the queue has probably drained enough for another file."""
        return max(1, math.ceil(self.in_flight / self.config.workers * self._task_seconds))

    def check_room(self, files: int = 1) -> None:
        """:class:`Busy` unless the queue has room for ``files`` more files now (asked before an
        upload is read, so that a full server refuses it without reading it)."""
        if self.in_flight + files > self.capacity:
            raise Busy(
                f"busy: {self.in_flight} files in work or queued, room for {self.capacity}; try again shortly",
                retry_after=self.retry_after(),
            )

    @contextlib.contextmanager
    def admitted(self, files: int) -> Iterator[None]:
        """Hold ``files`` places of the bounded queue; :class:`Busy` when there are not that many."""
        self.check_room(files)
        self.in_flight += files
        try:
            yield
        finally:
            self.in_flight -= files

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        pool = self.pool
        try:
            future = pool.submit(fn, *args, **kwargs)
        except BrokenProcessPool:  # a worker died before this task: it never ran, so run it on new workers
            self._replace_pool(pool)
            pool = self.pool
            future = pool.submit(fn, *args, **kwargs)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool as e:  # a worker died while on it (killed, or crashed in native code)
            self._replace_pool(pool)
            raise ServeError(
                "a worker process died while answering; the server has started new ones: try again, and if it "
                "happens again with this file, the file crashes the renderer"
            ) from e

    def _replace_pool(self, broken: ProcessPoolExecutor) -> None:
        if self.pool is broken:
            self.pool = self._new_pool()
            broken.shutdown(wait=False, cancel_futures=True)

    @contextlib.contextmanager
    def upload_folder(self) -> Iterator[Path]:
        """A private folder for one request's uploads, deleted when the request is answered."""
        d = Path(tempfile.mkdtemp(prefix="upload-", dir=self.workdir))
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)

    # -------------------------------------------------------------- answers

    async def query(self, uploads: list[Upload], *, audio: bool = False) -> QueryOutcome:
        """Answer every upload with the current index (the same objects as ``query --json``)."""
        gen = self.generation  # one index for the whole request, whatever a swap does meanwhile
        s = gen.searcher
        loop = asyncio.get_running_loop()
        with self.admitted(len(uploads)):
            results = await asyncio.gather(
                *(self._run(file_features, str(u.path), features=s.features, soundfont=s.soundfont) for u in uploads)
            )
            out = QueryOutcome([], [], gen.number)
            for u, r in zip(uploads, results):
                if isinstance(r, MusicIdxError):
                    out.answers.append({"file": u.name, "error": r.reason})
                    out.failures.append((u.name, r))
                    continue
                self._task_seconds = 0.8 * self._task_seconds + 0.2 * r.seconds
                answer = functools.partial(
                    s.query_features, r.feats, r.starts, name=u.name, notes_sha256=r.notes_sha256
                )
                out.answers.append((await loop.run_in_executor(self._answerer, answer)).to_dict())
            if audio:
                out.audio = list(
                    await asyncio.gather(*(self._query_clip(u, a, s) for u, a in zip(uploads, out.answers)))
                )
        self.answered += len(uploads)
        trim()
        return out

    async def _query_clip(self, u: Upload, answer: dict[str, Any], s: Any) -> dict[str, Any] | None:
        if "error" in answer or not answer["nearest"]:
            return None
        start = float(answer["nearest"][0]["query_start_s"])
        wav = await self._run(render_wav, str(u.path), start, features=s.features, soundfont=s.soundfont)
        if isinstance(wav, MusicIdxError):
            return None
        return {"start_s": start, "seconds": s.features.clip_seconds, "wav": _data_url(wav)}

    def training_file(self, track: str, start: float) -> tuple[Path, float]:
        """The training MIDI file of a clip of the index, where it is now: under one of the
        ``midi_dirs`` or the build's ``corpus_root``, with the content it was indexed with, and the
        clip's exact start.  :class:`NotFound` when the index has no such clip or the file is gone
        or changed."""
        from musicidx.encoder.fingerprints import file_sha256

        gen = self.generation
        exact, sha = gen.clip(track, start)
        root = gen.searcher.manifest.corpus_root
        roots = [*self.config.midi_dirs, *([Path(root)] if root else [])]
        changed = None
        for r in roots:
            p = r / track
            if p.is_file():
                try:
                    if file_sha256(p) == sha:
                        return p, exact
                except OSError:
                    continue
                changed = p
        if changed is not None:
            raise NotFound(f"the training MIDI {changed} has changed since the index was built, so it cannot be played")
        where = " or ".join(str(r / track) for r in roots) or f"{track} (the index does not record its corpus folder)"
        raise NotFound(f"the training MIDI is no longer at {where}; start 'musicidx serve' with --midi-dir to hear it")

    async def training_clip_wav(self, track: str, start: float) -> bytes:
        """The training clip ``track`` at ``start`` seconds, rendered as the index heard it, as WAV."""
        path, exact = self.training_file(track, start)
        s = self.generation.searcher
        with self.admitted(1):
            wav = await self._run(render_wav, str(path), exact, features=s.features, soundfont=s.soundfont)
        if isinstance(wav, MusicIdxError):
            raise BadInput(f"the training MIDI cannot be rendered: {wav.reason}", path=path)
        return bytes(wav)


def _data_url(wav: bytes) -> str:
    return "data:audio/wav;base64," + base64.b64encode(wav).decode("ascii")
