"""What the worker processes of ``musicidx serve`` run: render and CQT an uploaded file
(:func:`file_features`), render a training clip to WAV (:func:`render_wav`), the warm-up piece.
Each returns a bad file's error rather than raising it, and gives freed memory back."""

from __future__ import annotations

import contextlib
import ctypes
import io
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicidx.encoder.config import FeatureConfig
from musicidx.encoder.errors import InvalidMidiError, MusicIdxError
from musicidx.encoder.soundfont import SoundFont


def init_worker() -> None:
    import signal

    from musicidx.encoder.deps import import_fluidsynth
    from musicidx.encoder.runtime import set_torch_threads

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which then stops its workers
    set_torch_threads(worker=True)
    import_fluidsynth()


@dataclass(frozen=True)
class Features:
    """A file's clips as a worker computed them: what the server embeds and answers from."""

    feats: np.ndarray  # (n_clips, n_bins, frames) float16 log-CQT
    starts: np.ndarray  # (n_clips,) seconds
    notes_sha256: str
    seconds: float  # worker time


def file_features(path: str, *, features: FeatureConfig, soundfont: SoundFont) -> Features | MusicIdxError:
    """In a worker: render and CQT one file as ``Searcher.query`` does (no feature cache: every
    upload is rendered); a bad file gives its error, returned, not raised."""
    from musicidx.indexer.features import FeatureCache, extract_file

    began = time.perf_counter()
    try:
        tf = extract_file(path, cfg=features, soundfont=soundfont, cache=FeatureCache(None))
    except MusicIdxError as e:
        return e
    except Exception as e:  # a hostile file must not take the worker down with an odd exception
        return InvalidMidiError(f"unexpected {type(e).__name__} while reading: {e}", path=path)
    finally:
        trim()
    return Features(tf.feats, tf.starts, tf.notes_sha256, time.perf_counter() - began)


def warm(path: str, features: FeatureConfig, soundfont: SoundFont) -> Features | MusicIdxError:
    """In a worker: answer the warm-up piece once, then linger so that the next warm-up task
    lands on another process."""
    got = file_features(path, features=features, soundfont=soundfont)
    time.sleep(0.3)
    return got


def trim() -> None:
    """Give the memory freed by a file back to the system (glibc keeps it otherwise, and a
    long-running worker's RSS would track its largest file, not what it holds)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def warm_up_piece(path: Path) -> Path:
    """A 12-second piece for piano, strings and drums, to render at start-up."""
    from musicidx.encoder.deps import import_pretty_midi

    pretty_midi = import_pretty_midi()
    pm = pretty_midi.PrettyMIDI()
    for program, is_drum, pitches in ((0, False, (60, 64, 67, 72)), (48, False, (48, 55)), (0, True, (36, 38, 42))):
        inst = pretty_midi.Instrument(program, is_drum=is_drum)
        inst.notes = [pretty_midi.Note(90, pitches[i % len(pitches)], i * 0.25, i * 0.25 + 0.5) for i in range(48)]
        pm.instruments.append(inst)
    pm.write(str(path))
    return path


def render_wav(path: str, start: float, *, features: FeatureConfig, soundfont: SoundFont) -> bytes | MusicIdxError:
    """In a worker: the clip window at ``start`` seconds of a MIDI file as the index hears it
    (its sample rate and SoundFont), as a 16-bit mono WAV, peak-normalised for listening."""
    from musicidx.encoder.midi import load_midi
    from musicidx.encoder.render import render_clips

    try:
        pm = load_midi(path)
        clips = render_clips(pm, cfg=features, soundfont=soundfont, path=path, starts=np.array([start]))
    except MusicIdxError as e:
        return e
    except Exception as e:
        return InvalidMidiError(f"unexpected {type(e).__name__} while rendering: {e}", path=path)
    finally:
        trim()
    return wav_bytes(clips.audio[0], features.sample_rate)


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono float audio -> a 16-bit PCM WAV file's bytes, peak-normalised to 0.9."""
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    scaled = audio * (0.9 / peak) if peak > 0 else audio
    pcm = np.clip(np.rint(scaled * 32767), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()
