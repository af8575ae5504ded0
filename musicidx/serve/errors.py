"""The refusals of ``musicidx serve``: each :class:`ServeError` carries the HTTP status it answers
with; :func:`is_input_fault` tells a file's fault (422) from the server's (500)."""

from __future__ import annotations

from musicidx.encoder.errors import ConfigMismatchError, DependencyError, MusicIdxError


class ServeError(MusicIdxError):
    """A request the server refuses; ``status`` is the HTTP status it answers with."""

    status = 500


class Unauthorized(ServeError):
    status = 401


class NotFound(ServeError):
    status = 404


class TooLarge(ServeError):
    status = 413


class Unsupported(ServeError):
    status = 415


class BadInput(ServeError):
    status = 422


class Busy(ServeError):
    """Every worker busy and the queue full: come back in ``retry_after`` seconds."""

    status = 503

    def __init__(self, reason: str, *, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def is_input_fault(e: MusicIdxError) -> bool:
    """True when the file is to blame (422), False when the server is (a missing FluidSynth or
    SoundFont, a configuration mismatch: 500)."""
    return not isinstance(e, (DependencyError, ConfigMismatchError))
