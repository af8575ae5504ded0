"""The command line: parse, call one library function, render.  The only module that prints.

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

import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from musicidx import __version__
from musicidx.encoder.errors import MusicIdxError, install_hint

EXIT_ERROR, EXIT_PARTIAL = 1, 3
DEFAULT_INDEX = "musicidx-index"


def _index_path_option(*decls: str, help: str) -> Any:
    """An index directory option, from $MUSICIDX_INDEX when not given (every command alike)."""
    return click.option(
        *decls,
        type=click.Path(path_type=Path),
        default=DEFAULT_INDEX,
        envvar="MUSICIDX_INDEX",
        show_default=True,
        help=help,
    )


index_option = _index_path_option("--index", "index_dir", help="Index directory (or $MUSICIDX_INDEX).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
soundfont_option = click.option("--soundfont", type=click.Path(path_type=Path), help="SoundFont (.sf2) to render with.")


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
            click.echo(
                _json({"error": {"message": message, "reason": reason, "path": where, "exit_code": code}}, indent=None)
            )


class Progress:
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


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="musicidx")
def cli() -> None:
    """Who composed this piece? musicidx indexes MIDI files by composer and answers for new
    ones, saying so when the composer is nobody the index knows."""


recipe_option = click.option(
    "--recipe",
    "recipe_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MUSICIDX_RECIPE",
    help="Recipe file (TOML or JSON; see data/recipe.toml) over the default recipe (or $MUSICIDX_RECIPE).",
)


def _recipe(recipe_file: Path | None, **changes: Any) -> Any:
    """The default recipe, or ``recipe_file`` over it; then the options given (None = unchanged)."""
    import dataclasses

    from musicidx.encoder.recipe import DEFAULT_RECIPE, load_recipe

    r = DEFAULT_RECIPE if recipe_file is None else load_recipe(recipe_file)
    features = {k: v for k in ("clips_per_track",) if (v := changes.pop(k, None)) is not None}
    train = {k: v for k in ("epochs", "seed") if (v := changes.pop(k, None)) is not None}
    return r.replace(
        features=dataclasses.replace(r.features, **features) if features else None,
        train=dataclasses.replace(r.train, **train) if train else None,
        **changes,
    )


@cli.command()
@click.argument("midi_dir", type=click.Path(path_type=Path))
@_index_path_option("--out", help="Index directory to write (or $MUSICIDX_INDEX).")
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

    recipe = _recipe(recipe_file, clips_per_track=clips_per_track, epochs=epochs, seed=seed, k=k, faiss=faiss_kind)
    report = build_index(
        midi_dir,
        out=out,
        recipe=recipe,
        workers=workers,
        soundfont=soundfont,
        cache_dir=False if no_cache else (cache_dir or True),
        strict=strict,
        progress=Progress(),
        ray=ray_address,
        wait=wait,
    )
    click.echo(_json(_build_dict(report)) if as_json else _render_build(report))


@cli.command()
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
            click.echo(_json(answer, indent=None))
        elif "error" not in answer:
            click.echo(_render_answer(answer))
    if failed:
        sys.exit(EXIT_ERROR)


@cli.command()
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
        rows = [r.to_dict() for r in searcher.score(folder, on_done=_bar("scoring"))]
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
        _json(summary, indent=None) if as_json else f"scored {len(rows) - failed} of {len(rows)} files -> {out}",
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


@cli.command()
@click.argument("midi_dir", type=click.Path(path_type=Path))
@index_option
@click.option("--workers", type=click.IntRange(1, 256), help="Feature-extraction processes [all cores].")
@soundfont_option
@json_option
def add(midi_dir: Path, index_dir: Path, workers: int | None, soundfont: Path | None, as_json: bool) -> None:
    """Enrol MIDI_DIR/<Composer>/*.mid into an index with its encoder (no retraining)."""
    from dataclasses import asdict

    from musicidx.indexer.enrol import add_to_index

    r = add_to_index(index_dir, midi_dir, workers=workers, soundfont=soundfont, progress=Progress())
    click.echo(_json(asdict(r)) if as_json else _render_add(r))


@cli.command()
@index_option
@json_option
def info(index_dir: Path, as_json: bool) -> None:
    """Show an index's manifest."""
    from musicidx.indexer.store import load_index

    m = load_index(index_dir).manifest
    click.echo(_json(m) if as_json else _render_info(m, index_dir))


@cli.command()
@click.argument("recipe_file", metavar="RECIPE", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    help="Work folder: exports, rendered views, checkpoints [$XDG_CACHE_HOME/musicidx/pretrain].",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("encoder/weights"),
    show_default=True,
    help="Where the weights and their card go (the package's weights folder in a checkout).",
)
@click.option("--lieder", type=click.Path(file_okay=False, path_type=Path), help="A copy of OpenScore Lieder.")
@click.option("--workers", type=click.IntRange(1, 256), help="Export and rendering processes [all cores].")
@json_option
def pretrain(
    recipe_file: Path, work: Path | None, out: Path, lieder: Path | None, workers: int | None, as_json: bool
) -> None:
    """Pretrain the encoder on external music (music21 corpus, OpenScore Lieder) in random
    timbres; resumable: run the same command again after an interruption."""
    from musicidx.encoder.config import default_cache_dir
    from musicidx.encoder.pretrain.config import load_pretrain_config
    from musicidx.encoder.pretrain.run import pretrain as run_pretrain
    from musicidx.indexer.build import default_workers

    config = load_pretrain_config(recipe_file)
    r = run_pretrain(
        config,
        work=work or default_cache_dir() / "pretrain",
        out=out,
        lieder=lieder,
        workers=workers or default_workers(),
        progress=Progress(),
    )
    body = {
        "weights": str(r.weights),
        "sha256": r.sha256,
        "pieces": r.pieces,
        "passages": r.passages,
        "classes": len(r.classes),
        "skipped": len(r.skipped),
        "seconds": {k: round(v, 1) for k, v in r.seconds.items()},
    }
    if as_json:
        click.echo(_json(body))
        return
    click.echo(
        f"pretrained   {r.weights} (sha256 {r.sha256[:12]})\n"
        f"corpus       {r.pieces} pieces, {r.passages} passages, {len(r.classes)} labelled composers, "
        f"{len(r.skipped)} skipped\n"
        f"seconds      " + ", ".join(f"{k} {v:.0f}" for k, v in r.seconds.items())
    )


@cli.command(name="eval")
@click.argument("midi_dir", type=click.Path(path_type=Path))
@click.option(
    "--index",
    "index_dir",
    type=click.Path(path_type=Path),
    help="Evaluate this existing index on MIDI_DIR instead (cross-corpus; composers it lacks count as new).",
)
@click.option("--folds", type=click.IntRange(2, 20), default=5, show_default=True, help="Grouped CV folds.")
@click.option(
    "--seeds", type=click.IntRange(1, 20), default=3, show_default=True, help="Training seeds (0..N-1) to average."
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path),
    help="Write report.json here (rewritten after every fit: an eval stopped early keeps what it finished), "
    "then the plots.",
)
@click.option(
    "--plots/--no-plots",
    default=None,
    help="Draw the plots into --report (they need matplotlib) [drawn when matplotlib is installed; "
    "--plots without it is an error before any work].",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the folds.")
@click.option("--workers", type=click.IntRange(1, 256), help="Feature-extraction processes [all cores].")
@recipe_option
@json_option
def eval_(
    midi_dir: Path,
    index_dir: Path | None,
    folds: int,
    seeds: int,
    report_dir: Path | None,
    plots: bool | None,
    seed: int,
    workers: int | None,
    recipe_file: Path | None,
    as_json: bool,
) -> None:
    """Grouped CV (closed set) and leave-one-composer-out (open set), each held-out track also
    re-orchestrated, over several training seeds (one for a frozen pretrained encoder), with the
    default recipe or --recipe; or, with --index, an existing index on another labelled folder.
    Progress on stderr: a line per fit, with the time left (by default 3 seeds x (5 folds + 1 per composer))."""
    from musicidx.evaluate.cross import evaluate_index, write_cross_report
    from musicidx.evaluate.plots import PLOTS_HINT, can_plot
    from musicidx.evaluate.protocol import evaluate
    from musicidx.evaluate.report import write_report

    draw = report_dir is not None and plots is not False and can_plot(required=plots is True)  # before any work
    if report_dir is not None and plots is None and not draw:
        click.echo(f"musicidx: warning: no plots: {PLOTS_HINT}; writing report.json only", err=True)
    if index_dir is not None:
        cross = evaluate_index(index_dir, midi_dir, workers=workers, progress=Progress())
        written = write_cross_report(cross, report_dir, plots=draw) if report_dir else []
        out = _json(cross.to_dict()) if as_json else _render_cross(cross, written)
        click.echo(out)
        return
    kept: list[Any] = []  # the partial report last written to --report

    def keep(partial: Any) -> None:
        if report_dir is not None:
            write_report(partial, report_dir, plots=False)
            kept[:] = [partial.partial]

    try:
        report = evaluate(
            midi_dir, folds=folds, seed=seed, seeds=range(seeds), recipe=_recipe(recipe_file), workers=workers,
            progress=Progress(), on_partial=keep if report_dir else None,
        )  # fmt: skip
    except KeyboardInterrupt:
        if not kept:
            raise
        raise KeyboardInterrupt(
            f"{report_dir}/report.json keeps the {kept[0]['fits_done']} of {kept[0]['fits_total']} fits finished "
            "(a partial report)"
        ) from None
    written = write_report(report, report_dir, plots=draw) if report_dir else []
    click.echo(_json(report.to_dict()) if as_json else _render_eval(report, written))


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default="musicidx-demo",
    show_default=True,
    help="Folder for the exported MIDI, the index and scores.csv.",
)
@json_option
def demo(out: Path, as_json: bool) -> None:
    """Index real music shipped by music21 (musicidx[demo]) and score held-out pieces and a new composer."""
    from musicidx.demo.run import run_demo

    r = run_demo(out, progress=Progress())
    click.echo(_json(r.to_dict()) if as_json else _render_demo(r))


@cli.command()
@index_option
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on; any but loopback wants --token."
)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--token", envvar="MUSICIDX_TOKEN", help="Require 'Authorization: Bearer TOKEN' on /v1/* (or $MUSICIDX_TOKEN)."
)
@click.option("--workers", type=click.IntRange(1, 64), help="Processes that render and CQT [one per core, at most 4].")
@click.option(
    "--queue",
    type=click.IntRange(0, 10_000),
    default=32,
    show_default=True,
    help="Files that may wait for a worker; more get 503.",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(0.001, 32),
    default=32,
    show_default=True,
    help="Largest upload (413 above).",
)
@click.option(
    "--midi-dir",
    "midi_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Where the training MIDI is, for the clip player [the build's folder].",
)
@soundfont_option
def serve(
    index_dir: Path,
    host: str,
    port: int,
    token: str | None,
    workers: int | None,
    queue: int,
    max_upload_mb: float,
    midi_dirs: tuple[Path, ...],
    soundfont: Path | None,
) -> None:
    """Answer over HTTP with the index loaded once: POST /v1/query, GET /v1/info, /healthz, a page at /, /docs."""
    try:
        from musicidx.serve.app import Server
        from musicidx.serve.service import ServeConfig
    except ImportError as e:
        raise MusicIdxError(f"'musicidx serve' needs the serve extra (no {e.name}): {install_hint('serve')}") from e
    config = ServeConfig(
        index_dir, queue=queue, max_upload_bytes=int(max_upload_mb * 2**20), token=token or None,
        midi_dirs=midi_dirs, soundfont=soundfont, **({"workers": workers} if workers else {}),
    )  # fmt: skip
    server = Server.start(config, host=host, port=port)
    click.echo(f"serving {index_dir} at {server.url} ({server.service.summary()}); Ctrl-C stops", err=True)
    if not token and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"musicidx: warning: listening on {host} without --token: anyone who reaches it can query", err=True)
    server.run()


def _render_demo(r: Any) -> str:
    w = max(len(x.file) for x in r.rows)
    lines = [f"{'held-out piece':<{w}}  {'composer':<11} {'answer':<11} {'conf':>5} {'novelty':>7}  verdict"]
    for x in r.rows:
        verdict = (
            f"error: {x.error}"
            if x.status != "ok"
            else {True: "new composer", False: "known"}.get(x.is_new, "no verdict")
        )
        lines.append(
            f"{x.file:<{w}}  {x.true_composer:<11} {x.composer:<11} {_fmt(x.confidence, 2):>5} "
            f"{_fmt(x.novelty, 3):>7}  {verdict}" + ("" if x.correct else "  (wrong)")
        )
    known, new = [x for x in r.rows if x.known], [x for x in r.rows if not x.known]
    return "\n".join(
        lines
        + [
            f"index        {r.index_dir}: " + ", ".join(f"{c} {r.counts[c]['indexed']}" for c in r.known_composers),
            f"known        {sum(bool(x.correct) for x in known)} of {len(known)} held-out pieces named right, "
            f"{sum(bool(x.is_new) for x in known)} wrongly flagged new",
            f"new          {sum(bool(x.is_new) for x in new)} of {len(new)} pieces by {r.new_composer} (not in the "
            f"index) flagged new; novelty threshold {r.threshold:.3f}",
            f"scores       {r.scores_csv}",
            f"midi         {r.midi_dir} (indexed), {r.heldout_dir} (held out)",
            f"time         {', '.join(f'{k} {v:.0f}s' for k, v in r.seconds.items())} "
            f"({r.export.exported} pieces exported, {r.export.reused} reused)",
        ]
    )


def _json(obj: Any, *, indent: int | None = 2) -> str:
    """JSON as every command prints it: UTF-8 (``Dvořák``, not ``Dvo\\u0159\\u00e1k``)."""
    return json.dumps(obj, indent=indent, ensure_ascii=False, default=str)


def _bar(stage: str) -> Any:
    p = Progress()
    return lambda done, total: p(stage, done, total)


# ----------------------------------------------------------------------------- rendering


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _build_dict(r: Any) -> dict[str, Any]:
    f = r.fit
    return {
        "out": str(r.out),
        "tracks": f.n_tracks,
        "clips": f.n_clips,
        "works": f.n_works,
        "composers": f.composers,
        "val_tracks": f.val_tracks,
        "val_accuracy": f.val_accuracy,
        "val_balanced_accuracy": f.val_balanced_accuracy,
        "majority_baseline": f.baseline,
        "warnings": f.warnings,
        "novelty_threshold": f.threshold,
        "accept_rate": f.accept_rate,
        "calibrated": f.calibrated,
        "uncalibrated_reason": f.uncalibrated_reason,
        "best_epoch": f.best_epoch,
        "encoder": f.encoder,
        "faiss": f.faiss_kind,
        "soundfont": r.soundfont.name,
        "rendered_seconds": r.rendered_seconds,
        "cached_tracks": r.cached_tracks,
        "skipped": [{"path": p, "reason": why} for p, why in r.skipped],
        "seconds": r.seconds,
        "ray": r.cluster,
        "lock_taken_over": r.lock_taken_over,
    }


def _render_build(r: Any) -> str:
    f = r.fit
    lines = [
        f"index        {r.out}",
        f"tracks       {f.n_tracks} ({f.n_works} works), {f.n_clips} clips",
        f"composers    {', '.join(f.composers)}",
        f"encoder      {_encoder_origin(f.encoder)}",
        f"validation   {f.val_tracks} held-out tracks: accuracy {_fmt(f.val_accuracy)}, "
        f"balanced accuracy {_fmt(f.val_balanced_accuracy)}"
        + (
            " (each against the other works)"
            if f.encoder and not f.encoder.get("finetuned") and not f.encoder.get("head")
            else f" (best epoch {f.best_epoch})"
        ),
        f"baseline     always answering {f.baseline['composer']} (most tracks) would score accuracy "
        f"{_fmt(f.baseline['accuracy'])}, balanced accuracy {_fmt(f.baseline['balanced_accuracy'])}",
        f"novelty      threshold {f.threshold:.4f} "
        + (
            f"(accepts {f.accept_rate:.0%} of held-out known-composer tracks)"
            if f.calibrated
            else f"UNCALIBRATED: {f.uncalibrated_reason}; answers give no new-composer verdict"
        ),
        f"rendered     {r.rendered_seconds / 60:.1f} min of audio with {r.soundfont.name}; "
        f"{r.cached_tracks} tracks from cache",
        f"faiss        {f.faiss_kind}, k={f.k}",
        "time         " + ", ".join(f"{k} {v:.1f}s" for k, v in r.seconds.items()),
    ]
    if r.cluster:
        lines.append(f"ray          features and embeddings on {r.cluster}")
    if r.lock_taken_over:
        lines.append(f"lock         took over the lock a killed build left ({r.lock_taken_over})")
    lines += [f"warning      {w}" for w in f.warnings]
    if r.skipped:
        lines.append(f"skipped      {len(r.skipped)} file(s):")
        lines += [f"  {p}: {why}" for p, why in r.skipped]
    return "\n".join(lines)


def _render_answer(a: dict[str, Any]) -> str:
    """One answer in words: the composer and the vote it came from, the verdict and what it
    rests on, and the nearest training tracks with the clips that matched best."""
    shares = ", ".join(f"{c} {v:.2f}" for c, v in sorted(a["votes"].items(), key=lambda kv: -kv[1]))
    calibrated = "calibrated" if a.get("calibrated", True) else "uncalibrated"
    under = (
        f" ({a['accept_rate']:.0%} of held-out pieces by known composers stay under it)"
        if a["accept_rate"] and a.get("calibrated", True)
        else ""
    )
    novelty = (
        f"novelty {_sig(a['novelty'])} (the median distance of its clips to their {_nth(a['k'])} nearest index "
        f"clip) vs the threshold {_sig(a['threshold'])} {calibrated} for k={a['k']}{under}"
    )
    if a["same_composition"]:
        verdict = f"a known composer: it plays the same notes as the training track {a['same_track']}"
        if not a.get("calibrated", True):
            verdict += " (the index's novelty threshold is uncalibrated, but none is needed here)"
        vote = f"{a['composer']} 1.00, the composer of that track (no vote needed)"
    else:
        vote = (
            f"{shares}: each of its {a['clips']} clips votes for the composers of its {a['k']} nearest index clips, "
            "weighted by similarity and divided by each composer's share of the index (composer-balanced: a "
            "composer with many tracks does not win by numbers), so the nearest tracks below need not agree"
        )
        verdict = (
            f"none: the index's novelty threshold is uncalibrated (too few held-out works; 'musicidx info' says "
            f"why), so whether this is a composer not in the index is not known: {novelty}; {a['composer']} is "
            "the nearest known composer"
            if a["is_new"] is None
            else f"probably a composer NOT in the index: {novelty}; {a['composer']} is only the nearest known composer"
            if a["is_new"]
            else f"a known composer: {novelty}"
        )
    lines = [
        a["file"],
        f"  composer     {a['composer']} (confidence {a['confidence']:.2f}: its share of the vote)",
        f"  vote         {vote}",
        f"  verdict      {verdict}",
    ]
    for n in a["nearest"]:
        lines.append(
            f"  nearest      {n['path']} ({n['composer']}): distance {_sig(n['distance'])}; best-matching clips "
            f"start at {n['query_start_s']:.1f}s in the query and {n['match_start_s']:.1f}s in this track"
        )
    return "\n".join(lines)


def _sig(x: float) -> str:
    """A distance to 4 significant digits, never in exponent notation: 0.05431, 0.001234, 0."""
    import numpy as np

    return str(np.format_float_positional(x, precision=4, unique=False, fractional=False, trim="-"))


def _nth(k: int) -> str:
    suffix = "th" if k % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _render_eval(r: Any, written: list[Path]) -> str:
    def ms(key: str) -> str:
        v = r.summary[key]
        return f"{v['mean']:.3f} ± {v['std']:.3f}" if len(r.seeds) > 1 else f"{v['mean']:.3f}"

    c, o = r.closed, r.open
    views = ["original", *r.orchestrations]
    seeds = f"{len(r.seeds)} training seeds ({', '.join(map(str, r.seeds))}), mean ± std"
    lines = [
        f"closed set   {c['tracks']} tracks, grouped {r.folds}-fold CV by work; {seeds}:",
        *(
            f"  {v:<10} balanced accuracy {ms(f'closed.{v}.balanced_accuracy')}, accuracy {ms(f'closed.{v}.accuracy')}"
            for v in views
        ),
    ]
    if r.orchestrations:
        lines.append(f"  agreement  same composer in all {len(views)} orchestrations: {ms('closed.agreement')}")
    lines.append(
        f"  seed {r.seeds[0]}     macro-F1 {c['macro_f1']:.3f}; recall "
        + ", ".join(f"{k} {v:.2f}" for k, v in c["recall"].items())
    )
    if o:
        lines.append("open set     leave-one-composer-out (unknown = left-out composer):")
        lines += [
            f"  {v:<10} AUROC {ms(f'open.{v}.auroc')}  FPR@95%TPR {ms(f'open.{v}.fpr_at_95tpr')}"
            + (f"  OSCR {ms(f'open.{v}.oscr')}" if v == "original" else "")
            for v in views
        ]
        lines.append(f"  seed {r.seeds[0]}, per left-out composer:")
        for name, m in o["per_composer"].items():
            lines.append(
                f"  {name:<10} AUROC {m['auroc']:.3f}  FPR@95%TPR {m['fpr_at_95tpr']:.3f}  OSCR {m['oscr']:.3f}  "
                f"flagged new: unknown {m['unknown_flagged']:.2f}, known {m['known_flagged']:.2f}"
            )
        alts = {k[len("auroc_") :]: v for k, v in o["mean"].items() if k.startswith("auroc_") and k[6:] not in views}
        lines.append(
            "  candidate novelty statistics, mean AUROC: " + ", ".join(f"{k} {v:.3f}" for k, v in alts.items())
        )
    lines.append(f"time         {r.seconds:.0f}s")
    lines += [f"wrote        {p}" for p in written]
    return "\n".join(lines)


def _render_cross(r: Any, written: list[Path]) -> str:
    k, o = r.known, r.open
    lines = [f"index        {r.index} asked about {r.tracks} tracks of {r.folder}"]
    if k.get("tracks"):
        lines.append(
            f"known        {k['tracks']} tracks of {', '.join(r.known_composers)}: accuracy {k['accuracy']:.3f}, "
            f"balanced accuracy {k['balanced_accuracy']:.3f}; flagged new {k['flagged_new']:.2f}"
        )
        lines += [
            f"  {c:<10} recall {k['recall'][c]:.2f}  answered "
            + ", ".join(f"{a} {n}" for a, n in k["answered"][c].items())
            for c in r.known_composers
        ]
    else:
        lines.append("known        none of the folder's composers is in the index")
    if o:
        lines.append(
            f"new          {o['new_tracks']} tracks of {len(r.new_composers)} composers: AUROC {o['auroc']:.3f}, "
            f"FPR@95%TPR {o['fpr_at_95tpr']:.3f}, OSCR {o['oscr']:.3f}; flagged new {o['flagged_new']:.2f} "
            f"at the threshold {o['threshold']:.4f}"
        )
        lines += [
            f"  {c:<10} {m['tracks']:>3} tracks  AUROC {m['auroc']:.3f}  flagged new {m['flagged_new']:.2f}"
            for c, m in o["per_new_composer"].items()
        ]
    lines += [f"skipped      {p}: {why}" for p, why in r.skipped]
    lines.append(f"time         {r.seconds:.0f}s")
    lines += [f"wrote        {p}" for p in written]
    return "\n".join(lines)


def _render_add(r: Any) -> str:
    if r.added_tracks == 0:
        return "\n".join(
            [
                f"index        {r.index}",
                f"added        nothing new: all {len(r.duplicates)} usable file(s) are already in the index",
                *(f"skipped      {p}: {why}" for p, why in r.skipped),
            ]
        )
    lines = [
        f"index        {r.index}",
        f"added        {r.added_tracks} tracks, {r.added_clips} clips"
        + (f"; new composers: {', '.join(r.new_composers)}" if r.new_composers else ""),
        f"novelty      threshold {r.threshold_before:.4f} -> {r.threshold_after:.4f} "
        f"(recalibrated leave-one-work-out on {r.calibration_tracks} tracks)"
        + (f"; UNCALIBRATED: {r.uncalibrated_reason}" if r.uncalibrated_reason else ""),
    ]
    if r.duplicates:
        lines.append(f"already in   {len(r.duplicates)} file(s) with the same content were not added again")
    lines += [f"skipped      {p}: {why}" for p, why in r.skipped]
    return "\n".join(lines)


def _faiss_lines(f: dict[str, Any]) -> list[str]:
    if "bytes_per_vector" not in f:
        return ["  measured     no memory or recall figures (built before format 3)"]
    params = ", ".join(f"{k} {v}" for k, v in f["params"].items())
    r = f["recall_at_10"]
    return [
        f"  chosen       {f['chosen']}" + (f"; {params}" if params else ""),
        f"  memory       {f['bytes_per_vector']:g} bytes per vector in memory (codes, ids, quantiser)"
        + (f" + {f['mapped_bytes_per_vector']:g} memory-mapped from disk" if f.get("mapped_bytes_per_vector") else ""),
        f"  recall@10    {r['value']:.4f} against exact search ({r['queries']} of its own vectors as queries)",
    ]


def _encoder_origin(e: dict[str, Any] | None) -> str:
    """Where an index's encoder came from, in words (indexes before the recipe say nothing)."""
    if not e or e.get("name") is None:
        return "trained in the build"
    how = (
        "fine-tuned in the build"
        if e.get("finetuned")
        else "last layer retrained in the build"
        if e.get("head")
        else "frozen"
    )
    return f"pretrained {e['name']} (sha256 {e['sha256'][:12]}...), {how}"


def _render_info(m: dict[str, Any], where: Path) -> str:
    from musicidx.indexer.store import novelty_calibration, thresholds_by_k

    feats, nov, counts = m["features"], m["novelty"], m["counts"]
    calibrated, why = novelty_calibration(m)
    val = m.get("validation", {})
    return "\n".join(
        [
            f"index          {where} (format {m['format_version']}, musicidx {m['musicidx_version']}, "
            f"created {m['created']})",
            "composers      " + ", ".join(f"{c} ({n})" for c, n in m["composers"].items()),
            f"counts         {counts['tracks']} tracks, {counts['works']} works, {counts['clips']} clips",
            f"features       {feats['sample_rate']} Hz, CQT {feats['n_bins']} bins from {feats['fmin']:.1f} Hz, hop "
            f"{feats['hop_length']}, {feats['clips_per_track']} clips x {feats['clip_seconds']:g}s",
            f"soundfont      {m['soundfont']['name']} (sha256 {m['soundfont']['sha256'][:12]}...)",
            f"encoder        {m['embedding_dim']}-d, channels {m['model']['channels']}, "
            f"sha256 {m['encoder_sha256'][:12]}..., {_encoder_origin(m.get('encoder'))}",
            f"faiss          {m['faiss']['type']} ({m['faiss']['metric']}), {m['faiss']['ntotal']} vectors, k={m['k']}",
            *_faiss_lines(m["faiss"]),
            f"novelty        threshold {nov['threshold']:.4f} at {nov['accept_rate']:.0%} acceptance, calibrated on "
            f"{nov['calibrated_on']['tracks']} tracks of {nov['calibrated_on']['works']} held-out works"
            if calibrated
            else f"novelty        threshold {nov['threshold']:.4f} UNCALIBRATED: {why}; answers give no new-composer "
            "verdict",
            "  by k         " + ", ".join(f"k={k} {t:.4f}" for k, t in thresholds_by_k(m).items()),
            f"validation     accuracy {_fmt(val.get('accuracy'))}, "
            f"balanced accuracy {_fmt(val.get('balanced_accuracy'))}"
            + (
                f" (always answering {base['composer']}: {_fmt(base['accuracy'])}, {_fmt(base['balanced_accuracy'])})"
                if (base := val.get("majority_baseline"))
                else ""
            ),
            *(f"warning        {w}" for w in m.get("warnings", [])),
            f"skipped        {len(m.get('skipped', []))} file(s)",
        ]
    )


def main() -> None:
    cli(prog_name="musicidx")
