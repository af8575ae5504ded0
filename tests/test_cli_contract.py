"""Every command treats the same situation the same way (issue 13, item 4).

$MUSICIDX_INDEX for every command, build included; the shape of ``query --json`` depends only on
what was asked; a missing or wrong-kind input is exit 1 with one line everywhere, pointing to the
right command; ``add`` of files already enrolled is "nothing new"; ``query`` answers each file as
soon as it is done.  With ``--json``, a refusal of the whole command is one JSON object on stdout
too (issue 19, item 5): ``{"error": {"message", "reason", "path", "exit_code"}}``, the same shape
every time, beside the one line on stderr and with the exit code unchanged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from midi_factory import TRACK_NAMES
from tiny import SyntheticIndex

from musicidx.cli import cli
from musicidx.indexer.corpus import CorpusError, scan_corpus


def _one_error_line(r: Result, match: str) -> str:
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    line = r.stderr.splitlines()[-1]
    assert line.startswith("musicidx: error: ") and match in line, line
    return line


# ------------------------------------------------------------------------ without FluidSynth


def test_build_writes_to_musicidx_index_from_the_environment(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_cli_defaults: None
) -> None:
    """The destination comes from $MUSICIDX_INDEX: a folder holding a user's file there is refused."""
    target = tmp_path / "from-env"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    monkeypatch.setenv("MUSICIDX_INDEX", str(target))
    r = CliRunner().invoke(cli, ["build", str(corpus_dir), "--workers", "1", "--no-cache"])
    _one_error_line(r, f"{target}: holds files that are not part of a musicidx index (notes.txt)")
    assert (target / "notes.txt").read_text() == "mine"


