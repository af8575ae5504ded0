"""MIDI parsing: what the edge cases parse to, and the limits on hostile files."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicidx.encoder import midi
from musicidx.encoder.errors import InvalidMidiError
from musicidx.encoder.midi import load_midi


def test_edge_cases_parse_to_what_they_are(edge_midis: dict[str, Path]) -> None:
    with pytest.raises(InvalidMidiError, match="contains no notes") as info:
        load_midi(edge_midis["no_notes"])
    assert info.value.path == edge_midis["no_notes"] and str(edge_midis["no_notes"]) in str(info.value)
    drums = load_midi(edge_midis["drums_only"])
    assert [i.is_drum for i in drums.instruments] == [True]
    blip = load_midi(edge_midis["blip"])
    (note,) = blip.instruments[0].notes
    assert note.end - note.start == pytest.approx(0.005, abs=0.002)


def test_unreadable_file_is_an_invalid_midi_error(good_midi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user without read permission gets (simulated: these tests run as root, who reads anyway)."""

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(InvalidMidiError, match=r"cannot read file \(Permission denied\)"):
        load_midi(good_midi)


def test_message_count_limit(good_midi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(midi, "MAX_MESSAGES", 10)
    with pytest.raises(InvalidMidiError, match=r"\d+ MIDI messages, over the 10 limit"):
        load_midi(good_midi)


def test_note_count_limit(good_midi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(midi, "MAX_NOTES", 5)
    with pytest.raises(InvalidMidiError, match=r"\d+ notes, over the 5 limit"):
        load_midi(good_midi)
