"""Triplet training of the encoder: P x K batches, online mining, augmentation, best epoch kept.

Everything here works on precomputed log-CQT clips held in memory; rendering and caching
live in :mod:`musicidx.indexer`.  Training is seeded: the same inputs and seed give the same
weights (torch runs deterministic kernels on the CPU).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from .config import FeatureConfig, ModelConfig, TrainConfig
from .model import Encoder, PooledMemo, pool
from .runtime import torch_threads


@dataclass
class TrainingData:
    """Clips in memory: ``feats[i]`` belongs to track ``track[i]`` of composer ``label[i]``."""

    feats: np.ndarray  # (n_clips, n_bins, frames) float32 or float16
    label: np.ndarray  # (n_clips,) int
    track: np.ndarray  # (n_clips,) int
    views: tuple[np.ndarray, ...] = ()  # re-orchestrated renderings, row-aligned with feats

    def __post_init__(self) -> None:
        if not (len(self.feats) == len(self.label) == len(self.track)):
            raise ValueError("feats, label and track must have the same length")


@dataclass
class EpochStats:
    epoch: int
    loss: float
    active_triplets: float  # share of anchors whose triplet loss was > 0
    val_accuracy: float | None
    val_balanced_accuracy: float | None


@dataclass
class TrainResult:
    model: Encoder
    best_epoch: int
    history: list[EpochStats] = field(default_factory=list)


class PKSampler:
    """Batches of every composer (P) x ``K`` clips, the K clips drawn from different tracks
    where the composer has enough of them."""

    def __init__(self, label: np.ndarray, track: np.ndarray, k: int, rng: np.random.Generator) -> None:
        self.k = k
        self.rng = rng
        self.tracks_of: dict[int, np.ndarray] = {}
        self.clips_of: dict[int, np.ndarray] = {}
        for c in np.unique(label):
            self.tracks_of[int(c)] = np.unique(track[label == c])
        for t in np.unique(track):
            self.clips_of[int(t)] = np.flatnonzero(track == t)

    def batch(self) -> np.ndarray:
        idx = []
        for tracks in self.tracks_of.values():
            chosen = self.rng.choice(tracks, size=self.k, replace=len(tracks) < self.k)
            idx += [int(self.rng.choice(self.clips_of[int(t)])) for t in chosen]
        return np.asarray(idx)


def pairwise_distances(emb: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between unit vectors: sqrt(2 - 2 cos), numerically safe."""
    sim = emb @ emb.T
    return (2.0 - 2.0 * sim).clamp_min(1e-12).sqrt()


def triplet_loss(emb: torch.Tensor, labels: torch.Tensor, *, margin: float, mining: str) -> tuple[torch.Tensor, float]:
    """Online triplet loss over a batch; returns (loss, share of active anchors).

    ``batch-hard`` (Hermans et al. 2017): per anchor, its farthest positive and nearest
    negative.  ``batch-all``: the mean over every triplet of the batch that still violates
    the margin.  ``semi-hard`` (Schroff et al. 2015, FaceNet): per anchor-positive pair, the
    nearest negative farther than the positive, else the farthest negative.  A ``margin <= 0``
    means the soft margin ``softplus(d_ap - d_an)``.
    """
    d = pairwise_distances(emb)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    pos_mask = same & ~eye
    neg_mask = ~same
    inf = torch.tensor(float("inf"))
    if mining == "batch-hard":
        hardest_pos = torch.where(pos_mask, d, torch.zeros_like(d)).amax(dim=1)
        hardest_neg = torch.where(neg_mask, d, inf).amin(dim=1)
        losses = _hinge(hardest_pos - hardest_neg, margin)
        valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)
        losses = losses[valid]
    elif mining == "semi-hard":
        a, p = pos_mask.nonzero(as_tuple=True)
        dap = d[a, p]
        dan = d[a]  # (pairs, batch)
        semi = neg_mask[a] & (dan > dap[:, None])
        semi_neg = torch.where(semi, dan, inf).amin(dim=1)
        far_neg = torch.where(neg_mask[a], dan, torch.zeros_like(dan)).amax(dim=1)
        dn = torch.where(torch.isinf(semi_neg), far_neg, semi_neg)
        losses = _hinge(dap - dn, margin)
    elif mining == "batch-all":
        dap = d[:, :, None]
        dan = d[:, None, :]
        valid = pos_mask[:, :, None] & neg_mask[:, None, :]
        all_losses = _hinge(dap - dan, margin)[valid]
        active = all_losses > 1e-12
        if not active.any():
            return emb.sum() * 0.0, 0.0
        return all_losses[active].mean(), float(active.float().mean())
    else:
        raise ValueError(f"unknown mining {mining!r}; use 'batch-hard', 'semi-hard' or 'batch-all'")
    if losses.numel() == 0:
        return emb.sum() * 0.0, 0.0
    return losses.mean(), float((losses > 1e-12).float().mean())


