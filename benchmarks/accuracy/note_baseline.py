"""The symbolic peer musicidx must beat: a few dozen note statistics read straight from the MIDI
file, a logistic regression (closed set) and two novelty statistics (open set).

    python -m benchmarks.accuracy.note_baseline [MIDI_DIR] [--cross DIR] [--folds 5] [--seed 0] [--k 5]
                                                [--json-out benchmarks/results/note_baseline.json]

It reads notes, not sound: no rendering, no SoundFont, no instrument programs.  So it cannot use
instrumentation as a shortcut, and the re-orchestration test of ``../shared/DESIGN.md`` is
irrelevant to it (re-orchestrating a track changes programs, not notes: its vector, and so every
answer, stays the same).

Features (``note_features``; 56 numbers per track; drum tracks excluded; each file parsed once
with :func:`musicidx.encoder.midi.load_midi`, so the project's safety limits apply and the
files it refuses are skipped and listed):

* key-normalised pitch-class histogram (12): the duration-weighted pitch-class histogram is
  correlated with the 24 rotated Krumhansl-Kessler profiles, the best key is the estimate, and
  the histogram is rotated so its tonic comes first; plus the mode (1 major, 0 minor) and the
  winning correlation (key clarity) (2);
* melodic intervals (15): per instrument, the top note of each onset (a skyline, so a piano
  track gives its melody), intervals between successive ones folded to 0..12 semitones (12 = an
  octave or more), their histogram (13), the share going up and the mean absolute interval;
* chord sizes (6): notes starting together (onsets within 30 ms, all instruments), histogram of
  1, 2, 3, 4, 5, 6+;
* polyphony (3): notes sounding at each onset: mean, standard deviation, 90th percentile;
* durations (11): histogram of log2 duration in quarter notes (through the file's tempo map; 7
  bins centred on 1/8, 1/4, 1/2, 1, 2, 4 quarters and beyond), mean and std of log2 duration in
  quarters and in seconds (the tempo map of a performed file may be meaningless, so both);
* register (4): pitch mean, standard deviation, 5th and 95th percentile;
* density (3): notes per second, onsets per second, onsets per quarter note.

Model: ``StandardScaler`` + ``LogisticRegression(class_weight="balanced")`` (``accuracy.baseline``'s
``logistic``).

Closed set: grouped 5-fold CV on ``MIDI_DIR`` with :func:`musicidx.evaluate.splits.grouped_folds`
(the folds ``musicidx eval`` uses, seed 0): accuracy, balanced accuracy, macro-F1, per-composer
recall, confusion matrix.

Open set, leave one composer out (:func:`musicidx.evaluate.splits.leave_one_composer_out`, ``musicidx
eval``'s open set): reference = the other composers' training tracks, known = their held-out fold,
unknown = every track of the left-out composer.  Two novelty statistics: ``knn`` = Euclidean
distance of the standardised vector (scaler fitted on the reference) to its k-th nearest reference
track, as ``accuracy.baseline``;
``maxprob`` = 1 - the largest predicted probability of the logistic regression fitted on the
reference.  AUROC, FPR at 95 % TPR, OSCR per composer and mean, via
:func:`musicidx.evaluate.metrics.open_set_metrics`.

Cross-corpus (``--cross DIR``, a labelled folder such as ``data.export_music21`` writes):
fitted on the whole of ``MIDI_DIR``; accuracy and balanced accuracy (mean recall over the known
composers present in DIR) on the tracks of DIR whose composer is in ``MIDI_DIR`` (known); AUROC /
FPR@95TPR / OSCR of known vs new (composers not in ``MIDI_DIR``), overall and per new composer, for
both novelty statistics.  The 95 % threshold is taken on the known tracks of DIR themselves (an
oracle threshold, as in the LOCO figures).

Fold-seed spread (``--spread N``, default 10): ``accuracy.baseline``'s :func:`fold_seed_spread`, the
closed-set figures (with and without class weights) and the kNN open-set mean over fold seeds
``0..N-1``, so the two baselines' spreads compare directly.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.accuracy.baseline import closed_set, eval_splits, fold_seed_spread, logistic, print_closed
from benchmarks.paths import RESULTS, TRAINING_CORPUS
from musicidx.encoder.model import KEY_PROFILES

MAJOR, MINOR = (np.array(p) for p in KEY_PROFILES)  # the encoder's Krumhansl-Kessler profiles, tonic first
CHORD_GAP = 0.03  # seconds: onsets closer than this are one chord
DURATION_EDGES = np.array([-np.inf, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, np.inf])  # log2 quarters
NOVELTY = ("knn", "maxprob")


# ----------------------------------------------------------------------------- features


def estimate_key(pc_hist: np.ndarray) -> tuple[int, int, float]:
    """(tonic 0-11, mode 1 major / 0 minor, correlation) of the best Krumhansl-Schmuckler key."""
    best = (0, 1, -2.0)
    for mode, profile in ((1, MAJOR), (0, MINOR)):
        for tonic in range(12):
            r = float(np.corrcoef(pc_hist, np.roll(profile, tonic))[0, 1]) if pc_hist.std() > 0 else 0.0
            if r > best[2]:
                best = (tonic, mode, r)
    return best


def _hist(values: np.ndarray, bins: int) -> np.ndarray:
    h = np.bincount(values, minlength=bins)[:bins].astype(float)
    return h / max(h.sum(), 1.0)


def _quarters(pm: Any, times: np.ndarray) -> np.ndarray:
    """Score position in quarter notes of each time, through the file's tempo map."""
    starts, qpm = pm.get_tempo_changes()
    if len(starts) == 0:
        starts, qpm = np.array([0.0]), np.array([120.0])
    q_at = np.r_[0.0, np.cumsum(np.diff(starts) * qpm[:-1] / 60.0)]
    i = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(starts) - 1)
    return q_at[i] + (times - starts[i]) * qpm[i] / 60.0


