"""Corpus scan: works from challenge-style names, the <Composer>/*.mid layout and its errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from midi_factory import TRACK_NAMES

from musicidx.indexer.corpus import CorpusError, Track, display_name, list_midi, scan_corpus, work_of


@pytest.mark.parametrize(
    ("name", "work"),
    [
        (
            "Piano Sonata No 14 in C-sharp minor_OP27NO2_2343_ps14_01.mid",
            "Piano Sonata No 14 in C-sharp minor_OP27NO2",
        ),
        ("Cello Suite 3_BWV1009_2217_cs3-1pre.mid", "Cello Suite 3_BWV1009"),
        ("Cello Suite 3_BWV1009_2218_cs3-2all.mid", "Cello Suite 3_BWV1009"),
        ("Violin Sonata No 7 in C minor_OP30NO2_2572_bevs7c.mid", "Violin Sonata No 7 in C minor_OP30NO2"),
        ("Sonata No 1_OP1_1001_s1-1.mid", "Sonata No 1_OP1"),
        ("Title_Cat_12_rest_with_more_parts.mid", "Title_Cat"),  # the rest may hold underscores
        ("Upper Case_OP9_77_x.MID", "Upper Case_OP9"),
        ("Bach/In a folder_BWV1_1_a.mid", "In a folder_BWV1"),  # only the file name counts
        ("ünïcödé 作曲_K1_3_m.mid", "ünïcödé 作曲_K1"),
        # Not in the pattern: the file is a work of its own.
        ("untitled.mid", "untitled"),
        ("two_parts.mid", "two_parts"),
        ("Title_Cat_notanumber_rest.mid", "Title_Cat_notanumber_rest"),
        ("_OP1_1001_no-title.mid", "_OP1_1001_no-title"),
        ("Title_Cat_1001_.mid", "Title_Cat_1001_"),
        ("bwv3.6.mid", "bwv3.6"),
        ("   spaces   .mid", "   spaces   "),
    ],
)
def test_work_of(name: str, work: str) -> None:
    assert work_of(name) == work
    assert work_of(Path(name)) == work


def test_movements_of_a_work_group_together_and_across_composers_stay_apart(corpus_dir: Path) -> None:
    tracks = scan_corpus(corpus_dir)
    alpha = [t for t in tracks if t.composer == "Alpha"]
    assert [t.work for t in alpha] == ["Etude in C_OP10", "Sonata No 1_OP1", "Sonata No 1_OP1", "Sonata No 2_OP2"]
    assert len({t.group for t in tracks}) == 9  # 3 composers x 3 works: "Sonata No 1_OP1" is not shared
    assert {t.group for t in tracks if t.work == "Sonata No 1_OP1"} == {
        "Alpha/Sonata No 1_OP1",
        "Beta/Sonata No 1_OP1",
        "Gamma/Sonata No 1_OP1",
    }


def test_scan_corpus_layout(corpus_dir: Path) -> None:
    tracks = scan_corpus(corpus_dir)
    assert [(t.composer, t.path.name) for t in tracks] == [
        (c, n) for c in ("Alpha", "Beta", "Gamma") for n in sorted(TRACK_NAMES)
    ]
    t = tracks[0]
    assert t == Track("Alpha", "Etude in C_OP10", corpus_dir / "Alpha" / t.path.name, f"Alpha/{t.path.name}")


def test_scan_ignores_hidden_folders_loose_files_and_other_suffixes(tmp_path: Path) -> None:
    for rel in ("Bach/a_BWV1_1_x.mid", "Bach/b.MIDI", "Bach/notes.txt", ".git/c.mid", "loose.mid", "Bach/sub/d.mid"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"MThd")
    assert [t.rel_path for t in scan_corpus(tmp_path)] == ["Bach/a_BWV1_1_x.mid", "Bach/b.MIDI"]


def test_list_midi_keeps_folders_named_mid_and_broken_links(tmp_path: Path) -> None:
    (tmp_path / "x.mid").mkdir()
    (tmp_path / "gone.mid").symlink_to(tmp_path / "nowhere.mid")
    (tmp_path / "a.mid").write_bytes(b"")
    (tmp_path / "b.wav").write_bytes(b"")
    assert [p.name for p in list_midi(tmp_path)] == ["a.mid", "gone.mid", "x.mid"]


def test_missing_or_empty_corpus_is_a_corpus_error(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"corpus folder does not exist \(expected MIDI_DIR/<Composer>/\*\.mid\)"):
        scan_corpus(tmp_path / "missing")
    (tmp_path / "Bach").mkdir()
    (tmp_path / "Bach" / "readme.txt").write_text("no midi here")
    with pytest.raises(CorpusError, match=r"no MIDI files found") as info:
        scan_corpus(tmp_path)
    assert info.value.path == tmp_path
    with pytest.raises(CorpusError, match=r"cannot list folder \(No such file or directory\)"):
        list_midi(tmp_path / "missing")


def test_display_name_escapes_bytes_that_are_not_utf8_and_keeps_the_rest() -> None:
    latin1 = Path(os.fsdecode(b"Alpha/latin1-\xe9\xff.mid"))
    assert display_name(latin1) == "Alpha/latin1-\\xe9\\xff.mid"
    assert display_name("ünïcödé – 作曲.mid") == "ünïcödé – 作曲.mid"
    assert display_name("   spaces   .mid") == "   spaces   .mid"
    display_name(latin1).encode("utf-8")  # printable and storable: no surrogates left


def test_scan_corpus_names_are_always_valid_utf8(tmp_path: Path) -> None:
    (tmp_path / "Alpha").mkdir()
    with open(os.path.join(os.fsencode(tmp_path), b"Alpha", b"Sonata \xe9_OP1_1_a.mid"), "wb") as f:
        f.write(b"MThd")
    (track,) = scan_corpus(tmp_path)
    assert track.rel_path == "Alpha/Sonata \\xe9_OP1_1_a.mid" and track.work == "Sonata \\xe9_OP1"
    assert track.path.is_file()  # the path itself still opens the file
