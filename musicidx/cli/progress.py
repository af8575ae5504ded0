"""Progress on stderr while a command works (stdout stays for the answer, a CSV or JSON)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click


class ProgressDisplay:
    """A one-line progress display on stderr (a line per stage when stderr is not a terminal; a
    line per step, with the time left, for the few long steps of ``eval``)."""

    #: stages of few long steps (each fit of ``eval``): every step is said, with an estimate of the time left
    STEPWISE = frozenset({"eval"})

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.stage: str | None = None
        self.began = time.monotonic()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            if self.stage is not None and self.tty:
                click.echo("", err=True)
            self.stage, self.began = stage, time.monotonic()
        took = time.monotonic() - self.began
        left = f", about {_duration(took / done * (total - done))} left" if stage in self.STEPWISE and done else ""
        if self.tty:
            filled = int(30 * done / max(total, 1))
            bar = "#" * filled + "-" * (30 - filled)
            click.echo(f"\r{stage:<9} [{bar}] {done}/{total} {took:5.1f}s{left}\033[K", err=True, nl=False)
            if done >= total:
                click.echo("", err=True)
                self.stage = None
        elif stage in self.STEPWISE and done < total:
            click.echo(f"{stage}: {done}/{total} done, {_duration(took)} so far{left}", err=True)
        elif done >= total:
            click.echo(f"{stage}: {done}/{total} done in {took:.1f}s", err=True)


def _duration(seconds: float) -> str:
    """``42s``, ``7m05s``, ``1h03m``."""
    s = int(round(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def stage_bar(stage: str) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback that shows one stage on a :class:`ProgressDisplay`."""
    p = ProgressDisplay()
    return lambda done, total: p(stage, done, total)
