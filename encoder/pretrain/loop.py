"""Stage 3 of ``musicidx pretrain``: the triplet loop over the rendered views, with checkpoints.

Each step draws passages (a window of a piece) and two of their views each. Two losses, both
triplet losses (the design's):

* **passage**: the two views of a passage are positives, every other passage's views negatives
  (batch-hard, ``margin``): the embedding must not hear the SoundFont, the orchestration, the key
  or the tempo;
* **composer**: part of every step is drawn composer-balanced from labelled pieces (P composers x
  K passages); their composer is a second label (semi-hard, ``composer_margin``), weighted by
  ``composer_weight``: passages of one composer nearer than others'.

Every step's randomness is drawn from generators seeded by (seed, step), and the learning-rate
schedule is a function of the step, so a run resumed from a checkpoint continues exactly as the
run that wrote it would have.  A checkpoint (model, optimiser, step) is written atomically every
``checkpoint_every`` steps to ``WORK/checkpoint-<digest>.pt``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model import Encoder
from ..runtime import Progress
from ..train import triplet_loss
from .config import PretrainConfig


@dataclass
class ViewSet:
    """Every passage in memory: ``feats[i]`` is ``(views, bins, frames)`` of passage ``i``, from
    piece ``piece[i]`` with class ``label[i]`` (-1: unlabelled)."""

    feats: np.ndarray  # (passages, views, bins, frames) float16
    piece: np.ndarray  # (passages,) int
    label: np.ndarray  # (passages,) int, -1 unlabelled
    classes: list[str]


def load_views(entries: Sequence[tuple[Path, str | None]]) -> ViewSet:
    """Stack the views files ``entries`` (path, label) into a :class:`ViewSet`, dropping passages
    that are near-silent in any view (their log-CQT is flat, no pair to learn from)."""
    classes = sorted({lab for _, lab in entries if lab is not None})
    index = {c: i for i, c in enumerate(classes)}
    feats, piece, label = [], [], []
    for i, (path, lab) in enumerate(entries):
        with np.load(path) as z:
            f = z["feats"]  # (views, clips, bins, frames)
        spread = f.astype(np.float32).std(axis=(2, 3))  # (views, clips)
        for c in np.flatnonzero((spread > 0.5).all(axis=0)):
            feats.append(f[:, c])
            piece.append(i)
            label.append(-1 if lab is None else index[lab])
    if not feats:
        return ViewSet(np.zeros((0, 2, 1, 1), np.float16), np.zeros(0, np.int64), np.zeros(0, np.int64), classes)
    return ViewSet(np.stack(feats), np.asarray(piece), np.asarray(label), classes)


def _batch(vs: ViewSet, cfg: PretrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Passage rows of one step: composer-balanced labelled ones (P x K) then uniform ones."""
    lc = cfg.loop
    n_lab = int(round(lc.passages * lc.labelled_share)) if len(vs.classes) >= 2 else 0
    k = 4
    rows: list[int] = []
    if n_lab:
        present = np.unique(vs.label[vs.label >= 0])
        chosen = rng.choice(present, size=min(len(present), max(2, n_lab // k)), replace=False)
        for c in chosen:
            own = np.flatnonzero(vs.label == c)
            rows += rng.choice(own, size=k, replace=len(own) < k).tolist()
    rest = max(0, lc.passages - len(rows))
    rows += rng.choice(len(vs.feats), size=min(rest, len(vs.feats)), replace=False).tolist()
    return np.asarray(rows), vs.label[rows]


def _crop(x: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    if x.shape[-1] <= frames:
        return x
    o = int(rng.integers(0, x.shape[-1] - frames + 1))
    return x[..., o : o + frames]


def checkpoint_path(work: Path, cfg: PretrainConfig, data: str = "") -> Path:
    """The checkpoint of ``cfg`` trained on the data whose digest is ``data`` (a resume on other
    data -- another hold-out list, Lieder copy or music21 version -- starts afresh)."""
    return work / f"checkpoint-{cfg.digest()}{'-' + data[:12] if data else ''}.pt"


def _step_batch(vs: ViewSet, cfg: PretrainConfig, step: int, crop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step ``step``'s input: two cropped views of each drawn passage (first views, then second
    views), the passages' rows and their labels -- drawn from a generator seeded by (seed, step)."""
    rng = np.random.default_rng([cfg.loop.seed, step])
    rows, labels = _batch(vs, cfg, rng)
    pair = np.stack([rng.choice(vs.feats.shape[1], size=2, replace=False) for _ in rows])
    x = np.stack(
        [_crop(vs.feats[r, pair[i, 0]], crop, rng) for i, r in enumerate(rows)]
        + [_crop(vs.feats[r, pair[i, 1]], crop, rng) for i, r in enumerate(rows)]
    )
    return x.astype(np.float32), rows, labels


def _losses(emb: torch.Tensor, rows: np.ndarray, labels: np.ndarray, cfg: PretrainConfig) -> dict[str, torch.Tensor]:
    """The passage term (a row drawn twice is one passage, not two) and the composer term."""
    lc = cfg.loop
    loss, active = triplet_loss(emb, torch.from_numpy(rows).repeat(2), margin=lc.margin, mining="batch-hard")
    lab = torch.from_numpy(np.concatenate([labels, labels]))
    composer = torch.zeros(())
    if lc.composer_weight > 0 and (lab >= 0).sum() > 1 and len(torch.unique(lab[lab >= 0])) > 1:
        composer, _ = triplet_loss(emb[lab >= 0], lab[lab >= 0], margin=lc.composer_margin, mining="semi-hard")
    return {"passage": loss, "composer": composer, "active": torch.tensor(active)}


def pretrain_loop(
    vs: ViewSet,
    cfg: PretrainConfig,
    work: Path,
    *,
    progress: Progress | None = None,
    stop_after: int | None = None,
    data: str = "",
) -> Encoder:
    """Train (or resume) the encoder; returns it in eval mode. ``stop_after``: return after that
    many steps of this call (for tests of the resume); the checkpoint is written first. ``data``:
    a digest of the pieces trained on, part of the checkpoint's name."""
    lc, fc = cfg.loop, cfg.features
    torch.manual_seed(lc.seed)
    model = Encoder(cfg.model, fc)
    opt = torch.optim.AdamW(model.parameters(), lr=lc.lr, weight_decay=lc.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lc.lr, total_steps=max(lc.steps, 1), pct_start=0.1)
    ckpt = checkpoint_path(work, cfg, data)
    step = 0
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = int(state["step"])
    crop = min(fc.frames_per_clip, int(round(lc.crop_seconds * fc.sample_rate / fc.hop_length)))
    log = ckpt.with_name(ckpt.stem.replace("checkpoint-", "log-", 1) + ".jsonl")
    began, ran = time.monotonic(), 0
    model.train()
    while step < lc.steps and (stop_after is None or ran < stop_after):
        x, rows, labels = _step_batch(vs, cfg, step, crop)
        torch.manual_seed(lc.seed * 1_000_003 + step)  # dropout
        losses = _losses(model(torch.from_numpy(x)), rows, labels, cfg)
        opt.zero_grad()
        (losses["passage"] + lc.composer_weight * losses["composer"]).backward()
        opt.step()
        sched.step()
        step, ran = step + 1, ran + 1
        if step % 25 == 0 or step == lc.steps:
            entry = {k: round(v.item(), 5) for k, v in losses.items()}
            with open(log, "a") as f:
                f.write(json.dumps({"step": step, **entry, "seconds": round(time.monotonic() - began, 1)}) + "\n")
        if step % lc.checkpoint_every == 0 or step == lc.steps or ran == stop_after:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
            _save(ckpt, {**state, "step": step})
        if progress is not None:
            progress("training", step, lc.steps)
    model.eval()
    return model


def _save(path: Path, state: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        torch.save(state, f)
    os.replace(tmp, path)
