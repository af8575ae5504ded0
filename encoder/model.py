"""The CNN encoder: log-CQT clip -> L2-normalised embedding.

Two branches read the same log-CQT. A VGG-style CNN learns its own patterns; a fixed front end
(:func:`note_statistics`) turns the CQT into the kind of statistics musicologists use for style —
a key-normalised pitch-class profile, harmonic and melodic interval profiles, register and
activity — which a small learned layer weighs. The statistics are computed from spectral peaks
above the local spectral envelope, folded into pitch classes, so the overall timbre (the envelope)
and the transposition (the key) leave them nearly unchanged; the CNN alone would happily learn the
instrumentation instead (see BENCHMARKS.md).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .config import FeatureConfig, ModelConfig

#: Krumhansl-Kessler key profiles (major, minor), tonic first.
KEY_PROFILES = (
    (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88),
    (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17),
)
#: Frame lags (about 0.09 s and 0.37 s at 11,025 Hz / hop 512) of the melodic interval profiles.
_LAGS = (2, 8)
#: How many numbers :func:`note_statistics` gives per clip.
N_STATISTICS = 12 + 2 + 6 + 12 * len(_LAGS) + 3 + 3


def note_statistics(x: torch.Tensor, *, bins_per_octave: int = 12) -> torch.Tensor:
    """``(batch, n_bins, frames)`` log-CQT (bin 0 a C) -> ``(batch, N_STATISTICS)`` statistics of
    the notes in it, nearly independent of timbre and key:

    * peaks: the log-CQT minus its local spectral envelope (a moving average over an octave of
      bins), positive part; folded into a 12-bin chroma per frame, normalised to sum 1;
    * the pitch-class profile over the clip (frames weighted by their peak energy), rolled so the
      best-correlating Krumhansl-Kessler key's tonic comes first, and that key's major and minor
      correlations (12 + 2);
    * the harmonic interval-class profile: how much simultaneous pitch classes lie 1..6 semitones
      apart (6);
    * melodic interval profiles: pitch classes that newly appear ``lag`` frames later, by their
      interval above the earlier frame's pitch classes, for two lags (12 x 2);
    * register: mean and spread of the energy-weighted pitch, and its change over time (3);
    * activity: chroma entropy (how many pitch classes sound at once) mean and std, and onset
      density (the share of peak energy that is new from frame to frame) (3).

    At other resolutions than 12 bins per octave, each bin counts for the pitch class it starts in.
    (76 lines, one statistic after the other as listed above: split, the list would be in one place
    and its arithmetic in five.)
    """
    n, bins, frames = x.shape
    env = (
        F.avg_pool1d(x.transpose(1, 2).reshape(n * frames, 1, bins), 13, stride=1, padding=6, count_include_pad=False)
        .reshape(n, frames, bins)
        .transpose(1, 2)
    )
    peaks = F.relu(x - env)  # (n, bins, T)
    pc_of_bin = (torch.arange(bins) * 12 // bins_per_octave) % 12
    chroma = torch.zeros(n, 12, frames, dtype=x.dtype).index_add_(1, pc_of_bin, peaks)
    energy = chroma.sum(dim=1)  # (n, T)
    c = chroma / energy.clamp_min(1e-6)[:, None, :]
    w = energy / energy.sum(dim=1, keepdim=True).clamp_min(1e-6)  # frame weights, sum 1

    profile = (c * w[:, None, :]).sum(dim=2)  # (n, 12)
    kk = torch.tensor(KEY_PROFILES, dtype=x.dtype)
    keys = torch.stack([torch.roll(kk, t, dims=1) for t in range(12)], dim=1)  # (2, 12 tonics, 12)
    pz = (profile - profile.mean(1, keepdim=True)) / profile.std(1, keepdim=True).clamp_min(1e-6)
    kz = (keys - keys.mean(2, keepdim=True)) / keys.std(2, keepdim=True)
    corr = torch.einsum("np,mtp->nmt", pz, kz) / 11.0  # (n, mode, tonic)
    tonic = corr.amax(dim=1).argmax(dim=1)  # (n,)
    idx = (torch.arange(12)[None, :] + tonic[:, None]) % 12
    rolled = torch.gather(profile, 1, idx)
    mode = torch.gather(corr, 2, tonic[:, None, None].expand(n, 2, 1)).squeeze(2)  # (n, 2)

    rolled_c = [torch.roll(c, -d, dims=1) for d in range(12)]  # rolled_c[d][:, p] = c[:, p + d]
    harmonic = torch.stack([((c * rolled_c[d]).sum(1) * w).sum(1) for d in range(1, 7)], dim=1)

    melodic = []
    for lag in _LAGS:
        if frames > lag:
            new = F.relu(c[:, :, lag:] - c[:, :, :-lag])  # pitch classes that appear
            before, wl = c[:, :, :-lag], w[:, lag:]
            prof = torch.stack([((before * torch.roll(new, -d, dims=1)).sum(1) * wl).sum(1) for d in range(12)], dim=1)
            melodic.append(prof / prof.sum(1, keepdim=True).clamp_min(1e-6))
        else:
            melodic.append(torch.full((n, 12), 1.0 / 12, dtype=x.dtype))

    pos = torch.arange(bins, dtype=x.dtype) / max(bins - 1, 1)
    frame_mass = peaks / peaks.sum(1, keepdim=True).clamp_min(1e-6)
    centre = (frame_mass * pos[None, :, None]).sum(1)  # (n, T)
    spread = ((frame_mass * (pos[None, :, None] - centre[:, None, :]) ** 2).sum(1)).clamp_min(0).sqrt()
    mean_centre = (centre * w).sum(1)
    register = torch.stack(
        [
            mean_centre,
            (spread * w).sum(1),
            (((centre - mean_centre[:, None]) ** 2) * w).sum(1).sqrt(),
        ],
        dim=1,
    )

    entropy = -(c * (c + 1e-8).log()).sum(1)  # (n, T)
    flux = F.relu(chroma[:, :, 1:] - chroma[:, :, :-1]).sum(1) if frames > 1 else energy[:, :0]
    onset = flux.sum(1) / energy.sum(1).clamp_min(1e-6)
    ent_mean = (entropy * w).sum(1)
    activity = torch.stack([ent_mean, (((entropy - ent_mean[:, None]) ** 2) * w).sum(1).sqrt(), onset], dim=1)
    return torch.cat([rolled, mode, harmonic, *melodic, register, activity], dim=1)


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
        width = 2 * c_in
        self.stats: nn.Module | None = None
        if model.stats_dim > 0:
            self.stats = nn.Sequential(
                nn.BatchNorm1d(N_STATISTICS), nn.Linear(N_STATISTICS, model.stats_dim), nn.ReLU(inplace=True)
            )
            width += model.stats_dim
        self.head = nn.Linear(width, model.embedding_dim, bias=False)
        # Batch norm on the embedding keeps every dimension's spread, which stops the collapse of
        # all clips onto one point that hard-negative triplet mining otherwise falls into early on.
        self.neck = nn.BatchNorm1d(model.embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, n_bins, frames) log-CQT -> (batch, embedding_dim), unit norm."""
        return self.project(self.dropout(self.pooled(x)))

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """The last layer: pooled features (:meth:`pooled`) -> unit-norm embeddings.  A recipe with
        ``head = true`` retrains only this layer (``head`` and ``neck``) on the user's folder."""
        return F.normalize(self.neck(self.head(h)), dim=1)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, n_bins, frames) log-CQT -> (batch, width): the CNN's feature map pooled
        over frequency and time (mean and max), beside the note statistics."""
        if x.dim() != 3:
            raise ValueError(f"expected (batch, bins, frames), got shape {tuple(x.shape)}")
        stats = (
            None
            if self.stats is None
            else self.stats(note_statistics(x, bins_per_octave=self.features.bins_per_octave))
        )
        x = x.unsqueeze(1)
        if self.config.time_pool > 1:
            x = F.avg_pool2d(x, (1, self.config.time_pool), ceil_mode=True)
        mu = x.mean(dim=(2, 3), keepdim=True)
        sd = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-5)
        h = self.blocks((x - mu) / sd)
        h = h.mean(dim=2)  # over frequency: (batch, channels, time)
        h = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)
        if stats is not None:
            h = torch.cat([h, stats], dim=1)
        return h


#: The parameters of the last layer (:meth:`Encoder.project`), which a head recipe retrains.
_LAST_LAYER = ("head.", "neck.")


class PooledMemo:
    """The frozen body of an encoder -- every layer before the last (:meth:`Encoder.pooled`) --
    remembering each clip's pooled features by the clip's content.

    ``musicidx eval`` re-fits every fold of every training seed with the same shipped body: a
    frozen recipe keeps the last layer too, a head recipe retrains it per fit
    (:func:`~musicidx.encoder.train.train_head`). Each clip, as written and in each re-orchestration,
    then needs the body once per evaluation, not once per fit and role; a last layer over the memo
    is :class:`EmbeddingMemo`. In eval mode a clip's pooled features do not depend on its
    batch, up to float rounding. The memo keeps its own copy of the weights, which never change.
    """

    def __init__(self, model: Encoder) -> None:
        self.model = copy.deepcopy(model).eval()
        self._seen: dict[bytes, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, model: Encoder) -> None:
        """``ValueError`` unless ``model``'s body -- every weight and statistic but the last layer's --
        is this memo's."""
        mine, theirs = self.model.state_dict(), model.state_dict()
        body = [k for k in mine if not k.startswith(_LAST_LAYER)]
        if (
            (self.model.config, self.model.features) != (model.config, model.features)
            or mine.keys() != theirs.keys()
            or not all(torch.equal(mine[k], theirs[k]) for k in body)
        ):
            raise ValueError("the encoder's layers before the last are not those of the memo")

    def __call__(self, feats: np.ndarray | torch.Tensor, *, batch: int = 64) -> np.ndarray:
        """``(n, bins, frames)`` features -> float32 ``(n, width)`` pooled features, the body run
        only on the clips it has not seen."""
        import hashlib

        x = np.ascontiguousarray(np.asarray(feats, dtype=np.float32))
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in x]
        todo = list(dict.fromkeys(k for k in keys if k not in self._seen))
        if todo:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            new = pool(self.model, x[[first[k] for k in todo]], batch=batch)
            self._seen.update(zip(todo, new))
        if not keys:
            return np.zeros((0, self.model.head.in_features), dtype=np.float32)
        return np.stack([self._seen[k] for k in keys]).astype(np.float32, copy=False)


