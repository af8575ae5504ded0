"""Answers a person can read (issue 13, item 5): the vote and the verdict in words, a distance that
tells tracks apart, one rounding policy for JSON, votes and CSV, and UTF-8 JSON."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from midi_factory import TRACK_NAMES
from tiny import SyntheticIndex

from musicidx.cli import cli
from musicidx.cli.text import render_answer
from musicidx.query.engine import SCORE_DECIMALS, Searcher


def _answer(index: SyntheticIndex, **novelty: Any) -> dict[str, Any]:
    m = json.loads((index.path / "manifest.json").read_text())
    m["novelty"].update(novelty)
    (index.path / "manifest.json").write_text(json.dumps(m))
    r = Searcher(index.path).query_features(index.feats[4:6], np.array([0.0, 2.0]), name="q.mid")  # Beta's clips
    return r.to_dict()


def test_a_known_composer_in_words(synthetic_index: SyntheticIndex) -> None:
    a = _answer(synthetic_index, threshold=2.0, accept_rate=0.95)
    lines = render_answer(a).splitlines()
    assert lines[0] == "q.mid"
    assert lines[1] == f"  composer     Beta (confidence {a['confidence']:.2f}: its share of the vote)"
    assert lines[2].startswith("  vote         Beta ") and lines[2].endswith(
        ": each of its 2 clips votes for the composers of its 4 nearest index clips, weighted by similarity and "
        "divided by each composer's share of the index (composer-balanced: a composer with many tracks does not "
        "win by numbers), so the nearest tracks below need not agree"
    )
    assert re.fullmatch(
        r"  verdict      a known composer: novelty [0-9.]+ \(the median distance of its clips to their 4th nearest "
        r"index clip\) vs the threshold 2 calibrated for k=4 \(95% of held-out pieces by known composers stay "
        r"under it\)",
        lines[3],
    ), lines[3]
    assert len(lines) == 7 and all(ln.startswith("  nearest      ") for ln in lines[4:])


def test_a_new_composer_in_words(synthetic_index: SyntheticIndex) -> None:
    a = _answer(synthetic_index, threshold=0.0)  # no accept_rate recorded: the verdict does not invent one
    assert a["is_new"]
    verdict = render_answer(a).splitlines()[3]
    assert verdict.startswith("  verdict      probably a composer NOT in the index: novelty ")
    assert verdict.endswith("vs the threshold 0 calibrated for k=4; Beta is only the nearest known composer")


def test_the_same_composition_in_words(synthetic_index: SyntheticIndex) -> None:
    s = Searcher(synthetic_index.path)
    alpha = synthetic_index.contents.clips.column("notes_sha256")[0].as_py()
    a = s.query_features(synthetic_index.feats[4:6], np.array([0.0, 2.0]), name="q", notes_sha256=alpha).to_dict()
    lines = render_answer(a).splitlines()
    assert lines[2] == "  vote         Alpha 1.00, the composer of that track (no vote needed)"
    assert lines[3] == "  verdict      a known composer: it plays the same notes as the training track " + (
        "Alpha/Work 0_OP0_0_w.mid"
    )


def test_nearest_tracks_are_told_apart_by_their_distance() -> None:
    """Similarities of 0.99912, 0.99934, 0.99961 all printed as 0.999; their distances do not."""
    nearest = [
        {"path": f"B/{i}.mid", "composer": "B", "work": "w", "distance": round(1 - s, 6), "similarity": s}
        | {"query_start_s": 12.5, "match_start_s": 40.0}
        for i, s in enumerate((0.99961, 0.99934, 0.99912))
    ]
    a = {"file": "q.mid", "composer": "B", "confidence": 0.7, "votes": {"A": 0.3, "B": 0.7}, "novelty": 0.01}
    a |= {"threshold": 0.05, "k": 10, "accept_rate": 0.95, "is_new": False, "same_composition": False}
    a |= {"same_track": None, "nearest": nearest, "clips": 8}
    lines = render_answer(a).splitlines()[4:]
    assert lines == [
        f"  nearest      B/{i}.mid (B): distance {d}; best-matching clips start at 12.5s in the query and 40.0s "
        "in this track"
        for i, d in enumerate(("0.00039", "0.00066", "0.00088"))
    ]


def test_every_score_in_an_answer_has_the_same_rounding(synthetic_index: SyntheticIndex) -> None:
    a = _answer(synthetic_index, threshold=0.123456789)
    scores = [a["confidence"], a["novelty"], a["threshold"], *a["votes"].values()]
    scores += [n[key] for n in a["nearest"] for key in ("distance", "similarity")]
    assert all(x == round(x, SCORE_DECIMALS) for x in scores) and a["threshold"] == 0.123457
    assert all(n["distance"] == round(1 - n["similarity"], SCORE_DECIMALS) for n in a["nearest"])


@pytest.mark.fluidsynth
def test_json_and_csv_carry_the_same_numbers_and_utf8_names(
    built_index: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "q"
    folder.mkdir()
    f = folder / "Dvořák – Humoreske.mid"
    shutil.copy(corpus_dir / "Alpha" / TRACK_NAMES[2], f)
    q = CliRunner().invoke(cli, ["query", str(f), "--index", str(built_index), "--json"])
    assert q.exit_code == 0, q.output
    assert "Dvořák – Humoreske.mid" in q.stdout and "\\u" not in q.stdout  # plain UTF-8, not escapes
    a = json.loads(q.stdout)
    out = tmp_path / "s.csv"
    r = CliRunner().invoke(cli, ["score", str(folder), "--index", str(built_index), "--out", str(out)])
    assert r.exit_code == 0, r.output
    (row,) = csv.DictReader(out.open(newline="", encoding="utf-8"))
    assert row["file"] == f.name
    assert (float(row["confidence"]), float(row["novelty"])) == (a["confidence"], a["novelty"])
    assert (row["confidence"], row["novelty"]) == (str(a["confidence"]), str(a["novelty"]))


def test_a_cosine_past_1_is_distance_0_not_minus_0(synthetic_index: SyntheticIndex) -> None:
    """float32 inner products of a clip with itself can exceed 1: the printed distance stays "0"."""
    from musicidx.indexer.neighbours import Neighbours

    s = Searcher(synthetic_index.path)
    nb = Neighbours(np.array([[4, 5, 0, 1]]), np.array([[-2e-7, 0.1, 0.2, 0.3]], np.float32))
    top = s.answer(nb, np.array([0.0]), name="q").nearest[0]
    assert (str(top.distance), top.similarity) == ("0.0", 1.0)
