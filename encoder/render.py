"""MIDI -> mono float32 audio clips, synthesised with FluidSynth through pyfluidsynth.

Only the clip windows are rendered, never whole tracks: for each window the notes that
sound in it (and the controller and pitch-bend state at its start) are played into one
FluidSynth instance, so a build renders ``clips_per_track x clip_seconds`` of audio per file
whatever the piece's length.  Rendering one file's clips is bounded in wall time
(:data:`MAX_RENDER_SECONDS`, a :class:`~.errors.SynthesisError` naming the file); the limits on
the MIDI itself are :mod:`.midi`'s.
"""

from __future__ import annotations

import ctypes
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import FeatureConfig
from .deps import import_fluidsynth
from .errors import DependencyError, SynthesisError
from .midi import sounding_span
from .soundfont import SoundFont

if TYPE_CHECKING:
    import pretty_midi

MAX_RENDER_SECONDS = 60.0  # wall-clock budget for rendering one file's clips

#: Controllers whose state matters to the sound of a mono rendering.
_CONTROLLERS = frozenset({1, 7, 11, 64, 66, 67})
_DRUM_CHANNEL = 9
_BLOCK = 64  # FluidSynth's internal block size (FLUID_BUFSIZE)


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


@functools.cache
def _float_writer(fluidsynth: Any) -> Any:
    """FluidSynth's ``fluid_synth_write_float`` (pyfluidsynth wraps only the 16-bit writer).

    The float writer is used because FluidSynth dithers its 16-bit output with a table it
    fills from the C library's ``rand()`` once per process: any other thread that calls
    ``rand()`` meanwhile (a Ray worker has such threads) changes the table, and with it the
    quiet bins of every clip that process renders.  Float output has no dither and no
    process-wide state, and keeps the precision the 16-bit conversion would throw away."""
    fn = fluidsynth._fl.fluid_synth_write_float
    fn.argtypes = [  # synth, frames, left buffer/offset/stride, right buffer/offset/stride
        ctypes.c_void_p, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
    ]  # fmt: skip
    fn.restype = ctypes.c_int
    return fn


class Synth:
    """One FluidSynth instance with a SoundFont loaded; renders the clip windows of one file."""

    def __init__(self, soundfont: SoundFont, sample_rate: int) -> None:
        fluidsynth = import_fluidsynth()
        self.sample_rate = sample_rate
        self._write_float = _float_writer(fluidsynth)
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
        """The next ``n`` stereo frames, interleaved float32."""
        out = np.empty(2 * n, dtype=np.float32)
        ptr = out.ctypes.data_as(ctypes.c_void_p)
        if self._write_float(self._fs.synth, n, ptr, 0, 2, ptr, 1, 2) != 0:
            raise SynthesisError("FluidSynth failed to write audio")
        self._position += n
        return out

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
        stereo = np.concatenate(chunks).reshape(-1, 2)
        mono = np.clip(stereo.mean(axis=1), -1.0, 1.0)
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
