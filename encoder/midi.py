"""Reading a MIDI file, with the limits that keep a hostile or broken one from hurting.

Hostile input is bounded before anything heavy runs: file size, message count, note count and
length of the piece are capped (see the ``MAX_*`` constants); each violation is an
:class:`~.errors.InvalidMidiError` naming the file and the limit.  A file's tick count is not a
limit: one with more ticks than pretty_midi accepts (music21 writes 10,080 per beat) is re-timed
on a coarser grid first.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .deps import import_pretty_midi
from .errors import InvalidMidiError

if TYPE_CHECKING:
    import pretty_midi

#: Limits that keep a hostile or broken file from hanging or exhausting the machine.
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_MESSAGES = 2_000_000
MAX_NOTES = 500_000
MAX_SECONDS = 3 * 3600.0
#: The largest tick handed to pretty_midi, which keeps a float per tick of the piece and refuses
#: files past 10**7 ticks (its ``MAX_TICK``) as "likely corrupt"; longer ones are re-timed first.
MAX_TICKS = 9_999_999


def load_midi(path: str | Path) -> pretty_midi.PrettyMIDI:
    """Parse a MIDI file with the safety limits applied; raise :class:`InvalidMidiError`."""
    import mido

    pretty_midi = import_pretty_midi()
    p = Path(path)
    if p.is_dir():
        raise InvalidMidiError("is a directory, not a MIDI file", path=p)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidMidiError(
                f"file is {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit", path=p
            )
        data = p.read_bytes()
    except OSError as e:
        raise InvalidMidiError(f"cannot read file ({e.strerror or e})", path=p) from e
    if not data:
        raise InvalidMidiError("file is empty (0 bytes)", path=p)
    if data[:4] != b"MThd":
        raise InvalidMidiError("not a MIDI file (no 'MThd' header)", path=p)
    try:
        mf = mido.MidiFile(file=io.BytesIO(data), charset="latin1", clip=True)
    except EOFError as e:
        raise InvalidMidiError("truncated MIDI data (the file ends inside a track)", path=p) from e
    except Exception as e:  # mido raises a zoo of types on corrupt data
        raise InvalidMidiError(f"corrupt MIDI data ({type(e).__name__}: {e})", path=p) from e
    n_msgs = sum(len(t) for t in mf.tracks)
    if n_msgs > MAX_MESSAGES:
        raise InvalidMidiError(f"{n_msgs} MIDI messages, over the {MAX_MESSAGES} limit", path=p)
    if mf.type == 2:
        raise InvalidMidiError("type-2 MIDI (independent sequences) is not supported", path=p)
    _fit_ticks(mf, p)
    try:
        with warnings.catch_warnings():  # pretty_midi warns on tempo events off track 0
            warnings.simplefilter("ignore")
            pm = pretty_midi.PrettyMIDI(mido_object=mf)
    except Exception as e:
        raise InvalidMidiError(f"corrupt MIDI data ({type(e).__name__}: {e})", path=p) from e
    n_notes = sum(len(i.notes) for i in pm.instruments)
    if n_notes == 0:
        raise InvalidMidiError("contains no notes", path=p)
    if n_notes > MAX_NOTES:
        raise InvalidMidiError(f"{n_notes} notes, over the {MAX_NOTES} limit", path=p)
    end = pm.get_end_time()
    if not np.isfinite(end) or end > MAX_SECONDS:
        raise InvalidMidiError(f"lasts {end / 3600:.1f} h, over the {MAX_SECONDS / 3600:.0f} h limit", path=p)
    return pm


def _fit_ticks(mf: Any, path: Path) -> None:
    """Re-time the :class:`mido.MidiFile` ``mf`` in place so that its largest tick is at most
    :data:`MAX_TICKS`: fewer ticks per beat, every event (tempo changes included) moved to the
    nearest tick of the coarser grid, so times in seconds move by under half a new tick.

    What matters is the piece's length in seconds, its notes and messages (checked by
    :func:`load_midi`), not how finely its ticks divide a beat: music21 writes 10,080 ticks per
    beat, so a whole quartet movement passes 10**7 ticks.  A file still too long at one tick per
    beat is refused here, before pretty_midi would allocate a float per tick.
    """
    tpb = int(mf.ticks_per_beat)
    largest = max((sum(msg.time for msg in track) for track in mf.tracks), default=0)
    if largest <= MAX_TICKS:
        return
    new_tpb = tpb * MAX_TICKS // largest
    if tpb < 1 or new_tpb < 1:
        raise InvalidMidiError(
            f"{largest // max(tpb, 1)} beats long, over the {MAX_TICKS}-beat limit "
            f"(largest tick {largest} at {tpb} ticks per beat)",
            path=path,
        )
    for track in mf.tracks:
        tick = placed = 0
        for msg in track:
            tick += msg.time
            new = (tick * new_tpb + tpb // 2) // tpb
            msg.time, placed = new - placed, new
    mf.ticks_per_beat = new_tpb


def sounding_span(pm: pretty_midi.PrettyMIDI) -> tuple[float, float]:
    """First note onset and last note offset, in seconds."""
    starts = [n.start for i in pm.instruments for n in i.notes]
    ends = [n.end for i in pm.instruments for n in i.notes]
    return float(min(starts)), float(max(ends))
