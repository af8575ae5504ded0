"""Where an index is written: a destination that destroys nothing, one writer at a time, an atomic swap.

An index is written into a temporary sibling directory and swapped into place
(:func:`write_atomically`), so a build interrupted at any moment leaves the previous index (or
none) at the target, never half of one.

Nothing else is ever replaced: :func:`check_index_destination` accepts as a destination only a
new or empty folder, or a folder that holds a musicidx index and nothing else; any other folder
(the user's files, the MIDI input itself) is refused before any work is done.  A temporary
folder carries the marker file ``.musicidx-partial`` from its first moment, and only folders
with that marker are ever cleaned up as leftovers of an interrupted build.

One writer at a time: a build (and ``add``) holds :func:`index_lock`, an exclusive ``flock`` on
``.NAME.lock`` beside the folder, from before its first step until the swap; a second writer is
refused at once with the holder's pid, host and start time.  The kernel releases the lock of a
process that dies, so a killed build never blocks the next.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from musicidx.encoder.errors import MusicIdxError

from .manifest import INDEX_FILES, IndexFormatError, is_index_dir, utc_now

#: Marks a temporary folder as musicidx's own half-written index (safe to delete once its build is gone).
PARTIAL_MARK = ".musicidx-partial"


def write_atomically(out: Path, write: Callable[[Path], None]) -> Path:
    """Have ``write`` fill a fresh temporary folder beside ``out``, then swap it into place whole;
    an existing index at ``out`` is replaced, any other folder refused (:func:`check_index_destination`).

    An existing folder keeps its permissions; a new one gets the usual ones (0777 less the umask).
    Every file is fsynced before the swap.  A failure (disk full, quota...; FAISS reports I/O as
    ``RuntimeError``) is one :class:`MusicIdxError` and leaves the previous index intact."""
    out = check_index_destination(out, probe=False)  # creating the temporary folder is the probe
    mode = stat.S_IMODE(out.stat().st_mode) if out.is_dir() else _default_dir_mode()
    _remove_stale_temporaries(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    except OSError as e:
        raise MusicIdxError(f"cannot write the index here: {e.strerror or e}", path=out) from e
    try:
        (tmp / PARTIAL_MARK).touch()
        write(tmp)
        (tmp / PARTIAL_MARK).unlink()
        for f in sorted(tmp.rglob("*")):
            _fsync(f)
        os.chmod(tmp, mode)
        _fsync(tmp)
        _swap_into_place(tmp, out)
        if tmp.is_dir():  # now the previous index: marked, so a kill before the clean-up below is cleaned later
            (tmp / PARTIAL_MARK).touch()
    except (OSError, RuntimeError) as e:
        raise MusicIdxError(f"could not write the index (any previous one is intact): {e}", path=out) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after a swap, tmp holds the previous index
    return out


def _default_dir_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def check_index_destination(out: str | Path, *, source: str | Path | None = None, probe: bool = True) -> Path:
    """Make sure an index can be written at ``out`` without destroying anything, before any work
    is done for it; returns ``out`` as an absolute path.

    Accepted: a path that does not exist yet, an empty folder, or a folder that holds a musicidx
    index and nothing else (which a build then replaces whole).  Refused with
    :class:`IndexFormatError` naming ``out``: a file; any folder holding other files; the current
    directory; and, given the input folder ``source``, ``out`` equal to it, inside it, or
    containing it.  Creates the parent folder if needed and (with ``probe``) proves it writable
    with a throw-away temporary folder.
    """
    given = Path(out)
    if given.exists() and not given.is_dir():
        raise IndexFormatError("exists and is not a directory; choose another --out", path=given)
    target = given.resolve()
    if source is not None:
        src = Path(source).resolve()
        if target == src:
            raise IndexFormatError("is the input MIDI folder; write the index to a folder of its own", path=given)
        if src in target.parents:
            raise IndexFormatError(f"is inside the input MIDI folder {source}; write the index outside it", path=given)
        if target in src.parents:
            raise IndexFormatError(f"contains the input MIDI folder {source}; write the index elsewhere", path=given)
    if target.is_dir():
        if target == Path.cwd().resolve():
            raise IndexFormatError("is the current directory; give the index a folder of its own", path=given)
        entries = sorted(p.name for p in target.iterdir())
        foreign = [e for e in entries if e not in INDEX_FILES]
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise IndexFormatError(
                f"holds files that are not part of a musicidx index ({shown}); musicidx replaces only an index "
                "it wrote: choose a new or empty folder for --out",
                path=given,
            )
        if entries and not is_index_dir(target):
            raise IndexFormatError(
                "is not a musicidx index (no musicidx manifest.json); musicidx replaces only an index it wrote: "
                "choose a new or empty folder for --out, or delete this one yourself",
                path=given,
            )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if probe:
            os.rmdir(tempfile.mkdtemp(prefix=f".{target.name}.probe-", dir=target.parent))
    except OSError as e:
        raise MusicIdxError(f"cannot write the index here: {e.strerror or e}", path=given) from e
    return target


class IndexBusyError(MusicIdxError):
    """Another build (or ``add``) is writing the same index folder."""


def lock_path(out: str | Path) -> Path:
    """The lock of index folder ``out``: a hidden file beside it, ``.NAME.lock`` (inside it, it would be
    a foreign file, and the swap replaces the folder whole)."""
    target = Path(out).resolve()
    return target.with_name(f".{target.name}.lock")


class IndexLock:
    """An exclusive lock on writing one index folder, held by a build from before its first step to
    after the swap (:func:`index_lock`).

    ``flock`` on :func:`lock_path`: the kernel releases it when its process ends, however it ends,
    so a killed build never blocks the next one.  The file holds its holder (pid, host, start time)
    for the refusal message, and is deleted on release; a file still there when the lock is free was
    left by a build that was killed, whose details are kept in :attr:`taken_over`."""

    def __init__(self, out: str | Path, *, wait: bool = False) -> None:
        self.path = lock_path(out)
        self.out = Path(out)
        self.wait = wait
        self.fd: int | None = None
        self.taken_over: dict[str, Any] | None = None  # the holder a killed build left in the file

    def __enter__(self) -> IndexLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise MusicIdxError(f"cannot lock the index here: {e.strerror or e}", path=self.out) from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise IndexBusyError(
                    f"another musicidx build or add is writing this index ({describe_holder(holder)}; lock "
                    f"{self.path}): try again when it is done, or pass --wait to wait for it",
                    path=self.out,
                ) from None
            except BaseException:
                os.close(fd)
                raise
            try:  # the holder before us may have deleted the file on release: lock the file that is there
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        self.taken_over = _read_holder(fd)  # anything there now was left by a build that died holding the lock
        me = {"pid": os.getpid(), "host": _hostname(), "started": utc_now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)  # while still holding it: a waiter then retries on a new file
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None


def index_lock(out: str | Path, *, wait: bool = False) -> IndexLock:
    """Hold the write lock of index folder ``out`` (``with index_lock(out): ...``); another holder
    is an :class:`IndexBusyError` naming it, at once, or (with ``wait``) is waited for."""
    return IndexLock(out, wait=wait)


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe_holder(holder: dict[str, Any] | None) -> str:
    """``pid 123 on host h, started 2026-...``, from a lock file's contents."""
    if not holder:
        return "holder not recorded yet"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"


