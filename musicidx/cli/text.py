"""The answers in words: what every command prints, as text (and the JSON every command prints
with ``--json``).  Pure functions from a library result to a string; nothing here prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from musicidx.indexer.manifest import EncoderOrigin, FaissEntry, Manifest, Novelty


def to_json(obj: Any, *, indent: int | None = 2) -> str:
    """JSON as every command prints it: UTF-8 (``Dvořák``, not ``Dvo\\u0159\\u00e1k``)."""
    return json.dumps(obj, indent=indent, ensure_ascii=False, default=str)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def build_dict(r: Any) -> dict[str, Any]:
    f = r.fit
    return {
        "out": str(r.out),
        "tracks": f.n_tracks,
        "clips": f.n_clips,
        "works": f.n_works,
        "composers": f.composers,
        "val_tracks": f.val_tracks,
        "val_accuracy": f.val_accuracy,
        "val_balanced_accuracy": f.val_balanced_accuracy,
        "majority_baseline": f.baseline,
        "warnings": f.warnings,
        "novelty_threshold": f.threshold,
        "accept_rate": f.accept_rate,
        "calibrated": f.calibrated,
        "uncalibrated_reason": f.uncalibrated_reason,
        "best_epoch": f.best_epoch,
        "encoder": f.encoder.to_dict() if f.encoder else None,
        "faiss": f.faiss_kind,
        "soundfont": r.soundfont.name,
        "rendered_seconds": r.rendered_seconds,
        "cached_tracks": r.cached_tracks,
        "skipped": [{"path": p, "reason": why} for p, why in r.skipped],
        "seconds": r.seconds,
        "ray": r.cluster,
        "lock_taken_over": r.lock_taken_over,
    }


def render_build(r: Any) -> str:
    f = r.fit
    lines = [
        f"index        {r.out}",
        f"tracks       {f.n_tracks} ({f.n_works} works), {f.n_clips} clips",
        f"composers    {', '.join(f.composers)}",
        f"encoder      {_encoder_origin(f.encoder)}",
        f"validation   {f.val_tracks} held-out tracks: accuracy {_fmt(f.val_accuracy)}, "
        f"balanced accuracy {_fmt(f.val_balanced_accuracy)}"
        + (
            " (each against the other works)"
            if f.encoder and not f.encoder.finetuned and not f.encoder.head
            else f" (last layer retrained, {f.best_epoch} epochs)"
            if f.encoder and f.encoder.head
            else f" (best epoch {f.best_epoch})"
        ),
        f"baseline     always answering {f.baseline['composer']} (most tracks) would score accuracy "
        f"{_fmt(f.baseline['accuracy'])}, balanced accuracy {_fmt(f.baseline['balanced_accuracy'])}",
        f"novelty      threshold {f.threshold:.4f} "
        + (
            f"(accepts {f.accept_rate:.0%} of held-out known-composer tracks)"
            if f.calibrated
            else f"UNCALIBRATED: {f.uncalibrated_reason}; answers give no new-composer verdict"
        ),
        f"rendered     {r.rendered_seconds / 60:.1f} min of audio with {r.soundfont.name}; "
        f"{r.cached_tracks} tracks from cache",
        f"faiss        {f.faiss_kind}, k={f.k}",
        "time         " + ", ".join(f"{k} {v:.1f}s" for k, v in r.seconds.items()),
    ]
    if r.cluster:
        lines.append(f"ray          features and embeddings on {r.cluster}")
    if r.lock_taken_over:
        lines.append(f"lock         took over the lock a killed build left ({r.lock_taken_over})")
    lines += [f"warning      {w}" for w in f.warnings]
    if r.skipped:
        lines.append(f"skipped      {len(r.skipped)} file(s):")
        lines += [f"  {p}: {why}" for p, why in r.skipped]
    return "\n".join(lines)


def render_answer(a: dict[str, Any]) -> str:
    """One answer in words: the composer and the vote it came from, the verdict and what it
    rests on, and the nearest training tracks with the clips that matched best."""
    shares = ", ".join(f"{c} {v:.2f}" for c, v in sorted(a["votes"].items(), key=lambda kv: -kv[1]))
    calibrated = "calibrated" if a.get("calibrated", True) else "uncalibrated"
    under = (
        f" ({a['accept_rate']:.0%} of held-out pieces by known composers stay under it)"
        if a["accept_rate"] and a.get("calibrated", True)
        else ""
    )
    novelty = (
        f"novelty {_sig(a['novelty'])} (the median distance of its clips to their {_nth(a['k'])} nearest index "
        f"clip) vs the threshold {_sig(a['threshold'])} {calibrated} for k={a['k']}{under}"
    )
    if a["same_composition"]:
        verdict = f"a known composer: it plays the same notes as the training track {a['same_track']}"
        if not a.get("calibrated", True):
            verdict += " (the index's novelty threshold is uncalibrated, but none is needed here)"
        vote = f"{a['composer']} 1.00, the composer of that track (no vote needed)"
    else:
        vote = (
            f"{shares}: each of its {a['clips']} clips votes for the composers of its {a['k']} nearest index clips, "
            "weighted by similarity and divided by each composer's share of the index (composer-balanced: a "
            "composer with many tracks does not win by numbers), so the nearest tracks below need not agree"
        )
        verdict = (
            f"none: the index's novelty threshold is uncalibrated (too few held-out works; 'musicidx info' says "
            f"why), so whether this is a composer not in the index is not known: {novelty}; {a['composer']} is "
            "the nearest known composer"
            if a["is_new"] is None
            else f"probably a composer NOT in the index: {novelty}; {a['composer']} is only the nearest known composer"
            if a["is_new"]
            else f"a known composer: {novelty}"
        )
    lines = [
        a["file"],
        f"  composer     {a['composer']} (confidence {a['confidence']:.2f}: its share of the vote)",
        f"  vote         {vote}",
        f"  verdict      {verdict}",
    ]
    for n in a["nearest"]:
        lines.append(
            f"  nearest      {n['path']} ({n['composer']}): distance {_sig(n['distance'])}; best-matching clips "
            f"start at {n['query_start_s']:.1f}s in the query and {n['match_start_s']:.1f}s in this track"
        )
    return "\n".join(lines)


def _sig(x: float) -> str:
    """A distance to 4 significant digits, never in exponent notation: 0.05431, 0.001234, 0."""
    import numpy as np

    return str(np.format_float_positional(x, precision=4, unique=False, fractional=False, trim="-"))


def _nth(k: int) -> str:
    suffix = "th" if k % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def render_eval(r: Any, written: list[Path]) -> str:
    def ms(key: str) -> str:
        v = r.summary[key]
        return f"{v['mean']:.3f} ± {v['std']:.3f}" if len(r.seeds) > 1 else f"{v['mean']:.3f}"

    c, o = r.closed, r.open
    views = ["original", *r.orchestrations]
    seeds = f"{len(r.seeds)} training seeds ({', '.join(map(str, r.seeds))}), mean ± std"
    lines = [
        f"closed set   {c['tracks']} tracks, grouped {r.folds}-fold CV by work; {seeds}:",
        *(
            f"  {v:<10} balanced accuracy {ms(f'closed.{v}.balanced_accuracy')}, accuracy {ms(f'closed.{v}.accuracy')}"
            for v in views
        ),
    ]
    if r.orchestrations:
        lines.append(f"  agreement  same composer in all {len(views)} orchestrations: {ms('closed.agreement')}")
    lines.append(
        f"  seed {r.seeds[0]}     macro-F1 {c['macro_f1']:.3f}; recall "
        + ", ".join(f"{k} {v:.2f}" for k, v in c["recall"].items())
    )
    if o:
        lines.append("open set     leave-one-composer-out (unknown = left-out composer):")
        lines += [
            f"  {v:<10} AUROC {ms(f'open.{v}.auroc')}  FPR@95%TPR {ms(f'open.{v}.fpr_at_95tpr')}"
            + (f"  OSCR {ms(f'open.{v}.oscr')}" if v == "original" else "")
            for v in views
        ]
        lines.append(f"  seed {r.seeds[0]}, per left-out composer:")
        for name, m in o["per_composer"].items():
            lines.append(
                f"  {name:<10} AUROC {m['auroc']:.3f}  FPR@95%TPR {m['fpr_at_95tpr']:.3f}  OSCR {m['oscr']:.3f}  "
                f"flagged new: unknown {m['unknown_flagged']:.2f}, known {m['known_flagged']:.2f}"
            )
        alts = {k[len("auroc_") :]: v for k, v in o["mean"].items() if k.startswith("auroc_") and k[6:] not in views}
        lines.append(
            "  candidate novelty statistics, mean AUROC: " + ", ".join(f"{k} {v:.3f}" for k, v in alts.items())
        )
    lines.append(f"time         {r.seconds:.0f}s")
    lines += [f"wrote        {p}" for p in written]
    return "\n".join(lines)


def render_cross(r: Any, written: list[Path]) -> str:
    k, o = r.known, r.open
    lines = [f"index        {r.index} asked about {r.tracks} tracks of {r.folder}"]
    if k.get("tracks"):
        lines.append(
            f"known        {k['tracks']} tracks of {', '.join(r.known_composers)}: accuracy {k['accuracy']:.3f}, "
            f"balanced accuracy {k['balanced_accuracy']:.3f}; flagged new {k['flagged_new']:.2f}"
        )
        lines += [
            f"  {c:<10} recall {k['recall'][c]:.2f}  answered "
            + ", ".join(f"{a} {n}" for a, n in k["answered"][c].items())
            for c in r.known_composers
        ]
    else:
        lines.append("known        none of the folder's composers is in the index")
    if o:
        lines.append(
            f"new          {o['new_tracks']} tracks of {len(r.new_composers)} composers: AUROC {o['auroc']:.3f}, "
            f"FPR@95%TPR {o['fpr_at_95tpr']:.3f}, OSCR {o['oscr']:.3f}; flagged new {o['flagged_new']:.2f} "
            f"at the threshold {o['threshold']:.4f}"
        )
        lines += [
            f"  {c:<10} {m['tracks']:>3} tracks  AUROC {m['auroc']:.3f}  flagged new {m['flagged_new']:.2f}"
            for c, m in o["per_new_composer"].items()
        ]
    lines += [f"skipped      {p}: {why}" for p, why in r.skipped]
    lines.append(f"time         {r.seconds:.0f}s")
    lines += [f"wrote        {p}" for p in written]
    return "\n".join(lines)


def render_add(r: Any) -> str:
    if r.added_tracks == 0:
        return "\n".join(
            [
                f"index        {r.index}",
                f"added        nothing new: all {len(r.duplicates)} usable file(s) are already in the index",
                *(f"skipped      {p}: {why}" for p, why in r.skipped),
            ]
        )
    lines = [
        f"index        {r.index}",
        f"added        {r.added_tracks} tracks, {r.added_clips} clips"
        + (f"; new composers: {', '.join(r.new_composers)}" if r.new_composers else ""),
        f"novelty      threshold {r.threshold_before:.4f} -> {r.threshold_after:.4f} "
        f"(recalibrated leave-one-work-out on {r.calibration_tracks} tracks)"
        + (f"; UNCALIBRATED: {r.uncalibrated_reason}" if r.uncalibrated_reason else ""),
    ]
    if r.duplicates:
        lines.append(f"already in   {len(r.duplicates)} file(s) with the same content were not added again")
    lines += [f"skipped      {p}: {why}" for p, why in r.skipped]
    return "\n".join(lines)


def _faiss_lines(f: FaissEntry) -> list[str]:
    if f.bytes_per_vector is None or f.recall_at_10 is None:
        return ["  measured     no memory or recall figures (built before format 3)"]
    params = ", ".join(f"{k} {v}" for k, v in (f.params or {}).items())
    mapped = f.mapped_bytes_per_vector
    return [
        f"  chosen       {f.chosen}" + (f"; {params}" if params else ""),
        f"  memory       {f.bytes_per_vector:g} bytes per vector in memory (codes, ids, quantiser)"
        + (f" + {mapped:g} memory-mapped from disk" if mapped else ""),
        f"  recall@10    {f.recall_at_10.value:.4f} against exact search ({f.recall_at_10.queries} of its own vectors "
        "as queries)",
    ]


def _encoder_origin(e: EncoderOrigin | None) -> str:
    """Where an index's encoder came from, in words (indexes before the recipe say nothing)."""
    if e is None or e.name is None:
        return "trained in the build"
    how = "fine-tuned in the build" if e.finetuned else "last layer retrained in the build" if e.head else "frozen"
    return f"pretrained {e.name} (sha256 {(e.sha256 or '')[:12]}...), {how}"


