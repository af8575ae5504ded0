"""Regenerate ``cqt_tone.npz``: the log-CQT of a synthetic tone (no FluidSynth involved).

Run from anywhere with the project's environment::

    .venv/bin/python tests/golden/make_cqt_tone.py

and commit the new file together with the change that moved the numbers (and bump
``FEATURES_VERSION`` in ``encoder/config.py`` if cached features are no longer valid).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
GOLDEN = HERE / "cqt_tone.npz"
#: Small on purpose: the golden file stays ~15 KB.
CONFIG = {"clip_seconds": 2.0, "clips_per_track": 1, "min_clip_hop_seconds": 1.0}


def tone(sample_rate: int, n: int) -> np.ndarray:
    """A4 (440 Hz) and E6 (1318.5 Hz) with a decaying envelope, float32 in [-1, 1]."""
    t = np.arange(n) / sample_rate
    env = np.exp(-t / 1.5)
    y = 0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.25 * np.sin(2 * np.pi * 1318.51 * t)
    return (env * y).astype(np.float32)[None, :]


def main() -> None:
    import os

    os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp())  # kernels from nnAudio, not a stale cache
    from musicidx.encoder.config import FeatureConfig
    from musicidx.encoder.frontend import cqt_features

    cfg = FeatureConfig(**CONFIG)
    audio = tone(cfg.sample_rate, cfg.clip_samples)
    np.savez_compressed(GOLDEN, cqt=cqt_features(audio, cfg)[0], config=np.array(repr(CONFIG)))
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
