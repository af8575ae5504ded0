"""The recipe of an index: everything that decides its answers, in one frozen value.

A :class:`Recipe` holds the feature, model and training configs, ``k``, the acceptance rate of the
novelty threshold, the FAISS kind, and the pretrained encoder the model starts from (with whether
``build`` fine-tunes it, retrains its last layer, or keeps it frozen). :data:`DEFAULT_RECIPE` is the one default of
``musicidx build`` and ``eval``; a recipe file (TOML or JSON, ``build --recipe FILE``) changes
only what it names::

    k = 10
    encoder = "m21-lieder-small-v2"   # shipped weights (encoder/weights/); "": train in build
    finetune = false                  # true: train the whole encoder on the folder
    head = true                       # true: retrain only its last layer on the folder
    [features]
    render_program = 0
    [train]
    epochs = 12

The whole recipe is recorded in every index's manifest (:meth:`Recipe.to_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import FeatureConfig, ModelConfig, TrainConfig
from .errors import ConfigMismatchError, MusicIdxError

FAISS_KINDS = ("auto", "flat", "hnsw", "ivfpq")
#: Feature fields a pretrained encoder fixes (the CQT it learned from); the others (which windows,
#: how many, the render program) are free per recipe.
_ENCODER_FEATURES = ("sample_rate", "hop_length", "fmin", "n_bins", "bins_per_octave")


class RecipeError(MusicIdxError):
    """A recipe file or value that cannot be used."""


@dataclass(frozen=True)
class Recipe:
    # S3 (BENCHMARKS.md, "Style, not instrumentation"): every part rendered on the piano, and the
    # note-statistics branch beside the CNN.
    features: FeatureConfig = field(default_factory=lambda: FeatureConfig(render_program=0))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(stats_dim=64))
    train: TrainConfig = field(default_factory=TrainConfig)
    k: int = 10  # neighbours per clip: the one place its default is written
    accept_rate: float = 0.95  # share of held-out known-composer tracks under the novelty threshold
    faiss: str = "auto"
    encoder: str | None = None  # shipped pretrained weights to start from; None: trained in build
    finetune: bool = False  # with ``encoder``: train on the folder from the weights (else frozen)
    head: bool = False  # with ``encoder``: retrain only its last layer on the folder, the rest frozen

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int):
            raise RecipeError(f"k must be a whole number, got {self.k!r}")
        if isinstance(self.accept_rate, bool) or not isinstance(self.accept_rate, int | float):
            raise RecipeError(f"accept_rate must be a number, got {self.accept_rate!r}")
        for name in ("finetune", "head"):
            if not isinstance(getattr(self, name), bool):
                raise RecipeError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.encoder is not None and not isinstance(self.encoder, str):
            raise RecipeError(f"encoder must be the name of shipped weights or a .pt path, got {self.encoder!r}")
        if not 1 <= self.k <= 1000:
            raise RecipeError(f"k must be in 1..1000, got {self.k}")
        if not 0.0 < self.accept_rate <= 1.0:
            raise RecipeError(f"accept_rate must be in (0, 1], got {self.accept_rate}")
        if self.faiss not in FAISS_KINDS:
            raise RecipeError(f"faiss must be one of {', '.join(FAISS_KINDS)}, got {self.faiss!r}")
        if (self.finetune or self.head) and self.encoder is None:
            name = "finetune" if self.finetune else "head"
            raise RecipeError(f"{name} needs an encoder (the pretrained weights to start from)")
        if self.finetune and self.head:
            raise RecipeError("finetune (train the whole encoder) and head (only its last layer) exclude each other")

    @property
    def frozen(self) -> bool:
        """The encoder is used as shipped: ``build`` trains nothing."""
        return self.encoder is not None and not self.finetune and not self.head

    @property
    def frozen_body(self) -> bool:
        """Every layer but the last is used as shipped: frozen, or ``head`` (only the last retrained)."""
        return self.encoder is not None and not self.finetune

    @property
    def training_renderings(self) -> int:
        """Re-orchestrated renderings per track that training uses (``train.program_variants``);
        none when the layers that would learn from them are kept as shipped."""
        return 0 if self.frozen_body else self.train.program_variants

    def check_encoder(self) -> None:
        """With ``encoder``: the weights exist, and the model and CQT match the ones they learned."""
        if self.encoder is None:
            return
        from .pretrained import load_pretrained

        p = load_pretrained(self.encoder)
        if p.model != self.model:
            raise RecipeError(f"the model config differs from encoder {self.encoder!r}'s: {p.model} vs {self.model}")
        diffs = [f for f in _ENCODER_FEATURES if getattr(p.features, f) != getattr(self.features, f)]
        if diffs:
            raise RecipeError(f"encoder {self.encoder!r} learned other CQT features ({', '.join(diffs)})")

    def replace(self, **changes: Any) -> Recipe:
        """A copy with ``changes``; ``None`` values leave a field as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base: Recipe | None = None) -> Recipe:
        """``base`` (default :data:`DEFAULT_RECIPE`) with what ``data`` names; unknown keys are refused.

        ``encoder = ""`` (or JSON ``null``) means no pretrained encoder: ``build`` trains one from the
        folder alone, and ``head``/``finetune``, unless named, become false."""
        base = base or DEFAULT_RECIPE
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise RecipeError(f"unknown recipe key(s) {sorted(unknown)}; known: {sorted(names)}")
        changes: dict[str, Any] = {}
        try:
            for key, kind in (("features", FeatureConfig), ("model", ModelConfig), ("train", TrainConfig)):
                if key in data:
                    merged = {**dataclasses.asdict(getattr(base, key)), **data[key]}
                    changes[key] = kind.from_dict(merged)
        except (ConfigMismatchError, TypeError, ValueError) as e:
            raise RecipeError(f"invalid recipe: {e}") from e
        for key in ("k", "accept_rate", "faiss", "encoder", "finetune", "head"):
            if key in data:
                changes[key] = data[key]
        if "encoder" in data and changes["encoder"] in ("", None):
            changes["encoder"] = None
            changes.setdefault("head", False)
            changes.setdefault("finetune", False)
        return dataclasses.replace(base, **changes)


#: No pretrained encoder: ``build`` trains the whole CNN with triplets on the folder alone (S3, the
#: default before the pretrained encoder; the demo's recipe and the tests' tiny configurations).
SCRATCH_RECIPE = Recipe()
#: The pretrained encoder the default recipe starts from (``encoder/weights/``).
SHIPPED_ENCODER = "m21-lieder-small-v2"
#: The default of ``musicidx build`` and ``eval``: the shipped encoder, its last layer retrained
#: on the folder (see BENCHMARKS.md, "A pretrained encoder", for why).
DEFAULT_RECIPE = Recipe(encoder=SHIPPED_ENCODER, head=True)


def load_recipe(path: str | Path, *, base: Recipe | None = None) -> Recipe:
    """Read a recipe file (``.toml``, else JSON) over ``base``; :class:`RecipeError` naming the file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise RecipeError(f"cannot read the recipe ({e.strerror or e})", path=p) from e
    try:
        data = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise RecipeError(
            f"the recipe is not valid {'TOML' if p.suffix.lower() == '.toml' else 'JSON'} ({e})", path=p
        ) from e
    if not isinstance(data, dict):
        raise RecipeError("a recipe is a table of keys", path=p)
    try:
        recipe = Recipe.from_dict(data, base=base)
        recipe.check_encoder()
    except MusicIdxError as e:
        raise RecipeError(e.reason, path=p) from e
    return recipe
