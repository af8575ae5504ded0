"""Fuzzing: mutated MIDI bytes through parsing, rendering, CQT, embedding and search.

Every input must end either in an answer or in a :class:`MusicIdxError` (a clear one-line
reason), never another exception, and within a time bound (no hang).  CI runs a short pass;
``MUSICIDX_FUZZ_EXAMPLES=10000 pytest tests/test_fuzz_midi.py`` is the long run recorded in
BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import midi_factory
import numpy as np
import pretty_midi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musicidx.encoder.errors import MusicIdxError

pytestmark = [pytest.mark.fluidsynth, pytest.mark.slow]  # a fuzzing loop: 150 inputs through every stage

EXAMPLES = int(os.environ.get("MUSICIDX_FUZZ_EXAMPLES", "150"))
HANG_SECONDS = 20  # far above the slowest legitimate input here (~0.1 s)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Valid files to mutate: piano scales, organ chords (with sustain pedal and a pitch bend), drums."""
    d = tmp_path_factory.mktemp("fuzz-seeds")
    rng = np.random.default_rng(7)
    scales = midi_factory.scale_piece(d / "a.mid", rng, seconds=3.0)
    chords = midi_factory.chord_piece(d / "b.mid", rng, seconds=3.0)
    pm = pretty_midi.PrettyMIDI(str(chords))
    pm.instruments[0].control_changes.append(pretty_midi.ControlChange(64, 127, 0.5))
    pm.instruments[0].pitch_bends.append(pretty_midi.PitchBend(1000, 1.0))
    pm.write(str(chords))
    drums = midi_factory.drums_only(d / "c.mid")
    return [p.read_bytes() for p in (scales, chords, drums)]


@pytest.fixture(scope="module")
def searcher(built_index: Path) -> Iterator[Any]:
    from musicidx.query.engine import Searcher

    yield Searcher(built_index, cache_dir=None)
    report = os.environ.get("MUSICIDX_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps(OUTCOMES, indent=2) + "\n")


#: What the inputs ended in, written to $MUSICIDX_FUZZ_REPORT (for BENCHMARKS.md).
OUTCOMES: dict[str, int] = {"inputs": 0, "answered": 0, "musicidx_error": 0, "max_seconds_x1000": 0}


def _mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    b = bytearray(data)
    for kind, pos, val in ops:
        if not b:
            b = bytearray(bytes([val]))
            continue
        i = pos % len(b)
        if kind == 0:  # flip bits
            b[i] ^= val or 1
        elif kind == 1:  # set a byte (0xFF and 0x7F hit lengths, meta events and running status)
            b[i] = val
        elif kind == 2:  # insert
            b[i:i] = bytes([val])
        elif kind == 3:  # delete a run
            del b[i : i + 1 + val % 16]
        elif kind == 4:  # duplicate a run (repeated chunks and events)
            b[i:i] = b[i : i + 1 + val % 64]
        else:  # truncate
            del b[i:]
    return bytes(b)


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Hang


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    which=st.integers(0, 2),
    ops=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_mutated_midi_gives_an_answer_or_a_musicidx_error(
    searcher, seeds: list[bytes], tmp_path_factory: pytest.TempPathFactory, which: int, ops: list[tuple[int, int, int]]
) -> None:
    data = _mutate(seeds[which], ops)
    path = tmp_path_factory.getbasetemp() / "fuzz-input.mid"
    path.write_bytes(data)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_SECONDS)
    began = time.monotonic()
    OUTCOMES["inputs"] += 1
    try:
        result = searcher.query(path)
    except MusicIdxError as e:
        OUTCOMES["musicidx_error"] += 1
        assert str(path) in str(e) and e.reason, f"error without file or reason: {e!r}"
        return
    except _Hang:
        pytest.fail(f"hang: over {HANG_SECONDS} s on input {data[:64]!r}...")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        ms = int(1000 * (time.monotonic() - began))
        OUTCOMES["max_seconds_x1000"] = max(OUTCOMES["max_seconds_x1000"], ms)
    OUTCOMES["answered"] += 1
    assert time.monotonic() - began < HANG_SECONDS
    assert result.composer in {"Alpha", "Beta", "Gamma"}
    assert 0.0 <= result.confidence <= 1.0
    assert np.isfinite(result.novelty)