class EmbeddingMemo:
    """An encoder whose frozen body is read from a :class:`PooledMemo`: a clip's embedding is
    ``model.project(memo(clip))``, so the CNN runs only for clips the memo has not seen.

    Pass it wherever an :class:`Encoder` is embedded with :func:`embed`; it answers with the
    embedding ``model`` gives for that clip, up to float rounding. ``model``'s last layer may be its
    own (a head recipe's, retrained per fold) but its body must be the memo's (else ``ValueError``);
    without ``memo``, a new memo of ``model``'s body.
    """

    def __init__(self, model: Encoder, memo: PooledMemo | None = None) -> None:
        self.memo = PooledMemo(model) if memo is None else memo
        self.memo.check(model)
        self.model = model
        self.config = model.config

    def __len__(self) -> int:
        return len(self.memo)

    def __call__(self, feats: np.ndarray | torch.Tensor, *, batch: int = 64) -> np.ndarray:
        h = torch.from_numpy(self.memo(feats, batch=batch))
        if not len(h):
            return np.zeros((0, self.config.embedding_dim), dtype=np.float32)
        self.model.eval()
        with torch.inference_mode():
            out = [self.model.project(h[i : i + batch]).numpy() for i in range(0, len(h), batch)]
        return np.concatenate(out).astype(np.float32, copy=False)


@torch.inference_mode()
def pool(model: Encoder, feats: np.ndarray | torch.Tensor, *, batch: int = 64) -> np.ndarray:
    """The pooled features (:meth:`Encoder.pooled`) of ``(n, bins, frames)`` features in batches,
    in eval mode; returns float32 ``(n, width)``."""
    model.eval()
    x = torch.as_tensor(feats, dtype=torch.float32)
    out = [model.pooled(x[i : i + batch]).numpy() for i in range(0, len(x), batch)]
    if not out:
        return np.zeros((0, model.head.in_features), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


@torch.inference_mode()
def embed(model: Encoder | EmbeddingMemo, feats: np.ndarray | torch.Tensor, *, batch: int = 64) -> np.ndarray:
    """Embed ``(n, bins, frames)`` features in batches; returns float32 ``(n, dim)``."""
    if isinstance(model, EmbeddingMemo):
        return model(feats, batch=batch)
    model.eval()
    x = torch.as_tensor(feats, dtype=torch.float32)
    out = [model(x[i : i + batch]).numpy() for i in range(0, len(x), batch)]
    if not out:
        return np.zeros((0, model.config.embedding_dim), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)
