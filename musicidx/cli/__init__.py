"""The command line: parse, call one library function, render.  The only package that prints.

Exit status: 0 success; 1 an error (one line on stderr naming the file and the reason);
2 a usage error; ``score`` exits 3 when it wrote its table but some files could not be scored.

A missing or wrong-kind input is an error (1) in every command, never a usage error: a FILE or
folder that does not exist, a folder given to ``query`` (which points to ``score``), a file given
to ``score``/``build``/``add``/``eval`` (``score`` points to ``query``), a folder without MIDI files
where some are needed.  2 is kept for the command line itself: an unknown option, a missing
argument, a value out of range.  ``add`` of files the index already holds is not an error: it
says "nothing new" and exits 0.
Heavy libraries (torch, faiss, FluidSynth, nnAudio) are imported inside the commands so that
``musicidx --help`` answers at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from musicidx import __version__
from musicidx.encoder.errors import MusicIdxError

from .app_commands import demo, eval_, pretrain, serve
from .index_commands import add, build, info, query, score
from .options import EXIT_ERROR
from .text import to_json


class _Cli(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["musicidx.json"] = "--json" in args  # a refusal is then also one JSON object on stdout
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # click prints the usage and the line, and exits 2
            self._json_refusal(ctx, e.format_message(), None, e.exit_code)
            raise
        except MusicIdxError as e:
            click.echo(f"musicidx: error: {e}", err=True)
            self._json_refusal(ctx, e.reason, e.path, EXIT_ERROR)
            ctx.exit(EXIT_ERROR)
        except KeyboardInterrupt as e:  # a command may say what it kept
            click.echo("musicidx: interrupted" + (f": {e}" if str(e) else ""), err=True)
            ctx.exit(130)

    @staticmethod
    def _json_refusal(ctx: click.Context, reason: str, path: Path | None, code: int) -> None:
        """With --json, the refusal of a whole command as one object of one shape on stdout:
        ``{"error": {"message", "reason", "path", "exit_code"}}`` (``message`` is the stderr line's)."""
        if ctx.meta.get("musicidx.json"):
            message = f"{path}: {reason}" if path is not None else reason
            where = None if path is None else str(path)
            error = {"message": message, "reason": reason, "path": where, "exit_code": code}
            click.echo(to_json({"error": error}, indent=None))


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="musicidx")
def cli() -> None:
    """Who composed this piece? musicidx indexes MIDI files by composer and answers for new
    ones, saying so when the composer is nobody the index knows."""


for command in (build, add, info, query, score, eval_, demo, pretrain, serve):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="musicidx")
