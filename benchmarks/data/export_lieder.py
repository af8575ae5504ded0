"""Export the Lieder hold-out ``OUT/<Composer>/*.mid`` from OpenScore Lieder, a second cross-corpus
evaluation of an index built on ``../shared/data/musicians`` (Bach, Beethoven, Brahms, Schubert).

    python -m benchmarks.data.export_lieder --lieder DIR [--out lieder-export] [--workers 1] [--timeout 90]
    python -m benchmarks.data.export_lieder --lieder DIR --plan-only      # print the plan as JSON

``DIR`` is a copy of OpenScore Lieder (CC0; its ``scores/<Last,_First>/<set>/<song>/lc*.mxl``).
The split is fixed by rule, so the pretraining can keep every evaluation song and every new
composer out (``benchmarks/data/heldout_list.py`` writes both into ``encoder/pretrain/heldout.json``):

* known composers (the training folder's): Beethoven's songs, and every second one of Schubert's
  and Brahms's in sorted path order; at most ``KNOWN_PER_COMPOSER`` of each, evenly spaced (the
  songs not exported may be pretrained on);
* new composers: of the other composers sorted by folder name, every third one (positions 0, 3,
  6, ...) is held out whole -- never pretrained on, in any role -- and up to ``NEW_PER_COMPOSER`` of
  its songs, evenly spaced, are exported.

Each song becomes ``OUT/<Composer>/<song folder>_<lc id>.mid`` (a work of its own), written by
:func:`musicidx.encoder.scores.export_score`; ``OUT/exports.json`` records what was written, with
sha256, and a second run exports only what is missing.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from musicidx.encoder.pretrain.corpus import LIEDER_KNOWN as KNOWN
from musicidx.encoder.pretrain.corpus import lieder_display_name as display_name
from musicidx.encoder.pretrain.corpus import spread

#: Every NEW_EVERY-th other composer (sorted by folder) is held out as new.
NEW_EVERY = 3
NEW_PER_COMPOSER = 4
#: At most this many songs of each known composer, evenly spaced over the eligible ones.
KNOWN_PER_COMPOSER = 30


def songs_by_composer(root: Path) -> dict[str, list[str]]:
    """Composer folder -> its songs' ``.mxl`` paths relative to ``root``, sorted."""
    out: dict[str, list[str]] = {}
    for p in sorted((root / "scores").glob("*/**/*.mxl")):
        rel = p.relative_to(root).as_posix()
        out.setdefault(rel.split("/")[1], []).append(rel)
    return out


def plan(root: Path) -> dict[str, Any]:
    """The evaluation songs (known and new) and the new composers' folders."""
    songs = songs_by_composer(root)
    if not songs:
        raise SystemExit(f"no scores/*/**/*.mxl under {root}: is it a copy of OpenScore Lieder?")
    pieces = []
    for folder, name in KNOWN.items():
        eligible = songs.get(folder, []) if name == "Beethoven" else songs.get(folder, [])[::2]
        chosen = spread(eligible, KNOWN_PER_COMPOSER)
        pieces += [{"composer": name, "known": True, "source": s} for s in chosen]
    others = sorted(f for f in songs if f not in KNOWN)
    new = others[::NEW_EVERY]
    for folder in new:
        pieces += [
            {"composer": display_name(folder), "known": False, "source": s}
            for s in spread(songs[folder], NEW_PER_COMPOSER)
        ]
    for p in pieces:
        parts = p["source"].split("/")
        p["rel"] = f"{p['composer']}/{re.sub(r'[^A-Za-z0-9-]+', '-', parts[-2])[:60]}_{Path(parts[-1]).stem}.mid"
    return {"pieces": pieces, "new_composer_folders": new, "new_composers": [display_name(f) for f in new]}


def main() -> None:
    """Plan, export what is missing, record. Just over 60 lines: the run in order, the record written
    atomically at the end."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lieder", type=Path, required=True, help="a copy of OpenScore Lieder")
    ap.add_argument("--out", type=Path, default=Path("lieder-export"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=90.0)
    ap.add_argument("--plan-only", action="store_true")
    a = ap.parse_args()
    p = plan(a.lieder)
    if a.plan_only:
        print(json.dumps(p, indent=1))
        return

    from musicidx.encoder.fingerprints import file_sha256
    from musicidx.encoder.scores import export_key, export_many, music21_version

    began = time.monotonic()
    m21 = music21_version()
    record_path = a.out / "exports.json"
    try:
        old = json.loads(record_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        old = {}

    def done(piece: dict[str, Any]) -> bool:
        prev, f = old.get(piece["source"], {}), a.out / piece["rel"]
        return prev.get("key") == export_key(piece["source"], None, m21) and f.is_file()

    todo = [x for x in p["pieces"] if not done(x)]
    print(f"{len(p['pieces'])} songs planned, {len(todo)} to export", flush=True)
    jobs = [(str((a.lieder / x["source"]).resolve()), str(a.out / x["rel"]), None) for x in todo]
    by_abs = {j[0]: x for j, x in zip(jobs, todo)}
    result = export_many(
        jobs,
        workers=a.workers,
        timeout=a.timeout,
        on_done=lambda s, err, sec: print(f"  {'ok ' if err is None else 'SKIP'} {sec:5.1f} s  {s}", flush=True),
    )
    files, failed = dict(old), {}
    for src, err in result.items():
        x = by_abs[src]
        if err is None:
            files[x["source"]] = {
                "file": x["rel"],
                "composer": x["composer"],
                "known": x["known"],
                "key": export_key(x["source"], None, m21),
                "sha256": file_sha256(a.out / x["rel"]),
            }
        else:
            failed[x["source"]] = err
    record = {"music21": m21, "plan": {"new_composers": p["new_composers"]}, "files": files, "failed": failed}
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=a.out, suffix=".tmp", delete=False) as fh:
        json.dump(record, fh, indent=1)
    Path(fh.name).replace(record_path)
    known = sum(v["known"] for v in files.values())
    print(
        f"{len(files)} exported ({known} known, {len(files) - known} new), {len(failed)} failed, "
        f"{time.monotonic() - began:.0f} s; record in {record_path}"
    )


if __name__ == "__main__":
    main()
