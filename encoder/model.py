"""The CNN encoder: log-CQT clip -> L2-normalised embedding."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .config import FeatureConfig, ModelConfig


class Encoder(nn.Module):
    """A small VGG-style CNN over (frequency x time).

    Each clip is standardised on its own (so loudness and the SoundFont's overall gain do
    not matter), then passes conv blocks (3x3 conv, batch norm, ReLU, 2x2 max-pool); the last
    feature map is averaged over frequency and pooled over time (mean and max), and a linear
    layer projects to ``embedding_dim``.  Works for any number of frames, so training can use
    random crops while indexing embeds whole clips.
    """

    def __init__(self, model: ModelConfig, features: FeatureConfig) -> None:
        super().__init__()
        self.config = model
        self.features = features
        blocks: list[nn.Module] = []
        c_in = 1
        for c in model.channels:
            blocks += [
                nn.Conv2d(c_in, c, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(model.dropout)
        self.head = nn.Linear(2 * c_in, model.embedding_dim, bias=False)
        # Batch norm on the embedding keeps every dimension's spread, which stops the collapse of
        # all clips onto one point that hard-negative triplet mining otherwise falls into early on.
        self.neck = nn.BatchNorm1d(model.embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, n_bins, frames) log-CQT -> (batch, embedding_dim), unit norm."""
        if x.dim() != 3:
            raise ValueError(f"expected (batch, bins, frames), got shape {tuple(x.shape)}")
        x = x.unsqueeze(1)
        if self.config.time_pool > 1:
            x = F.avg_pool2d(x, (1, self.config.time_pool), ceil_mode=True)
        mu = x.mean(dim=(2, 3), keepdim=True)
        sd = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-5)
        h = self.blocks((x - mu) / sd)
        h = h.mean(dim=2)  # over frequency: (batch, channels, time)
        h = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)
        return F.normalize(self.neck(self.head(self.dropout(h))), dim=1)


@torch.inference_mode()
def embed(model: Encoder, feats: np.ndarray | torch.Tensor, *, batch: int = 64) -> np.ndarray:
    """Embed ``(n, bins, frames)`` features in batches; returns float32 ``(n, dim)``."""
    model.eval()
    x = torch.as_tensor(feats, dtype=torch.float32)
    out = [model(x[i : i + batch]).numpy() for i in range(0, len(x), batch)]
    if not out:
        return np.zeros((0, model.config.embedding_dim), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)
