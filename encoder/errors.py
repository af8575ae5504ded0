"""The error hierarchy shared by every stage of musicidx.

Every error carries the path it is about (when there is one) and a reason that says what
went wrong and, where possible, what to do.  The CLI turns any :class:`MusicIdxError` into a
single line on stderr and a non-zero exit status; library code never prints.
"""

from __future__ import annotations

from pathlib import Path


class MusicIdxError(Exception):
    """Base class of every error musicidx raises on purpose."""

    def __init__(self, reason: str, *, path: str | Path | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)

    def __reduce__(self) -> tuple[object, ...]:  # keep reason and path across process pools
        return (_rebuild, (type(self), self.reason, self.path))


def _rebuild(cls: type[MusicIdxError], reason: str, path: Path | None) -> MusicIdxError:
    return cls(reason, path=path)


class InvalidMidiError(MusicIdxError):
    """A file that cannot be read as a usable MIDI file (corrupt, empty, too large...)."""


class SynthesisError(MusicIdxError):
    """Rendering failed, or produced only silence."""


class DependencyError(MusicIdxError):
    """A system dependency (FluidSynth library, SoundFont) is missing or broken."""


class ConfigMismatchError(MusicIdxError):
    """A query would use other features than the index was built with."""


def install_hint(extra: str) -> str:
    """How to install an optional part: from the published package, and from a source checkout."""
    return f"pip install 'musicidx[{extra}]' (from a source checkout: pip install '.[{extra}]')"
