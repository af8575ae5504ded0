"""An index + new files -> answers: composer, confidence, novelty, nearest tracks.

:class:`Searcher` loads an index and its encoder once and answers any number of files;
:func:`score_files` runs it over a batch where one bad file yields an error row, never an
aborted batch.

A query whose notes are a training track's (same fingerprint,
:func:`~musicidx.encoder.fingerprints.notes_sha256`) is that composition: the answer is that track's
composer with confidence 1, whatever the embedding says.  Closeness in the embedding, which is
trained to group a composer's pieces, only ranks the nearest tracks.

One rounding policy for every number an answer carries (and so for ``query --json``, the votes
and the ``score`` CSV alike): scores -- confidence, votes, novelty, threshold, distance,
similarity -- to :data:`SCORE_DECIMALS` places (the embeddings are float32: further digits are
noise), times in seconds to :data:`TIME_DECIMALS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicidx.encoder.config import FeatureConfig
from musicidx.encoder.errors import ConfigMismatchError, MusicIdxError
from musicidx.encoder.runtime import set_torch_threads
from musicidx.encoder.soundfont import matching_soundfont
from musicidx.indexer.corpus import display_name, is_midi_name
from musicidx.indexer.features import FeatureCache, TrackFeatures, extract_file
from musicidx.indexer.format import IndexContents, read_index
from musicidx.indexer.manifest import IndexFormatError, Manifest
from musicidx.indexer.neighbours import Neighbours, clip_novelty, search, vote

SCORE_DECIMALS = 6
TIME_DECIMALS = 3


def _score(x: float) -> float:
    return round(float(x), SCORE_DECIMALS)


@dataclass(frozen=True)
class NearestTrack:
    """A training track close to the query, with the best-matching clip pair."""

    path: str
    composer: str
    work: str
    distance: float  # cosine distance (1 - cos) of the best clip pair: 0 = the same clip; novelty's unit
    similarity: float  # 1 - distance
    query_start_s: float
    match_start_s: float


@dataclass(frozen=True)
class QueryResult:
    """The answer for one query file."""

    file: str
    composer: str  # the index composer with most votes (see is_new), or same_track's composer
    confidence: float  # that composer's share of the similarity-weighted votes (1 for same_composition)
    votes: dict[str, float]  # all on same_track's composer when same_composition
    novelty: float  # median over clips of the distance to the k-th neighbour
    threshold: float  # calibrated at build time for k
    k: int  # neighbours per query clip
    accept_rate: float | None  # share of held-out pieces by known composers under the threshold at calibration
    # novelty above the calibrated threshold (never when same_composition): likely a new composer;
    # None when the index's threshold is uncalibrated (too few held-out works): no verdict is claimed
    is_new: bool | None
    calibrated: bool  # the threshold rests on enough held-out works to back a verdict (musicidx info says why not)
    same_composition: bool  # the query plays the same notes as a training track
    same_track: str | None  # that track
    nearest: list[NearestTrack] = field(default_factory=list)
    clips: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Searcher:
    """An index loaded for querying: the FAISS index, clip metadata and encoder."""

    def __init__(
        self,
        index_dir: str | Path,
        *,
        k: int | None = None,
        soundfont: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:

        from musicidx.encoder.model import Encoder

        self.index_dir = Path(index_dir)
        self.contents: IndexContents = read_index(index_dir)
        m = self.contents.manifest
        self.features: FeatureConfig = self.contents.feature_config
        self.k = int(k if k is not None else m.k)
        self.thresholds_by_k = m.novelty_thresholds()
        n_clips = int(self.contents.faiss_index.ntotal)
        if not 1 <= self.k <= n_clips:
            raise MusicIdxError(f"k={self.k} must be between 1 and the {n_clips} clips of the index", path=index_dir)
        if self.k not in self.thresholds_by_k:  # a threshold calibrated at another k would give a wrong verdict
            raise MusicIdxError(
                f"no novelty threshold was calibrated for k={self.k}, so its verdict would mean nothing; this index "
                f"has them for k = {', '.join(map(str, self.thresholds_by_k))}",
                path=index_dir,
            )
        self.threshold = self.thresholds_by_k[self.k]
        self.calibrated, self.uncalibrated_reason = m.novelty.calibration()
        self.soundfont = matching_soundfont(m.soundfont.to_dict(), soundfont)
        self.cache = FeatureCache(cache_dir)
        self.model = Encoder(self.contents.model_config, self.features)
        try:
            self.model.load_state_dict(self.contents.encoder_state)
        except RuntimeError as e:
            raise IndexFormatError(
                f"encoder.pt does not fit the model in the manifest ({str(e)[:200]})", path=self.index_dir
            ) from e
        self.model.eval()
        set_torch_threads()
        clips = self.contents.clips
        self.composers: list[str] = sorted(m.composers)
        label_of = {c: i for i, c in enumerate(self.composers)}
        self.clip_label = np.array([label_of[c] for c in clips.column("composer").to_pylist()], dtype=np.int64)
        self.clip_track = clips.column("track_id").to_numpy()
        self.clip_start = clips.column("start_s").to_numpy()
        self.clip_path = clips.column("path").to_pylist()
        self.clip_work = clips.column("work").to_pylist()
        self.clip_of_notes: dict[str, int] = {}  # note fingerprint -> first clip of the first track playing it
        for i, notes in enumerate(clips.column("notes_sha256").to_pylist()):
            self.clip_of_notes.setdefault(notes, i)

    @property
    def manifest(self) -> Manifest:
        return self.contents.manifest

    def check_features(self, features: FeatureConfig) -> None:
        """Refuse features other than the index's, naming every differing field."""
        features.check_same(self.features, what="index")

    def features_of(self, path: str | Path) -> TrackFeatures:
        return extract_file(path, cfg=self.features, soundfont=self.soundfont, cache=self.cache)

    def query(self, path: str | Path) -> QueryResult:
        """Answer for one MIDI file (raises a :class:`MusicIdxError` on bad input)."""
        tf = self.features_of(path)
        return self.query_features(tf.feats, tf.starts, name=display_name(path), notes_sha256=tf.notes_sha256)

    def query_features(
        self, feats: np.ndarray, starts: np.ndarray, *, name: str, notes_sha256: str | None = None
    ) -> QueryResult:
        """Answer for clips already turned into features (``feats``: (n, bins, frames)); given the
        query's note fingerprint, a training track with the same notes decides the answer."""
        from musicidx.encoder.model import embed

        if feats.shape[1:] != (self.features.n_bins, self.features.frames_per_clip):
            raise ConfigMismatchError(
                f"features of shape {feats.shape[1:]} do not match the index's "
                f"({self.features.n_bins}, {self.features.frames_per_clip})"
            )
        emb = embed(self.model, feats)
        nb = search(self.contents.faiss_index, emb, self.k)
        return self.answer(nb, starts, name=name, notes_sha256=notes_sha256)

    def answer(self, nb: Neighbours, starts: np.ndarray, *, name: str, notes_sha256: str | None = None) -> QueryResult:
        """Turn the neighbours of a track's clips into an answer; a training track with the
        query's note fingerprint ``notes_sha256`` makes it that track's composer, confidence 1."""
        votes = vote(nb, self.clip_label, len(self.composers))
        novelty = float(np.median(clip_novelty(nb, self.k)))
        same = self.clip_of_notes.get(notes_sha256) if notes_sha256 else None
        if same is not None:  # the same composition: its composer is known, not voted on
            votes = np.zeros(len(self.composers))
            votes[self.clip_label[same]] = 1.0
        best = int(np.argmax(votes))
        return QueryResult(
            file=name,
            composer=self.composers[best],
            confidence=_score(votes[best]),
            votes={c: _score(v) for c, v in zip(self.composers, votes)},
            novelty=_score(novelty),
            threshold=_score(self.threshold),
            k=self.k,
            accept_rate=self.manifest.novelty.accept_rate,
            is_new=False
            if same is not None
            else (_score(novelty) > _score(self.threshold) if self.calibrated else None),  # as the reader sees them
            calibrated=self.calibrated,
            same_composition=same is not None,
            same_track=None if same is None else self.clip_path[same],
            nearest=self._nearest_tracks(nb, starts),
            clips=len(starts),
        )

    def score(self, folder: str | Path, *, on_done: Callable[[int, int], None] | None = None) -> list[ScoreRow]:
        """One row per MIDI file under ``folder`` (recursively, sorted), named relative to it; a
        file that fails gets an error row.  A folder without any MIDI file is an error."""
        files = list_query_files(folder)
        if not files:
            raise MusicIdxError("no MIDI files (.mid, .midi) in this folder or below; nothing to score", path=folder)
        return score_files(self, files, root=folder, on_done=on_done)

    def _nearest_tracks(self, nb: Neighbours, starts: np.ndarray, n: int = 3) -> list[NearestTrack]:
        best: dict[int, tuple[float, int, int]] = {}  # track -> (similarity, query clip, index clip)
        for qi in range(nb.ids.shape[0]):
            for j in range(nb.ids.shape[1]):
                cid = int(nb.ids[qi, j])
                if cid < 0:
                    continue
                sim = min(1.0, 1.0 - float(nb.dist[qi, j]))  # float32: a clip against itself may pass 1
                t = int(self.clip_track[cid])
                if t not in best or sim > best[t][0]:
                    best[t] = (sim, qi, cid)
        ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:n]
        return [
            NearestTrack(
                path=self.clip_path[cid],
                composer=self.composers[int(self.clip_label[cid])],
                work=self.clip_work[cid],
                distance=_score(1.0 - sim),
                similarity=_score(sim),
                query_start_s=round(float(starts[qi]), TIME_DECIMALS),
                match_start_s=round(float(self.clip_start[cid]), TIME_DECIMALS),
            )
            for _, (sim, qi, cid) in ranked
        ]