def passage_loss(a: torch.Tensor, b: torch.Tensor, *, margin: float) -> torch.Tensor:
    """Invariance to the rendering: ``a[i]`` and ``b[i]`` embed the same passage in two
    orchestrations. Each ``a[i]`` must be nearer its own ``b[i]`` than any other passage's
    ``b[j]`` by ``margin`` (batch-hard negative; soft margin when ``margin <= 0``)."""
    d = (2.0 - 2.0 * a @ b.T).clamp_min(1e-12).sqrt()
    pos = d.diagonal()
    neg = d.masked_fill(torch.eye(len(a), dtype=torch.bool), float("inf")).amin(dim=1)
    if len(a) < 2:
        return a.sum() * 0.0
    return _hinge(pos - neg, margin).mean()


def _hinge(x: torch.Tensor, margin: float) -> torch.Tensor:
    """``max(0, x + margin)``, or the soft margin ``log(1 + exp(x))`` when ``margin <= 0``."""
    return F.softplus(x) if margin <= 0 else F.relu(x + margin)


def augment(x: torch.Tensor, *, crop_frames: int, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random time crop and random transposition (a roll of CQT bins, vacated bins floored)."""
    n, bins, frames = x.shape
    if crop_frames < frames:
        offs = torch.randint(0, frames - crop_frames + 1, (n,), generator=gen)
        x = torch.stack([x[i, :, o : o + crop_frames] for i, o in enumerate(offs.tolist())])
    if max_shift > 0:
        shifts = torch.randint(-max_shift, max_shift + 1, (n,), generator=gen).tolist()
        floor = x.amin(dim=(1, 2), keepdim=True)
        out = floor.expand_as(x).clone()
        for i, s in enumerate(shifts):
            if s > 0:
                out[i, s:] = x[i, :-s]
            elif s < 0:
                out[i, :s] = x[i, -s:]
            else:
                out[i] = x[i]
        x = out
    return x


def train_encoder(
    train: TrainingData,
    *,
    features: FeatureConfig,
    model_config: ModelConfig,
    train_config: TrainConfig,
    validate: Callable[[Encoder], tuple[float, float]] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train an :class:`Encoder` (from ``init_state``, pretrained weights, when given: fine-tuning).

    ``validate(model)`` returns (accuracy, balanced accuracy) on held-out data; with it, the
    epoch of best balanced accuracy is kept (ties: the later epoch), else the last epoch.

    One function on purpose (75 lines): the loop's order of random draws (sampler, rendering pick,
    second view, crop) is what makes a seed reproduce its weights, and it reads best in one place.
    """
    tc = train_config
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed)
    model = Encoder(model_config, features)
    if init_state is not None:
        model.load_state_dict(init_state)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    total_steps = tc.epochs * tc.batches_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=max(total_steps, 1), pct_start=0.15)
    sampler = PKSampler(train.label, train.track, tc.clips_per_composer, rng)
    crop = min(features.frames_per_clip, int(round(tc.crop_seconds * features.sample_rate / features.hop_length)))
    shift = tc.max_transpose * features.bins_per_octave // 12
    views_t = [torch.from_numpy(np.asarray(v)) for v in (train.feats, *train.views)]
    labels_t = torch.from_numpy(np.asarray(train.label, dtype=np.int64))

    pair = tc.view_positive > 0 and len(views_t) > 1  # each clip also in a second rendering
    best_state, best_epoch, best_score = copy.deepcopy(model.state_dict()), tc.epochs, -1.0
    history: list[EpochStats] = []
    for epoch in range(1, tc.epochs + 1):
        model.train()
        losses, active = [], []
        for _ in range(tc.batches_per_epoch):
            idx = torch.from_numpy(sampler.batch())
            # each clip from a random rendering: the original or a re-orchestration
            pick = torch.randint(0, len(views_t), (len(idx),), generator=gen)
            x = torch.stack([views_t[v][i] for v, i in zip(pick.tolist(), idx.tolist())]).float()
            labels = labels_t[idx]
            if pair:  # the same clips again, each in another rendering: a positive pair per passage
                other = (pick + torch.randint(1, len(views_t), (len(idx),), generator=gen)) % len(views_t)
                x2 = torch.stack([views_t[v][i] for v, i in zip(other.tolist(), idx.tolist())]).float()
                x, labels = torch.cat([x, x2]), torch.cat([labels, labels])
            x = augment(x, crop_frames=crop, max_shift=shift, gen=gen)
            emb = model(x)
            loss, act = triplet_loss(emb, labels, margin=tc.margin, mining=tc.mining)
            if pair:
                loss = loss + tc.view_positive * passage_loss(emb[: len(idx)], emb[len(idx) :], margin=tc.margin)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            active.append(act)
        acc = bacc = None
        if validate is not None:
            model.eval()
            acc, bacc = validate(model)
            if bacc >= best_score:
                best_score, best_epoch = bacc, epoch
                best_state = copy.deepcopy(model.state_dict())
        stats = EpochStats(epoch, float(np.mean(losses)), float(np.mean(active)), acc, bacc)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    if validate is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = tc.epochs
    model.eval()
    return TrainResult(model, best_epoch, history)


