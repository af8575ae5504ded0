"""``musicidx demo``: the recipe, the music21 export and (slow) the whole demo on a reduced recipe."""

from __future__ import annotations

import copy
import csv
import importlib.metadata
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from musicidx.demo import run
from musicidx.demo.export import export_corpus
from musicidx.demo.recipe import DEMO_FEATURES, DemoError, load_recipe, parse_recipe
from musicidx.encoder.scores import ScoreDependencyError, ScoreError
from musicidx.encoder.scores import export_score as export_piece
from musicidx.indexer.corpus import work_of

SHIPPED = Path(__file__).resolve().parents[1] / "musicidx" / "data" / "demo_recipe.json"

#: A reduced recipe of short pieces: two known composers, one new; exports in a few seconds.
TINY: dict[str, Any] = {
    "version": 1,
    "program": 0,
    "new_composer": "Mozart",
    "composers": {
        "Bach": {
            "pieces": ["bach/bwv66.6.mxl", "bach/bwv26.6.mxl", "bach/bwv3.6.mxl"],
            "heldout": ["bach/bwv3.6.mxl"],
        },
        "Palestrina": {"pieces": ["palestrina/Kyrie_00.krn", "palestrina/Kyrie_02.krn"]},
        "Mozart": {"pieces": ["mozart/k545/movement1_exposition.mxl"]},
    },
}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _tiny(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(TINY)
    data.update(changes)
    return data


# ------------------------------------------------------------------------------ recipe


def test_shipped_recipe_is_found_by_the_package_and_valid() -> None:
    recipe = load_recipe()  # through importlib.resources
    assert recipe == load_recipe(SHIPPED)
    counts = recipe.counts()
    assert recipe.new_composer not in recipe.known_composers
    assert counts[recipe.new_composer]["indexed"] == 0 and counts[recipe.new_composer]["heldout"] >= 5
    assert len(recipe.known_composers) >= 3
    for c in recipe.known_composers:
        assert 10 <= counts[c]["indexed"] <= 20 and counts[c]["heldout"] >= 2
    assert (SHIPPED.parents[2] / "data" / "demo_recipe.json").read_text() == SHIPPED.read_text()


def test_piece_names_group_movements_into_works() -> None:
    recipe = parse_recipe(
        _tiny(
            composers={
                **TINY["composers"],
                "Mozart": {"pieces": ["mozart/k80/movement1.mxl", "mozart/k80/movement2.mxl", "mozart/k545/m_1.mxl"]},
            }
        )
    )
    by_source = {p.source: p for p in recipe.pieces}
    m1, m2 = by_source["mozart/k80/movement1.mxl"], by_source["mozart/k80/movement2.mxl"]
    assert (m1.name, m1.rel_path) == ("k80_K80_1_movement1.mid", "heldout/k80_K80_1_movement1.mid")
    assert work_of(m1.name) == work_of(m2.name) == "k80_K80"
    assert work_of(by_source["mozart/k545/m_1.mxl"].name) != work_of(m1.name)
    kyrie = by_source["palestrina/Kyrie_00.krn"]
    assert (kyrie.name, kyrie.rel_path, kyrie.heldout) == ("Kyrie-00.mid", "midi/Palestrina/Kyrie-00.mid", False)
    assert work_of(kyrie.name) == "Kyrie-00"
    assert by_source["bach/bwv3.6.mxl"].heldout and not by_source["bach/bwv66.6.mxl"].heldout


def test_recipe_overrides_features_and_training() -> None:
    recipe = parse_recipe(_tiny(features={"clip_seconds": 4.0}, training={"epochs": 2}))
    assert recipe.features.clip_seconds == 4.0 and recipe.features.clips_per_track == DEMO_FEATURES.clips_per_track
    assert recipe.training.epochs == 2


BACH = TINY["composers"]["Bach"]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"version": 2}, "version must be 1"),
        ({"extra": 1}, r"unknown key\(s\) \['extra'\]"),
        ({"program": 128}, "program must be"),
        ({"new_composer": "Haydn"}, "new_composer 'Haydn' is not one of"),
        ({"composers": {}}, "'composers' must map"),
        ({"composers": {**TINY["composers"], "Bach/..": BACH}}, "not a plain folder name"),
        ({"composers": {**TINY["composers"], "Bach": {"pieces": []}}}, "non-empty list"),
        ({"composers": {**TINY["composers"], "Bach": {**BACH, "extra": []}}}, "expected"),
        ({"composers": {**TINY["composers"], "Bach": {"pieces": ["bach/bwv66.6"]}}}, "with its extension"),
        ({"composers": {**TINY["composers"], "Bach": {"pieces": ["bach/../x.mxl"]}}}, "with its extension"),
        ({"composers": {**TINY["composers"], "Bach": {**BACH, "heldout": ["bach/x.mxl"]}}}, "not among its pieces"),
        ({"composers": {**TINY["composers"], "Mozart": {"pieces": ["bach/bwv66.6.mxl"]}}}, "listed twice"),
        (
            {"composers": {**TINY["composers"], "Mozart": {"pieces": ["mozart/k545/a.mxl"], "heldout": []}}},
            None,  # an empty heldout list for the new composer is fine
        ),
        (
            {"composers": {**TINY["composers"], "Mozart": {"pieces": ["mozart/a.mxl"], "heldout": ["mozart/a.mxl"]}}},
            "list no 'heldout'",
        ),
        (
            {"composers": {**TINY["composers"], "Bach": {**BACH, "heldout": ["bach/bwv66.6.mxl", "bach/bwv3.6.mxl"]}}},
            "at least two indexed works",
        ),
        (
            {
                "composers": {
                    **TINY["composers"],
                    "Palestrina": {
                        "pieces": ["palestrina/Kyrie_00.krn", "palestrina/m/a.krn", "palestrina/m/b.krn"],
                        "heldout": ["palestrina/m/b.krn"],
                    },
                }
            },
            r"work\(s\) \['m'\] are partly held out",
        ),
        (
            {
                "composers": {
                    **TINY["composers"],
                    "Palestrina": {
                        "pieces": ["palestrina/bwv3.6.krn", "palestrina/a.krn", "palestrina/b.krn"],
                        "heldout": ["palestrina/bwv3.6.krn"],
                    },
                }
            },
            "both be exported as heldout/bwv3.6.mid",
        ),
        ({"composers": {"Bach": BACH, "Mozart": TINY["composers"]["Mozart"]}}, "at least two known composers"),
        ({"training": {"epochs": 2, "nope": 1}}, "features/training"),
        ({"features": {"sample_rate": 100}}, "features/training"),
    ],
)
def test_recipe_validation(changes: dict[str, Any], match: str | None) -> None:
    if match is None:
        parse_recipe(_tiny(**changes))
        return
    with pytest.raises(DemoError, match=match):
        parse_recipe(_tiny(**changes))


