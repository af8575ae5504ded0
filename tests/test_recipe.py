"""The Recipe: one default, files over it, validation, and what a build records of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from musicidx.encoder.config import FeatureConfig, ModelConfig
from musicidx.encoder.recipe import DEFAULT_RECIPE, SCRATCH_RECIPE, SHIPPED_ENCODER, Recipe, RecipeError, load_recipe

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_recipe_files_are_what_they_say() -> None:
    assert load_recipe(REPO / "data" / "recipe.toml") == DEFAULT_RECIPE
    assert load_recipe(REPO / "data" / "recipe-scratch.toml") == SCRATCH_RECIPE
    frozen = load_recipe(REPO / "data" / "recipe-pretrained.toml")
    assert frozen.frozen and frozen.encoder == DEFAULT_RECIPE.encoder


def test_the_default_retrains_the_shipped_encoders_last_layer_on_piano_renderings() -> None:
    assert (DEFAULT_RECIPE.encoder, DEFAULT_RECIPE.head, DEFAULT_RECIPE.finetune) == (SHIPPED_ENCODER, True, False)
    assert DEFAULT_RECIPE.features.render_program == 0
    assert DEFAULT_RECIPE.model.stats_dim == 64
    assert DEFAULT_RECIPE.k == 10 and not DEFAULT_RECIPE.frozen
    DEFAULT_RECIPE.check_encoder()  # the weights ship, and fit the default model and CQT
    assert SCRATCH_RECIPE.encoder is None and SCRATCH_RECIPE.features == DEFAULT_RECIPE.features


def test_an_empty_or_null_encoder_trains_in_build(tmp_path: Path) -> None:
    f = tmp_path / "s3.toml"
    f.write_text('encoder = ""\n')
    assert load_recipe(f) == SCRATCH_RECIPE
    j = tmp_path / "s3.json"
    j.write_text(json.dumps({"encoder": None, "model": {"channels": [8, 16]}}))
    r = load_recipe(j)
    assert (r.encoder, r.head, r.finetune, r.model.channels) == (None, False, False, (8, 16))
    f.write_text('encoder = ""\nhead = true\n')  # named, it stays, and is refused
    with pytest.raises(RecipeError, match="head needs an encoder"):
        load_recipe(f)


def test_a_file_changes_only_what_it_names(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text("k = 5\n[train]\nepochs = 3\n")
    r = load_recipe(f)
    assert r.k == 5 and r.train.epochs == 3
    assert r.train.margin == DEFAULT_RECIPE.train.margin and r.features == DEFAULT_RECIPE.features
    j = tmp_path / "r.json"
    j.write_text(json.dumps({"features": {"render_program": None}, "head": False}))
    r = load_recipe(j)
    assert r.features.render_program is None and r.frozen and r.encoder == DEFAULT_RECIPE.encoder


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("k = 0\n", "k must be in 1..1000"),
        ("kk = 3\n", r"unknown recipe key\(s\) \['kk'\]"),
        ("[train]\nepoch = 3\n", "unknown TrainConfig field"),
        ("faiss = 'annoy'\n", "faiss must be one of"),
        ("encoder = ''\nfinetune = true\n", "finetune needs an encoder"),
        ("finetune = true\n", "exclude each other"),  # the default retrains the head
        ("encoder = 'nope'\n", "no pretrained encoder 'nope'"),
        ("k = [\n", "not valid TOML"),
        ("k = '5'\n", "k must be a whole number"),
        ("finetune = 'no'\n", "finetune must be true or false"),
        ("encoder = ''\nhead = true\n", "head needs an encoder"),
        ("[model]\nchannels = [8, 16]\n", "model config differs from encoder"),
        ("head = 1\n", "head must be true or false"),
        ("encoder = 'm21-lieder-small-v2'\nfinetune = true\nhead = true\n", "exclude each other"),
    ],
)
def test_bad_recipes_are_refused_naming_the_file(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(RecipeError, match=match) as e:
        load_recipe(f)
    assert e.value.path == f


def test_replace_leaves_none_alone() -> None:
    r = DEFAULT_RECIPE.replace(k=None, model=ModelConfig(channels=(8,)), features=None)
    assert r.k == 10 and r.model.channels == (8,) and r.features == DEFAULT_RECIPE.features


def test_an_encoder_fixes_the_cqt_it_learned(tmp_path: Path) -> None:
    import torch

    from musicidx.encoder.fingerprints import file_sha256
    from musicidx.encoder.model import Encoder

    model, feats = ModelConfig(channels=(4,), embedding_dim=8), FeatureConfig()
    pt = tmp_path / "w.pt"
    torch.save(Encoder(model, feats).state_dict(), pt)
    card = {"sha256": file_sha256(pt), "recipe": {"model": model.to_dict(), "features": feats.to_dict()}}
    pt.with_suffix(".json").write_text(json.dumps(card))
    Recipe(model=model, encoder=str(pt)).check_encoder()
    with pytest.raises(RecipeError, match=r"learned other CQT features \(n_bins\)"):
        Recipe(model=model, encoder=str(pt), features=FeatureConfig(n_bins=72)).check_encoder()
    with pytest.raises(RecipeError, match="model config differs"):
        Recipe(encoder=str(pt)).check_encoder()