def train_head(
    model: Encoder,
    train: TrainingData,
    *,
    train_config: TrainConfig,
    on_epoch: Callable[[EpochStats], None] | None = None,
    memo: PooledMemo | None = None,
) -> TrainResult:
    """Retrain only the last layer of a pretrained ``model`` (a copy; :meth:`Encoder.project`)
    with the triplet loss on ``train``, the rest frozen as shipped.

    Every clip's pooled features are computed once, whole (no crops, no transposition: the frozen
    layers give them the invariances they learned), so this takes seconds; with ``memo`` (of
    ``model``'s body, else ``ValueError``) they are read from it, and only the clips it has not
    seen run through the body. The last layer starts from the pretrained one and trains for
    ``epochs x batches_per_epoch`` P x K batches on one torch thread (so that the number of cores
    does not change the result); there is no best-epoch pick (nothing is held out here; the build
    validates the result)."""
    tc = train_config
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    model = copy.deepcopy(model).eval()
    if memo is not None:
        memo.check(model)
    pooled = torch.from_numpy(pool(model, train.feats) if memo is None else memo(train.feats))
    for p in model.parameters():
        p.requires_grad_(False)
    last = [*model.head.parameters(), *model.neck.parameters()]
    for p in last:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(last, lr=tc.lr, weight_decay=tc.weight_decay)
    sampler = PKSampler(train.label, train.track, tc.clips_per_composer, rng)
    labels_t = torch.from_numpy(np.asarray(train.label, dtype=np.int64))
    history: list[EpochStats] = []
    with torch_threads(1):  # small steps: one thread costs nothing, and the cores cannot change the result
        for epoch in range(1, tc.epochs + 1):
            model.neck.train(), model.dropout.train()
            losses, active = [], []
            for _ in range(tc.batches_per_epoch):
                idx = torch.from_numpy(sampler.batch())
                emb = model.project(model.dropout(pooled[idx]))
                loss, act = triplet_loss(emb, labels_t[idx], margin=tc.margin, mining=tc.mining)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                active.append(act)
            stats = EpochStats(epoch, float(np.mean(losses)), float(np.mean(active)), None, None)
            history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return TrainResult(model, tc.epochs, history)