def _skyline_intervals(notes: list[Any]) -> np.ndarray:
    """Intervals between the top notes of successive onsets of one instrument."""
    tops: dict[float, int] = {}
    for n in notes:
        t = round(n.start, 3)
        tops[t] = max(tops.get(t, 0), n.pitch)
    line = np.array([tops[t] for t in sorted(tops)])
    return np.diff(line)


def note_features(pm: Any) -> np.ndarray:
    """The note statistics of one parsed file (see the module docstring); ValueError if it has
    no pitched notes."""
    insts = [i for i in pm.instruments if not i.is_drum and i.notes]
    if not insts:
        raise ValueError("no pitched (non-drum) notes")
    notes = [n for i in insts for n in i.notes]
    start = np.array([n.start for n in notes])
    end = np.maximum(np.array([n.end for n in notes]), start + 1e-3)
    pitch = np.array([n.pitch for n in notes])
    dur = end - start

    pc = np.bincount(pitch % 12, weights=dur, minlength=12)
    pc = pc / pc.sum()
    tonic, mode, clarity = estimate_key(pc)
    key = np.r_[np.roll(pc, -tonic), mode, clarity]

    iv = np.concatenate([_skyline_intervals(i.notes) for i in insts])
    folded = np.minimum(np.abs(iv), 12).astype(int)
    melodic = np.r_[_hist(folded, 13), (iv > 0).mean() if len(iv) else 0.0, np.abs(iv).mean() if len(iv) else 0.0]

    order = np.sort(start)
    new_chord = np.r_[True, np.diff(order) > CHORD_GAP]
    onsets = order[new_chord]
    sizes = np.diff(np.r_[np.flatnonzero(new_chord), len(order)])
    chords = _hist(np.minimum(sizes, 6) - 1, 6)
    sounding = np.searchsorted(order, onsets + 1e-4, side="right") - np.searchsorted(np.sort(end), onsets + 1e-4)
    poly = np.r_[sounding.mean(), sounding.std(), np.percentile(sounding, 90)]

    q_dur = np.maximum(_quarters(pm, end) - _quarters(pm, start), 1e-3)
    lq, ls = np.log2(q_dur), np.log2(dur)
    durations = np.r_[np.histogram(lq, DURATION_EDGES)[0] / len(lq), lq.mean(), lq.std(), ls.mean(), ls.std()]

    register = np.r_[pitch.mean(), pitch.std(), np.percentile(pitch, 5), np.percentile(pitch, 95)]
    span = max(end.max() - start.min(), 1e-3)
    q_span = max(float(np.ptp(_quarters(pm, np.array([start.min(), end.max()])))), 1e-3)
    density = np.r_[len(notes) / span, len(onsets) / span, len(onsets) / q_span]
    return np.concatenate([key, melodic, chords, poly, durations, register, density]).astype(np.float64)