# ------------------------------------------------------------------------------ batches

SCORE_COLUMNS = (
    "file",
    "composer",
    "confidence",
    "novelty",
    "is_new",
    "nearest_track",
    "same_composition",
    "status",
    "error",
)


@dataclass(frozen=True)
class ScoreRow:
    """One row of ``musicidx score``: an answer, or ``status='error'`` with the reason."""

    file: str
    composer: str = ""
    confidence: float | None = None
    novelty: float | None = None
    is_new: bool | None = None
    nearest_track: str = ""
    same_composition: bool | None = None
    status: str = "ok"
    error: str = ""

    @classmethod
    def from_result(cls, r: QueryResult) -> ScoreRow:
        nearest = r.nearest[0].path if r.nearest else ""
        return cls(r.file, r.composer, r.confidence, r.novelty, r.is_new, nearest, r.same_composition)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_query_files(folder: str | Path) -> list[Path]:
    """The MIDI-named entries of ``folder``, recursively, sorted (directories named ``x.mid``,
    unreadable files and broken links included, so each gets its own error row)."""
    root = Path(folder)
    if not root.exists():
        raise MusicIdxError("no such folder", path=root)
    if not root.is_dir():
        raise MusicIdxError("is a file, not a folder; to answer for one file use 'musicidx query FILE'", path=root)
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if is_midi_name(Path(d))]):
            p = Path(dirpath) / name
            if is_midi_name(p):
                out.append(p)
    return sorted(out)


def score_files(
    searcher: Searcher,
    files: Sequence[str | Path],
    *,
    root: str | Path | None = None,
    on_done: Callable[[int, int], None] | None = None,
) -> list[ScoreRow]:
    """Score every file; a file that fails gets an error row and the rest go on."""
    rows: list[ScoreRow] = []
    for i, f in enumerate(files, 1):
        name = display_name(Path(f).relative_to(root) if root is not None else f)
        try:
            r = searcher.query(f)
            rows.append(ScoreRow.from_result(QueryResult(**{**r.__dict__, "file": name})))
        except MusicIdxError as e:
            rows.append(ScoreRow(name, status="error", error=e.reason))
        except Exception as e:  # a batch keeps going; the reason names what broke
            rows.append(ScoreRow(name, status="error", error=f"unexpected {type(e).__name__}: {e}"))
        if on_done is not None:
            on_done(i, len(files))
    return rows
