"""Audio clips -> log-magnitude constant-Q spectrograms with nnAudio on the CPU."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import FeatureConfig

_LAYERS: dict[tuple[Any, ...], Any] = {}
_LOG_FLOOR = 1e-4


def cqt_layer(cfg: FeatureConfig) -> Any:
    """The process's nnAudio ``CQT1992v2`` layer for ``cfg`` (kernels are built once)."""
    key = (cfg.sample_rate, cfg.hop_length, cfg.fmin, cfg.n_bins, cfg.bins_per_octave)
    if key not in _LAYERS:
        from nnAudio.features import CQT1992v2

        _LAYERS[key] = CQT1992v2(
            sr=cfg.sample_rate,
            hop_length=cfg.hop_length,
            fmin=cfg.fmin,
            n_bins=cfg.n_bins,
            bins_per_octave=cfg.bins_per_octave,
            output_format="Magnitude",
            verbose=False,  # nnAudio prints otherwise, and stdout may carry CSV or JSON
        ).eval()
    return _LAYERS[key]


def cqt_features(audio: np.ndarray, cfg: FeatureConfig, *, batch: int = 32) -> np.ndarray:
    """``(n, clip_samples)`` float32 audio -> ``(n, n_bins, frames_per_clip)`` float32 log-CQT."""
    import torch

    if audio.ndim != 2 or audio.shape[1] != cfg.clip_samples:
        raise ValueError(f"expected audio of shape (n, {cfg.clip_samples}), got {audio.shape}")
    layer = cqt_layer(cfg)
    out = np.empty((len(audio), cfg.n_bins, cfg.frames_per_clip), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, len(audio), batch):
            mag = layer(torch.from_numpy(np.ascontiguousarray(audio[i : i + batch])))
            out[i : i + batch] = torch.log(mag + _LOG_FLOOR).numpy()
    return out
