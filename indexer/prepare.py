"""A scanned folder -> a prepared :class:`Corpus` (every usable file's clip features) -> clip arrays.

:func:`prepare_corpus` is the first step of every build, ``add`` and evaluation: it scans
``MIDI_DIR/<Composer>/*.mid`` and extracts each file's clip features in parallel through the
cache, skipping the files that fail with their reason.  :func:`stack_clips` stacks the clips of a
set of tracks for training, indexing or scoring.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from musicidx.encoder.config import FeatureConfig, default_cache_dir
from musicidx.encoder.errors import MusicIdxError
from musicidx.encoder.recipe import DEFAULT_RECIPE
from musicidx.encoder.runtime import Progress, default_workers
from musicidx.encoder.soundfont import SoundFont, find_soundfont

from .corpus import CorpusError, Track, scan_corpus
from .features import TrackFeatures, extract_many
from .format import ClipSource

if TYPE_CHECKING:
    from .distributed import RaySession


@dataclass
class Corpus:
    """Tracks whose features were extracted, in the same order as ``features``."""

    tracks: list[Track]
    features: list[TrackFeatures]
    skipped: list[tuple[str, str]]  # (path, reason) of files that could not be used
    soundfont: SoundFont
    feature_config: FeatureConfig
    root: Path
    seconds: float = 0.0
    cache_base: Path | None = None  # where features (and trained encoders) are cached

    @property
    def rendered_seconds(self) -> float:
        return float(sum(f.rendered_seconds for f in self.features))

    @property
    def cached_tracks(self) -> int:
        return sum(f.cached for f in self.features)

    def clip_sources(self) -> list[ClipSource]:
        """What the clip table records of each track (see :func:`~musicidx.indexer.format.clip_table`)."""
        return [
            ClipSource(t.composer, t.work, t.rel_path, f.sha256, f.notes_sha256)
            for t, f in zip(self.tracks, self.features)
        ]

    def subset(self, idx: Sequence[int] | np.ndarray) -> Corpus:
        return Corpus(
            [self.tracks[i] for i in idx],
            [self.features[i] for i in idx],
            [],
            self.soundfont,
            self.feature_config,
            self.root,
            cache_base=self.cache_base,
        )


def prepare_corpus(
    midi_dir: str | Path,
    *,
    features: FeatureConfig | None = None,
    soundfont: str | Path | SoundFont | None = None,
    cache_dir: str | Path | None | bool = True,
    workers: int | None = None,
    strict: bool = False,
    variants: int = 0,
    orchestrations: Sequence[str] = (),
    progress: Progress | None = None,
    ray: RaySession | None = None,
) -> Corpus:
    """Scan ``midi_dir`` and extract the features of every file (and, for ``musicidx eval``, of
    the same windows in each of the named ``orchestrations``).

    ``cache_dir``: a folder, ``True`` for the default (``$XDG_CACHE_HOME/musicidx``) or
    ``None``/``False`` for no cache.  With ``strict``, the first file that fails raises.  With
    ``ray``, the files are spread over that Ray cluster instead of local processes.
    """
    began = time.monotonic()
    cfg = features or DEFAULT_RECIPE.features
    sf = soundfont if isinstance(soundfont, SoundFont) else find_soundfont(soundfont)
    cache = default_cache_dir() if cache_dir is True else (cache_dir or None)
    tracks = scan_corpus(midi_dir)
    paths = [t.path for t in tracks]
    on_done = None if progress is None else (lambda d, n: progress("features", d, n))
    opts: dict[str, Any] = dict(
        cfg=cfg, soundfont=sf, cache_dir=cache, variants=variants, orchestrations=orchestrations, on_done=on_done
    )
    if ray is None:
        results = extract_many(paths, workers=workers or default_workers(), **opts)
    else:  # workers caps the actor pool; by default every CPU of the cluster
        results = ray.extract_many(paths, workers=workers, **opts)
    kept_t, kept_f, skipped = [], [], []
    for t, r in zip(tracks, results):
        if isinstance(r, MusicIdxError):
            if strict:
                raise r
            skipped.append((t.rel_path, r.reason))
        else:
            kept_t.append(t)
            kept_f.append(r)
    if not kept_t:
        raise CorpusError(f"none of the {len(tracks)} MIDI files could be used", path=midi_dir)
    base = None if cache is None else Path(cache)
    return Corpus(kept_t, kept_f, skipped, sf, cfg, Path(midi_dir), time.monotonic() - began, base)


@dataclass
class ClipArrays:
    """The clips of a set of tracks stacked: the rows of ``feats`` belong to ``track[i]``."""

    feats: np.ndarray
    track: np.ndarray  # index into the corpus' tracks
    start: np.ndarray
    views: tuple[np.ndarray, ...] = ()  # re-orchestrated renderings, row-aligned with feats


def stack_clips(corpus: Corpus, idx: Sequence[int] | np.ndarray, *, orchestration: str | None = None) -> ClipArrays:
    """The clips of tracks ``idx``, in their own orchestration or (with ``orchestration``) in that
    named one, rendered for evaluation by :func:`prepare_corpus`."""
    feats = [
        corpus.features[i].feats if orchestration is None else corpus.features[i].orchestrated[orchestration]
        for i in idx
    ]
    track = [np.full(len(f), i, dtype=np.int64) for i, f in zip(idx, feats)]
    starts = [corpus.features[i].starts for i in idx]
    if not feats:
        n = corpus.feature_config
        return ClipArrays(np.zeros((0, n.n_bins, n.frames_per_clip), np.float16), np.zeros(0, np.int64), np.zeros(0))
    n_views = min((len(corpus.features[i].views) for i in idx), default=0)
    views = tuple(np.concatenate([corpus.features[i].views[v] for i in idx]) for v in range(n_views))
    return ClipArrays(np.concatenate(feats), np.concatenate(track), np.concatenate(starts), views)


def thin_clips(clips: ClipArrays, *, per_track: int) -> ClipArrays:
    """At most ``per_track`` clips of each track, evenly spaced (deterministic)."""
    keep = []
    for t in np.unique(clips.track):
        rows = np.flatnonzero(clips.track == t)
        keep.append(rows[np.unique(np.linspace(0, len(rows) - 1, min(per_track, len(rows))).round().astype(int))])
    idx = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return ClipArrays(clips.feats[idx], clips.track[idx], clips.start[idx])
