"""A threshold calibrated on too few held-out works backs no verdict (issue 19, item 1).

Two tiny corpora a new user might try: 3 composers x 2 works (every file a work of its own), and
3 composers x 1 work of 2 movements (nothing can be held out).  Both build, and both say
everywhere that the novelty threshold is uncalibrated: the build's warning line (with the number of
works per composer a calibrated verdict needs), the manifest, ``info``, every answer's text and JSON
(``"calibrated": false``, ``"is_new": null``) and ``/v1/info``, which the page reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import midi_factory
import numpy as np
import pytest
from click.testing import CliRunner
from tiny import SyntheticIndex

from musicidx.cli import cli
from musicidx.cli.text import render_answer
from musicidx.indexer.calibration import (
    MIN_CALIBRATION_TRACKS,
    MIN_CALIBRATION_WORKS,
    calibration_shortfall,
    works_needed_per_composer,
)
from musicidx.indexer.manifest import Novelty
from musicidx.query.engine import Searcher


def test_the_minimum_calibration_is_stated_and_applied() -> None:
    assert (MIN_CALIBRATION_TRACKS, MIN_CALIBRATION_WORKS) == (8, 4)
    assert calibration_shortfall(8, 4) is None and calibration_shortfall(40, 12) is None
    assert calibration_shortfall(3, 3) == (
        "calibrated on only 3 held-out tracks of 3 works; a verdict needs at least 8 tracks of 4 works held out "
        "of training"
    )
    assert calibration_shortfall(9, 3) is not None  # nine movements of three works are not enough either
    assert calibration_shortfall(100, 50, seen_in_training=True) is not None  # trained-on works never count
    # the build's advice: 8 held-out single-track works over 3 composers, a fifth of each composer's works held out
    assert works_needed_per_composer(3, tracks_per_work=1.0, val_fraction=0.2) == 14
    assert works_needed_per_composer(4, tracks_per_work=2.0, val_fraction=0.2) == 5  # 4 works, 8 tracks
    assert works_needed_per_composer(30, tracks_per_work=1.0, val_fraction=0.2) == 2  # never fewer than two


def test_an_index_written_before_the_flag_is_judged_by_its_counts() -> None:
    def novelty(**on: Any) -> Novelty:
        return Novelty.from_dict({"threshold": 0.1, "calibrated_on": on})

    assert novelty(tracks=38, works=16, how="held-out works").calibration() == (True, None)
    calibrated, why = novelty(tracks=3, works=3, how="held-out works").calibration()
    assert not calibrated and why is not None and "only 3 held-out tracks" in why
    lowo = novelty(tracks=0, works=0, how="no work could be held out: each track against ...")
    assert lowo.calibration()[0] is False
    assert Novelty.from_dict({"threshold": 0.1}).calibration() == (True, None)  # records nothing to judge by


def test_an_uncalibrated_answer_claims_no_verdict(synthetic_index: SyntheticIndex) -> None:
    m = json.loads((synthetic_index.path / "manifest.json").read_text())
    m["novelty"].update(calibrated=False, uncalibrated_reason="calibrated on only 3 held-out tracks of 3 works")
    (synthetic_index.path / "manifest.json").write_text(json.dumps(m))
    s = Searcher(synthetic_index.path)
    a = s.query_features(synthetic_index.feats[4:6], np.array([0.0, 2.0]), name="q.mid").to_dict()
    assert (a["calibrated"], a["is_new"]) == (False, None) and a["novelty"] >= 0.0
    verdict = render_answer(a).splitlines()[3]
    assert verdict.startswith("  verdict      none: the index's novelty threshold is uncalibrated")
    assert "vs the threshold 0.5 uncalibrated for k=4;" in verdict and "stay under it" not in verdict
    same = synthetic_index.contents.clips.column("notes_sha256")[0].as_py()  # a training track's notes: known
    b = s.query_features(synthetic_index.feats[0:2], np.array([0.0, 2.0]), name="t.mid", notes_sha256=same)
    assert (b.is_new, b.calibrated) == (False, False)
    assert "uncalibrated, but none is needed here" in render_answer(b.to_dict())


# ----------------------------------------------------------------------------- real tiny builds


def _small_corpus(root: Path, *, movements: bool) -> Path:
    """3 composers: two works of one track each, or (``movements``) one work of two movements."""
    rng = np.random.default_rng(11)
    names = ("Sonata No 1_OP1_1001_s1-1.mid", "Sonata No 1_OP1_1002_s1-2.mid") if movements else ("A.mid", "B.mid")
    for composer, style in midi_factory.STYLES.items():
        (root / composer).mkdir(parents=True)
        for name in names:
            style(root / composer / name, rng)
    return root


@pytest.mark.fluidsynth
@pytest.mark.parametrize(
    ("movements", "held_out", "needed"),
    [(False, "only 3 held-out tracks of 3 works", 8), (True, "6 tracks of 3 works the encoder trained on", 4)],
    ids=["3x2-works", "3x1-work-of-2-movements"],
)
def test_a_small_corpus_is_uncalibrated_everywhere(
    tmp_path: Path, tiny_cli_defaults: None, movements: bool, held_out: str, needed: int
) -> None:
    src, out = _small_corpus(tmp_path / "c", movements=movements), tmp_path / "idx"
    r = CliRunner().invoke(cli, ["build", str(src), "--out", str(out), "--workers", "1", "--no-cache"])
    assert r.exit_code == 0, r.output
    # the build: a warning line with the word and the works per composer needed (tiny configs hold out 34 %)
    (warning,) = [ln for ln in r.stdout.splitlines() if ln.startswith("warning") and "uncalibrated" in ln]
    assert f"a calibrated verdict needs about {needed} works per composer here (3 composers" in warning
    (novelty,) = [ln for ln in r.stdout.splitlines() if ln.startswith("novelty ")]
    assert "UNCALIBRATED" in novelty and held_out in novelty and "accepts 95%" not in novelty
    # the manifest
    m = json.loads((out / "manifest.json").read_text())
    assert m["novelty"]["calibrated"] is False and held_out in m["novelty"]["uncalibrated_reason"]
    assert m["novelty"]["min_calibration"] == {"tracks": 8, "works": 4}
    assert any("uncalibrated" in w for w in m["warnings"])
    # info
    info = CliRunner().invoke(cli, ["info", "--index", str(out)]).stdout
    (line,) = [ln for ln in info.splitlines() if ln.startswith("novelty ")]
    assert "UNCALIBRATED" in line and held_out in line
    # every answer, JSON and text: the novelty, no verdict
    piece = midi_factory.STYLES["Beta"](tmp_path / "new piece.mid", np.random.default_rng(99))
    q = CliRunner().invoke(cli, ["query", str(piece), "--index", str(out), "--json"])
    a = json.loads(q.stdout)
    assert (a["calibrated"], a["is_new"]) == (False, None) and a["novelty"] >= 0.0
    t = CliRunner().invoke(cli, ["query", str(piece), "--index", str(out)]).stdout
    assert "verdict      none: the index's novelty threshold is uncalibrated" in t
