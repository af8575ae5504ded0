"""The build's encoder: the recipe's pretrained weights as they are (frozen), with their last layer
retrained (head), or trained on the corpus -- from those weights or from scratch -- through the
cache of trained encoders (:class:`TrainedCache`), so an unchanged rebuild trains nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig
from musicidx.encoder.recipe import Recipe
from musicidx.encoder.runtime import Progress

from .features import FEATURES_VERSION
from .prepare import ClipArrays, Corpus, thin_clips
from .scoring import TrackScores

if TYPE_CHECKING:
    from musicidx.encoder.model import PooledMemo


class TrainedCache:
    """Trained encoders keyed by everything training depends on: the content, composer and work
    of every track in order, the feature, model and training configs, k and the code version.

    Training is deterministic given those, so an unchanged rebuild reuses the encoder instead
    of training again; any change to a file, a label or a config trains anew.
    """

    VERSION = 1

    def __init__(self, base: Path | None) -> None:
        self.root = None if base is None else base / f"encoders-v{self.VERSION}"

    @staticmethod
    def key(corpus: Corpus, mc: ModelConfig, tc: TrainConfig, k: int, start: str | None = None) -> str:
        """``start``: the sha256 of the pretrained weights training starts from (None: random)."""
        h = hashlib.sha256()
        for t, f in zip(corpus.tracks, corpus.features):
            h.update(f"{f.sha256}|{t.composer}|{t.work}\n".encode())
        parts = [corpus.feature_config.digest(), corpus.soundfont.sha256, mc.to_dict(), tc.to_dict(), k]
        if start is not None:  # keeps the keys of encoders trained from scratch as they were
            parts.append(start)
        h.update(json.dumps([*parts, FEATURES_VERSION, TrainedCache.VERSION], sort_keys=True).encode())
        return h.hexdigest()

    def get(self, key: str, features: FeatureConfig, mc: ModelConfig) -> Any:
        if self.root is None:
            return None
        import torch

        from musicidx.encoder.model import Encoder
        from musicidx.encoder.train import EpochStats, TrainResult

        try:
            meta = json.loads((self.root / f"{key}.json").read_text())
            state = torch.load(self.root / f"{key}.pt", map_location="cpu", weights_only=True)
            model = Encoder(mc, features)
            model.load_state_dict(state)
        except Exception:  # missing or damaged (EOFError, UnpicklingError...): train again
            return None
        model.eval()
        return TrainResult(model, int(meta["best_epoch"]), [EpochStats(**h) for h in meta["history"]])

    def put(self, key: str, result: Any) -> None:
        if self.root is None:
            return
        import torch

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for suffix, write in (
                (".pt", lambda f: torch.save(result.model.state_dict(), f)),
                (
                    ".json",
                    lambda f: f.write(
                        json.dumps(
                            {"best_epoch": result.best_epoch, "history": [h.__dict__ for h in result.history]}
                        ).encode()
                    ),
                ),
            ):
                fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
                with os.fdopen(fd, "wb") as f:
                    write(f)
                os.replace(tmp, self.root / f"{key}{suffix}")
        except OSError:
            pass  # a read-only or full cache must not fail the build


def recipe_encoder(
    corpus: Corpus,
    r: Recipe,
    tr: ClipArrays,
    track_label: np.ndarray,
    held_out: Callable[..., TrackScores] | None,
    progress: Progress | None,
    memo: PooledMemo | None = None,
) -> tuple[Any, dict[str, Any] | None]:
    """The recipe's encoder and, when it starts from shipped weights, what the manifest records
    of them: the weights as they are (frozen), with their last layer retrained on ``tr`` (head;
    seconds, so not cached; ``memo``, of those weights' body, gives the clips' pooled features), or
    trained on ``tr`` (from them or from scratch) through the cache of trained encoders."""
    from musicidx.encoder.pretrained import load_pretrained
    from musicidx.encoder.train import TrainingData, TrainResult, train_encoder, train_head

    pre = None if r.encoder is None else load_pretrained(r.encoder)
    if (r.frozen or r.head) and pre is not None:
        model = pre.encoder(r.model, corpus.feature_config)
        if r.head:
            data = TrainingData(tr.feats, track_label[tr.track], tr.track)
            on_epoch = None if progress is None else (lambda s: progress("training", s.epoch, r.train.epochs))
            return train_head(model, data, train_config=r.train, on_epoch=on_epoch, memo=memo), pre.to_dict()
        if progress is not None:
            progress("training", 1, 1)
        return TrainResult(model, 0, []), pre.to_dict()
    start = None if pre is None else pre.state_dict()
    cache = TrainedCache(corpus.cache_base)
    key = cache.key(corpus, r.model, r.train, r.k, None if pre is None else pre.sha256)
    result = cache.get(key, corpus.feature_config, r.model)
    if result is None:
        tr_few = thin_clips(tr, per_track=3)  # per-epoch validation: a cheaper reference set
        result = train_encoder(
            TrainingData(tr.feats, track_label[tr.track], tr.track, tr.views),
            features=corpus.feature_config,
            model_config=r.model,
            train_config=r.train,
            validate=None if held_out is None else (lambda m: held_out(m, tr_few).accuracy()),
            on_epoch=None if progress is None else (lambda s: progress("training", s.epoch, r.train.epochs)),
            init_state=start,
        )
        cache.put(key, result)
    elif progress is not None:
        progress("training", r.train.epochs, r.train.epochs)
    return result, None if pre is None else pre.to_dict()
