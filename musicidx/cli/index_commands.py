"""The commands that make and ask an index: ``build``, ``add``, ``info``, ``query``, ``score``."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import click

from musicidx.encoder.errors import MusicIdxError

from .options import (
    EXIT_ERROR,
    EXIT_PARTIAL,
    index_option,
    index_path_option,
    json_option,
    recipe_from,
    recipe_option,
    soundfont_option,
)
from .progress import ProgressDisplay, stage_bar
from .text import build_dict, render_add, render_answer, render_build, render_info, to_json


@click.command()
@click.argument("midi_dir", type=click.Path(path_type=Path))
@index_path_option("--out", help="Index directory to write (or $MUSICIDX_INDEX).")
@recipe_option
@click.option("--clips-per-track", type=click.IntRange(1, 256), help="Clips cut from each track [recipe's].")
@click.option("--epochs", type=click.IntRange(1, 1000), help="Training epochs [recipe's].")
@click.option("--workers", type=click.IntRange(1, 256), help="Feature-extraction processes [all cores].")
@click.option("--seed", type=int, help="Training seed [recipe's].")
@click.option("--k", type=click.IntRange(1, 1000), help="Neighbours per clip [recipe's: 10].")
@soundfont_option
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Feature cache [$XDG_CACHE_HOME/musicidx].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the feature cache.")
@click.option("--strict", is_flag=True, help="Fail on the first unusable file instead of skipping it.")
@click.option(
    "--faiss",
    "faiss_kind",
    type=click.Choice(["auto", "flat", "hnsw", "ivfpq"]),
    help="FAISS index: exact up to 100,000 clips, HNSW up to 1,000,000, IVF-PQ above (auto, the recipe's), or forced.",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[auto|ADDRESS]",
    help="Render, CQT and embed on a Ray cluster (extra musicidx[ray]): 'auto' joins the running one "
    "or starts one here; ADDRESS joins that one. The cache must then be on a folder all nodes share.",
)
@click.option("--wait", is_flag=True, help="If another build is writing --out, wait for it instead of stopping.")
@json_option
def build(
    midi_dir: Path,
    out: Path,
    recipe_file: Path | None,
    clips_per_track: int | None,
    epochs: int | None,
    workers: int | None,
    seed: int | None,
    k: int | None,
    soundfont: Path | None,
    cache_dir: Path | None,
    no_cache: bool,
    strict: bool,
    faiss_kind: str | None,
    ray_address: str | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Build an index from MIDI_DIR/<Composer>/*.mid (one build at a time per --out)."""
    from musicidx.indexer.build import build_index

    recipe = recipe_from(recipe_file, clips_per_track=clips_per_track, epochs=epochs, seed=seed, k=k, faiss=faiss_kind)
    report = build_index(
        midi_dir,
        out=out,
        recipe=recipe,
        workers=workers,
        soundfont=soundfont,
        cache_dir=False if no_cache else (cache_dir or True),
        strict=strict,
        progress=ProgressDisplay(),
        ray=ray_address,
        wait=wait,
    )
    click.echo(to_json(build_dict(report)) if as_json else render_build(report))


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@index_option
@click.option(
    "--k",
    type=click.IntRange(1, 1000),
    help="Neighbours per clip [the index's]; only a k the index calibrated a threshold for ('musicidx info').",
)
@soundfont_option
@json_option
def query(files: tuple[Path, ...], index_dir: Path, k: int | None, soundfont: Path | None, as_json: bool) -> None:
    """Name the composer of each FILE, or say it is a composer not in the index.

    Each answer is printed as soon as its file is done; --json prints one JSON object per line
    per FILE, in order (JSON Lines), a file that failed as {"file": ..., "error": ...}."""
    from musicidx.query.engine import Searcher

    searcher, failed = Searcher(index_dir, k=k, soundfont=soundfont), 0
    for f in files:
        try:
            if f.is_dir():
                raise MusicIdxError(
                    "is a directory, not a MIDI file; to score every MIDI file in it use 'musicidx score'", path=f
                )
            answer = searcher.query(f).to_dict()
        except MusicIdxError as e:
            failed += 1
            click.echo(f"musicidx: error: {e}", err=True)
            answer = {"file": str(f), "error": e.reason}
        if as_json:
            click.echo(to_json(answer, indent=None))
        elif "error" not in answer:
            click.echo(render_answer(answer))
    if failed:
        sys.exit(EXIT_ERROR)


@click.command()
@click.argument("folder", type=click.Path(path_type=Path))
@index_option
@click.option("--out", type=click.Path(path_type=Path), required=True, help="CSV file to write ('-' for stdout).")
@soundfont_option
@json_option
def score(folder: Path, index_dir: Path, out: Path, soundfont: Path | None, as_json: bool) -> None:
    """Score every MIDI file under FOLDER into a CSV (one row per file; exit 3 if some failed)."""
    from musicidx.query.engine import SCORE_COLUMNS, Searcher

    to_stdout = str(out) == "-"
    tmp = None if to_stdout else _reserve_output(out)  # an impossible --out fails before any scoring
    try:
        searcher = Searcher(index_dir, soundfont=soundfont)
        rows = [r.to_dict() for r in searcher.score(folder, on_done=stage_bar("scoring"))]
        with sys.stdout if tmp is None else open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=SCORE_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        if tmp is not None:
            os.replace(tmp, out)  # a run that stops early leaves an earlier table at --out untouched
    except OSError as e:  # disk full while writing the table: the scores are lost, say so in one line
        raise MusicIdxError(f"could not write the table: {e.strerror or e}", path=out) from e
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    failed = sum(r["status"] != "ok" for r in rows)
    summary = {"files": len(rows), "scored": len(rows) - failed, "errors": failed, "out": str(out)}
    click.echo(
        to_json(summary, indent=None) if as_json else f"scored {len(rows) - failed} of {len(rows)} files -> {out}",
        err=to_stdout,
    )
    if failed:
        sys.exit(EXIT_PARTIAL)


def _reserve_output(out: Path) -> Path:
    """Create the temporary file that will become ``out``; one clear error if that is impossible."""
    if out.is_dir():
        raise MusicIdxError("is a directory; --out needs a file name", path=out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
    except OSError as e:
        raise MusicIdxError(f"cannot write here: {e.strerror or e}", path=out) from e
    return tmp


@click.command()
@click.argument("midi_dir", type=click.Path(path_type=Path))
@index_option
@click.option("--workers", type=click.IntRange(1, 256), help="Feature-extraction processes [all cores].")
@soundfont_option
@json_option
def add(midi_dir: Path, index_dir: Path, workers: int | None, soundfont: Path | None, as_json: bool) -> None:
    """Enrol MIDI_DIR/<Composer>/*.mid into an index with its encoder (no retraining)."""
    from dataclasses import asdict

    from musicidx.indexer.enrol import add_to_index

    r = add_to_index(index_dir, midi_dir, workers=workers, soundfont=soundfont, progress=ProgressDisplay())
    click.echo(to_json(asdict(r)) if as_json else render_add(r))


@click.command()
@index_option
@json_option
def info(index_dir: Path, as_json: bool) -> None:
    """Show an index's manifest."""
    from musicidx.indexer.format import read_index

    m = read_index(index_dir).manifest
    click.echo(to_json(m.to_dict()) if as_json else render_info(m, index_dir))
