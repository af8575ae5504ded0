"""Enrolment: add tracks (and new composers) to an index with its existing encoder, no training.

The novelty threshold is recalibrated leave-one-work-out: each calibration track (the works
held out when the encoder was trained, plus every enrolled track, none of which the encoder
has seen) is scored against the updated index *without its own work*, and the threshold is
the same quantile as at build time.  The index is saved atomically, like a build.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from musicidx.encoder.runtime import Progress
from musicidx.encoder.soundfont import matching_soundfont

from .ann import index_bytes, stored_vectors
from .calibration import calibrate_threshold, calibration_shortfall
from .destination import index_lock
from .format import IndexContents, clip_table, read_index, save_index
from .manifest import CalibratedOn, Counts, Enrolment, IndexFormatError, Manifest, Novelty, utc_now
from .neighbours import search_outside, track_novelty
from .prepare import Corpus, prepare_corpus, stack_clips


@dataclass
class AddReport:
    """What ``musicidx add`` did."""

    index: Path
    added_tracks: int
    added_clips: int
    new_composers: list[str]
    duplicates: list[str]  # files whose content the index already holds (all of them: nothing added)
    skipped: list[tuple[str, str]]
    threshold_before: float
    threshold_after: float
    calibration_tracks: int
    uncalibrated_reason: str | None = None  # why the threshold cannot back a verdict (None: it can)


def add_to_index(
    index_dir: str | Path,
    midi_dir: str | Path,
    *,
    workers: int | None = None,
    cache_dir: str | Path | None | bool = True,
    soundfont: str | Path | None = None,
    progress: Progress | None = None,
) -> AddReport:
    """Embed ``midi_dir/<Composer>/*.mid`` with the index's encoder and add it to the index (holding
    its write lock: a build or another ``add`` writing it meanwhile is refused in one line)."""
    lock = index_lock(index_dir) if Path(index_dir).is_dir() else nullcontext()  # a missing index: load's error
    with lock:
        return _add(index_dir, midi_dir, workers=workers, cache_dir=cache_dir, soundfont=soundfont, progress=progress)


def _add(
    index_dir: str | Path,
    midi_dir: str | Path,
    *,
    workers: int | None,
    cache_dir: str | Path | None | bool,
    soundfont: str | Path | None,
    progress: Progress | None,
) -> AddReport:
    contents = read_index(index_dir, mmap=False)  # vectors are added to it
    m = contents.manifest
    sf = matching_soundfont(m.soundfont.to_dict(), soundfont)
    corpus = prepare_corpus(
        midi_dir, features=m.features, soundfont=sf, cache_dir=cache_dir, workers=workers, progress=progress
    )
    known = set(contents.clips.column("sha256").to_pylist())
    fresh = [i for i, f in enumerate(corpus.features) if f.sha256 not in known]
    duplicates = [corpus.tracks[i].rel_path for i, f in enumerate(corpus.features) if f.sha256 in known]
    on = m.novelty.calibrated_on or CalibratedOn(0, 0)
    before = float(m.novelty.threshold)
    if not fresh:  # nothing new: the index stays as it is
        reason = m.novelty.calibration()[1]
        return AddReport(Path(index_dir), 0, 0, [], duplicates, corpus.skipped, before, before, on.tracks, reason)

    added_clips, new_track_ids = _append(contents, corpus, fresh)
    novelty = _recalibrated(m, contents, on, new_track_ids, path=Path(index_dir))
    added = [corpus.tracks[t].composer for t in fresh]
    contents.manifest = _enrolled(m, contents, novelty, added, added_clips)
    save_index(contents, index_dir)
    return AddReport(
        Path(index_dir),
        len(fresh),
        added_clips,
        sorted(set(added) - set(m.composers)),
        duplicates,
        corpus.skipped,
        before,
        novelty.threshold,
        on.tracks if novelty.calibrated_on is None else novelty.calibrated_on.tracks,
        novelty.uncalibrated_reason,
    )


def _recalibrated(m: Manifest, contents: IndexContents, on: CalibratedOn, new_ids: list[int], *, path: Path) -> Novelty:
    """The novelty of ``m`` recalibrated leave-one-work-out on tracks the encoder never saw in
    training: the build's calibration tracks ``on`` and the tracks ``new_ids`` just added."""
    cal_tracks = sorted(set(on.track_ids or ()) | set(new_ids))
    if m.novelty.accept_rate is None:
        raise IndexFormatError("records no novelty.accept_rate to recalibrate with; rebuild the index", path=path)
    after_by_k, n_works = _recalibrate(contents, cal_tracks, sorted(m.novelty_thresholds()), m.novelty.accept_rate)
    seen = on.on_trained_works  # a build that could hold nothing out calibrated on trained tracks, which stay
    reason = calibration_shortfall(len(cal_tracks), n_works, seen_in_training=seen)
    how = "leave-one-work-out over tracks unseen in training (build-time held-out works and enrolled tracks)"
    return dataclasses.replace(
        m.novelty,
        threshold=after_by_k[m.k],
        thresholds_by_k=after_by_k,
        calibrated_on=CalibratedOn(
            len(cal_tracks),
            n_works,
            how + ("; the build's own calibration tracks were trained on" if seen else ""),
            tuple(cal_tracks),
            seen,
        ),
        calibrated=reason is None,
        uncalibrated_reason=reason,
    )


def _append(contents: IndexContents, corpus: Corpus, fresh: list[int]) -> tuple[int, list[int]]:
    """Embed tracks ``fresh`` of ``corpus`` with the index's encoder and append their vectors and
    clip rows to ``contents``; returns the clips added and the new tracks' ids."""
    from musicidx.encoder.model import Encoder, embed

    model = Encoder(contents.model_config, contents.feature_config)
    model.load_state_dict(contents.encoder_state)
    model.eval()
    new = stack_clips(corpus, fresh)
    emb = embed(model, new.feats)
    clips = contents.clips
    first_clip = clips.num_rows
    first_track = int(clips.column("track_id").to_numpy().max()) + 1 if clips.num_rows else 0
    contents.faiss_index.add_with_ids(emb, np.arange(first_clip, first_clip + len(emb), dtype=np.int64))
    rows = clip_table(
        corpus.clip_sources(),
        new.track,
        new.start,
        clip_seconds=corpus.feature_config.clip_seconds,
        first_clip=first_clip,
        first_track=first_track,
    )
    contents.clips = pa.concat_tables([clips, rows.cast(clips.schema)])
    return len(emb), [first_track + j for j in range(len(fresh))]


def _recalibrate(
    contents: IndexContents, cal_tracks: list[int], ks: list[int], accept_rate: float
) -> tuple[dict[int, float], int]:
    """The novelty threshold at each k of ``ks``, from tracks ``cal_tracks`` each scored against the
    index without its own work, and the number of works they belong to."""
    clips = contents.clips
    all_track = clips.column("track_id").to_numpy()
    composers = clips.column("composer").to_pylist()
    all_work = np.asarray([f"{c}/{w}" for c, w in zip(composers, clips.column("work").to_pylist())], dtype=object)
    nbs = []
    cal_ids = [np.flatnonzero(all_track == t) for t in cal_tracks]
    cal_vecs = stored_vectors(contents.faiss_index, np.concatenate(cal_ids))
    start = 0
    for ids in cal_ids:
        vecs = cal_vecs[start : start + len(ids)]
        start += len(ids)
        nbs.append(search_outside(contents.faiss_index, vecs, all_work, str(all_work[ids[0]]), max(ks)))
    by_k = {kk: calibrate_threshold(np.array([track_novelty(nb, kk) for nb in nbs]), accept_rate) for kk in ks}
    return by_k, len({str(all_work[ids[0]]) for ids in cal_ids})


def _enrolled(m: Manifest, contents: IndexContents, novelty: Novelty, added: list[str], added_clips: int) -> Manifest:
    """``m`` after ``add`` put tracks by composers ``added`` (one entry a track) into ``contents``:
    composers and counts, the FAISS entry's size, the recalibrated ``novelty``, the enrolment."""
    composers = dict(m.composers)
    for c in added:
        composers[c] = composers.get(c, 0) + 1
    clips = contents.clips
    works = {f"{c}/{w}" for c, w in zip(clips.column("composer").to_pylist(), clips.column("work").to_pylist())}
    faiss = dataclasses.replace(m.faiss, ntotal=int(contents.faiss_index.ntotal))
    if faiss.bytes_per_vector is not None:  # the recall stays the one measured at build time, on its own queries
        faiss = dataclasses.replace(
            faiss, bytes_per_vector=round(index_bytes(contents.faiss_index) / clips.num_rows, 2)
        )
    new_composers = tuple(sorted(set(added) - set(m.composers)))
    enrolment = Enrolment(utc_now(), len(added), added_clips, new_composers)
    return dataclasses.replace(
        m,
        composers=dict(sorted(composers.items())),
        counts=Counts(m.counts.tracks + len(added), clips.num_rows, len(works)),
        faiss=faiss,
        novelty=novelty,
        enrolled=(*(m.enrolled or ()), enrolment),
    )