def test_recipe_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="cannot read the demo recipe"):
        load_recipe(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DemoError, match="not valid JSON"):
        load_recipe(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DemoError, match="expected a JSON object"):
        load_recipe(tmp_path / "list.json")


def test_missing_music21_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "music21":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(ScoreDependencyError, match=r"pip install 'musicidx\[demo\]'"):
        export_corpus(parse_recipe(TINY), tmp_path / "out")
    monkeypatch.setitem(sys.modules, "music21", None)  # import fails
    with pytest.raises(ScoreDependencyError, match=r"pip install 'musicidx\[demo\]'"):
        export_piece("bach/bwv66.6.mxl", tmp_path / "x.mid")


# ------------------------------------------------------------------------------ export


def test_export_one_chorale_quietly(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("music21")
    from musicidx.encoder.midi import load_midi

    dest = tmp_path / "sub" / "bwv66.6.mid"
    export_piece("bach/bwv66.6.mxl", dest, program=0)
    pm = load_midi(dest)
    assert len(pm.instruments) == 4  # soprano, alto, tenor, bass
    assert {i.program for i in pm.instruments} == {0}
    assert 20 < pm.get_end_time() < 25
    assert [p.name for p in dest.parent.iterdir()] == ["bwv66.6.mid"]  # no temporary file left
    assert capfd.readouterr() == ("", "")


def test_export_sets_the_program_everywhere(tmp_path: Path) -> None:
    pytest.importorskip("music21")
    from musicidx.encoder.midi import load_midi

    export_piece("palestrina/Kyrie_00.krn", tmp_path / "a.mid", program=None)  # music21 assigns 'Voice Oohs'
    assert {i.program for i in load_midi(tmp_path / "a.mid").instruments} == {53}
    export_piece("palestrina/Kyrie_00.krn", tmp_path / "b.mid", program=19)
    assert {i.program for i in load_midi(tmp_path / "b.mid").instruments} == {19}


def test_export_of_a_missing_piece_fails_cleanly(tmp_path: Path) -> None:
    pytest.importorskip("music21")
    with pytest.raises(ScoreError, match="music21 cannot parse 'bach/nope.mxl'"):
        export_piece("bach/nope.mxl", tmp_path / "x.mid")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # music21 exports in worker processes, four times
def test_export_corpus_is_cached_and_refuses_strangers(tmp_path: Path) -> None:
    pytest.importorskip("music21")
    recipe, out = parse_recipe(TINY), tmp_path / "demo"
    first = export_corpus(recipe, out, workers=1)
    assert (first.exported, first.reused) == (6, 0)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mid")) == [
        "heldout/bwv3.6.mid",
        "heldout/k545_K545_1_movement1-exposition.mid",
        "midi/Bach/bwv26.6.mid",
        "midi/Bach/bwv66.6.mid",
        "midi/Palestrina/Kyrie-00.mid",
        "midi/Palestrina/Kyrie-02.mid",
    ]
    record = json.loads((out / "exports.json").read_text())
    assert record["files"]["midi/Bach/bwv66.6.mid"]["source"] == "bach/bwv66.6.mxl"

    again = export_corpus(recipe, out, workers=1)
    assert (again.exported, again.reused) == (0, 6)

    (out / "midi/Bach/bwv26.6.mid").write_bytes(b"MThd damaged")  # changed content: exported again
    assert export_corpus(recipe, out, workers=1).exported == 1

    smaller = _tiny()
    smaller["composers"]["Palestrina"] = {"pieces": ["palestrina/Kyrie_00.krn", "palestrina/Kyrie_09.krn"]}
    shrunk = export_corpus(parse_recipe(smaller), out, workers=1)
    assert shrunk.removed == ["midi/Palestrina/Kyrie-02.mid"] and shrunk.exported == 1

    (out / "midi" / "Bach" / "mine.mid").write_bytes(b"MThd")
    with pytest.raises(DemoError, match="did not make"):
        export_corpus(recipe, out, workers=1)