FEATURE_NAMES = (
    [f"pc{i}" for i in range(12)]
    + ["mode_major", "key_clarity"]
    + [f"interval{i}" for i in range(13)]
    + ["share_up", "mean_abs_interval"]
    + [f"chord{i}" for i in range(1, 6)]
    + ["chord6plus"]
    + ["poly_mean", "poly_std", "poly_p90"]
    + [f"dur_bin{i}" for i in range(7)]
    + ["log2q_mean", "log2q_std", "log2s_mean", "log2s_std"]
    + ["pitch_mean", "pitch_std", "pitch_p5", "pitch_p95"]
    + ["notes_per_s", "onsets_per_s", "onsets_per_quarter"]
)


def load_folder(midi_dir: Path, cache: dict[Path, np.ndarray | str]) -> tuple[list[Any], np.ndarray, list[dict]]:
    """Tracks of a labelled folder that parse, their vectors, and the skipped files with the
    reason.  ``cache`` keeps each file's vector (or refusal) so a file is parsed once per run."""
    from musicidx.encoder.errors import MusicIdxError
    from musicidx.encoder.midi import load_midi
    from musicidx.indexer.corpus import scan_corpus

    tracks, rows, skipped = [], [], []
    for t in scan_corpus(midi_dir):
        if t.path not in cache:
            try:
                cache[t.path] = note_features(load_midi(t.path))
            except (MusicIdxError, ValueError) as e:
                cache[t.path] = getattr(e, "reason", None) or str(e)
        v = cache[t.path]
        if isinstance(v, str):
            skipped.append({"path": t.rel_path, "reason": v})
        else:
            tracks.append(t)
            rows.append(v)
    return tracks, np.stack(rows), skipped


# ----------------------------------------------------------------------------- novelty


def novelty(x_ref: np.ndarray, y_ref: np.ndarray, x: np.ndarray, k: int, seed: int) -> dict[str, np.ndarray]:
    """Both novelty statistics of the rows of ``x`` against the reference set, and the
    logistic regression's prediction (``pred``, a label of ``y_ref``)."""
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_ref)
    nn = NearestNeighbors(n_neighbors=k).fit(scaler.transform(x_ref))
    model = logistic(True, seed).fit(x_ref, y_ref)
    proba = model.predict_proba(x)
    return {
        "knn": nn.kneighbors(scaler.transform(x))[0][:, k - 1],
        "maxprob": 1.0 - proba.max(axis=1),
        "pred": model.classes_[proba.argmax(axis=1)],
    }


def _metrics(known: dict[str, np.ndarray], unknown: dict[str, np.ndarray], correct: np.ndarray) -> dict[str, Any]:
    from musicidx.evaluate.metrics import open_set_metrics

    return {s: open_set_metrics(known[s], unknown[s], correct) for s in NOVELTY}


