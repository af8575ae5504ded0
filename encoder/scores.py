"""Scores (MusicXML, Humdrum, ABC ... read by music21) -> MIDI files, one piece at a time.

The demo and the pretraining both learn from music that exists as scores, not MIDI: the
music21 corpus (``pip install music21``) and OpenScore Lieder (MusicXML).  music21 is an
optional dependency; nothing here imports it before a function needs it.

* :func:`export_score` parses one piece -- a music21 corpus path such as
  ``"bach/bwv66.6.mxl"`` or a file on disk -- and writes it as MIDI atomically, refusing an
  export :func:`~musicidx.encoder.midi.load_midi` would reject;
* :func:`export_many` runs many exports in worker processes with a wall-time limit per piece
  (a quartet movement takes 16-41 s, a broken score can hang): a piece over its time is
  skipped with its reason and its worker replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing as mp
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import DependencyError, MusicIdxError, install_hint
from .midi import load_midi

#: Bump when the export itself changes (how a score becomes a MIDI file): every export is redone.
EXPORT_VERSION = 1
#: music21 comes with the ``demo`` extra, which the demo and ``musicidx pretrain`` both need.
INSTALL_HINT = install_hint("demo")


class ScoreError(MusicIdxError):
    """A score cannot be parsed or written as a usable MIDI file."""


class ScoreDependencyError(ScoreError, DependencyError):
    """music21, which reads the scores, is not installed."""


def music21_version() -> str:
    """The installed music21's version, or :class:`ScoreDependencyError` with the install hint."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("music21")
    except PackageNotFoundError as e:
        raise ScoreDependencyError(f"reading scores needs music21, not installed: {INSTALL_HINT}") from e


def import_music21() -> Any:
    """``import music21`` with its start-up chatter silenced, or :class:`ScoreDependencyError`."""
    try:
        with quiet():
            import music21
    except ImportError as e:
        raise ScoreDependencyError(f"cannot import music21 ({e}): {INSTALL_HINT}") from e
    return music21


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Nothing music21 says reaches stdout or stderr (a CSV or JSON may be going there)."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield


def export_key(source: str, program: int | None, m21_version: str) -> str:
    """What an export depends on; a recorded export with another key is redone."""
    raw = json.dumps([source, program, m21_version, EXPORT_VERSION])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def piece_names(sources: Sequence[str]) -> list[tuple[str, str]]:
    """(work, MIDI file name) of each music21 corpus path in ``sources``, for an export folder.

    A piece in a folder of its own (``mozart/k155/movement2.mxl``) is a movement of the work named
    by the folder and gets a name in the challenge's ``<title>_<catalogue>_<n>_<rest>`` pattern
    (``k155_K155_2_movement2.mid``, ``n`` counting that work's movements in ``sources``), so
    :func:`~musicidx.indexer.corpus.work_of` groups its movements; any other piece is a work of its
    own, named by its stem with underscores made dashes (``Kyrie_00.krn`` -> ``Kyrie-00.mid``)."""
    seen: dict[str, int] = {}
    out = []
    for s in sources:
        parts = PurePosixPath(s).parts
        stem = PurePosixPath(s).stem.replace("_", "-")
        if len(parts) > 2:
            work = "-".join(parts[1:-1]).replace("_", "-")
            seen[work] = seen.get(work, 0) + 1
            out.append((work, f"{work}_{work.upper()}_{seen[work]}_{stem}.mid"))
        else:
            out.append((stem, f"{stem}.mid"))
    return out


def set_program(path: Path, program: int) -> None:
    """Every pitched channel plays ``program`` from the start (percussion channel 10 untouched)."""
    import mido

    mf = mido.MidiFile(path)
    for track in mf.tracks:
        channels = sorted({m.channel for m in track if m.type == "note_on" and m.channel != 9})
        kept: list[Any] = []
        carry = 0  # delta time of dropped program changes goes to the next message
        for m in track:
            if m.type == "program_change" and m.channel != 9:
                carry += m.time
                continue
            kept.append(m.copy(time=m.time + carry) if carry else m)
            carry = 0
        track[:] = [mido.Message("program_change", channel=c, program=program, time=0) for c in channels] + kept
    mf.save(path)


