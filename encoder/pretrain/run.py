"""``musicidx pretrain RECIPE``: the stages in order, each resumable, and the shipped weights.

1. plan and export (:mod:`.corpus`): the recipe's pieces less the hold-out list, as MIDI;
2. views (:mod:`.views`): every passage in several renderings, as log-CQT;
3. loop (:mod:`.loop`): triplet training with checkpoints;
4. ship: ``OUT/<name>.pt`` (a ``state_dict``), and beside it ``OUT/<name>.json`` -- the recipe,
   the weights' sha256, and every piece learned from with its MIDI file's sha256.

Everything bulky lives in the work folder (``$XDG_CACHE_HOME/musicidx/pretrain`` by default,
never the repository); killed at any point, the same command picks up where it stopped, and on a
machine without the work folder it starts again from the scores.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fingerprints import file_sha256
from ..runtime import Progress, set_torch_threads
from .config import PretrainConfig, PretrainError
from .corpus import Piece, export_corpus, load_heldout, plan_corpus, write_json
from .views import render_corpus, views_path


@dataclass
class PretrainReport:
    weights: Path
    sha256: str
    pieces: int
    passages: int
    classes: list[str]
    skipped: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)


def pretrain(
    config: PretrainConfig,
    *,
    work: Path,
    out: Path,
    lieder: Path | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    stop_after: int | None = None,
) -> PretrainReport:
    """Run every stage of ``config`` in ``work`` and write the weights to ``out``."""
    from .loop import load_views, pretrain_loop

    seconds: dict[str, float] = {}
    t = time.monotonic()
    pieces = plan_corpus(config.corpus, lieder=lieder)
    exported, skipped = export_corpus(
        pieces, work, lieder=lieder, workers=workers, timeout=config.corpus.export_timeout, progress=progress
    )
    seconds["export"] = time.monotonic() - t

    t = time.monotonic()
    midi = [(str(work / "midi" / p.midi), sha) for p, sha in exported]
    failed = render_corpus(midi, work, config, workers=workers, progress=progress)
    digest = config.digest("views", "features")
    usable = [(p, sha) for p, sha in exported if sha not in failed and views_path(work, sha, digest).is_file()]
    skipped.update({p.source: failed[sha] for p, sha in exported if sha in failed})
    seconds["views"] = time.monotonic() - t

    t = time.monotonic()
    vs = load_views([(views_path(work, sha, digest), p.label) for p, sha in usable])
    if len(vs.feats) < config.loop.passages:
        raise PretrainError(f"only {len(vs.feats)} usable passages, fewer than one step's {config.loop.passages}")
    set_torch_threads(workers)
    data = hashlib.sha256(json.dumps([s for _, s in usable]).encode()).hexdigest()
    model = pretrain_loop(vs, config, work, progress=progress, stop_after=stop_after, data=data)
    seconds["train"] = time.monotonic() - t

    weights = out / f"{config.name}.pt"
    sha = _ship(model.state_dict(), weights, config, usable, vs.classes, skipped, data)
    return PretrainReport(weights, sha, len(usable), len(vs.feats), vs.classes, skipped, seconds)


def _ship(
    state: dict[str, Any],
    weights: Path,
    config: PretrainConfig,
    usable: list[tuple[Piece, str]],
    classes: list[str],
    skipped: dict[str, str],
    pieces_sha256: str,
) -> str:
    import torch

    weights.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=weights.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        torch.save({k: v.detach().clone() for k, v in state.items()}, f)
    os.chmod(tmp, 0o644)  # package data: readable by every user of the installation
    os.replace(tmp, weights)
    sha = file_sha256(weights)
    card = {
        "name": config.name,
        "weights": weights.name,
        "sha256": sha,
        "recipe": config.to_dict(),
        "classes": classes,
        "pieces": [{**p.to_dict(), "midi_sha256": s} for p, s in usable],
        "pieces_sha256": pieces_sha256,
        "heldout_sha256": hashlib.sha256(json.dumps(load_heldout(), sort_keys=True).encode()).hexdigest(),
        "skipped": skipped,
        "heldout": "encoder/pretrain/heldout.json: never learned from",
    }
    write_json(weights.with_suffix(".json"), card)
    return sha