def _mean(per: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    keys = ("auroc", "fpr_at_95tpr", "oscr")
    return {s: {key: float(np.mean([m[s][key] for m in per.values()])) for key in keys} for s in NOVELTY}


def open_set(x: np.ndarray, y: np.ndarray, splits: dict, k: int, seed: int) -> dict[str, Any]:
    """Leave one composer out with both novelty statistics."""
    per: dict[str, Any] = {}
    for c, (ref, known, unknown) in splits.items():
        nk = novelty(x[ref], y[ref], x[known], k, seed)
        nu = novelty(x[ref], y[ref], x[unknown], k, seed)
        correct = nk["pred"] == y[known]
        per[c] = {
            **_metrics(nk, nu, correct),
            "reference_tracks": int(len(ref)),
            "known_tracks": int(len(known)),
            "unknown_tracks": int(len(unknown)),
            "known_accuracy": float(correct.mean()),
        }
    return {"k": k, "per_composer": per, "mean": _mean(per)}


def cross_corpus(
    x: np.ndarray, names: list[str], y: np.ndarray, tracks: list[Any], xc: np.ndarray, k: int, seed: int
) -> dict[str, Any]:
    """Fit on all of the training folder, ask about every track of the cross folder."""
    from sklearn.metrics import balanced_accuracy_score

    comp = np.array([t.composer for t in tracks])
    is_known = np.isin(comp, names)
    if not is_known.any() or is_known.all():
        raise SystemExit("--cross: the folder needs tracks of both known and new composers")
    n = novelty(x, y, xc, k, seed)
    truth = np.array([names.index(c) if c in names else -1 for c in comp])
    correct = n["pred"][is_known] == truth[is_known]
    known = {s: n[s][is_known] for s in NOVELTY}
    overall = _metrics(known, {s: n[s][~is_known] for s in NOVELTY}, correct)
    per_new = {
        c: {**_metrics(known, {s: n[s][comp == c] for s in NOVELTY}, correct), "tracks": int((comp == c).sum())}
        for c in sorted(set(comp[~is_known]))
    }
    known_names = sorted(set(comp[is_known]))
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": a composer DIR lacks
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(truth[is_known], n["pred"][is_known]))
    return {
        "known_tracks": {c: int((comp == c).sum()) for c in known_names},
        "new_tracks": int((~is_known).sum()),
        "accuracy": float(correct.mean()),
        "balanced_accuracy": balanced,
        "recall": {c: float((n["pred"][comp == c] == names.index(c)).mean()) for c in known_names},
        "predicted": {
            c: {names[j]: int((n["pred"][comp == c] == j).sum()) for j in range(len(names))} for c in known_names
        },
        "overall": overall,
        "per_new_composer": per_new,
        "mean_over_new_composers": _mean(per_new),
    }


# ----------------------------------------------------------------------------- report


def _row(label: str, m: dict[str, Any], extra: str) -> str:
    cells = " | ".join(f"{m[s]['auroc']:.3f} | {m[s]['fpr_at_95tpr']:.3f} | {m[s]['oscr']:.3f}" for s in NOVELTY)
    return f"| {label} | {extra} | {cells} |"


def _table_head(first: str, second: str) -> None:
    print(f"| {first} | {second} | kNN AUROC | kNN FPR@95 | kNN OSCR | 1-maxP AUROC | 1-maxP FPR@95 | 1-maxP OSCR |")
    print("|---" * 8 + "|")


def print_open(r: dict[str, Any]) -> None:
    print(f"\nopen set, leave one composer out (novelty: kNN = distance to the {r['k']}-th nearest reference track,")
    print("1-maxP = 1 - largest predicted probability):")
    _table_head("left out", "ref / known / unknown, known acc.")
    for c, m in r["per_composer"].items():
        extra = f"{m['reference_tracks']} / {m['known_tracks']} / {m['unknown_tracks']}, {m['known_accuracy']:.2f}"
        print(_row(c, m, extra))
    print(_row("mean", r["mean"], ""))