def test_build_out_dot_is_refused_before_any_work(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_cli_defaults: None
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    r = CliRunner().invoke(cli, ["build", str(corpus_dir), "--out", ".", "--workers", "1", "--no-cache"])
    (line,) = r.stderr.splitlines()  # no progress lines: nothing rendered or trained
    assert (
        r.exit_code == 1 and line == "musicidx: error: .: is the current directory; give the index a folder of its own"
    )
    assert list(here.iterdir()) == []


@pytest.mark.parametrize("args", [["build", "--out", "{tmp}/idx"], ["eval"]], ids=["build", "eval"])
def test_a_missing_corpus_folder_is_exit_1(args: list[str], tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, [args[0], str(tmp_path / "missing"), *(a.format(tmp=tmp_path) for a in args[1:])])
    _one_error_line(r, f"{tmp_path / 'missing'}: corpus folder does not exist")
    assert not (tmp_path / "idx").exists()


def test_a_file_given_as_the_corpus_is_one_line(tmp_path: Path, good_midi: Path) -> None:
    r = CliRunner().invoke(cli, ["build", str(good_midi), "--out", str(tmp_path / "idx")])
    _one_error_line(r, f"{good_midi}: is a file, not a corpus folder (expected MIDI_DIR/<Composer>/*.mid)")
    assert not (tmp_path / "idx").exists()


def test_a_flat_folder_of_midi_says_what_it_found_and_the_layout_expected(tmp_path: Path, good_midi: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("a.mid", "b.MIDI"):
        shutil.copy(good_midi, flat / name)
    with pytest.raises(
        CorpusError,
        match=r"no MIDI files found where expected: found 2 MIDI file\(s\) directly in the folder, none in a "
        r"composer sub-folder; expected MIDI_DIR/<Composer>/\*\.mid, one sub-folder per composer",
    ):
        scan_corpus(flat)
    deep = tmp_path / "deep"
    (deep / "Bach" / "suites").mkdir(parents=True)
    shutil.copy(good_midi, deep / "Bach" / "suites" / "a.mid")
    with pytest.raises(CorpusError, match=r"found 1 sub-folder\(s\) \(Bach\) but no \.mid/\.midi file directly in"):
        scan_corpus(deep)


# ------------------------------------------------------------------------------ with an index


@pytest.mark.fluidsynth
def test_a_missing_input_is_exit_1_for_query_score_and_add(built_index: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    for args, match in (
        (["query", str(missing / "a.mid")], f"{missing / 'a.mid'}: "),
        (["score", str(missing), "--out", str(tmp_path / "s.csv")], f"{missing}: no such folder"),
        (["add", str(missing)], f"{missing}: corpus folder does not exist"),
    ):
        _one_error_line(CliRunner().invoke(cli, [*args, "--index", str(built_index)]), match)
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.fluidsynth
def test_score_of_a_file_points_to_query_and_query_of_a_folder_points_to_score(
    built_index: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    f = corpus_dir / "Alpha" / TRACK_NAMES[0]
    r = CliRunner().invoke(cli, ["score", str(f), "--index", str(built_index), "--out", str(tmp_path / "s.csv")])
    _one_error_line(r, f"{f}: is a file, not a folder; to answer for one file use 'musicidx query FILE'")
    r = CliRunner().invoke(cli, ["query", str(corpus_dir / "Alpha"), "--index", str(built_index)])
    _one_error_line(
        r,
        f"{corpus_dir / 'Alpha'}: is a directory, not a MIDI file; to score every MIDI file in it use 'musicidx score'",
    )
    assert r.stdout == ""


@pytest.mark.fluidsynth
def test_score_of_a_folder_without_midi_is_an_error_and_writes_no_table(built_index: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no music")
    out = tmp_path / "s.csv"
    out.write_text("an earlier table\n")
    r = CliRunner().invoke(cli, ["score", str(empty), "--index", str(built_index), "--out", str(out)])
    _one_error_line(r, f"{empty}: no MIDI files (.mid, .midi) in this folder or below; nothing to score")
    assert out.read_text() == "an earlier table\n"
    to_stdout = CliRunner().invoke(cli, ["score", str(empty), "--index", str(built_index), "--out", "-"])
    assert to_stdout.exit_code == 1 and to_stdout.stdout == ""  # not a header-only CSV


@pytest.mark.fluidsynth
@pytest.mark.parametrize("which", ["good", "failed"])
def test_query_json_for_one_file_is_one_object_whatever_the_outcome(
    built_index: Path, corpus_dir: Path, tmp_path: Path, which: str
) -> None:
    f = corpus_dir / "Beta" / TRACK_NAMES[0] if which == "good" else tmp_path / "missing.mid"
    r = CliRunner().invoke(cli, ["query", str(f), "--index", str(built_index), "--json"])
    assert r.exit_code == (0 if which == "good" else 1)
    (line,) = r.stdout.splitlines()
    a = json.loads(line)
    assert isinstance(a, dict) and a["file"] == str(f)
    assert ("error" in a) == (which == "failed") and ("composer" in a) == (which == "good")


@pytest.mark.fluidsynth
def test_query_json_for_several_files_is_one_object_per_line_in_order(
    built_index: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    files = [corpus_dir / "Beta" / TRACK_NAMES[0], tmp_path / "missing.mid", corpus_dir / "Gamma" / TRACK_NAMES[1]]
    r = CliRunner().invoke(cli, ["query", *map(str, files), "--index", str(built_index), "--json"])
    assert r.exit_code == 1
    answers = [json.loads(line) for line in r.stdout.splitlines()]
    assert [a["file"] for a in answers] == [str(f) for f in files]
    assert ["error" in a for a in answers] == [False, True, False]


@pytest.mark.fluidsynth
@pytest.mark.parametrize("as_json", [False, True])
def test_query_prints_each_answer_as_soon_as_its_file_is_done(
    built_index: Path, corpus_dir: Path, monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    """Interrupted while on the second file, the first answer is already out."""
    from musicidx.query.engine import Searcher

    real, calls = Searcher.query, []

    def query(self: Searcher, path: Any) -> Any:
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, path)

    monkeypatch.setattr(Searcher, "query", query)
    files = [str(corpus_dir / "Alpha" / TRACK_NAMES[0]), str(corpus_dir / "Beta" / TRACK_NAMES[0])]
    r = CliRunner().invoke(cli, ["query", *files, "--index", str(built_index), *(["--json"] if as_json else [])])
    assert r.exit_code == 130 and r.stderr.splitlines()[-1] == "musicidx: interrupted"
    if as_json:
        (line,) = r.stdout.splitlines()
        assert json.loads(line)["file"] == files[0]
    else:
        assert r.stdout.splitlines()[0] == files[0] and files[1] not in r.stdout


@pytest.mark.fluidsynth
def test_add_of_files_already_in_the_index_is_nothing_new(index_copy: Path, corpus_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in index_copy.iterdir()}
    r = CliRunner().invoke(cli, ["add", str(corpus_dir), "--index", str(index_copy), "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[1] == "added        nothing new: all 12 usable file(s) are already in the index"
    assert {p.name: p.read_bytes() for p in index_copy.iterdir()} == before, "the index is left as it was"
    j = CliRunner().invoke(cli, ["add", str(corpus_dir), "--index", str(index_copy), "--workers", "1", "--json"])
    rep = json.loads(j.stdout)
    assert j.exit_code == 0 and rep["added_tracks"] == 0 and len(rep["duplicates"]) == 12


# ------------------------------------------------------------------- refusals in JSON

SHAPE = {"message", "reason", "path", "exit_code"}


def _refusal(args: list[str], code: int) -> dict[str, object]:
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == code, r.output
    (line,) = r.stdout.splitlines()  # one JSON object, nothing else on stdout
    obj = json.loads(line)
    assert list(obj) == ["error"] and set(obj["error"]) == SHAPE and obj["error"]["exit_code"] == code
    assert r.stderr.splitlines()[-1].endswith(obj["error"]["message"])  # the stderr line says the same
    return dict(obj["error"])


def test_a_k_without_a_threshold_is_refused_in_json(synthetic_index: SyntheticIndex, good_midi: Path) -> None:
    e = _refusal(["query", str(good_midi), "--index", str(synthetic_index.path), "--k", "7", "--json"], 1)
    assert e["path"] == str(synthetic_index.path)
    assert str(e["reason"]).startswith("no novelty threshold was calibrated for k=7")
    (line,) = (
        CliRunner()
        .invoke(cli, ["query", str(good_midi), "--index", str(synthetic_index.path), "--k", "7"])
        .stderr.splitlines()
    )
    assert line == f"musicidx: error: {e['message']}"


@pytest.mark.parametrize(
    "args",
    [
        ["query", "x.mid", "--index", "{tmp}/none", "--json"],
        ["score", "{tmp}", "--out", "-", "--index", "{tmp}/none", "--json"],
        ["info", "--index", "{tmp}/none", "--json"],
        ["add", "{tmp}", "--index", "{tmp}/none", "--json"],
    ],
    ids=["query", "score", "info", "add"],
)
def test_a_missing_index_is_refused_in_json(tmp_path: Path, args: list[str]) -> None:
    e = _refusal([a.format(tmp=tmp_path) for a in args], 1)
    assert e["path"] == str(tmp_path / "none") and str(e["reason"]).startswith("no index here")


def test_a_usage_error_is_refused_in_json_with_exit_2() -> None:
    e = _refusal(["query", "x.mid", "--k", "0", "--json"], 2)
    assert e["path"] is None and "'--k'" in str(e["message"]) and "0" in str(e["message"])


def test_without_json_stdout_stays_empty(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["info", "--index", str(tmp_path / "none")])
    assert r.exit_code == 1 and r.stdout == "" and len(r.stderr.splitlines()) == 1
