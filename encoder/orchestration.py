"""The same notes on other instruments: program remaps for training renderings
(:func:`reorchestration`) and the named re-orchestrations ``musicidx eval`` asks every held-out
track in (:func:`orchestrate`, :data:`ORCHESTRATIONS`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .deps import import_pretty_midi

if TYPE_CHECKING:
    import pretty_midi

#: Programs a re-orchestration draws from, across the General MIDI families: keyboards,
#: organ, guitar, solo and ensemble strings, harp, brass, reeds, pipes, mallets.
ORCHESTRATION_POOL = (0, 1, 6, 19, 24, 40, 41, 42, 43, 46, 48, 56, 57, 60, 64, 68, 70, 71, 73, 11)


def reorchestration(programs: list[int], *, key: str, variant: int) -> dict[int, int]:
    """A deterministic remap of ``programs`` for augmentation ``variant`` of the file ``key``:
    each program moves within its GM family (same ``program // 8``) or, half of the time, to
    another family from :data:`ORCHESTRATION_POOL`."""
    rng = np.random.default_rng([int(key[:16], 16), variant])
    out = {}
    for p in sorted(set(programs)):
        if rng.random() < 0.5:
            family = [q for q in range(p // 8 * 8, p // 8 * 8 + 8) if q != p]
            out[p] = int(rng.choice(family))
        else:
            out[p] = int(rng.choice([q for q in ORCHESTRATION_POOL if q != p]))
    return out


#: The re-orchestrations ``musicidx eval`` renders every held-out track in (see :func:`orchestrate`).
ORCHESTRATIONS = ("piano", "strings", "winds", "random")

#: (lowest MIDI pitch of the band, GM program), highest band first: each note goes to the first band
#: its pitch reaches. Strings: violin from G3, viola from C3, cello from C2, contrabass below.
STRING_BANDS = ((55, 40), (48, 41), (36, 42), (0, 43))
#: Winds: flute from D5, oboe from G4 (the oboe's low B-flat3 is reached by the clarinet band),
#: clarinet from D3, bassoon below.
WIND_BANDS = ((74, 73), (67, 68), (50, 71), (0, 70))


def orchestrate(pm: pretty_midi.PrettyMIDI, name: str, *, key: str, seed: int = 0) -> pretty_midi.PrettyMIDI:
    """The same notes in another orchestration (drums untouched), as a new ``PrettyMIDI``:

    * ``piano``: every melodic part on the acoustic grand piano (program 0);
    * ``strings`` / ``winds``: every melodic note to the string / wind instrument whose band its
      pitch falls in (:data:`STRING_BANDS`, :data:`WIND_BANDS`), so a piano piece becomes an
      ensemble split by register and a quartet keeps its lines in their registers;
    * ``random``: each melodic part to a program drawn from :data:`ORCHESTRATION_POOL`, seeded by
      ``key`` (the file's sha256) and ``seed``, so the mapping is fixed per file and seed.

    Timing, pitches, velocities and the tempo map are unchanged; a register split keeps no
    controllers (a piano's sustain pedal would make strings ring) and no pitch bends.
    """
    import copy

    pretty_midi = import_pretty_midi()
    out = copy.deepcopy(pm)
    melodic = [i for i in out.instruments if not i.is_drum]
    drums = [i for i in out.instruments if i.is_drum]
    if name == "piano":
        for inst in melodic:
            inst.program = 0
    elif name == "random":
        rng = np.random.default_rng([int(key[:16], 16), seed, 0x0C5])
        for inst in melodic:
            inst.program = int(rng.choice(ORCHESTRATION_POOL))
    elif name in ("strings", "winds"):
        bands = STRING_BANDS if name == "strings" else WIND_BANDS
        parts = {program: pretty_midi.Instrument(program=program, name=f"{name} {program}") for _, program in bands}
        for inst in melodic:
            for note in inst.notes:
                program = next(p for low, p in bands if note.pitch >= low)
                parts[program].notes.append(copy.copy(note))
        for part in parts.values():
            part.notes.sort(key=lambda n: (n.start, n.pitch))
        out.instruments = [p for p in parts.values() if p.notes] + drums
    else:
        raise ValueError(f"unknown orchestration {name!r}; use one of {', '.join(ORCHESTRATIONS)}")
    return out
