"""``musicidx eval --report`` loses no work (issue 19, items 2 and 3): a missing matplotlib is found
before any work and, unless the plots were asked for (``--plots``), only skips them; ``report.json``
is written before any plot; an eval stopped early keeps the seeds and folds it finished as a partial
report that says so; and every fit is said on stderr, with the time left."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from musicidx.cli import cli
from musicidx.evaluate import plots as figures
from musicidx.evaluate import protocol
from musicidx.evaluate.report import EvalReport, write_report

NO_PLOTS = (
    "musicidx: warning: no plots: plots need matplotlib: pip install 'musicidx[plots]' (from a source checkout: "
    "pip install '.[plots]'); writing report.json only"
)


@pytest.fixture
def tiny_eval(tiny_cli_defaults: Path) -> None:
    """``musicidx eval`` with the tiny configs, through ``$MUSICIDX_RECIPE`` (see conftest)."""


def _eval(corpus: Path, report: Path, *more: str) -> Any:
    args = ["eval", str(corpus), "--folds", "2", "--seeds", "2", "--workers", "1", "--report", str(report), *more]
    return CliRunner().invoke(cli, args)


def test_no_plots_is_an_option_in_the_help() -> None:
    text = CliRunner().invoke(cli, ["eval", "--help"]).stdout
    assert "--plots / --no-plots" in text and "a line per fit, with the time left" in " ".join(text.split())


def test_plots_asked_for_without_matplotlib_fail_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if matplotlib were not installed
    (tmp_path / "c" / "A").mkdir(parents=True)
    r = _eval(tmp_path / "c", tmp_path / "rep", "--plots")
    assert r.exit_code == 1 and r.stdout == ""
    (line,) = r.stderr.splitlines()  # no progress line: nothing was rendered or trained
    assert line == (
        "musicidx: error: plots need matplotlib: pip install 'musicidx[plots]' (from a source checkout: pip install "
        "'.[plots]') (or pass --no-plots)"
    )
    assert not (tmp_path / "rep").exists()


def test_report_json_is_written_before_any_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    report = EvalReport(["A", "B"], 2, {"balanced_accuracy": 0.5}, {}, {}, 1.0)

    def broken(r: Any, out: Path) -> Path:
        raise RuntimeError("a plot failed")

    monkeypatch.setattr(figures, "plot_confusion", broken)
    with pytest.raises(RuntimeError, match="a plot failed"):
        write_report(report, tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["closed"] == {"balanced_accuracy": 0.5} and saved["plots"] == [] and saved["partial"] is None


@pytest.mark.slow  # a whole eval: 10 fits of the tiny recipe
@pytest.mark.fluidsynth
def test_without_matplotlib_eval_writes_report_json_and_says_each_fit(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_eval: None
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = _eval(corpus_dir, tmp_path / "rep")
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines()[0] == NO_PLOTS  # said before any work
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert saved["partial"] is None and saved["seeds"] == [0, 1] and saved["plots"] == []
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["report.json"]
    # progress: 2 seeds x (2 folds + 3 left-out composers) = 10 fits, a line for each (stderr is no terminal)
    fits = [ln for ln in r.stderr.splitlines() if ln.startswith("eval: ")]
    assert fits[0] == "eval: 0/10 done, 0s so far" and re.fullmatch(r"eval: 10/10 done in \d+\.\ds", fits[-1])
    assert [int(ln.split()[1].split("/")[0]) for ln in fits] == list(range(11))
    assert all(re.search(r", about \d+(m\d\ds)?s? left$", ln) for ln in fits[1:-1]), fits


@pytest.mark.slow  # an eval stopped in its 7th fit: 6 fits of the tiny recipe
@pytest.mark.fluidsynth
def test_an_interrupted_eval_keeps_a_partial_report(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_eval: None
) -> None:
    real_fit, calls = protocol._fit, [0]

    def fit(*args: Any, **kw: Any) -> Any:  # Ctrl-C during the 7th fit: seed 0 done (5 fits), seed 1 one fold in
        calls[0] += 1
        if calls[0] == 7:
            raise KeyboardInterrupt
        return real_fit(*args, **kw)

    monkeypatch.setattr(protocol, "_fit", fit)
    r = _eval(corpus_dir, tmp_path / "rep", "--no-plots")
    assert r.exit_code == 130
    assert r.stderr.splitlines()[-1] == (
        f"musicidx: interrupted: {tmp_path / 'rep'}/report.json keeps the 6 of 10 fits finished (a partial report)"
    )
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    p = saved["partial"]
    assert (p["fits_done"], p["fits_total"], p["seeds_finished"]) == (6, 10, [0]) and "stopped early" in p["note"]
    assert p["unfinished_seed"]["seed"] == 1 and [f["fold"] for f in p["unfinished_seed"]["closed_folds"]] == [0]
    assert p["unfinished_seed"]["open_left_out"] == {}
    assert saved["seeds"] == [0] and saved["closed"]["tracks"] == 12 and set(saved["open"]["per_composer"]) == {
        "Alpha", "Beta", "Gamma"
    }  # fmt: skip
    assert saved["summary"]["closed.original.balanced_accuracy"]["values"] == [
        saved["per_seed"][0]["closed.original.balanced_accuracy"]
    ]
