"""MIDI -> mono float32 audio clips, synthesised with FluidSynth through pyfluidsynth.

Only the clip windows are rendered, never whole tracks: for each window the notes that
sound in it (and the controller and pitch-bend state at its start) are played into one
long-lived FluidSynth instance per process, so a build renders
``clips_per_track x clip_seconds`` of audio per file whatever the piece's length.

Hostile input is bounded before anything heavy runs: file size, message count, note count,
length of the piece and rendering wall time are capped (see the ``MAX_*`` constants); each
violation is an :class:`~.errors.InvalidMidiError` or :class:`~.errors.SynthesisError`
naming the file and the limit.  A file's tick count is not a limit: one with more ticks than
pretty_midi accepts (music21 writes 10,080 per beat) is re-timed on a coarser grid first.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import io
import os
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import FeatureConfig, default_cache_dir
from .errors import ConfigMismatchError, DependencyError, InvalidMidiError, SynthesisError

if TYPE_CHECKING:
    import pretty_midi

#: Limits that keep a hostile or broken file from hanging or exhausting the machine.
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_MESSAGES = 2_000_000
MAX_NOTES = 500_000
MAX_SECONDS = 3 * 3600.0
MAX_RENDER_SECONDS = 60.0  # wall-clock budget for rendering one file's clips
#: The largest tick handed to pretty_midi, which keeps a float per tick of the piece and refuses
#: files past 10**7 ticks (its ``MAX_TICK``) as "likely corrupt"; longer ones are re-timed first.
MAX_TICKS = 9_999_999

#: Controllers whose state matters to the sound of a mono rendering.
_CONTROLLERS = frozenset({1, 7, 11, 64, 66, 67})
_DRUM_CHANNEL = 9
_BLOCK = 64  # FluidSynth's internal block size (FLUID_BUFSIZE)

_SOUNDFONT_DIRS = (
    "/usr/share/sounds/sf2",
    "/usr/share/soundfonts",
    "/usr/local/share/soundfonts",
    "/opt/homebrew/share/soundfonts",
    "/opt/homebrew/share/fluid-synth",
    "/usr/local/share/fluid-synth",
)
_PREFERRED_SF2 = ("FluidR3_GM.sf2", "default-GM.sf2", "default.sf2")

INSTALL_HINT = (
    "install the FluidSynth library: 'sudo apt-get install libfluidsynth3' on Debian/Ubuntu, "
    "'brew install fluid-synth' on macOS, 'conda install -c conda-forge fluidsynth' elsewhere"
)


# --------------------------------------------------------------------------- SoundFont


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


@lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (memoised per process on path, size and mtime)."""
    st = os.stat(path)
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


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


def _quiet_stdout() -> contextlib.redirect_stdout[io.StringIO]:
    """For importing pyfluidsynth (also imported by pretty_midi), which prints "'fluidsynth' was
    found at ..." on import when $CI is set; stdout may be carrying JSON or CSV."""
    return contextlib.redirect_stdout(io.StringIO())


def _quiet_pretty_midi() -> Any:
    with _quiet_stdout():
        import pretty_midi
    return pretty_midi


def bundled_soundfont() -> Path:
    """The TimGM6mb SoundFont that pretty_midi ships (6 MB, General MIDI)."""
    pretty_midi = _quiet_pretty_midi()
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


# --------------------------------------------------------------------------- MIDI


