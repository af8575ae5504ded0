"""Export a composer-labelled folder ``OUT/<Composer>/*.mid`` from the music21 corpus, for a
cross-corpus evaluation of an index built on ``../shared/data/musicians`` (Bach, Beethoven,
Brahms, Schubert).

    python -m benchmarks.data.export_music21 [--out DIR] [--per-composer 25] [--chorales 60]
                                             [--timeout 60] [--workers 1] [--train-dir MIDI_DIR]

What goes in (each piece in its own instrumentation, as music21 writes it; ``program=None``):

* known composers, works the training folder lacks: Bach chorales (``bach/bwv*``; ``--chorales``
  of them, evenly spaced over the sorted list), Beethoven string quartets (every piece music21
  holds under ``beethoven/``) and Schubert's one song;
* new composers, absent from the training folder: every composer music21 holds under its own
  name (Mozart, Haydn, Palestrina, Monteverdi, Josquin, Schoenberg, Corelli, Handel, Ciconia,
  ...), at most ``--per-composer`` pieces each, evenly spaced over the sorted list.

A piece whose work (catalogue id, ``opus18no5`` = ``OP18NO5``) is also in ``--train-dir`` is
left out: music21's Beethoven holds Op. 18 Nos 1 and 5, Op. 59 Nos 1 and 2 and Op. 132, which
the training folder has too, and the same movement in another encoding would be a near-duplicate
of a training track.  Only one file per piece is taken when music21 has it in several formats
(``.mxl`` before ``.krn``); roman-numeral analyses (``.rntxt``) and multi-score collections
(folk-song books, refused by the exporter) are not pieces.

Each piece is written by the project's exporter, :func:`musicidx.encoder.scores.export_score` (which
silences music21 and refuses an export that :func:`~musicidx.encoder.midi.load_midi` would
reject), in a worker process with a per-piece wall-time limit (``--timeout``; a full quartet
takes 16-41 s); failures and time-outs are skipped and listed.  File names follow the demo's
rule (:func:`musicidx.encoder.scores.piece_names`: ``opus59no3_OPUS59NO3_2_movement2.mid``), so
:func:`musicidx.indexer.corpus.work_of` keeps the movements of one work together; a single-file
piece is a work of its own.

``OUT/exports.json`` records every export (source -> file, with the content hash and the
exporter's key); a second run reuses matching files and retries only what is missing or failed.
The summary printed at the end gives the pieces per composer, known or new.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path, PurePosixPath

from benchmarks.paths import TRAINING_CORPUS, add_corpus_argument
from musicidx.encoder.pretrain.corpus import spread

#: Folder name -> music21 composer directory; the known composers of the training folder first.
KNOWN = {"Bach": "bach", "Beethoven": "beethoven", "Schubert": "schubert"}
NEW = {
    "Mozart": "mozart",
    "Haydn": "haydn",
    "Palestrina": "palestrina",
    "Monteverdi": "monteverdi",
    "Josquin": "josquin",
    "Schoenberg": "schoenberg",
    "Corelli": "corelli",
    "Handel": "handel",
    "Ciconia": "ciconia",
    "Chopin": "chopin",
    "CPE Bach": "cpebach",
    "Weber": "weber",
    "Verdi": "verdi",
    "Joplin": "joplin",
    "Luca": "luca",
    "Lusitano": "lusitano",
    "Beach": "beach",
    "Johnson": "johnson_j_r",
}


def corpus_sources(directory: str) -> list[str]:
    """music21 corpus paths under ``directory``, one per piece (the preferred format), sorted."""
    from musicidx.encoder.pretrain.corpus import music21_pieces

    return music21_pieces(directory)


def catalogue(name: str) -> str:
    """A comparable catalogue id: ``opus18no5`` and ``OP18NO5`` -> ``OP18NO5``; ``bwv1.6`` -> ``BWV1``."""
    s = re.sub(r"[^A-Z0-9]", "", name.upper().split(".")[0])
    return "OP" + s[4:] if s.startswith("OPUS") else s


def training_catalogues(train_dir: Path) -> set[str]:
    """Catalogue ids of the works in a labelled training folder (empty if it does not exist)."""
    from musicidx.indexer.corpus import scan_corpus

    if not train_dir.is_dir():
        return set()
    return {catalogue(t.work.rpartition("_")[2]) for t in scan_corpus(train_dir) if "_" in t.work}


def plan(
    *, per_composer: int = 25, chorales: int = 60, train_dir: Path = TRAINING_CORPUS
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The pieces to export (composer, known, source, work, rel) and the ones left out as
    training works (those of ``train_dir``); the defaults are the set of BENCHMARKS.md and of
    ``encoder/pretrain/heldout.json``."""
    from musicidx.encoder.scores import piece_names

    in_training = training_catalogues(train_dir)
    pieces, overlap = [], []
    for composer, directory in {**KNOWN, **NEW}.items():
        sources = corpus_sources(directory)
        if composer == "Bach":
            sources = spread([s for s in sources if PurePosixPath(s).name.startswith("bwv")], chorales)
        kept = []
        for s in sources:
            parts = PurePosixPath(s).parts
            work = parts[1] if len(parts) > 2 else PurePosixPath(s).stem
            if catalogue(work) in in_training:
                overlap.append({"composer": composer, "source": s, "catalogue": catalogue(work)})
            else:
                kept.append(s)
        if composer != "Bach":
            kept = spread(kept, per_composer)
        for s, (work, name) in zip(kept, piece_names(kept)):
            known = "known" if composer in KNOWN else "new"
            pieces.append(
                {"composer": composer, "known": known, "source": s, "work": work, "rel": f"{composer}/{name}"}
            )
    return pieces, overlap


