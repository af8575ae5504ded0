"""Determinism of builds and concurrent readers of one index (real FluidSynth, tiny corpus)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from midi_factory import write_piece

from musicidx.encoder.config import FeatureConfig, TrainConfig
from musicidx.indexer.build import build_index
from musicidx.indexer.store import load_index

pytestmark = [pytest.mark.fluidsynth]

FEATURES = FeatureConfig(clip_seconds=2.0, clips_per_track=3, min_clip_hop_seconds=1.0)
TRAIN = TrainConfig(epochs=2, batches_per_epoch=3, clips_per_composer=3, val_fraction=0.34, seed=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readers-corpus")
    rng = np.random.default_rng(11)
    for composer, program, low in (("Alpha", 0, 48), ("Beta", 40, 62), ("Gamma", 73, 70)):
        (root / composer).mkdir()
        for i in range(3):
            write_piece(root / composer / f"Piece {i}_OP{i}_{100 + i}_p{i}.mid", rng, program=program, low=low)
    return root


def _build(corpus: Path, out: Path, cache: Path) -> None:
    build_index(corpus, out=out, features=FEATURES, train_config=TRAIN, cache_dir=cache, workers=1)


def test_same_seed_gives_identical_clips_and_embeddings(corpus: Path, tmp_path: Path) -> None:
    # Separate caches, so the second build really recomputes features and retrains.
    _build(corpus, tmp_path / "a", tmp_path / "cache-a")
    _build(corpus, tmp_path / "b", tmp_path / "cache-b")
    assert pq.read_table(tmp_path / "a" / "clips.parquet").equals(pq.read_table(tmp_path / "b" / "clips.parquet"))
    ia, ib = load_index(tmp_path / "a").faiss_index, load_index(tmp_path / "b").faiss_index
    ea, eb = (np.stack([ix.reconstruct(i) for i in range(ix.ntotal)]) for ix in (ia, ib))
    np.testing.assert_array_equal(ea, eb)
    ma = json.loads((tmp_path / "a" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert ma["encoder_sha256"] == mb["encoder_sha256"]
    assert ma["novelty"]["threshold"] == mb["novelty"]["threshold"]


@pytest.mark.slow
def test_four_processes_querying_at_once_agree_with_one(corpus: Path, tmp_path: Path) -> None:
    _build(corpus, tmp_path / "idx", tmp_path / "cache")
    files = sorted(str(p) for p in corpus.glob("*/*.mid"))[::2]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "musicidx", "query", *files, "--index", str(tmp_path / "idx"), "--json"]

    def run(_: int) -> list[dict[str, object]]:
        # cwd: from the repository root, `python -m musicidx` would import the source folder
        # musicidx/ instead of the installed package (whose stages live in other folders).
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
        return json.loads(proc.stdout)

    alone = run(0)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(run, range(4)))
    assert len(alone) == len(files)
    for answers in together:
        assert answers == alone
