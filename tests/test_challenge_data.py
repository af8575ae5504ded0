"""On the challenge data in ../shared/data: a small build, and two of the test files scored."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tiny import SHARED_DATA

from musicidx.cli import cli
from musicidx.encoder.soundfont import SoundFont
from musicidx.indexer.corpus import work_of

pytestmark = [
    pytest.mark.shared,
    pytest.mark.fluidsynth,
    pytest.mark.skipif(
        not (SHARED_DATA / "musicians").is_dir() or not (SHARED_DATA / "test").is_dir(),
        reason=f"the challenge data (musicians/ and test/) is not at {SHARED_DATA}",
    ),
]

COMPOSERS = ("Bach", "Brahms", "Schubert")


def _three_works(composer: str) -> list[Path]:
    """The first file of each of the composer's first three works (so a work can be held out)."""
    chosen: dict[str, Path] = {}
    for f in sorted((SHARED_DATA / "musicians" / composer).glob("*.mid")):
        chosen.setdefault(work_of(f), f)
    return list(chosen.values())[:3]


@pytest.mark.slow  # a build of nine real pieces
def test_small_build_then_score_two_test_files(tmp_path: Path, tiny_cli_defaults: None) -> None:
    corpus = tmp_path / "corpus"
    for composer in COMPOSERS:
        (corpus / composer).mkdir(parents=True)
        for f in _three_works(composer):
            os.symlink(f, corpus / composer / f.name)
    tests = tmp_path / "test"
    tests.mkdir()
    picked = sorted((SHARED_DATA / "test").glob("*.mid"))[:2]
    for f in picked:
        os.symlink(f, tests / f.name)
    runner = CliRunner()
    idx = tmp_path / "idx"
    r = runner.invoke(
        cli, ["build", str(corpus), "--out", str(idx), "--workers", "1", "--cache-dir", str(tmp_path / "c")]
    )
    assert r.exit_code == 0, r.output
    clips = re.search(r"^tracks       9 \(9 works\), (\d+) clips$", r.stdout, re.M)
    assert clips and 9 <= int(clips[1]) <= 27, r.stdout  # 3 windows a track, silent ones dropped
    assert "composers    Bach, Brahms, Schubert" in r.stdout and "skipped" not in r.stdout
    out = tmp_path / "s.csv"
    r = runner.invoke(cli, ["score", str(tests), "--index", str(idx), "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open(newline="")))
    assert [row["file"] for row in rows] == [f.name for f in picked]
    for row in rows:
        assert row["status"] == "ok" and row["composer"] in COMPOSERS and row["error"] == ""
        assert 0.0 <= float(row["confidence"]) <= 1.0 and np.isfinite(float(row["novelty"]))
        assert row["nearest_track"].split("/")[0] in COMPOSERS


def test_the_two_files_the_seed_could_not_convert_render_to_audio(soundfont: SoundFont) -> None:
    from musicidx.encoder.config import FeatureConfig
    from musicidx.encoder.midi import load_midi
    from musicidx.encoder.render import render_clips

    cfg = FeatureConfig(clips_per_track=2)
    for name in (
        "Violin Sonata No 7 in C minor_OP30NO2_2572_bevs7c.mid",
        "Violin Sonata No 7 in C minor_OP30NO2_2573_bevs7d.mid",
    ):
        f = SHARED_DATA / "musicians" / "Beethoven" / name
        clips = render_clips(load_midi(f), cfg=cfg, soundfont=soundfont, path=f)
        assert len(clips.audio) == 2 and float(abs(clips.audio).max()) > 0.01