def load_midi(path: str | Path) -> pretty_midi.PrettyMIDI:
    """Parse a MIDI file with the safety limits applied; raise :class:`InvalidMidiError`."""
    import mido

    pretty_midi = _quiet_pretty_midi()
    p = Path(path)
    if p.is_dir():
        raise InvalidMidiError("is a directory, not a MIDI file", path=p)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidMidiError(
                f"file is {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit", path=p
            )
        data = p.read_bytes()
    except OSError as e:
        raise InvalidMidiError(f"cannot read file ({e.strerror or e})", path=p) from e
    if not data:
        raise InvalidMidiError("file is empty (0 bytes)", path=p)
    if data[:4] != b"MThd":
        raise InvalidMidiError("not a MIDI file (no 'MThd' header)", path=p)
    try:
        mf = mido.MidiFile(file=io.BytesIO(data), charset="latin1", clip=True)
    except EOFError as e:
        raise InvalidMidiError("truncated MIDI data (the file ends inside a track)", path=p) from e
    except Exception as e:  # mido raises a zoo of types on corrupt data
        raise InvalidMidiError(f"corrupt MIDI data ({type(e).__name__}: {e})", path=p) from e
    n_msgs = sum(len(t) for t in mf.tracks)
    if n_msgs > MAX_MESSAGES:
        raise InvalidMidiError(f"{n_msgs} MIDI messages, over the {MAX_MESSAGES} limit", path=p)
    if mf.type == 2:
        raise InvalidMidiError("type-2 MIDI (independent sequences) is not supported", path=p)
    _fit_ticks(mf, p)
    try:
        with warnings.catch_warnings():  # pretty_midi warns on tempo events off track 0
            warnings.simplefilter("ignore")
            pm = pretty_midi.PrettyMIDI(mido_object=mf)
    except Exception as e:
        raise InvalidMidiError(f"corrupt MIDI data ({type(e).__name__}: {e})", path=p) from e
    n_notes = sum(len(i.notes) for i in pm.instruments)
    if n_notes == 0:
        raise InvalidMidiError("contains no notes", path=p)
    if n_notes > MAX_NOTES:
        raise InvalidMidiError(f"{n_notes} notes, over the {MAX_NOTES} limit", path=p)
    end = pm.get_end_time()
    if not np.isfinite(end) or end > MAX_SECONDS:
        raise InvalidMidiError(f"lasts {end / 3600:.1f} h, over the {MAX_SECONDS / 3600:.0f} h limit", path=p)
    return pm


