"""On the challenge data in ../shared/data: a small build, and two of the test files scored."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from musicidx.cli import cli

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = [
    pytest.mark.shared,
    pytest.mark.fluidsynth,
    pytest.mark.skipif(not (SHARED / "musicians").is_dir(), reason=f"challenge data not found at {SHARED}"),
]


def test_small_build_then_score_two_test_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus"
    for composer in ("Bach", "Brahms", "Schubert"):
        (corpus / composer).mkdir(parents=True)
        for f in sorted((SHARED / "musicians" / composer).glob("*.mid"))[:4]:
            os.symlink(f, corpus / composer / f.name)
    tests = tmp_path / "test"
    tests.mkdir()
    for f in sorted((SHARED / "test").glob("*.mid"))[:2]:
        os.symlink(f, tests / f.name)
    runner = CliRunner()
    r = runner.invoke(
        cli, ["build", str(corpus), "--out", str(tmp_path / "idx"), "--epochs", "2", "--clips-per-track", "3"]
    )
    assert r.exit_code == 0, r.output
    assert "12 (" in r.output and "Bach, Brahms, Schubert" in r.output
    r = runner.invoke(cli, ["score", str(tests), "--index", str(tmp_path / "idx"), "--out", str(tmp_path / "s.csv")])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert [row["status"] for row in rows] == ["ok", "ok"]
    assert all(row["composer"] in {"Bach", "Brahms", "Schubert"} and float(row["novelty"]) >= 0 for row in rows)


def test_the_two_files_the_seed_could_not_convert_render_to_audio() -> None:
    from musicidx.encoder.config import FeatureConfig
    from musicidx.encoder.render import find_soundfont, load_midi, render_clips

    cfg = FeatureConfig(clips_per_track=2)
    for name in (
        "Violin Sonata No 7 in C minor_OP30NO2_2572_bevs7c.mid",
        "Violin Sonata No 7 in C minor_OP30NO2_2573_bevs7d.mid",
    ):
        clips = render_clips(load_midi(SHARED / "musicians" / "Beethoven" / name), cfg=cfg, soundfont=find_soundfont())
        assert len(clips.audio) == 2 and float(abs(clips.audio).max()) > 0.01
