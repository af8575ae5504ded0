"""One source of truth for every constant that shapes features, the model and training.

The configs are frozen dataclasses; derived values are properties, never repeated
numbers.  :meth:`FeatureConfig.to_dict` is what goes into the index manifest, and a query
whose features differ from the manifest's is refused (see :meth:`FeatureConfig.check_same`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigMismatchError


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/musicidx`` (``~/.cache/musicidx`` when unset): features, trained
    encoders, CQT kernels and file hashes are cached there."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "musicidx"


def _from_dict(cls: Any, data: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigMismatchError(f"unknown {cls.__name__} field(s): {sorted(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)


#: Bump when rendering or the CQT changes in a way the FeatureConfig does not capture; it keys
#: the feature cache and the pretraining's views and checkpoints (2: a fresh synthesiser per
#: file, windows aligned to FluidSynth's blocks; 3: float output from FluidSynth, no dither).
FEATURES_VERSION = 3


@dataclass(frozen=True)
class FeatureConfig:
    """How a MIDI file becomes clips of log-CQT features.

    Audio is rendered at ``sample_rate`` (the CQT's top bin, 3951 Hz (B7) for 84 bins from
    C1, stays below Nyquist), cut into up to ``clips_per_track`` windows of ``clip_seconds``
    spread evenly over the part of the piece that sounds, and turned into an
    ``n_bins x frames_per_clip`` log-magnitude constant-Q spectrogram.
    """

    sample_rate: int = 11025
    hop_length: int = 512
    fmin: float = 32.703  # C1
    n_bins: int = 84
    bins_per_octave: int = 12
    clip_seconds: float = 10.0
    clips_per_track: int = 8
    min_clip_hop_seconds: float = 5.0  # windows of a short piece overlap by at most half
    preroll_seconds: float = 0.25  # rendered before each window so notes already sounding settle
    silence_rms: float = 1e-4  # a clip quieter than this (RMS, full scale 1.0) counts as silent
    # Render every melodic instrument with this General MIDI program (0 = acoustic grand piano),
    # so that timbre cannot stand in for style; None keeps each file's own instruments.
    render_program: int | None = None

    def __post_init__(self) -> None:
        if self.sample_rate < 8000:
            raise ConfigMismatchError(f"sample_rate must be at least 8000 Hz, got {self.sample_rate}")
        top = self.fmin * 2 ** ((self.n_bins - 1) / self.bins_per_octave)
        if top >= self.sample_rate / 2:
            raise ConfigMismatchError(
                f"the top CQT bin ({top:.0f} Hz) must lie below Nyquist ({self.sample_rate / 2:.0f} Hz)"
            )
        if self.render_program is not None and not 0 <= self.render_program <= 127:
            raise ConfigMismatchError(f"render_program must be a General MIDI program 0-127, got {self.render_program}")
        if self.clip_seconds <= 0 or self.clips_per_track < 1:
            raise ConfigMismatchError("clip_seconds must be > 0 and clips_per_track >= 1")

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def frames_per_clip(self) -> int:
        # nnAudio pads the signal (center=True), so a signal of n samples yields n // hop + 1 frames.
        return self.clip_samples // self.hop_length + 1

    @property
    def fmax(self) -> float:
        return self.fmin * 2 ** ((self.n_bins - 1) / self.bins_per_octave)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        return _from_dict(cls, data)

    def digest(self) -> str:
        """A short stable hash of the fields that change the features (a cache key part).

        Fields at a ``None`` default are left out, so adding such a field keeps old cache keys."""
        fields = {k: v for k, v in self.to_dict().items() if v is not None}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def check_same(self, other: FeatureConfig, *, what: str = "index") -> None:
        """Raise :class:`ConfigMismatchError` naming every field where ``other`` (the config of
        ``what``, e.g. the index) differs from this run's config ``self``, with both values."""
        diffs = []
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            same = math.isclose(a, b, rel_tol=1e-9) if isinstance(a, float) else a == b
            if not same:
                diffs.append(f"{f.name}: {what} has {b!r}, this run has {a!r}")
        if diffs:
            raise ConfigMismatchError("feature config differs from the " + what + ": " + "; ".join(diffs))


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the CNN encoder."""

    channels: tuple[int, ...] = (24, 48, 96, 192)
    embedding_dim: int = 128
    time_pool: int = 2  # average-pool the CQT frames by this factor before the first conv
    dropout: float = 0.1
    # Width of the note-statistics branch (key-normalised pitch-class, interval, register and
    # activity statistics of the CQT, see model.note_statistics); 0 = the CNN alone.
    stats_dim: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class TrainConfig:
    """Triplet training: P composers x K clips per batch, online mining, best epoch kept."""

    epochs: int = 12
    batches_per_epoch: int = 16
    clips_per_composer: int = 12  # K; a batch holds every composer (P = all) with K clips each
    margin: float = 0.2
    mining: str = "semi-hard"  # or "batch-hard", "batch-all"; chosen by the ablation in BENCHMARKS.md
    lr: float = 2e-3
    weight_decay: float = 1e-4
    crop_seconds: float = 8.0  # random crop of each clip during training
    max_transpose: int = 2  # semitones (CQT bins x bins_per_octave/12) of random roll
    val_fraction: float = 0.2  # share of works held out for validation and calibration
    program_variants: int = 0  # re-orchestrated renderings of each track (GM programs remapped)
    # With program_variants > 0: each batch also holds every clip in a second rendering, and this
    # weighs a loss that keeps the two renderings of one passage nearer than other passages.
    view_positive: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, data)
