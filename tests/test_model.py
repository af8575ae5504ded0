"""The CNN encoder: shape, unit norm, any number of frames, invariance to loudness."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from musicidx.encoder.config import FeatureConfig, ModelConfig
from musicidx.encoder.model import EmbeddingMemo, Encoder, PooledMemo, embed, pool


@pytest.fixture
def encoder(model_config: ModelConfig, features: FeatureConfig) -> Encoder:
    torch.manual_seed(0)
    return Encoder(model_config, features).eval()


def _cqt(rng: np.random.Generator, n: int, frames: int, bins: int = 84) -> torch.Tensor:
    return torch.from_numpy(rng.normal(-4.0, 2.0, (n, bins, frames)).astype(np.float32))


def test_output_shape_and_unit_norm(encoder: Encoder, features: FeatureConfig, rng: np.random.Generator) -> None:
    with torch.no_grad():
        out = encoder(_cqt(rng, 5, features.frames_per_clip))
    assert out.shape == (5, encoder.config.embedding_dim) and out.dtype == torch.float32
    np.testing.assert_allclose(out.norm(dim=1).numpy(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("frames", [1, 7, 44, 216, 431])
def test_any_number_of_frames(encoder: Encoder, rng: np.random.Generator, frames: int) -> None:
    with torch.no_grad():
        out = encoder(_cqt(rng, 3, frames))
    assert out.shape == (3, 32) and torch.isfinite(out).all()


def test_default_model_shape(features: FeatureConfig, rng: np.random.Generator) -> None:
    model = Encoder(ModelConfig(), features).eval()
    with torch.no_grad():
        out = model(_cqt(rng, 2, features.frames_per_clip))
    assert out.shape == (2, 128)


def test_per_clip_standardisation_makes_gain_and_offset_irrelevant(
    encoder: Encoder, features: FeatureConfig, rng: np.random.Generator
) -> None:
    x = _cqt(rng, 4, features.frames_per_clip)
    with torch.no_grad():
        np.testing.assert_allclose(encoder(x).numpy(), encoder(3.0 * x + 5.0).numpy(), atol=1e-4)


def test_rejects_a_missing_batch_dimension(encoder: Encoder) -> None:
    with pytest.raises(ValueError, match=r"expected \(batch, bins, frames\), got shape \(84, 44\)"):
        encoder(torch.zeros(84, 44))


def test_embed_batches_agree_and_empty_input_gives_no_rows(
    encoder: Encoder, features: FeatureConfig, rng: np.random.Generator
) -> None:
    x = _cqt(rng, 7, features.frames_per_clip).numpy().astype(np.float16)  # as cached features are stored
    one_go, in_threes = embed(encoder, x), embed(encoder, x, batch=3)
    assert one_go.dtype == np.float32 and one_go.shape == (7, 32)
    np.testing.assert_allclose(one_go, in_threes, atol=1e-5)
    empty = embed(encoder, np.zeros((0, 84, 44), np.float32))
    assert empty.shape == (0, 32) and empty.dtype == np.float32


def test_embed_switches_to_eval_mode(encoder: Encoder, features: FeatureConfig, rng: np.random.Generator) -> None:
    x = _cqt(rng, 4, features.frames_per_clip).numpy()
    encoder.train()
    a = embed(encoder, x)
    assert not encoder.training
    np.testing.assert_array_equal(a, embed(encoder, x))  # no dropout, frozen batch-norm statistics


def test_embedding_memo_embeds_each_clip_once_and_answers_as_the_encoder(
    encoder: Encoder, features: FeatureConfig, rng: np.random.Generator
) -> None:
    x = _cqt(rng, 6, features.frames_per_clip).numpy()
    memo = EmbeddingMemo(encoder)
    first = embed(memo, x[:4])
    assert len(memo) == 4
    np.testing.assert_allclose(first, embed(encoder, x[:4]), atol=1e-5)
    # the same clips again, in another order and with repeats, plus two new ones
    again = embed(memo, np.stack([x[5], x[2], x[2], x[0], x[4]]))
    assert len(memo) == 6
    np.testing.assert_array_equal(again[1], first[2])
    np.testing.assert_array_equal(again[2], first[2])
    np.testing.assert_array_equal(again[3], first[0])
    np.testing.assert_allclose(again[[0, 4]], embed(encoder, x[[5, 4]]), atol=1e-5)
    empty = embed(memo, np.zeros((0, 84, features.frames_per_clip), np.float32))
    assert empty.shape == (0, 32) and empty.dtype == np.float32


def test_a_pooled_memo_serves_any_last_layer_over_its_body_running_each_clip_once(
    encoder: Encoder, features: FeatureConfig, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = _cqt(rng, 6, features.frames_per_clip).numpy()
    ran: list[int] = []  # clips through the body, call by call
    body = Encoder.pooled
    monkeypatch.setattr(Encoder, "pooled", lambda self, t: ran.append(len(t)) or body(self, t))
    memo = PooledMemo(encoder)
    np.testing.assert_allclose(memo(x[:4]), pool(encoder, x[:4]), atol=1e-5)
    retrained = copy.deepcopy(encoder)  # another last layer over the same body, as a head recipe's fold has
    torch.nn.init.normal_(retrained.head.weight)
    torch.nn.init.normal_(retrained.neck.weight)
    ran.clear()
    got = embed(EmbeddingMemo(retrained, memo), np.stack([x[5], x[2], x[5], x[0]]))
    assert ran == [1] and len(memo) == 5  # x[5] only: the others were seen
    np.testing.assert_allclose(got, embed(retrained, x[[5, 2, 5, 0]]), atol=1e-5)
    assert not np.allclose(got, embed(encoder, x[[5, 2, 5, 0]]), atol=1e-3)  # its own last layer, not the memo's
    assert memo(x[:0]).shape == (0, encoder.head.in_features)
    other = copy.deepcopy(encoder)
    torch.nn.init.normal_(other.blocks[0].weight)
    with pytest.raises(ValueError, match="not those of the memo"):
        EmbeddingMemo(other, memo)
