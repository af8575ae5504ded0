"""Files -> clip features, in parallel worker processes, through a content-addressed cache.

A file's features are keyed by the sha256 of its bytes, the :class:`FeatureConfig`, the
SoundFont's sha256 and the version of the rendering code, so a changed file, config or
SoundFont is recomputed and an unchanged one never is.  Entries are written to a temporary
file and renamed into place, so two builds sharing a cache never see half an entry.  A file's
own entry also keeps the fingerprint of its notes; an entry without one is a miss.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicidx.encoder.config import FEATURES_VERSION, FeatureConfig
from musicidx.encoder.errors import MusicIdxError
from musicidx.encoder.fingerprints import file_sha256, notes_sha256
from musicidx.encoder.midi import load_midi
from musicidx.encoder.render import render_clips
from musicidx.encoder.runtime import set_torch_threads
from musicidx.encoder.soundfont import SoundFont


@dataclass(frozen=True)
class TrackFeatures:
    """The clips of one file: ``feats[i]`` is the log-CQT of the clip at ``starts[i]`` s."""

    feats: np.ndarray  # (n_clips, n_bins, frames) float16
    starts: np.ndarray  # (n_clips,) float64
    duration: float
    sha256: str
    rendered_seconds: float  # 0 when the features came from the cache
    cached: bool
    #: re-orchestrated renderings of the same windows, each like ``feats`` (training augmentation)
    views: tuple[np.ndarray, ...] = ()
    #: the same windows in named orchestrations (``musicidx eval``; see
    #: :func:`~musicidx.encoder.orchestration.orchestrate`), each like ``feats``
    orchestrated: dict[str, np.ndarray] = field(default_factory=dict)
    #: what is played (:func:`~musicidx.encoder.fingerprints.notes_sha256`): equal for note-identical files
    notes_sha256: str = ""


class FeatureCache:
    """A folder of ``.npz`` entries keyed by content; ``None`` disables caching."""

    def __init__(self, base: str | Path | None) -> None:
        self.base = None if base is None else Path(base)
        self.root = None if base is None else Path(base) / f"features-v{FEATURES_VERSION}"

    @staticmethod
    def key(file_hash: str, cfg: FeatureConfig, soundfont: SoundFont, variant: int | str = 0) -> str:
        """The entry of a file's features: ``variant`` 0 is its own orchestration, an int > 0 a
        training re-orchestration, a string a named orchestration."""
        tag = f":o{variant}" if isinstance(variant, str) else (f":v{variant}" if variant else "")
        raw = f"{file_hash}:{cfg.digest()}:{soundfont.sha256}:{FEATURES_VERSION}" + tag
        return hashlib.sha256(raw.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray, float] | None:
        if self.root is None:
            return None
        p = self._path(key)
        try:
            with np.load(p, allow_pickle=False) as z:
                return z["feats"], z["starts"], float(z["duration"])
        except Exception:  # missing, or damaged (EOFError, BadZipFile...): recompute
            return None

    def notes_sha256(self, key: str) -> str:
        """The note fingerprint kept with a file's own entry; "" when there is none (an entry
        written before fingerprints were kept counts as a miss)."""
        if self.root is None:
            return ""
        try:
            with np.load(self._path(key), allow_pickle=False) as z:
                return str(z["notes_sha256"]) if "notes_sha256" in z.files else ""
        except Exception:
            return ""

    def put(self, key: str, feats: np.ndarray, starts: np.ndarray, duration: float, *, notes_sha256: str = "") -> None:
        if self.root is None:
            return
        p = self._path(key)
        arrays: dict[str, Any] = {"feats": feats, "starts": starts, "duration": np.float64(duration)}
        if notes_sha256:
            arrays["notes_sha256"] = np.str_(notes_sha256)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, p)
        except OSError:
            # A read-only or full cache must not fail the build; the features are in memory.
            try:
                os.unlink(tmp)
            except (OSError, UnboundLocalError):
                pass


def _cached(
    digest: str,
    cfg: FeatureConfig,
    soundfont: SoundFont,
    cache: FeatureCache,
    variants: int,
    orchestrations: Sequence[str] = (),
) -> TrackFeatures | None:
    entries = []
    for v in [*range(variants + 1), *orchestrations]:
        entry = cache.get(FeatureCache.key(digest, cfg, soundfont, v))
        if entry is None:
            return None
        entries.append(entry)
    notes = cache.notes_sha256(FeatureCache.key(digest, cfg, soundfont))
    if not notes:
        return None
    feats, starts, duration = entries[0]
    views = tuple(e[0] for e in entries[1 : variants + 1])
    named = {o: e[0] for o, e in zip(orchestrations, entries[variants + 1 :])}
    return TrackFeatures(feats, starts, duration, digest, 0.0, True, views, named, notes_sha256=notes)


def extract_file(
    path: str | Path,
    *,
    cfg: FeatureConfig,
    soundfont: SoundFont,
    cache: FeatureCache,
    variants: int = 0,
    orchestrations: Sequence[str] = (),
) -> TrackFeatures:
    """Features of one file, from the cache or by rendering and CQT; with ``variants`` > 0,
    also that many re-orchestrated renderings of the same windows (see
    :func:`~musicidx.encoder.orchestration.reorchestration`), and the same windows in each of the named
    ``orchestrations`` (see :func:`~musicidx.encoder.orchestration.orchestrate`)."""
    from musicidx.encoder.frontend import cqt_features
    from musicidx.encoder.orchestration import orchestrate, reorchestration

    p = Path(path)
    try:
        digest = file_sha256(p)
    except OSError as e:
        from musicidx.encoder.errors import InvalidMidiError

        raise InvalidMidiError(f"cannot read file ({e.strerror or e})", path=p) from e
    hit = _cached(digest, cfg, soundfont, cache, variants, orchestrations)
    if hit is not None:
        return hit
    pm = load_midi(p)
    notes = notes_sha256(pm)
    base_key = FeatureCache.key(digest, cfg, soundfont)
    base = cache.get(base_key)
    rendered = 0.0
    if base is None:
        clips = render_clips(pm, cfg=cfg, soundfont=soundfont, path=p)
        feats, starts, duration = cqt_features(clips.audio, cfg).astype(np.float16), clips.starts, clips.duration
        rendered += clips.rendered_seconds
    else:
        feats, starts, duration = base
    if base is None or cache.notes_sha256(base_key) != notes:  # a new entry, or one kept without a fingerprint
        cache.put(base_key, feats, starts, duration, notes_sha256=notes)

    def view(variant: int | str, score: Any, programs: dict[int, int] | None = None) -> np.ndarray:
        """The same windows rendered from ``score`` (with ``programs`` remapped), through the cache."""
        nonlocal rendered
        key = FeatureCache.key(digest, cfg, soundfont, variant)
        got = cache.get(key)
        if got is None:
            clips = render_clips(score, cfg=cfg, soundfont=soundfont, path=p, programs=programs, starts=starts)
            got = (cqt_features(clips.audio, cfg).astype(np.float16), starts, duration)
            cache.put(key, *got)
            rendered += clips.rendered_seconds
        return got[0]

    programs = [i.program for i in pm.instruments if not i.is_drum]
    views = [view(v, pm, reorchestration(programs, key=digest, variant=v)) for v in range(1, variants + 1)]
    named = {name: view(name, orchestrate(pm, name, key=digest)) for name in orchestrations}
    return TrackFeatures(feats, starts, duration, digest, rendered, False, tuple(views), named, notes_sha256=notes)


# ----------------------------------------------------------------------------- workers

_WORKER: dict[str, object] = {}


def _init_worker(
    cfg: FeatureConfig, soundfont: SoundFont, cache_base: str | None, variants: int, orchestrations: tuple[str, ...]
) -> None:
    set_torch_threads(worker=True)
    _WORKER.update(
        cfg=cfg, soundfont=soundfont, cache=FeatureCache(cache_base), variants=variants, orchestrations=orchestrations
    )


def _work(path: str) -> TrackFeatures | MusicIdxError:
    cfg, sf, cache = _WORKER["cfg"], _WORKER["soundfont"], _WORKER["cache"]
    assert isinstance(cfg, FeatureConfig) and isinstance(sf, SoundFont) and isinstance(cache, FeatureCache)
    variants, orchestrations = _WORKER["variants"], _WORKER["orchestrations"]
    assert isinstance(variants, int) and isinstance(orchestrations, tuple)
    return _safe_extract(path, cfg, sf, cache, variants, orchestrations)


def _safe_extract(
    path: str | Path,
    cfg: FeatureConfig,
    sf: SoundFont,
    cache: FeatureCache,
    variants: int = 0,
    orchestrations: tuple[str, ...] = (),
) -> TrackFeatures | MusicIdxError:
    try:
        return extract_file(path, cfg=cfg, soundfont=sf, cache=cache, variants=variants, orchestrations=orchestrations)
    except MusicIdxError as e:
        return e
    except Exception as e:  # one odd file must not take a whole batch down
        return MusicIdxError(f"unexpected {type(e).__name__} while reading: {e}", path=path)


def cache_hits(
    paths: Sequence[str | Path],
    *,
    cfg: FeatureConfig,
    soundfont: SoundFont,
    cache: FeatureCache,
    variants: int = 0,
    orchestrations: tuple[str, ...] = (),
) -> tuple[list[TrackFeatures | MusicIdxError | None], list[int]]:
    """The features of every path already in the cache (``None`` where not), and the indices
    of the paths still to extract: answered in this process, so a warm run starts no worker."""
    results: list[TrackFeatures | MusicIdxError | None] = [None] * len(paths)
    todo: list[int] = []
    for i, p in enumerate(paths):
        try:
            hit = _cached(file_sha256(p), cfg, soundfont, cache, variants, orchestrations) if cache.root else None
        except OSError:
            hit = None
        if hit is not None:
            results[i] = hit
        else:
            todo.append(i)
    return results, todo


def extract_many(
    paths: Sequence[str | Path],
    *,
    cfg: FeatureConfig,
    soundfont: SoundFont,
    cache_dir: str | Path | None,
    workers: int = 1,
    variants: int = 0,
    orchestrations: Sequence[str] = (),
    on_done: Callable[[int, int], None] | None = None,
) -> list[TrackFeatures | MusicIdxError]:
    """Features of every path, in order; a file that fails gives its error in its place.
    ``variants``: re-orchestrated renderings per file, for training; ``orchestrations``: named
    orchestrations of the same windows, for evaluation (see :func:`extract_file`).

    With ``workers > 1`` the files are spread over that many processes (one torch thread
    each); cached files are answered without starting any.
    """
    cache = FeatureCache(cache_dir)
    orch = tuple(orchestrations)
    results, todo = cache_hits(paths, cfg=cfg, soundfont=soundfont, cache=cache, variants=variants, orchestrations=orch)
    done = len(paths) - len(todo)
    if on_done is not None:
        on_done(done, len(paths))
    if workers <= 1 or len(todo) <= 1:
        for i in todo:
            results[i] = _safe_extract(paths[i], cfg, soundfont, cache, variants, orch)
            done += 1
            if on_done is not None:
                on_done(done, len(paths))
    else:
        ctx = mp.get_context("spawn")  # fork after torch/OpenMP start-up is unsafe
        root = None if cache.base is None else str(cache.base)
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg, soundfont, root, variants, orch)
        ) as ex:
            order = sorted(todo, key=lambda i: -_size(paths[i]))  # big files first: better balance
            for i, res in zip(order, ex.map(_work, [str(paths[i]) for i in order], chunksize=1)):
                results[i] = res
                done += 1
                if on_done is not None:
                    on_done(done, len(paths))
    return [r for r in results if r is not None]


def _size(p: str | Path) -> int:
    try:
        return os.stat(p).st_size
    except OSError:
        return 0