def _novelty_line(nov: Novelty) -> str:
    calibrated, why = nov.calibration()
    on = nov.calibrated_on
    if not calibrated:
        return f"novelty        threshold {nov.threshold:.4f} UNCALIBRATED: {why}; answers give no new-composer verdict"
    rate = f" at {nov.accept_rate:.0%} acceptance" if nov.accept_rate is not None else ""
    held = f", calibrated on {on.tracks} tracks of {on.works} held-out works" if on is not None else ""
    return f"novelty        threshold {nov.threshold:.4f}{rate}{held}"


def render_info(m: Manifest, where: Path) -> str:
    """``musicidx info``: the :class:`~musicidx.indexer.manifest.Manifest` of the index at ``where``."""
    feats, counts, val = m.features, m.counts, m.validation
    base = val.majority_baseline if val is not None else None
    return "\n".join(
        [
            f"index          {where} (format {m.format_version}, musicidx {m.musicidx_version}, created {m.created})",
            "composers      " + ", ".join(f"{c} ({n})" for c, n in m.composers.items()),
            f"counts         {counts.tracks} tracks, {counts.works} works, {counts.clips} clips",
            f"features       {feats.sample_rate} Hz, CQT {feats.n_bins} bins from {feats.fmin:.1f} Hz, hop "
            f"{feats.hop_length}, {feats.clips_per_track} clips x {feats.clip_seconds:g}s",
            f"soundfont      {m.soundfont.name} (sha256 {m.soundfont.sha256[:12]}...)",
            f"encoder        {m.embedding_dim}-d, channels {list(m.model.channels)}, "
            f"sha256 {(m.encoder_sha256 or '')[:12]}..., {_encoder_origin(m.encoder)}",
            f"faiss          {m.faiss.type} ({m.faiss.metric}), {m.faiss.ntotal} vectors, k={m.k}",
            *_faiss_lines(m.faiss),
            _novelty_line(m.novelty),
            "  by k         " + ", ".join(f"k={k} {t:.4f}" for k, t in m.novelty_thresholds().items()),
            f"validation     accuracy {_fmt(val.accuracy if val else None)}, "
            f"balanced accuracy {_fmt(val.balanced_accuracy if val else None)}"
            + (
                f" (always answering {base['composer']}: {_fmt(base['accuracy'])}, {_fmt(base['balanced_accuracy'])})"
                if base
                else ""
            ),
            *(f"warning        {w}" for w in m.warnings or ()),
            f"skipped        {len(m.skipped or ())} file(s)",
        ]
    )


