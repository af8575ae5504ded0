"""SoundFont discovery and the check that queries render with the index's SoundFont."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicidx.encoder import soundfont as soundfonts
from musicidx.encoder.errors import ConfigMismatchError, DependencyError
from musicidx.encoder.soundfont import SoundFont, find_soundfont, matching_soundfont


def test_find_soundfont_uses_the_environment_then_explicit_choice(tmp_path: Path) -> None:
    sf = find_soundfont()  # $MUSICIDX_SOUNDFONT, set by conftest
    assert sf.name == "TimGM6mb.sf2" and len(sf.sha256) == 64
    assert sf.to_dict() == {"name": "TimGM6mb.sf2", "path": str(sf.path), "sha256": sf.sha256}
    copy = tmp_path / "mine.sf2"
    copy.write_bytes(sf.path.read_bytes())
    mine = find_soundfont(copy)
    assert mine.path == copy.resolve() and mine.sha256 == sf.sha256


def test_find_soundfont_falls_back_to_the_one_pretty_midi_ships(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUSICIDX_SOUNDFONT")
    monkeypatch.setattr(soundfonts, "soundfont_candidates", lambda: [])
    assert find_soundfont().path == soundfonts.bundled_soundfont().resolve()


def test_broken_or_missing_soundfont_gives_one_line_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "broken.sf2"
    bad.write_bytes(b"not a soundfont")
    with pytest.raises(DependencyError, match=r"not a SoundFont \(no RIFF header\); pass another with --soundfont"):
        find_soundfont(bad)
    with pytest.raises(DependencyError, match="SoundFont given by --soundfont does not exist"):
        find_soundfont(tmp_path / "missing.sf2")
    monkeypatch.setenv("MUSICIDX_SOUNDFONT", str(tmp_path / "missing.sf2"))
    with pytest.raises(DependencyError, match=r"SoundFont given by \$MUSICIDX_SOUNDFONT does not exist"):
        find_soundfont()


def test_matching_soundfont_refuses_another_one_naming_both(tmp_path: Path, soundfont: SoundFont) -> None:
    other = tmp_path / "Other.sf2"
    other.write_bytes(b"RIFF" + bytes(100))
    assert matching_soundfont(soundfont.to_dict(), None) == soundfont
    with pytest.raises(
        ConfigMismatchError, match=r"rendered with SoundFont TimGM6mb\.sf2 .* this run found Other\.sf2"
    ):
        matching_soundfont(soundfont.to_dict(), other)
