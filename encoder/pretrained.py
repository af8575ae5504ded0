"""Pretrained encoders shipped as package data: ``encoder/weights/<name>.pt`` and its card.

The card, ``<name>.json`` beside the weights, is what ``musicidx pretrain`` wrote: the recipe
(model and feature configs included), the weights' sha256 and every piece learned from.
:func:`load_pretrained` checks the sha256 and loads the ``state_dict`` with ``weights_only=True``;
an index records the name and sha256 of the weights its encoder started from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .config import FeatureConfig, ModelConfig
from .errors import MusicIdxError


class PretrainedError(MusicIdxError):
    """Shipped weights are missing, damaged or do not fit the recipe."""


@dataclass(frozen=True)
class Pretrained:
    name: str
    path: Path
    sha256: str
    model: ModelConfig
    features: FeatureConfig
    card: dict[str, Any]

    def state_dict(self) -> dict[str, Any]:
        import torch

        from .fingerprints import file_sha256

        if file_sha256(self.path) != self.sha256:
            raise PretrainedError(f"weights do not match their card's sha256 {self.sha256[:12]}", path=self.path)
        state: dict[str, Any] = torch.load(self.path, map_location="cpu", weights_only=True)
        return state

    def encoder(self, model: ModelConfig, features: FeatureConfig) -> Any:
        """An :class:`~musicidx.encoder.model.Encoder` of ``model`` over ``features`` holding these
        weights, in eval mode (the recipe's configs; they must match the card's)."""
        from .model import Encoder

        net = Encoder(model, features)
        net.load_state_dict(self.state_dict())
        net.eval()
        return net

    def to_dict(self) -> dict[str, Any]:
        """What a manifest records of the weights."""
        recipe = self.card.get("recipe", {})
        return {
            "name": self.name,
            "sha256": self.sha256,
            "pieces": len(self.card.get("pieces", [])),
            "classes": len(self.card.get("classes", [])),
            "steps": recipe.get("loop", {}).get("steps"),
        }


def weights_dir() -> Path:
    return Path(str(resources.files(__package__ or "musicidx.encoder").joinpath("weights")))


def shipped() -> list[str]:
    """Names of the pretrained encoders in the package, sorted."""
    d = weights_dir()
    return sorted(p.stem for p in d.glob("*.pt") if p.with_suffix(".json").is_file()) if d.is_dir() else []


def load_pretrained(name: str) -> Pretrained:
    """The shipped encoder ``name`` (or a ``.pt`` path with its card beside it)."""
    path = Path(name) if name.endswith(".pt") else weights_dir() / f"{name}.pt"
    card_path = path.with_suffix(".json")
    if not path.is_file() or not card_path.is_file():
        have = ", ".join(shipped()) or "none"
        raise PretrainedError(f"no pretrained encoder {name!r} (weights and card); shipped: {have}", path=path)
    try:
        card = json.loads(card_path.read_text())
        recipe = card["recipe"]
        model = ModelConfig.from_dict(recipe["model"])
        features = FeatureConfig.from_dict(recipe["features"])
        sha = str(card["sha256"])
    except (OSError, ValueError, KeyError, TypeError, MusicIdxError) as e:
        raise PretrainedError(f"unreadable card of pretrained encoder {name!r} ({e})", path=card_path) from e
    return Pretrained(path.stem, path, sha, model, features, card)