def run_exports(
    jobs: list[dict[str, str]], out: Path, workers: int, timeout: float
) -> tuple[dict[str, str | None], dict[str, float]]:
    """Export ``jobs`` with ``workers`` processes: per source, ``None`` (written) or the reason
    it failed, and the seconds each took."""
    from musicidx.encoder.scores import export_many

    seconds: dict[str, float] = {}

    def done(src: str, err: str | None, sec: float) -> None:
        seconds[src] = sec
        print(f"  {'ok ' if err is None else 'SKIP'} {sec:5.1f} s  {src}", flush=True)

    result = export_many(
        [(j["source"], str(out / j["rel"]), None) for j in jobs], workers=workers, timeout=timeout, on_done=done
    )
    return result, seconds


# ----------------------------------------------------------------------------- main


def main() -> None:
    """Plan, reuse, export, record, prune, summarise. Over 60 lines because it is the export's whole
    run in order (the record and the pruning must see every step's outcome); the steps that stand
    alone (plan, run_exports) are functions above."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("m21-export"))
    ap.add_argument("--per-composer", type=int, default=25, help="at most this many pieces per composer but Bach")
    ap.add_argument("--chorales", type=int, default=60, help="Bach chorales to take")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one piece may take before it is skipped")
    ap.add_argument("--workers", type=int, default=1)
    add_corpus_argument(ap, flag="--train-dir", what=": its works are left out (catalogue id match)")
    args = ap.parse_args()

    from musicidx.encoder.fingerprints import file_sha256
    from musicidx.encoder.scores import export_key, music21_version

    began = time.monotonic()
    m21 = music21_version()
    pieces, overlap = plan(per_composer=args.per_composer, chorales=args.chorales, train_dir=args.train_dir)
    record_path = args.out / "exports.json"
    try:
        old = json.loads(record_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        old = {}

    def reusable(p: dict[str, str]) -> bool:
        prev = old.get(p["source"], {})
        f = args.out / p["rel"]
        return (
            prev.get("key") == export_key(p["source"], None, m21) and f.is_file() and file_sha256(f) == prev["sha256"]
        )

    todo = [p for p in pieces if not reusable(p)]
    print(
        f"{len(pieces)} pieces planned ({len(pieces) - len(todo)} already exported), "
        f"{len(overlap)} left out as works of the training folder; exporting {len(todo)} "
        f"with {args.workers} worker(s), {args.timeout:.0f} s each at most",
        flush=True,
    )
    result, seconds = run_exports(todo, args.out, args.workers, args.timeout)

    files, failed = {}, {}
    for p in pieces:
        error = result.get(p["source"])
        if error is None:
            f = args.out / p["rel"]
            files[p["source"]] = {
                "file": p["rel"],
                "composer": p["composer"],
                "known": p["known"] == "known",
                "work": p["work"],
                "key": export_key(p["source"], None, m21),
                "sha256": file_sha256(f),
                "seconds": round(seconds.get(p["source"], old.get(p["source"], {}).get("seconds", 0.0)), 2),
            }
        else:
            failed[p["source"]] = {"composer": p["composer"], "reason": error}
    # Files of an earlier run that this plan no longer names are removed, so the folder is the record.
    planned = {p["rel"] for p in pieces if p["source"] in files}
    removed = [f for f in sorted(args.out.glob("*/*.mid")) if f.relative_to(args.out).as_posix() not in planned]
    for f in removed:
        f.unlink()
    for d in sorted(args.out.iterdir()) if args.out.is_dir() else []:
        if d.is_dir() and not any(d.iterdir()):  # a composer whose every piece failed
            d.rmdir()
    wall = time.monotonic() - began
    record = {
        "music21": m21,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "known_composers": sorted(KNOWN),
        "files": dict(sorted(files.items())),
        "failed": failed,
        "left_out_training_works": overlap,
        "seconds": round(wall, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.out, suffix=".tmp", delete=False) as fh:
        json.dump(record, fh, indent=1)
    Path(fh.name).replace(record_path)

    print(f"\n{'composer':<12} {'':<6} {'exported':>8} {'skipped':>8}")
    for composer in {**KNOWN, **NEW}:
        n_ok = sum(v["composer"] == composer for v in files.values())
        n_bad = sum(v["composer"] == composer for v in failed.values())
        if n_ok or n_bad:
            print(f"{composer:<12} {'known' if composer in KNOWN else 'new':<6} {n_ok:>8} {n_bad:>8}")
    print(f"{'total':<19} {len(files):>8} {len(failed):>8}")
    for src, v in failed.items():
        print(f"skipped {src}: {v['reason']}")
    for o in overlap:
        print(f"left out {o['source']}: work {o['catalogue']} is in {args.train_dir}")
    if removed:
        print(f"removed {len(removed)} file(s) of an earlier run no longer planned")
    print(f"{wall:.1f} s in all; record in {record_path}")


if __name__ == "__main__":
    main()
