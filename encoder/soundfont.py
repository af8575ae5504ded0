"""Which SoundFont renders: discovery, its content hash, and the check that queries use the index's.

The hash is recorded in the index manifest; a query rendered with another SoundFont than the
index would be asked in other timbres, so :func:`matching_soundfont` refuses it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .config import default_cache_dir
from .deps import import_pretty_midi
from .errors import ConfigMismatchError, DependencyError
from .fingerprints import file_sha256

_SOUNDFONT_DIRS = (
    "/usr/share/sounds/sf2",
    "/usr/share/soundfonts",
    "/usr/local/share/soundfonts",
    "/opt/homebrew/share/soundfonts",
    "/opt/homebrew/share/fluid-synth",
    "/usr/local/share/fluid-synth",
)
_PREFERRED_SF2 = ("FluidR3_GM.sf2", "default-GM.sf2", "default.sf2")


@dataclass(frozen=True)
class SoundFont:
    """A SoundFont file and its content hash (recorded in the index manifest)."""

    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256}


def soundfont_sha256(path: str | Path) -> str:
    """sha256 of a SoundFont, memoised on disk too (a GM SoundFont is ~140 MB: hashing it in
    every query process would cost more than the query)."""
    p = Path(path).resolve()
    st = p.stat()
    stamp = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    memo = default_cache_dir() / "hashes-v1" / (hashlib.sha256(str(p).encode()).hexdigest()[:32] + ".txt")
    try:
        saved_stamp, digest = memo.read_text().split("\n")[:2]
        if saved_stamp == stamp and len(digest) == 64:
            return digest
    except (OSError, ValueError):
        pass
    digest = file_sha256(p)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=memo.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(f"{stamp}\n{digest}\n")
        os.replace(tmp, memo)
    except OSError:
        pass
    return digest


def bundled_soundfont() -> Path:
    """The TimGM6mb SoundFont that pretty_midi ships (6 MB, General MIDI)."""
    pretty_midi = import_pretty_midi()
    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


def soundfont_candidates() -> list[Path]:
    """The places searched for a SoundFont when none is given, in order."""
    out: list[Path] = []
    for d in _SOUNDFONT_DIRS:
        p = Path(d)
        if p.is_dir():
            found = sorted(p.glob("*.sf2"))
            out += sorted(
                found,
                key=lambda q: (
                    q.name not in _PREFERRED_SF2,
                    _PREFERRED_SF2.index(q.name) if q.name in _PREFERRED_SF2 else 0,
                    q.name,
                ),
            )
    out.append(Path.home() / ".fluidsynth" / "default_sound_font.sf2")
    return out


def find_soundfont(explicit: str | Path | None = None) -> SoundFont:
    """Resolve the SoundFont: ``explicit``, else ``$MUSICIDX_SOUNDFONT``, else the usual system
    places (:func:`soundfont_candidates`), else the TimGM6mb SoundFont shipped in pretty_midi."""
    chosen: Path | None = None
    for given, origin in (
        (explicit, "--soundfont"),
        (os.environ.get("MUSICIDX_SOUNDFONT") or None, "$MUSICIDX_SOUNDFONT"),
    ):
        if given is not None:
            p = Path(given).expanduser()
            if not p.is_file():
                raise DependencyError(f"SoundFont given by {origin} does not exist", path=p)
            chosen = p
            break
    if chosen is None:
        chosen = next((p for p in soundfont_candidates() if p.is_file()), None)
    if chosen is None:
        chosen = bundled_soundfont()
        if not chosen.is_file():
            raise DependencyError(
                "no SoundFont found; pass --soundfont or set MUSICIDX_SOUNDFONT "
                "(Debian: 'sudo apt-get install fluid-soundfont-gm')"
            )
    with open(chosen, "rb") as f:
        if f.read(4) != b"RIFF":
            raise DependencyError("not a SoundFont (no RIFF header); pass another with --soundfont", path=chosen)
    return SoundFont(chosen.resolve(), soundfont_sha256(chosen))


def matching_soundfont(recorded: dict[str, str], given: str | Path | None) -> SoundFont:
    """The SoundFont to render queries with: it must be the one the index was built with.

    An explicit choice (``given`` or ``$MUSICIDX_SOUNDFONT``) must match; otherwise the
    recorded path and the usual places are searched for a file with the recorded sha256.
    """
    want = recorded.get("sha256")
    if given is None and not os.environ.get("MUSICIDX_SOUNDFONT"):
        for p in [recorded.get("path"), *soundfont_candidates(), bundled_soundfont()]:
            if p and Path(p).is_file() and soundfont_sha256(p) == want:
                return SoundFont(Path(p).resolve(), want)
    sf = find_soundfont(given)
    if sf.sha256 != want:
        raise ConfigMismatchError(
            f"the index was rendered with SoundFont {recorded.get('name')} (sha256 {str(want)[:12]}...), "
            f"this run found {sf.name} ({sf.path}, sha256 {sf.sha256[:12]}...); pass the index's SoundFont with "
            "--soundfont or set MUSICIDX_SOUNDFONT"
        )
    return sf
