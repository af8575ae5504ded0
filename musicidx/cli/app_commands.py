"""The commands that run an app on top of the stages: ``eval``, ``demo``, ``pretrain``, ``serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from musicidx.encoder.errors import MusicIdxError, install_hint

from .options import index_option, json_option, recipe_from, recipe_option, soundfont_option
from .progress import ProgressDisplay
from .text import pretrain_dict, render_cross, render_demo, render_eval, render_pretrain, to_json


@click.command()
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
    from musicidx.encoder.runtime import default_workers

    config = load_pretrain_config(recipe_file)
    r = run_pretrain(
        config,
        work=work or default_cache_dir() / "pretrain",
        out=out,
        lieder=lieder,
        workers=workers or default_workers(),
        progress=ProgressDisplay(),
    )
    click.echo(to_json(pretrain_dict(r)) if as_json else render_pretrain(r))


@click.command(name="eval")
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
    from musicidx.evaluate.report import write_report

    draw = report_dir is not None and plots is not False and can_plot(required=plots is True)  # before any work
    if report_dir is not None and plots is None and not draw:
        click.echo(f"musicidx: warning: no plots: {PLOTS_HINT}; writing report.json only", err=True)
    if index_dir is not None:
        cross = evaluate_index(index_dir, midi_dir, workers=workers, progress=ProgressDisplay())
        written = write_cross_report(cross, report_dir, plots=draw) if report_dir else []
        out = to_json(cross.to_dict()) if as_json else render_cross(cross, written)
        click.echo(out)
        return
    report = _evaluate_keeping_partials(
        report_dir, midi_dir=midi_dir, folds=folds, seed=seed, seeds=range(seeds), recipe=recipe_from(recipe_file),
        workers=workers, progress=ProgressDisplay(),
    )  # fmt: skip
    written = write_report(report, report_dir, plots=draw) if report_dir else []
    click.echo(to_json(report.to_dict()) if as_json else render_eval(report, written))


def _evaluate_keeping_partials(report_dir: Path | None, *, midi_dir: Path, **options: Any) -> Any:
    """``evaluate(midi_dir, **options)``, the report of what is finished rewritten to ``report_dir``
    (without plots) after every fit; an interrupt then says what ``report.json`` keeps."""
    from musicidx.evaluate.protocol import evaluate
    from musicidx.evaluate.report import write_report

    kept: list[Any] = []  # the partial report last written to --report

    def keep(partial: Any) -> None:
        if report_dir is not None:
            write_report(partial, report_dir, plots=False)
            kept[:] = [partial.partial]

    try:
        return evaluate(midi_dir, **options, on_partial=keep if report_dir else None)
    except KeyboardInterrupt:
        if not kept:
            raise
        raise KeyboardInterrupt(
            f"{report_dir}/report.json keeps the {kept[0]['fits_done']} of {kept[0]['fits_total']} fits finished "
            "(a partial report)"
        ) from None


@click.command()
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

    r = run_demo(out, progress=ProgressDisplay())
    click.echo(to_json(r.to_dict()) if as_json else render_demo(r))


@click.command()
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
