"""Program remaps for training renderings and the named re-orchestrations of ``musicidx eval``."""

from __future__ import annotations

import pretty_midi
import pytest

from musicidx.encoder.orchestration import (
    ORCHESTRATION_POOL,
    ORCHESTRATIONS,
    STRING_BANDS,
    WIND_BANDS,
    orchestrate,
    reorchestration,
)


def test_reorchestration_is_deterministic_and_moves_every_program() -> None:
    key = "ab" * 32
    a = reorchestration([0, 40, 40, 73], key=key, variant=1)
    assert a == reorchestration([73, 0, 40], key=key, variant=1)
    assert set(a) == {0, 40, 73} and all(a[p] != p for p in a) and all(0 <= q < 128 for q in a.values())
    assert any(reorchestration([0, 40, 73], key=key, variant=v) != a for v in range(2, 6))


def _notes(pm: pretty_midi.PrettyMIDI) -> list[tuple[int, float, float, int]]:
    return sorted((n.pitch, n.start, n.end, n.velocity) for i in pm.instruments if not i.is_drum for n in i.notes)


def test_orchestrations_keep_every_note_and_change_only_the_instruments() -> None:
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes = [pretty_midi.Note(90, p, 0.1 * i, 0.1 * i + 0.5) for i, p in enumerate((30, 40, 50, 60, 70, 80))]
    piano.control_changes = [pretty_midi.ControlChange(64, 127, 0.0)]
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes = [pretty_midi.Note(100, 36, 0.0, 0.1)]
    pm.instruments = [piano, drums]
    key = "ab" * 32
    for name in ORCHESTRATIONS:
        out = orchestrate(pm, name, key=key)
        assert _notes(out) == _notes(pm), name
        assert [[(n.pitch, n.start) for n in i.notes] for i in out.instruments if i.is_drum] == [[(36, 0.0)]]
    assert _notes(pm) and pm.instruments[0].program == 0  # the input is not changed
    assert [i.program for i in orchestrate(pm, "piano", key=key).instruments] == [0, 0]
    strings = orchestrate(pm, "strings", key=key)
    by_program = {i.program: sorted(n.pitch for n in i.notes) for i in strings.instruments if not i.is_drum}
    assert by_program == {40: [60, 70, 80], 41: [50], 42: [40], 43: [30]}
    assert {p for _, p in STRING_BANDS} >= set(by_program)
    assert all(not i.control_changes for i in strings.instruments if not i.is_drum)  # no piano pedal on strings
    winds = orchestrate(pm, "winds", key=key)
    assert {i.program for i in winds.instruments if not i.is_drum} <= {p for _, p in WIND_BANDS}
    a, b = orchestrate(pm, "random", key=key), orchestrate(pm, "random", key=key, seed=1)
    assert [i.program for i in a.instruments] == [i.program for i in orchestrate(pm, "random", key=key).instruments]
    assert a.instruments[0].program in ORCHESTRATION_POOL and b.instruments[0].program in ORCHESTRATION_POOL
    with pytest.raises(ValueError, match="unknown orchestration 'brass'"):
        orchestrate(pm, "brass", key=key)
