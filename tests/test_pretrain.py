"""``musicidx pretrain``: what it never learns from, its stages, its resume, and a build that
uses the weights it ships (frozen: nothing trained in the build)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tiny import FEATURES, SHARED_DATA

from musicidx.encoder.pretrain.config import PretrainConfig, PretrainError, load_pretrain_config
from musicidx.encoder.pretrain.corpus import load_heldout, plan_corpus

REPO = Path(__file__).resolve().parents[1]


def tiny_config(**loop: object) -> PretrainConfig:
    return PretrainConfig.from_dict(
        {
            "name": "tiny",
            "corpus": {"music21": ["bach"], "music21_labels": {"bach": "Bach"}, "lieder": False, "max_pieces": 4},
            "views": {"clips_per_piece": 2, "views": 2, "soundfonts": ["TimGM6mb.sf2"]},
            "model": {"channels": [4, 8], "embedding_dim": 16, "stats_dim": 8},
            "features": {**FEATURES.to_dict(), "clip_seconds": 3.0},
            "loop": {
                "steps": 6,
                "passages": 4,
                "labelled_share": 0.0,
                "checkpoint_every": 2,
                "crop_seconds": 2.0,
                **loop,
            },
        }
    )


def test_the_shipped_pretraining_recipe_reads() -> None:
    c = load_pretrain_config(REPO / "data" / "pretrain.toml")
    assert c.model.stats_dim == 64 and c.views.views >= 2 and dict(c.corpus.music21_labels) == {"bach": "Bach"}


@pytest.mark.parametrize(
    ("table", "match"),
    [({"views": {"views": 1}}, "views must be at least 2"), ({"loop": {"checkpoint_every": 0}}, "checkpoint_every")],
)
def test_a_bad_pretraining_recipe_is_one_error(tmp_path: Path, table: dict[str, object], match: str) -> None:
    f = tmp_path / "p.toml"
    key, values = next(iter(table.items()))
    f.write_text(f"[{key}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))  # type: ignore[attr-defined]
    with pytest.raises(PretrainError, match=match) as e:
        load_pretrain_config(f)
    assert e.value.path == f


def test_a_music21_folder_of_a_composer_never_to_be_heard_is_refused() -> None:
    spec = PretrainConfig.from_dict({"corpus": {"music21": ["bach", "schumann_robert"], "lieder": False}})
    with pytest.raises(PretrainError, match=r"\['schumann_robert'\] hold a composer the Lieder evaluation"):
        plan_corpus(spec.corpus, lieder=None)


def test_a_recipe_that_labels_a_new_composer_is_refused() -> None:
    spec = PretrainConfig.from_dict({"corpus": {"music21_labels": {"palestrina": "Palestrina"}, "lieder": False}})
    with pytest.raises(PretrainError, match=r"labels \['Palestrina'\], which an evaluation counts as new"):
        plan_corpus(spec.corpus, lieder=None)


def test_the_lieder_need_a_copy() -> None:
    with pytest.raises(PretrainError, match="pass --lieder DIR"):
        plan_corpus(PretrainConfig().corpus, lieder=None)


def test_the_plan_keeps_every_held_out_piece_out() -> None:
    pytest.importorskip("music21")
    held = load_heldout()
    spec = PretrainConfig.from_dict({"corpus": {"music21": ["bach", "beethoven", "monteverdi"], "lieder": False}})
    sources = {p.source for p in plan_corpus(spec.corpus, lieder=None)}
    assert sources and not sources & set(held["music21_eval"])
    assert not sources & set(held["music21_training_works"])
    assert not any(s.startswith(("beethoven/opus18no1", "beethoven/opus132")) for s in sources)
    assert any(s.startswith("monteverdi/") for s in sources)  # unlabelled: invariance only


@pytest.mark.shared
def test_the_held_out_list_matches_the_music21_evaluation_plan() -> None:
    """heldout.json is written by benchmarks/data/heldout_list.py; the music21 set it names must be
    the one export_music21 plans today (the Lieder half needs a copy: $MUSICIDX_LIEDER). Run as the
    README says, ``python -m benchmarks.data.heldout_list --check`` from the repository root."""
    pytest.importorskip("music21")
    if not (SHARED_DATA / "musicians").is_dir():
        pytest.skip("needs ../shared/data/musicians (the training works to leave out)")
    import subprocess
    import sys

    lieder = os.environ.get("MUSICIDX_LIEDER")
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.data.heldout_list",
        "--check",
        "--train-dir",
        str(SHARED_DATA / "musicians"),
    ]
    run = subprocess.run([*cmd, *(["--lieder", lieder] if lieder else [])], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "matches the plans" in run.stdout


@pytest.mark.slow
@pytest.mark.fluidsynth
def test_pretrain_resumes_to_the_same_weights_and_a_frozen_build_uses_them(tmp_path: Path, corpus_dir: Path) -> None:
    pytest.importorskip("music21")
    import torch

    from musicidx.encoder.pretrain.run import pretrain
    from musicidx.indexer.build import build_index
    from musicidx.indexer.format import read_index

    cfg = tiny_config()
    straight = pretrain(cfg, work=tmp_path / "w1", out=tmp_path / "out1", workers=1)
    assert straight.pieces == 4 and straight.passages > 4
    card = json.loads((tmp_path / "out1" / "tiny.json").read_text())
    assert card["sha256"] == straight.sha256 and len(card["pieces"]) == 4
    assert all(len(p["midi_sha256"]) == 64 for p in card["pieces"])

    # killed after 3 of 6 steps (the checkpoint of step 3 written), then run again: same weights
    pretrain(cfg, work=tmp_path / "w2", out=tmp_path / "out2", workers=1, stop_after=3)
    resumed = pretrain(cfg, work=tmp_path / "w2", out=tmp_path / "out2", workers=1)
    a = torch.load(straight.weights, weights_only=True)
    b = torch.load(resumed.weights, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # a frozen build trains nothing and records the weights; threads do not change the answer
    from musicidx.encoder.recipe import Recipe
    from musicidx.query.engine import Searcher

    recipe = Recipe(features=cfg.features, model=cfg.model, encoder=str(straight.weights))
    asked = sorted(corpus_dir.rglob("*.mid"))[0]
    answers = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        report = build_index(corpus_dir, out=tmp_path / f"idx{threads}", recipe=recipe, workers=1)
        assert report.fit.history == [] and report.fit.val_tracks > 0
        m = read_index(tmp_path / f"idx{threads}").manifest
        assert m.encoder is not None and m.encoder.sha256 == straight.sha256 and m.encoder.finetuned is False
        assert m.recipe is not None and m.recipe.encoder == str(straight.weights)
        answers.append(Searcher(tmp_path / f"idx{threads}").query(asked).to_dict())
    assert answers[0]["composer"] == answers[1]["composer"] and answers[0]["is_new"] == answers[1]["is_new"]
    assert answers[0]["novelty"] == pytest.approx(answers[1]["novelty"], abs=1e-5)

    # head = true: only the last layer is retrained in build, and the manifest says so
    from musicidx.encoder.config import TrainConfig

    head = recipe.replace(head=True, train=TrainConfig(epochs=2, batches_per_epoch=3, clips_per_composer=2))
    report = build_index(corpus_dir, out=tmp_path / "idx-head", recipe=head, workers=1)
    assert [h["epoch"] for h in report.fit.history] == [1, 2]
    from musicidx.cli.text import render_build

    assert "held-out tracks" in render_build(report) and "(last layer retrained, 2 epochs)" in render_build(report)
    m = read_index(tmp_path / "idx-head").manifest
    assert m.encoder is not None and m.encoder.head is True and m.encoder.finetuned is False
    assert m.recipe is not None and m.recipe.head is True
    trained = read_index(tmp_path / "idx-head").encoder_state
    shipped = torch.load(straight.weights, weights_only=True)
    changed = {k for k in shipped if not torch.equal(shipped[k], trained[k])}
    assert changed and all(k.startswith(("head.", "neck.")) for k in changed)
