"""The pretraining recipe: one TOML file (``data/pretrain.toml``) read into frozen dataclasses.

Four tables, one per stage of ``musicidx pretrain``: ``[corpus]`` (which music), ``[views]`` (how
each passage is rendered), ``[model]`` (:class:`~musicidx.encoder.config.ModelConfig`) and
``[train]`` (the triplet loop). Unknown keys are refused, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import FEATURES_VERSION, FeatureConfig, ModelConfig, _from_dict
from ..errors import ConfigMismatchError, MusicIdxError


class PretrainError(MusicIdxError):
    """The pretraining recipe, corpus or work folder cannot be used."""


@dataclass(frozen=True)
class CorpusSpec:
    """Which music: music21 corpus folders and OpenScore Lieder, less everything held out.

    ``music21_labels`` names the composer a folder's pieces are labelled with; a folder absent
    from it gives unlabelled pieces (they still teach invariance: two renderings of one passage).
    A Lieder composer with at least ``lieder_min_labelled`` songs in the corpus is a labelled class.
    """

    music21: tuple[str, ...] = ("palestrina", "bach", "monteverdi", "josquin", "trecento")
    music21_labels: tuple[tuple[str, str], ...] = (("bach", "Bach"),)
    lieder: bool = True
    lieder_per_composer: int = 12
    lieder_min_labelled: int = 4
    max_pieces: int = 0  # 0 = every piece planned; else the first that many of the interleaved plan
    export_timeout: float = 90.0  # seconds one score may take to become MIDI


@dataclass(frozen=True)
class ViewSpec:
    """How each passage is rendered: ``views`` renderings of ``clips_per_piece`` windows, each
    with its own SoundFont, orchestration, transposition and tempo."""

    clips_per_piece: int = 4
    views: int = 3
    soundfonts: tuple[str, ...] = ("FluidR3_GM.sf2", "MuseScore_General_Lite.sf3", "TimGM6mb.sf2")
    # what a view's orchestration is drawn from: "random" (a GM program per part across families),
    # "piano", "strings", "winds" (every note by register), "as_written"
    orchestrations: tuple[str, ...] = ("random", "random", "piano", "strings", "winds", "as_written")
    max_transpose: int = 3  # semitones, each view drawn uniformly in [-n, n]
    tempo_jitter: float = 0.1  # each view's tempo scaled by a factor in [1 - j, 1 + j]
    seed: int = 0

    def __post_init__(self) -> None:
        if self.views < 2 or self.clips_per_piece < 1:
            raise ConfigMismatchError("views must be at least 2 (a pair per passage) and clips_per_piece at least 1")
        if not self.soundfonts or not self.orchestrations:
            raise ConfigMismatchError("name at least one SoundFont and one orchestration")
        if not 0.0 <= self.tempo_jitter < 1.0 or self.max_transpose < 0:
            raise ConfigMismatchError("tempo_jitter must be in [0, 1) and max_transpose >= 0")


@dataclass(frozen=True)
class LoopSpec:
    """The triplet loop: each step draws ``passages`` passages, two views of each; a passage's two
    views are positives (batch-hard, ``margin``), and labelled passages' composers add a second
    triplet term (semi-hard, ``composer_margin``) weighted by ``composer_weight``."""

    steps: int = 2000
    passages: int = 32
    labelled_share: float = 0.5  # of a step's passages, drawn composer-balanced from labelled pieces
    margin: float = 0.2
    composer_margin: float = 0.2
    composer_weight: float = 1.0
    lr: float = 2e-3
    weight_decay: float = 1e-4
    crop_seconds: float = 5.0
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.checkpoint_every < 1 or self.passages < 2:
            raise ConfigMismatchError("steps and checkpoint_every must be >= 1 and passages >= 2")
        if not 0.0 <= self.labelled_share <= 1.0:
            raise ConfigMismatchError(f"labelled_share must be in [0, 1], got {self.labelled_share}")


@dataclass(frozen=True)
class PretrainConfig:
    name: str = "pretrained"
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    views: ViewSpec = field(default_factory=ViewSpec)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(stats_dim=64))
    features: FeatureConfig = field(default_factory=FeatureConfig)
    loop: LoopSpec = field(default_factory=LoopSpec)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self, *parts: str) -> str:
        """A hash of the tables named in ``parts`` (all of them when none): what a stage depends on.
        With ``features``, the renderer's :data:`~musicidx.encoder.config.FEATURES_VERSION` counts too."""
        d = self.to_dict()
        chosen = {k: d[k] for k in (parts or tuple(d))}
        if "features" in chosen:
            chosen["features_version"] = FEATURES_VERSION
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainConfig:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigMismatchError(f"unknown pretraining table(s): {sorted(unknown)}")
        corpus = dict(data.get("corpus", {}))
        if "music21_labels" in corpus and isinstance(corpus["music21_labels"], dict):
            corpus["music21_labels"] = tuple(sorted(corpus["music21_labels"].items()))
        return cls(
            name=str(data.get("name", "pretrained")),
            corpus=_from_dict(CorpusSpec, corpus),
            views=_from_dict(ViewSpec, data.get("views", {})),
            model=ModelConfig.from_dict({"stats_dim": 64, **data.get("model", {})}),
            features=FeatureConfig.from_dict(data.get("features", {})),
            loop=_from_dict(LoopSpec, data.get("loop", {})),
        )


def load_pretrain_config(path: str | Path) -> PretrainConfig:
    """Read a pretraining recipe (TOML); :class:`PretrainError` naming the file on any fault."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise PretrainError(f"cannot read the pretraining recipe ({e.strerror or e})", path=p) from e
    except tomllib.TOMLDecodeError as e:
        raise PretrainError(f"the pretraining recipe is not valid TOML ({e})", path=p) from e
    try:
        return PretrainConfig.from_dict(data)
    except (MusicIdxError, TypeError, ValueError) as e:
        raise PretrainError(f"invalid pretraining recipe: {e}", path=p) from e