def render_demo(r: Any) -> str:
    w = max(len(x.file) for x in r.rows)
    lines = [f"{'held-out piece':<{w}}  {'composer':<11} {'answer':<11} {'conf':>5} {'novelty':>7}  verdict"]
    for x in r.rows:
        verdict = (
            f"error: {x.error}"
            if x.status != "ok"
            else {True: "new composer", False: "known"}.get(x.is_new, "no verdict")
        )
        lines.append(
            f"{x.file:<{w}}  {x.true_composer:<11} {x.composer:<11} {_fmt(x.confidence, 2):>5} "
            f"{_fmt(x.novelty, 3):>7}  {verdict}" + ("" if x.correct else "  (wrong)")
        )
    known, new = [x for x in r.rows if x.known], [x for x in r.rows if not x.known]
    return "\n".join(
        lines
        + [
            f"index        {r.index_dir}: " + ", ".join(f"{c} {r.counts[c]['indexed']}" for c in r.known_composers),
            f"known        {sum(bool(x.correct) for x in known)} of {len(known)} held-out pieces named right, "
            f"{sum(bool(x.is_new) for x in known)} wrongly flagged new",
            f"new          {sum(bool(x.is_new) for x in new)} of {len(new)} pieces by {r.new_composer} (not in the "
            f"index) flagged new; novelty threshold {r.threshold:.3f}",
            f"scores       {r.scores_csv}",
            f"midi         {r.midi_dir} (indexed), {r.heldout_dir} (held out)",
            f"time         {', '.join(f'{k} {v:.0f}s' for k, v in r.seconds.items())} "
            f"({r.export.exported} pieces exported, {r.export.reused} reused)",
        ]
    )


def pretrain_dict(r: Any) -> dict[str, Any]:
    """``musicidx pretrain --json``: the weights, the corpus and the seconds of each stage."""
    return {
        "weights": str(r.weights),
        "sha256": r.sha256,
        "pieces": r.pieces,
        "passages": r.passages,
        "classes": len(r.classes),
        "skipped": len(r.skipped),
        "seconds": {k: round(v, 1) for k, v in r.seconds.items()},
    }


def render_pretrain(r: Any) -> str:
    return (
        f"pretrained   {r.weights} (sha256 {r.sha256[:12]})\n"
        f"corpus       {r.pieces} pieces, {r.passages} passages, {len(r.classes)} labelled composers, "
        f"{len(r.skipped)} skipped\n"
        f"seconds      " + ", ".join(f"{k} {v:.0f}" for k, v in r.seconds.items())
    )
