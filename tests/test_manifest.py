"""The typed manifest: indexes written by earlier versions load and are written back as they were,
and a field of the wrong type is refused in one line naming the file and the field.

``golden/manifest-v3-add.json`` and ``golden/manifest-v3-frozen.json`` were written by the code
before the manifest was typed (commit f8bf088): a tiny corpus built with the tiny configs then
``add``-ed to, and built with the shipped ``m21-lieder-small-v1`` encoder frozen (the corpus root
replaced by ``/data/corpus``).  ``golden/manifest-v2.json`` has the fields and order of format 2 as
commit 0658bd9 wrote it: no recipe, encoder origin, thresholds by k, calibration verdict or FAISS
measurements.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tiny import SyntheticIndex

from musicidx.encoder.recipe import Recipe
from musicidx.indexer.format import read_index
from musicidx.indexer.manifest import IndexFormatError, Manifest, read_manifest

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", ["manifest-v3-add.json", "manifest-v3-frozen.json", "manifest-v2.json"])
def test_manifests_of_earlier_versions_are_written_back_byte_for_byte(name: str) -> None:
    """Byte for byte, but for recipe keys added since (written at their defaults, after the others)."""
    text = (GOLDEN / name).read_text()
    data = json.loads(text)
    if "recipe" in data:
        added = {k: v for k, v in Recipe().to_dict().items() if k not in data["recipe"]}
        assert set(added) <= {"head"}  # keys a recipe gained after these indexes were written
        data["recipe"].update(added)
        text = json.dumps(data, indent=2) + "\n"
    assert Manifest.from_dict(json.loads(text)).to_json() == text


def test_the_parts_of_a_manifest_are_typed() -> None:
    m = Manifest.from_dict(json.loads((GOLDEN / "manifest-v3-add.json").read_text()))
    assert m.recipe is not None and m.recipe.model == m.model and m.recipe.k == m.k == 10
    assert m.encoder is not None and m.encoder.name is None  # trained in the build
    assert m.training is not None and m.training.config.epochs == 2 and len(m.training.history) == 2
    assert m.novelty.thresholds_by_k is not None and sorted(m.novelty.thresholds_by_k) == [1, 3, 5, 10, 20]
    assert m.novelty.calibrated_on is not None and m.novelty.calibrated_on.tracks == 6
    assert m.novelty.calibration() == (False, m.novelty.uncalibrated_reason)
    assert m.skipped is not None and m.skipped[0].path == "Alpha/broken.mid"
    assert m.enrolled is not None and m.enrolled[0].new_composers == ("Delta",)
    assert m.faiss.recall_at_10 is not None and m.faiss.recall_at_10.queries == 36
    frozen = Manifest.from_dict(json.loads((GOLDEN / "manifest-v3-frozen.json").read_text()))
    assert frozen.encoder is not None and (frozen.encoder.name, frozen.encoder.finetuned) == (
        "m21-lieder-small-v1",
        False,
    )


def test_a_format_2_manifest_loads_with_the_later_fields_absent() -> None:
    m = Manifest.from_dict(json.loads((GOLDEN / "manifest-v2.json").read_text()))
    assert (m.format_version, m.recipe, m.encoder, m.warnings, m.corpus_root) == (2, None, None, None, None)
    assert m.faiss.chosen is None and m.faiss.recall_at_10 is None
    assert m.novelty.thresholds_by_k is None and m.novelty_thresholds() == {10: m.novelty.threshold}
    calibrated, why = m.novelty.calibration()  # judged by its counts: 4 tracks of 3 works are too few
    assert not calibrated and why is not None and "only 4 held-out tracks of 3 works" in why


def test_keys_this_version_does_not_know_are_kept() -> None:
    data = json.loads((GOLDEN / "manifest-v2.json").read_text())
    data["written_by_a_newer_minor"] = {"x": [1, 2]}
    m = Manifest.from_dict(data)
    assert m.extra == {"written_by_a_newer_minor": {"x": [1, 2]}}
    assert json.loads(m.to_json()) == data


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set the manifest field at dotted ``path`` (``[0]`` indexes a list)."""

    def change(m: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            m = m[int(p)] if p.isdigit() else m[p]
        m[last] = value

    return change


BAD_FIELDS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "threshold a string": (_set("novelty.threshold", "x"), r"novelty.threshold is 'x', not a number"),
    "k a boolean": (_set("k", True), r"k is True, not an integer"),
    "no counts": (lambda m: m.pop("counts"), r"no counts"),
    "composers a list": (_set("composers", ["Alpha"]), r"composers is \['Alpha'\], not an object"),
    "a count missing": (lambda m: m["counts"].pop("works"), r"no counts.works"),
    "thresholds not by k": (
        _set("novelty.thresholds_by_k", {"four": 0.5}),
        r"novelty.thresholds_by_k is \{'four': 0.5\}, not numbers by k",
    ),
    "soundfont a string": (_set("soundfont", "TimGM6mb.sf2"), r"soundfont is 'TimGM6mb.sf2', not an object"),
}


@pytest.mark.parametrize("bad", BAD_FIELDS, ids=list(BAD_FIELDS))
def test_a_field_of_the_wrong_type_is_refused_in_one_line(synthetic_index: SyntheticIndex, bad: str) -> None:
    change, reason = BAD_FIELDS[bad]
    path = synthetic_index.path / "manifest.json"
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match=rf"^{path}: manifest.json is missing or has bad fields \({reason}\)$"):
        read_index(synthetic_index.path)
    with pytest.raises(IndexFormatError) as info:
        read_manifest(synthetic_index.path)
    assert "\n" not in str(info.value)


def test_a_saved_manifest_reads_back_equal(synthetic_index: SyntheticIndex) -> None:
    m = read_manifest(synthetic_index.path)
    assert m.to_json() == (synthetic_index.path / "manifest.json").read_text()
    assert m.encoder_sha256 is not None and m.novelty.thresholds_by_k is None  # absent stays absent
