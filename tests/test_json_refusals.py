"""With ``--json``, a refusal of the whole command is one JSON object on stdout too (issue 19, item 5):
``{"error": {"message", "reason", "path", "exit_code"}}``, the same shape every time, beside the one
line on stderr and with the exit code unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny import SyntheticIndex

from musicidx.cli import cli

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
