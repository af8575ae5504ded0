"""A "new composer" verdict is only given against a threshold calibrated for the k in use.

The build calibrates one threshold per k of :data:`~musicidx.indexer.calibration.CALIBRATED_KS` that the
training clips allow (and its own k); ``query --k`` takes one of those or is refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from midi_factory import TRACK_NAMES

from musicidx.cli import cli
from musicidx.indexer.calibration import calibration_ks
from musicidx.query.engine import Searcher

pytestmark = [pytest.mark.fluidsynth]


def test_calibration_ks_are_the_builds_k_and_the_standard_ones_the_training_clips_allow() -> None:
    assert calibration_ks(10, 24) == [1, 3, 5, 10, 20]
    assert calibration_ks(7, 4) == [1, 3, 7]
    assert calibration_ks(10, 5000) == [1, 3, 5, 10, 20, 50, 100]


def test_the_build_stores_a_threshold_per_k(built_index: Path) -> None:
    m = json.loads((built_index / "manifest.json").read_text())
    by_k = m["novelty"]["thresholds_by_k"]
    assert list(by_k) == ["1", "3", "5", "10", "20"]  # 8 training tracks x 3 clips = 24 clips to search
    assert by_k["10"] == m["novelty"]["threshold"] and m["k"] == 10
    assert all(0.0 <= t <= 2.0 for t in by_k.values())
    assert by_k["1"] <= by_k["3"] <= by_k["20"], "the k-th distance grows with k, and so does its quantile"


def test_query_at_another_calibrated_k_uses_that_threshold(built_index: Path, corpus_dir: Path) -> None:
    by_k = json.loads((built_index / "manifest.json").read_text())["novelty"]["thresholds_by_k"]
    f = str(corpus_dir / "Beta" / TRACK_NAMES[3])
    for k in ("3", "20"):
        r = CliRunner().invoke(cli, ["query", f, "--index", str(built_index), "--k", k, "--json"])
        assert r.exit_code == 0, r.output
        a = json.loads(r.stdout)
        assert a["threshold"] == pytest.approx(by_k[k], abs=1e-6) and a["k"] == int(k)
        # the tiny index holds out three works: too few for a verdict at any k (tests/test_novelty_calibration.py)
        verdict = a["novelty"] > a["threshold"] if a["calibrated"] else None
        assert a["is_new"] == (False if a["same_composition"] else verdict)


@pytest.mark.parametrize(
    ("k", "message"),
    [
        (
            "7",
            r"no novelty threshold was calibrated for k=7, so its verdict would mean nothing; this index has them "
            r"for k = 1, 3, 5, 10, 20",
        ),
        ("500", r"k=500 must be between 1 and the 36 clips of the index"),
    ],
)
def test_query_at_an_uncalibrated_or_too_large_k_is_refused(
    built_index: Path, corpus_dir: Path, k: str, message: str
) -> None:
    f = str(corpus_dir / "Beta" / TRACK_NAMES[3])
    r = CliRunner().invoke(cli, ["query", f, "--index", str(built_index), "--k", k])
    assert r.exit_code == 1 and r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert line == f"musicidx: error: {built_index}: " + message.replace("\\", "")


def test_info_lists_the_thresholds_by_k(built_index: Path) -> None:
    r = CliRunner().invoke(cli, ["info", "--index", str(built_index)])
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("  by k")]
    assert line.startswith("  by k         k=1 ") and ", k=20 " in line
    assert Searcher(built_index, k=5).threshold == pytest.approx(float(line.split("k=5 ")[1].split(",")[0]), abs=1e-4)