def print_cross(r: dict[str, Any], folder: Path) -> None:
    known = ", ".join(f"{c} {n}" for c, n in r["known_tracks"].items())
    print(f"\ncross-corpus, fitted on all of the training folder, asked about {folder}:")
    print(f"  known composers ({known}): accuracy {r['accuracy']:.3f}, balanced accuracy {r['balanced_accuracy']:.3f}")
    for c, row in r["predicted"].items():
        print(f"    {c}: recall {r['recall'][c]:.2f}, predicted as " + ", ".join(f"{k} {v}" for k, v in row.items()))
    _table_head("new composer", "tracks")
    for c, m in r["per_new_composer"].items():
        print(_row(c, m, str(m["tracks"])))
    print(_row("mean over new composers", r["mean_over_new_composers"], ""))
    print(_row("all new vs all known", r["overall"], str(r["new_tracks"])))


def main() -> None:
    """Parse, load, split, measure, print, write. Over 60 lines because it is the script's whole run in
    order, each step a few lines that print as they go; the measurements themselves are functions above."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("midi_dir", nargs="?", type=Path, default=TRAINING_CORPUS, help=f"[{TRAINING_CORPUS}]")
    ap.add_argument("--cross", type=Path, help="a labelled folder to ask the model fitted on MIDI_DIR about")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=5, help="kNN novelty: distance to the k-th nearest track")
    ap.add_argument(
        "--spread", type=int, default=10, metavar="N", help="also rerun with fold seeds 0..N-1 (0: skip) for the spread"
    )
    ap.add_argument("--json-out", type=Path, default=RESULTS / "note_baseline.json")
    args = ap.parse_args()

    began = time.monotonic()
    cache: dict[Path, np.ndarray | str] = {}
    tracks, x, skipped = load_folder(args.midi_dir, cache)
    names = sorted({t.composer for t in tracks})
    composers = [t.composer for t in tracks]
    groups = [t.group for t in tracks]
    y = np.array([names.index(c) for c in composers])
    load_s = time.monotonic() - began
    folds, splits = eval_splits(composers, groups, n_folds=args.folds, seed=args.seed)
    print(
        f"{len(tracks)} tracks ({', '.join(f'{n} {composers.count(n)}' for n in names)}), {len(set(groups))} works, "
        f"{len(skipped)} skipped; parsed in {load_s:.1f} s; {x.shape[1]} note statistics per track"
    )
    for s in skipped:
        print(f"  skipped {s['path']}: {s['reason']}")
    print("re-orchestration: irrelevant, the features read notes, not programs or sound (every answer is unchanged)")

    closed = closed_set(x, y, folds, names, True, args.seed)
    print_closed(closed, names)
    opened = open_set(x, y, splits, args.k, args.seed)
    print_open(opened)
    spread = fold_seed_spread(x, y, composers, groups, names, args) if args.spread else {}
    cross = None
    if args.cross:
        t0 = time.monotonic()
        ctracks, xc, cskipped = load_folder(args.cross, cache)
        cross_s = time.monotonic() - t0
        print(f"\n{args.cross}: {len(ctracks)} tracks, {len(cskipped)} skipped, parsed in {cross_s:.1f} s")
        for s in cskipped:
            print(f"  skipped {s['path']}: {s['reason']}")
        cross = {
            "folder": str(args.cross),
            "skipped": cskipped,
            **cross_corpus(x, names, y, ctracks, xc, args.k, args.seed),
        }
        print_cross(cross, args.cross)
    seconds = time.monotonic() - began
    print(f"\n{seconds:.1f} s in all")
    result = {
        "corpus": str(args.midi_dir),
        "tracks": len(tracks),
        "composers": {n: composers.count(n) for n in names},
        "works": len(set(groups)),
        "skipped": skipped,
        "features": FEATURE_NAMES,
        "model": "StandardScaler + LogisticRegression(class_weight='balanced')",
        "reorchestration": "irrelevant: the features are read from notes, not instruments or audio",
        "folds": {"n_splits": args.folds, "seed": args.seed, "test_tracks": [int(len(te)) for _, te in folds]},
        "closed": closed,
        "open": opened,
        "fold_seed_spread": spread,
        "cross": cross,
        "seconds": seconds,
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
