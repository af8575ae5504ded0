"""The tiny configurations the tests build with, and other names shared by test modules
(conftest.py holds the fixtures; test modules import plain names from here, not from conftest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig
from musicidx.encoder.recipe import Recipe

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

#: Two-second clips, three per track: a track of the tiny corpus renders in ~0.05 s.
FEATURES = FeatureConfig(clip_seconds=2.0, clips_per_track=3, min_clip_hop_seconds=1.0)
#: A small CNN: the plumbing is what these tests are about, not accuracy.
MODEL = ModelConfig(channels=(8, 16, 32), embedding_dim=32)
#: Four triplet steps. val_fraction 0.34 -> StratifiedGroupKFold with 3 splits, and each composer
#: of the tiny corpus has 3 works (4 tracks), so every composer keeps a work in each split.
TRAIN = TrainConfig(epochs=2, batches_per_epoch=2, clips_per_composer=4, val_fraction=0.34, crop_seconds=1.5, seed=0)
#: The three as a recipe: no pretrained encoder (the default recipe's is full-size), trained in build.
RECIPE = Recipe(features=FEATURES, model=MODEL, train=TRAIN)


def write_tiny_recipe(path: Path) -> Path:
    """A recipe file of the tiny configs (training seed left to ``--seed``), for ``$MUSICIDX_RECIPE``."""
    import json

    train = {k: v for k, v in TRAIN.to_dict().items() if k != "seed"}
    data = {"encoder": None, "features": FEATURES.to_dict(), "model": MODEL.to_dict(), "train": train}
    path.write_text(json.dumps(data))
    return path


class SyntheticIndex(NamedTuple):
    """An index made by hand (see the ``synthetic_index`` fixture)."""

    path: Path
    feats: np.ndarray  # the log-CQT of every indexed clip, row i = clip_id i
    contents: Any  # the IndexContents that were saved