def _fit_ticks(mf: Any, path: Path) -> None:
    """Re-time the :class:`mido.MidiFile` ``mf`` in place so that its largest tick is at most
    :data:`MAX_TICKS`: fewer ticks per beat, every event (tempo changes included) moved to the
    nearest tick of the coarser grid, so times in seconds move by under half a new tick.

    What matters is the piece's length in seconds, its notes and messages (checked by
    :func:`load_midi`), not how finely its ticks divide a beat: music21 writes 10,080 ticks per
    beat, so a whole quartet movement passes 10**7 ticks.  A file still too long at one tick per
    beat is refused here, before pretty_midi would allocate a float per tick.
    """
    tpb = int(mf.ticks_per_beat)
    largest = max((sum(msg.time for msg in track) for track in mf.tracks), default=0)
    if largest <= MAX_TICKS:
        return
    new_tpb = tpb * MAX_TICKS // largest
    if tpb < 1 or new_tpb < 1:
        raise InvalidMidiError(
            f"{largest // max(tpb, 1)} beats long, over the {MAX_TICKS}-beat limit "
            f"(largest tick {largest} at {tpb} ticks per beat)",
            path=path,
        )
    for track in mf.tracks:
        tick = placed = 0
        for msg in track:
            tick += msg.time
            new = (tick * new_tpb + tpb // 2) // tpb
            msg.time, placed = new - placed, new
    mf.ticks_per_beat = new_tpb


def sounding_span(pm: pretty_midi.PrettyMIDI) -> tuple[float, float]:
    """First note onset and last note offset, in seconds."""
    starts = [n.start for i in pm.instruments for n in i.notes]
    ends = [n.end for i in pm.instruments for n in i.notes]
    return float(min(starts)), float(max(ends))


#: The grid note times are rounded to before :func:`notes_sha256` compares them.
NOTE_GRID_SECONDS = 0.01


def notes_sha256(pm: pretty_midi.PrettyMIDI) -> str:
    """A fingerprint of what is played: the sha256 of every note as (drum or not, pitch, onset,
    offset), times rounded to :data:`NOTE_GRID_SECONDS`, sorted.

    Programs, instrument names, velocities and track order do not count, so a copy re-saved by
    another program or re-orchestrated with the same notes has the same fingerprint; another
    movement, or one changed note, has another.  Times are compared on the grid: a copy written
    on another tick grid (other resolution or tempo map) matches only if no time moved across a
    grid line, which re-timing by a fraction of a millisecond may do.
    """
    rows = [(i.is_drum, n.pitch, n.start, n.end) for i in pm.instruments for n in i.notes]
    a = np.array(rows, dtype=np.float64).reshape(-1, 4)
    a[:, 2:] = np.rint(a[:, 2:] / NOTE_GRID_SECONDS)
    keys = a.astype("<i8")
    keys = keys[np.lexsort(keys.T[::-1])]
    return hashlib.sha256(b"notes-v1:" + keys.tobytes()).hexdigest()


def clip_starts(pm: pretty_midi.PrettyMIDI, cfg: FeatureConfig) -> np.ndarray:
    """Deterministic window starts spread evenly over the sounding part of the piece.

    A piece shorter than one clip gets one window (padded with silence when rendered);
    windows of a short piece overlap by at most ``1 - min_clip_hop_seconds/clip_seconds``.
    """
    first, last = sounding_span(pm)
    span = last - first
    if span <= cfg.clip_seconds:
        return np.array([first])
    n = min(cfg.clips_per_track, 1 + int((span - cfg.clip_seconds) // cfg.min_clip_hop_seconds))
    return np.linspace(first, last - cfg.clip_seconds, max(n, 1))


# --------------------------------------------------------------------------- synthesis


def _import_fluidsynth() -> Any:
    try:
        with _quiet_stdout():
            import fluidsynth
    except ImportError as e:  # pyfluidsynth raises ImportError when the shared library is missing
        raise DependencyError(f"cannot load FluidSynth ({e}); {INSTALL_HINT}") from e
    except OSError as e:
        raise DependencyError(f"cannot load FluidSynth ({e}); {INSTALL_HINT}") from e
    lib = getattr(fluidsynth, "_fl", None)
    set_log = getattr(lib, "fluid_set_log_function", None)
    if set_log is not None:  # keep FluidSynth's own messages (incl. "panic") off stdout/stderr
        for level in range(5):
            set_log(level, None, None)
    return fluidsynth


_DITHER_SEEDED = False


def _seed_dither() -> None:
    """Make FluidSynth's dither the same in every process.

    FluidSynth converts to 16 bits with a dither table that it fills from the C library's
    ``rand()`` once per process, when the first synthesiser is created; the audio therefore
    depends on whatever called ``rand()`` in that process before (a Ray worker, a web server...)
    by a least significant bit or two, which the log-CQT turns into visible differences in quiet
    bins.  Seeding ``rand()`` with 1 (the C standard's initial state) just before the first
    synthesiser gives every process the table of a fresh one."""
    global _DITHER_SEEDED
    if _DITHER_SEEDED:
        return
    _DITHER_SEEDED = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        libc.srand(ctypes.c_uint(1))
    except (OSError, AttributeError):  # no C library to reach (unusual platforms): dither as it comes
        pass


class Synth:
    """One FluidSynth instance with a SoundFont loaded; renders the clip windows of one file."""

    def __init__(self, soundfont: SoundFont, sample_rate: int) -> None:
        fluidsynth = _import_fluidsynth()
        self.sample_rate = sample_rate
        _seed_dither()
        self._fs = fluidsynth.Synth(
            gain=0.5,
            samplerate=float(sample_rate),
            **{"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.cpu-cores": 1},
        )
        self._position = 0  # samples rendered so far (FluidSynth works in blocks of _BLOCK)
        self._sfid = self._fs.sfload(str(soundfont.path))
        if self._sfid == -1:
            raise DependencyError(
                "FluidSynth cannot load this SoundFont; pass another with --soundfont", path=soundfont.path
            )

    def close(self) -> None:
        """Free the FluidSynth instance (and its copy of the SoundFont)."""
        self._fs.delete()

    def _samples(self, n: int) -> np.ndarray:
        self._position += n
        return self._fs.get_samples(n)

    def _reset(self) -> None:
        """Silence every channel, reset controllers, and realign to FluidSynth's block grid so
        that a window renders identically whatever was rendered before it (events take effect
        at block boundaries, so an offset would shift every note by up to a block)."""
        self._fs.system_reset()
        for ch in range(16):
            self._fs.all_sounds_off(ch)
            self._fs.cc(ch, 121, 0)  # reset all controllers
            self._fs.cc(ch, 7, 100)
            self._fs.cc(ch, 11, 127)
            self._fs.pitch_bend(ch, 0)
        if self._position % _BLOCK:
            self._samples(_BLOCK - self._position % _BLOCK)

    def render_window(
        self, pm: pretty_midi.PrettyMIDI, start: float, cfg: FeatureConfig, programs: Mapping[int, int] | None = None
    ) -> np.ndarray:
        """Render ``[start, start + clip_seconds)`` of ``pm`` as mono float32 in [-1, 1]."""
        sr = cfg.sample_rate
        t0 = max(0.0, start - cfg.preroll_seconds)
        t1 = start + cfg.clip_seconds
        events = _window_events(pm, t0, t1, programs or {})
        self._reset()
        programs_set: dict[int, tuple[int, int]] = {}
        chunks: list[np.ndarray] = []
        cursor = 0
        total = int(round((t1 - t0) * sr))
        for t, _order, kind, ch, a, b in events:
            pos = min(total, int(round((t - t0) * sr)))
            if pos > cursor:
                chunks.append(self._samples(pos - cursor))
                cursor = pos
            if kind == "program":
                if programs_set.get(ch) != (a, b):
                    self._fs.program_select(ch, self._sfid, a, b)
                    programs_set[ch] = (a, b)
            elif kind == "on":
                self._fs.noteon(ch, a, b)
            elif kind == "off":
                self._fs.noteoff(ch, a)
            elif kind == "cc":
                self._fs.cc(ch, a, b)
            elif kind == "bend":
                self._fs.pitch_bend(ch, a)
        if total > cursor:
            chunks.append(self._samples(total - cursor))
        stereo = np.concatenate(chunks).astype(np.float32).reshape(-1, 2)
        mono = stereo.mean(axis=1) / 32768.0
        skip = int(round((start - t0) * sr))
        clip = mono[skip : skip + cfg.clip_samples]
        if len(clip) < cfg.clip_samples:
            clip = np.pad(clip, (0, cfg.clip_samples - len(clip)))
        return clip.astype(np.float32, copy=False)


def _channels(pm: pretty_midi.PrettyMIDI) -> list[int]:
    """A MIDI channel per instrument: drums on 9, melodic programs on the others in turn."""
    out, melodic = [], [c for c in range(16) if c != _DRUM_CHANNEL]
    by_program: dict[int, int] = {}
    for inst in pm.instruments:
        if inst.is_drum:
            out.append(_DRUM_CHANNEL)
            continue
        if inst.program not in by_program:
            by_program[inst.program] = melodic[len(by_program) % len(melodic)]
        out.append(by_program[inst.program])
    return out


def _window_events(
    pm: pretty_midi.PrettyMIDI, t0: float, t1: float, programs: Mapping[int, int]
) -> list[tuple[float, int, str, int, int, int]]:
    """The events that make ``[t0, t1)`` sound as in the whole piece, sorted in time.

    Each event is ``(time, order, kind, channel, a, b)``; at equal times program changes
    come first, then controllers, note-offs and note-ons.
    """
    ev: list[tuple[float, int, str, int, int, int]] = []
    for inst, ch in zip(pm.instruments, _channels(pm)):
        bank = 128 if inst.is_drum else 0
        ev.append((t0, 0, "program", ch, bank, 0 if inst.is_drum else programs.get(inst.program, inst.program)))
        state: dict[int, int] = {}
        for c in inst.control_changes:
            if c.number not in _CONTROLLERS:
                continue
            if c.time <= t0:
                state[c.number] = c.value
            elif c.time < t1:
                ev.append((c.time, 1, "cc", ch, c.number, c.value))
        for num, val in state.items():
            ev.append((t0, 1, "cc", ch, num, val))
        bend = None
        for pb in inst.pitch_bends:
            if pb.time <= t0:
                bend = pb.pitch
            elif pb.time < t1:
                ev.append((pb.time, 1, "bend", ch, pb.pitch, 0))
        if bend is not None:
            ev.append((t0, 1, "bend", ch, bend, 0))
        for n in inst.notes:
            if n.end <= t0 or n.start >= t1:
                continue
            ev.append((max(n.start, t0), 3, "on", ch, n.pitch, max(1, min(127, n.velocity))))
            if n.end < t1:
                ev.append((n.end, 2, "off", ch, n.pitch, 0))
    ev.sort(key=lambda e: (e[0], e[1]))
    return ev


@dataclass(frozen=True)
class RenderedClips:
    """The audible clips of one file: ``audio[i]`` starts at ``starts[i]`` seconds."""

    audio: np.ndarray  # (n_clips, clip_samples) float32
    starts: np.ndarray  # (n_clips,) float64, seconds
    duration: float  # seconds of the whole piece
    rendered_seconds: float  # audio synthesised, preroll included


def render_clips(
    pm: pretty_midi.PrettyMIDI,
    *,
    cfg: FeatureConfig,
    soundfont: SoundFont,
    path: str | Path | None = None,
    programs: Mapping[int, int] | None = None,
    starts: np.ndarray | None = None,
    synth: Synth | None = None,
) -> RenderedClips:
    """Render the clip windows of ``pm``; silent windows are dropped, all-silent is an error.

    ``programs`` remaps General MIDI programs (drums excepted), for re-orchestrated training
    renderings; ``cfg.render_program``, when set, overrides it with one program for every part.
    ``starts`` renders exactly those windows and keeps them all (so a re-orchestrated
    rendering lines up clip by clip with the original).  ``synth``: render with this synthesiser
    (the caller's, left open) instead of a fresh one -- the pretraining's views, whose SoundFonts
    take up to 20 s to load, trade bit-identical renderings for that.
    """
    # A fresh synthesiser per file: FluidSynth keeps state between renders (voice allocation,
    # block position) that would make a file's audio depend on what the process rendered
    # before it. Loading the SoundFont again costs ~0.06 s and buys bit-identical builds.
    if cfg.render_program is not None:  # one timbre for every melodic part (drums stay drums)
        programs = {i.program: cfg.render_program for i in pm.instruments if not i.is_drum}
    own = synth is None
    synth = Synth(soundfont, cfg.sample_rate) if synth is None else synth
    began = time.monotonic()
    clips, kept = [], []
    rendered = 0.0
    try:
        for s in clip_starts(pm, cfg) if starts is None else starts:
            audio = synth.render_window(pm, float(s), cfg, programs)
            rendered += cfg.clip_seconds + min(cfg.preroll_seconds, float(s))
            if starts is not None or float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) >= cfg.silence_rms:
                clips.append(audio)
                kept.append(float(s))
            if time.monotonic() - began > MAX_RENDER_SECONDS:
                raise SynthesisError(f"rendering took over the {MAX_RENDER_SECONDS:.0f} s limit", path=path)
    finally:
        if own:
            synth.close()
    if not clips:
        raise SynthesisError("renders to silence (are its instruments missing from the SoundFont?)", path=path)
    return RenderedClips(np.stack(clips), np.asarray(kept), float(pm.get_end_time()), rendered)


#: Programs a re-orchestration draws from, across the General MIDI families: keyboards,
#: organ, guitar, solo and ensemble strings, harp, brass, reeds, pipes, mallets.
ORCHESTRATION_POOL = (0, 1, 6, 19, 24, 40, 41, 42, 43, 46, 48, 56, 57, 60, 64, 68, 70, 71, 73, 11)


def reorchestration(programs: list[int], *, key: str, variant: int) -> dict[int, int]:
    """A deterministic remap of ``programs`` for augmentation ``variant`` of the file ``key``:
    each program moves within its GM family (same ``program // 8``) or, half of the time, to
    another family from :data:`ORCHESTRATION_POOL`."""
    rng = np.random.default_rng([int(key[:16], 16), variant])
    out = {}
    for p in sorted(set(programs)):
        if rng.random() < 0.5:
            family = [q for q in range(p // 8 * 8, p // 8 * 8 + 8) if q != p]
            out[p] = int(rng.choice(family))
        else:
            out[p] = int(rng.choice([q for q in ORCHESTRATION_POOL if q != p]))
    return out


# --------------------------------------------------------------------------- orchestrations

#: The re-orchestrations ``musicidx eval`` renders every held-out track in (see :func:`orchestrate`).
ORCHESTRATIONS = ("piano", "strings", "winds", "random")

#: (lowest MIDI pitch of the band, GM program), highest band first: each note goes to the first band
#: its pitch reaches. Strings: violin from G3, viola from C3, cello from C2, contrabass below.
STRING_BANDS = ((55, 40), (48, 41), (36, 42), (0, 43))
#: Winds: flute from D5, oboe from G4 (the oboe's low B-flat3 is reached by the clarinet band),
#: clarinet from D3, bassoon below.
WIND_BANDS = ((74, 73), (67, 68), (50, 71), (0, 70))


def orchestrate(pm: pretty_midi.PrettyMIDI, name: str, *, key: str, seed: int = 0) -> pretty_midi.PrettyMIDI:
    """The same notes in another orchestration (drums untouched), as a new ``PrettyMIDI``:

    * ``piano``: every melodic part on the acoustic grand piano (program 0);
    * ``strings`` / ``winds``: every melodic note to the string / wind instrument whose band its
      pitch falls in (:data:`STRING_BANDS`, :data:`WIND_BANDS`), so a piano piece becomes an
      ensemble split by register and a quartet keeps its lines in their registers;
    * ``random``: each melodic part to a program drawn from :data:`ORCHESTRATION_POOL`, seeded by
      ``key`` (the file's sha256) and ``seed``, so the mapping is fixed per file and seed.

    Timing, pitches, velocities and the tempo map are unchanged; a register split keeps no
    controllers (a piano's sustain pedal would make strings ring) and no pitch bends.
    """
    import copy

    pretty_midi = _quiet_pretty_midi()
    out = copy.deepcopy(pm)
    melodic = [i for i in out.instruments if not i.is_drum]
    drums = [i for i in out.instruments if i.is_drum]
    if name == "piano":
        for inst in melodic:
            inst.program = 0
    elif name == "random":
        rng = np.random.default_rng([int(key[:16], 16), seed, 0x0C5])
        for inst in melodic:
            inst.program = int(rng.choice(ORCHESTRATION_POOL))
    elif name in ("strings", "winds"):
        bands = STRING_BANDS if name == "strings" else WIND_BANDS
        parts = {program: pretty_midi.Instrument(program=program, name=f"{name} {program}") for _, program in bands}
        for inst in melodic:
            for note in inst.notes:
                program = next(p for low, p in bands if note.pitch >= low)
                parts[program].notes.append(copy.copy(note))
        for part in parts.values():
            part.notes.sort(key=lambda n: (n.start, n.pitch))
        out.instruments = [p for p in parts.values() if p.notes] + drums
    else:
        raise ValueError(f"unknown orchestration {name!r}; use one of {', '.join(ORCHESTRATIONS)}")
    return out
