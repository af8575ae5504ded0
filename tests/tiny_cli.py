"""``python tests/tiny_cli.py build ...``: the ``musicidx`` command in a process of its own, with the
tiny test configs as its defaults (what the ``tiny_cli_defaults`` fixture does in-process)."""

from __future__ import annotations

import functools
import sys

from tiny import FEATURES, MODEL, TRAIN

from musicidx.encoder import config
from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig
from musicidx.indexer import build

if __name__ == "__main__":
    train = {k: v for k, v in TRAIN.to_dict().items() if k != "seed"}
    config.FeatureConfig = functools.partial(FeatureConfig, **FEATURES.to_dict())
    config.TrainConfig = functools.partial(TrainConfig, **train)
    build.ModelConfig = functools.partial(ModelConfig, **MODEL.to_dict())
    from musicidx.cli import main

    sys.argv[0] = "musicidx"
    main()
