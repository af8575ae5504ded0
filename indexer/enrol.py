"""Enrolment: add tracks (and new composers) to an index with its existing encoder, no training.

The novelty threshold is recalibrated leave-one-work-out: each calibration track (the works
held out when the encoder was trained, plus every enrolled track, none of which the encoder
has seen) is scored against the updated index *without its own work*, and the threshold is
the same quantile as at build time.  The index is saved atomically, like a build.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from musicidx.encoder.soundfont import matching_soundfont

from .build import Progress, clip_table, prepare_corpus, stack_clips
from .neighbours import calibrate_threshold, calibration_shortfall, search_outside, track_novelty
from .store import (
    SEEN_IN_TRAINING_HOW,
    index_bytes,
    index_lock,
    load_index,
    novelty_calibration,
    save_index,
    stored_vectors,
    thresholds_by_k,
    utc_now,
)


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
    from musicidx.encoder.model import Encoder, embed

    contents = load_index(index_dir, mmap=False)  # vectors are added to it
    m = contents.manifest
    features = contents.feature_config
    sf = matching_soundfont(m["soundfont"], soundfont)
    corpus = prepare_corpus(
        midi_dir, features=features, soundfont=sf, cache_dir=cache_dir, workers=workers, progress=progress
    )

    clips = contents.clips
    known = set(clips.column("sha256").to_pylist())
    fresh = [i for i, f in enumerate(corpus.features) if f.sha256 not in known]
    duplicates = [corpus.tracks[i].rel_path for i, f in enumerate(corpus.features) if f.sha256 in known]
    if not fresh:  # nothing new: the index stays as it is
        before = float(m["novelty"]["threshold"])
        calibrated = int(m["novelty"]["calibrated_on"]["tracks"])
        reason = novelty_calibration(m)[1]
        return AddReport(Path(index_dir), 0, 0, [], duplicates, corpus.skipped, before, before, calibrated, reason)

    model = Encoder(contents.model_config, features)
    model.load_state_dict(contents.encoder_state)
    model.eval()
    new = stack_clips(corpus, fresh)
    emb = embed(model, new.feats)
    first_clip = clips.num_rows
    first_track = int(clips.column("track_id").to_numpy().max()) + 1 if clips.num_rows else 0
    track_id = {t: first_track + j for j, t in enumerate(fresh)}
    contents.faiss_index.add_with_ids(emb, np.arange(first_clip, first_clip + len(emb), dtype=np.int64))
    rows = clip_table(corpus, new, first_clip=first_clip, first_track=first_track).cast(clips.schema)
    contents.clips = pa.concat_tables([clips, rows])

    # Recalibrate leave-one-work-out on tracks the encoder never saw in training.
    k = int(m["k"])
    cal = m["novelty"]["calibrated_on"]
    cal_tracks = sorted(set(cal.get("track_ids", [])) | set(track_id.values()))
    all_track = contents.clips.column("track_id").to_numpy()
    composers_col = contents.clips.column("composer").to_pylist()
    all_work = np.asarray(
        [f"{c}/{w}" for c, w in zip(composers_col, contents.clips.column("work").to_pylist())], dtype=object
    )
    ks = sorted(thresholds_by_k(m))  # every k the build calibrated for is recalibrated
    nbs = []
    cal_ids = [np.flatnonzero(all_track == t) for t in cal_tracks]
    cal_vecs = stored_vectors(contents.faiss_index, np.concatenate(cal_ids))  # cal_tracks holds the new ones
    start = 0
    for ids in cal_ids:
        vecs = cal_vecs[start : start + len(ids)]
        start += len(ids)
        nbs.append(search_outside(contents.faiss_index, vecs, all_work, str(all_work[ids[0]]), max(ks)))
    accept_rate = float(m["novelty"]["accept_rate"])
    after_by_k = {kk: calibrate_threshold(np.array([track_novelty(nb, kk) for nb in nbs]), accept_rate) for kk in ks}
    before, after = float(m["novelty"]["threshold"]), after_by_k[k]

    added_composers = sorted({corpus.tracks[t].composer for t in fresh} - set(m["composers"]))
    for t in fresh:
        c = corpus.tracks[t].composer
        m["composers"][c] = m["composers"].get(c, 0) + 1
    m["composers"] = dict(sorted(m["composers"].items()))
    m["counts"] = {
        "tracks": m["counts"]["tracks"] + len(fresh),
        "clips": contents.clips.num_rows,
        "works": len(set(all_work.tolist())),
    }
    m["faiss"]["ntotal"] = int(contents.faiss_index.ntotal)
    if "bytes_per_vector" in m["faiss"]:  # the recall stays the one measured at build time, on its own queries
        m["faiss"]["bytes_per_vector"] = round(index_bytes(contents.faiss_index) / contents.clips.num_rows, 2)
    m["novelty"]["threshold"] = after
    m["novelty"]["thresholds_by_k"] = {str(kk): v for kk, v in after_by_k.items()}
    # a build that could hold nothing out calibrated on trained tracks, which stay in the calibration
    seen = bool(cal.get("seen_in_training")) or str(cal.get("how", "")).startswith(SEEN_IN_TRAINING_HOW)
    n_works = len({str(all_work[np.flatnonzero(all_track == t)[0]]) for t in cal_tracks})
    m["novelty"]["calibrated_on"] = {
        **cal,
        "tracks": len(cal_tracks),
        "works": n_works,
        "how": "leave-one-work-out over tracks unseen in training (build-time held-out works and enrolled tracks)"
        + ("; the build's own calibration tracks were trained on" if seen else ""),
        "track_ids": cal_tracks,
        "seen_in_training": seen,
    }
    reason = calibration_shortfall(len(cal_tracks), n_works, seen_in_training=seen)
    m["novelty"]["calibrated"], m["novelty"]["uncalibrated_reason"] = reason is None, reason
    m.setdefault("enrolled", []).append(
        {"when": utc_now(), "tracks": len(fresh), "clips": len(emb), "new_composers": added_composers}
    )
    save_index(contents, index_dir)
    return AddReport(
        Path(index_dir),
        len(fresh),
        len(emb),
        added_composers,
        duplicates,
        corpus.skipped,
        before,
        after,
        len(cal_tracks),
        reason,
    )