def _remove_stale_temporaries(out: Path) -> None:
    """Delete ``.NAME.tmp-PID-*`` folders left by builds that were killed (their PID is gone and
    the folder carries musicidx's :data:`PARTIAL_MARK`; a folder without it is never touched)."""
    for d in out.parent.glob(f".{out.name}.tmp-*"):
        if not (d / PARTIAL_MARK).is_file():
            continue
        try:
            pid = int(d.name[len(f".{out.name}.tmp-") :].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2


def _swap_into_place(new: Path, out: Path) -> None:
    """Make ``new`` appear at ``out``; the old ``out`` (if any) ends up at ``new``.

    On Linux an existing target is exchanged in one ``renameat2(RENAME_EXCHANGE)``, so there
    is no moment without an index at ``out``; elsewhere two renames are used.
    """
    if not out.exists():
        os.replace(new, out)
        return
    libc_name = ctypes.util.find_library("c")
    renameat2 = getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None
    if renameat2 is not None:
        at_fdcwd = -100
        if renameat2(at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(out), _RENAME_EXCHANGE) == 0:
            return
    aside = new.with_name(new.name + ".old")
    os.replace(out, aside)
    try:
        os.replace(new, out)
    except OSError:
        os.replace(aside, out)  # put the previous index back
        raise
    os.replace(aside, new)
