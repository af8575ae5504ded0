"""music21 scores -> MIDI: what the exported files are called (exports themselves: test_demo.py)."""

from __future__ import annotations

from musicidx.encoder.scores import piece_names
from musicidx.indexer.corpus import work_of


def test_piece_names_name_movements_after_their_work_folder_and_count_them() -> None:
    names = piece_names(["mozart/k80/movement1.mxl", "palestrina/Kyrie_00.krn", "mozart/k80/movement2.mxl"])
    assert names == [
        ("k80", "k80_K80_1_movement1.mid"),
        ("Kyrie-00", "Kyrie-00.mid"),
        ("k80", "k80_K80_2_movement2.mid"),
    ]
    assert work_of(names[0][1]) == work_of(names[2][1]) == "k80_K80" != work_of(names[1][1])
    assert piece_names(["beethoven/opus59no3/movement_2.mxl"]) == [
        ("opus59no3", "opus59no3_OPUS59NO3_1_movement-2.mid")
    ]