def _parse(music21: Any, source: str) -> Any:
    """A corpus path (``bach/bwv66.6.mxl``) through music21's corpus; a file on disk directly."""
    if os.path.isabs(source):
        return music21.converter.parse(source)
    return music21.corpus.parse(source)


def export_score(source: str, dest: str | Path, *, program: int | None = None) -> None:
    """Parse ``source`` (a music21 corpus path, or an absolute path of a score file) and write it
    to ``dest`` as MIDI (atomically); with ``program``, every pitched part plays that GM program."""
    music21 = import_music21()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".export-", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with quiet():
            try:
                score = _parse(music21, source)
            except Exception as e:  # music21 raises many types for a missing or unreadable piece
                raise ScoreError(f"music21 cannot parse {source!r} ({type(e).__name__}: {e})") from e
            if isinstance(score, music21.stream.Opus):
                raise ScoreError(f"{source!r} is a collection of {len(score.scores)} scores, not one piece")
            try:
                score.write("midi", fp=str(tmp))
            except Exception as e:
                raise ScoreError(f"music21 cannot write {source!r} as MIDI ({type(e).__name__}: {e})") from e
        if program is not None:
            set_program(tmp, program)
        try:
            load_midi(tmp)  # what the build will read: refuse an export it would reject
        except MusicIdxError as e:
            raise ScoreError(f"music21's MIDI export of {source!r} is unusable: {e.reason}") from e
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def export_job(job: tuple[str, str, int | None]) -> str | None:
    """A pool task: export one piece; the error's message on failure (exceptions stay in the worker)."""
    source, dest, program = job
    try:
        export_score(source, dest, program=program)
    except MusicIdxError as e:
        return str(e)
    except Exception as e:  # e.g. a full disk: the message crosses the process boundary, not the object
        return f"cannot export {source!r} ({type(e).__name__}: {e})"
    return None


# ----------------------------------------------------------------------------- timed workers


def _worker(conn: Connection) -> None:
    """Export the pieces sent down ``conn`` one by one; answer each with an error or None."""
    while (job := conn.recv()) is not None:
        conn.send(export_job(job))


class _Slot:
    """One worker process; replaced when a piece runs over its time."""

    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.job: tuple[str, str, int | None] | None = None
        self.started = 0.0

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.terminate()
        else:
            with contextlib.suppress(OSError):
                self.conn.send(None)
        self.proc.join(10)
        self.conn.close()


#: ``on_done(source, error or None, seconds)`` after each piece.
OnDone = Callable[[str, "str | None", float], None]


def export_many(
    jobs: Sequence[tuple[str, str, int | None]],
    *,
    workers: int,
    timeout: float,
    on_done: OnDone | None = None,
) -> dict[str, str | None]:
    """Export ``(source, dest, program)`` jobs with ``workers`` processes, each piece given at most
    ``timeout`` seconds; returns, per source, ``None`` (written) or the reason it was skipped."""
    ctx = mp.get_context("spawn")
    todo = list(jobs)
    slots = [_Slot(ctx) for _ in range(max(1, min(workers, len(todo))))] if todo else []
    result: dict[str, str | None] = {}
    try:
        while todo or any(s.job for s in slots):
            for s in slots:
                if s.job is None and todo:
                    s.job, s.started = todo.pop(0), time.monotonic()
                    s.conn.send(s.job)
            busy = [s for s in slots if s.job]
            first_deadline = min(s.started for s in busy) + timeout
            ready = wait([s.conn for s in busy], timeout=max(0.0, first_deadline - time.monotonic()))
            for i, s in enumerate(slots):
                if s.job is None:
                    continue
                source = s.job[0]
                if s.conn in ready:
                    try:
                        result[source] = s.conn.recv()
                    except (EOFError, OSError):
                        result[source] = f"{source!r}: the export process died"
                        s.stop(kill=True)
                        slots[i] = _Slot(ctx)
                elif time.monotonic() >= s.started + timeout:
                    result[source] = f"{source!r}: export timed out after {timeout:.0f} s"
                    s.stop(kill=True)
                    slots[i] = _Slot(ctx)
                else:
                    continue
                if on_done is not None:
                    on_done(source, result[source], time.monotonic() - s.started)
                slots[i].job = None
    finally:
        for s in slots:
            s.stop(kill=s.job is not None)
    return result