# ------------------------------------------------------------------------------ the demo


@pytest.mark.slow
@pytest.mark.fluidsynth
def test_demo_end_to_end_then_warm_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("music21")
    from click.testing import CliRunner

    from musicidx.cli import cli

    small = _tiny(
        features={"clip_seconds": 4.0, "clips_per_track": 3, "min_clip_hop_seconds": 2.0},
        training={"epochs": 2, "batches_per_epoch": 3, "clips_per_composer": 4, "crop_seconds": 3.0},
    )
    recipe, out = parse_recipe(small), tmp_path / "demo"
    r = run.run_demo(out, recipe=recipe, workers=1)
    assert r.known_composers == ["Bach", "Palestrina"] and r.new_composer == "Mozart"
    assert [(x.file, x.true_composer, x.known) for x in r.rows] == [
        ("bwv3.6.mid", "Bach", True),
        ("k545_K545_1_movement1-exposition.mid", "Mozart", False),
    ]
    assert all(x.status == "ok" and x.composer in ("Bach", "Palestrina") for x in r.rows)
    assert r.known_accuracy in (0.0, 1.0) and r.new_flagged in (0.0, 1.0) and r.known_flagged_new in (0.0, 1.0)
    assert r.build.fit.n_tracks == 4 and (r.index_dir / "manifest.json").is_file()
    with r.scores_csv.open() as fh:
        table = list(csv.DictReader(fh))
    assert [(t["file"], t["true_composer"], t["status"]) for t in table] == [
        ("bwv3.6.mid", "Bach", "ok"),
        ("k545_K545_1_movement1-exposition.mid", "Mozart", "ok"),
    ]

    monkeypatch.setattr(run, "load_recipe", lambda path=None: recipe)
    res = CliRunner().invoke(cli, ["demo", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    warm = json.loads(res.stdout)
    assert (warm["exported"], warm["exports_reused"], warm["cached_tracks"]) == (0, 6, 4)
    assert [row["composer"] for row in warm["rows"]] == [x.composer for x in r.rows]  # deterministic
    assert warm["scores_csv"] == str(out / "scores.csv")

    res = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "bwv3.6.mid" in res.stdout and f"scores       {out / 'scores.csv'}" in res.stdout
