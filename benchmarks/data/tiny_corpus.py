"""A generated labelled corpus ``OUT/<Composer>/*.mid``: 3 composers x 4 pieces of about 10 s.

    python -m benchmarks.data.tiny_corpus --out DIR

For runs that need real MIDI files but no data set (``perf.kill_trials`` builds it again and again,
``perf.serve_load`` sends its files as uploads).  Each composer plays 40 random notes of its own
register and General MIDI program (piano, violin, flute); deterministic.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def write_tiny_corpus(root: Path) -> list[Path]:
    """Write the corpus under ``root`` (which may exist); returns the 12 files, sorted."""
    import numpy as np
    import pretty_midi

    rng = np.random.default_rng(0)
    out = []
    for composer, program, base in (("Alpha", 0, 48), ("Beta", 40, 60), ("Gamma", 73, 66)):
        (root / composer).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            pm = pretty_midi.PrettyMIDI()
            inst = pretty_midi.Instrument(program=program)
            t = 0.0
            for _ in range(40):
                d = float(rng.uniform(0.1, 0.4))
                inst.notes.append(pretty_midi.Note(90, base + int(rng.integers(0, 12)), t, t + d))
                t += d
            pm.instruments.append(inst)
            path = root / composer / f"Piece {i}_OP{i}_{i}_p{i}.mid"
            pm.write(str(path))
            out.append(path)
    return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    print(f"{len(write_tiny_corpus(a.out))} files under {a.out}")


if __name__ == "__main__":
    main()
