"""Generate a large labelled corpus ``OUT/<Composer>/*.mid`` from real MIDI, for scaling benchmarks.

    python -m benchmarks.data.synth_corpus SRC [SRC ...] --out DIR [--files 5000] [--seconds 20] [--seed 0]

Each SRC is a folder ``<Composer>/*.mid`` (the challenge's training folder; the music21 export
of ``benchmarks/data/export_music21.py``).  Every generated file is a passage of a real piece, cut
at a random point, then

* **transposed** by -5..+6 semitones (notes kept inside the MIDI range),
* **re-timed** by a tempo factor of 0.8..1.25, and
* **re-orchestrated**: each pitched part gets a General MIDI program drawn from piano, strings,
  winds, brass, organ and guitar families (drums are left out),

so the corpus has the real music's note statistics and textures, not noise, yet no two files
render the same audio.  Sources are used round-robin so every composer is represented in
proportion to its files.  The output is deterministic for a given ``--seed``.  Nothing is
written outside ``--out``; a passage with no notes is skipped and another drawn.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

#: General MIDI programs to re-orchestrate with: piano, keys, organ, guitar, strings, ensemble,
#: brass, reeds and pipes.
PROGRAMS = (0, 1, 4, 6, 11, 19, 24, 25, 40, 41, 42, 43, 48, 49, 56, 57, 60, 64, 65, 68, 70, 71, 73, 74)


def sources(roots: list[Path]) -> list[tuple[str, Path]]:
    out = []
    for root in roots:
        for p in sorted(root.glob("*/*.mid")) + sorted(root.glob("*/*.midi")):
            out.append((p.parent.name, p))
    if not out:
        raise SystemExit(f"no <Composer>/*.mid under {', '.join(map(str, roots))}")
    return out


@functools.cache
def _load(src: Path) -> object:
    """The piece as musicidx reads it (files with absurd tick counts re-timed, limits checked)."""
    from musicidx.encoder.midi import load_midi

    return load_midi(src)


def passage(src: Path, rng: np.random.Generator, seconds: float) -> object | None:
    """A transposed, re-timed, re-orchestrated passage of ``src``; None when it has no notes."""
    import pretty_midi

    pm: pretty_midi.PrettyMIDI = _load(src)  # type: ignore[assignment]
    end = pm.get_end_time()
    stretch = float(rng.uniform(0.8, 1.25))
    span = seconds / stretch  # source seconds that become `seconds` after re-timing
    t0 = float(rng.uniform(0.0, max(0.0, end - span)))
    shift = int(rng.integers(-5, 7))
    out = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    for inst in pm.instruments:
        if inst.is_drum:
            continue
        notes = [
            pretty_midi.Note(
                n.velocity,
                min(127, max(0, n.pitch + shift)),
                (max(n.start, t0) - t0) * stretch,
                (min(n.end, t0 + span) - t0) * stretch,
            )
            for n in inst.notes
            if n.end > t0 and n.start < t0 + span and min(n.end, t0 + span) > max(n.start, t0)
        ]
        if notes:
            part = pretty_midi.Instrument(program=int(rng.choice(PROGRAMS)))
            part.notes = notes
            out.instruments.append(part)
    return out if any(i.notes for i in out.instruments) else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each generated file")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.out.exists() and any(a.out.iterdir()):
        raise SystemExit(f"{a.out}: exists and is not empty; choose a new folder")
    began = time.monotonic()
    rng = np.random.default_rng(a.seed)
    pool = sources(a.src)
    order = rng.permutation(len(pool))
    written, tries = 0, 0
    per: dict[str, int] = {}
    while written < a.files:
        composer, src = pool[order[tries % len(pool)]]
        tries += 1
        if tries > 20 * a.files:
            raise SystemExit(f"only {written} usable passages after {tries} tries")
        try:
            pm = passage(src, rng, a.seconds)
        except Exception as e:  # an unreadable source: say so once per try and move on
            print(f"skip {src}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        if pm is None:
            continue
        dest = a.out / composer / f"{src.stem} {written:05d}.mid"
        dest.parent.mkdir(parents=True, exist_ok=True)
        pm.write(str(dest))  # type: ignore[attr-defined]
        written += 1
        per[composer] = per.get(composer, 0) + 1
    summary = {
        "out": str(a.out),
        "files": written,
        "seconds_each": a.seconds,
        "composers": dict(sorted(per.items())),
        "sources": len(pool),
        "wall_s": round(time.monotonic() - began, 1),
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
