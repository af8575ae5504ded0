"""musicidx.encoder: MIDI -> audio clips -> constant-Q features -> embeddings.

The lowest stage: it knows nothing of indexes.  The shared base of the package
(:mod:`.errors`, :class:`.config.FeatureConfig`) lives here so that every import runs down
``musicidx -> query -> indexer -> encoder``.
"""

from .config import FeatureConfig, ModelConfig, TrainConfig
from .errors import (
    ConfigMismatchError,
    DependencyError,
    InvalidMidiError,
    MusicIdxError,
    SynthesisError,
)

__all__ = [
    "ConfigMismatchError",
    "DependencyError",
    "FeatureConfig",
    "InvalidMidiError",
    "ModelConfig",
    "MusicIdxError",
    "SynthesisError",
    "TrainConfig",
]
