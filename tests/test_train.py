"""Triplet training: the loss and its mining modes, P x K batches, augmentation, a smoke run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig
from musicidx.encoder.train import (
    PKSampler,
    TrainingData,
    augment,
    pairwise_distances,
    passage_loss,
    train_encoder,
    train_head,
    triplet_loss,
)

MODES = ["batch-hard", "semi-hard", "batch-all"]
TINY_MODEL = ModelConfig(channels=(4, 8), embedding_dim=8)


def _angles(*deg: float) -> torch.Tensor:
    r = torch.deg2rad(torch.tensor(deg, dtype=torch.float64))
    return torch.stack([torch.cos(r), torch.sin(r)], dim=1)


def _chord(a: float, b: float) -> float:
    """Euclidean distance between unit vectors at angles a and b (degrees)."""
    return float(2 * np.sin(np.deg2rad(abs(a - b)) / 2))


def test_pairwise_distances_are_euclidean_and_safe_on_the_diagonal() -> None:
    emb = _angles(0, 90, 180)
    d = pairwise_distances(emb)
    np.testing.assert_allclose(d.numpy(), [[1e-6, 2**0.5, 2], [2**0.5, 1e-6, 2**0.5], [2, 2**0.5, 1e-6]], atol=1e-6)
    emb = emb.clone().requires_grad_(True)
    pairwise_distances(emb).sum().backward()  # sqrt at 0 would give NaN gradients
    assert torch.isfinite(emb.grad).all()


def test_batch_hard_by_hand() -> None:
    # labels 0,0,1,1 at 0, 30, 60, 170 degrees; margin 0.2
    emb, labels = _angles(0, 30, 60, 170), torch.tensor([0, 0, 1, 1])
    hardest = [
        _chord(0, 30) - _chord(0, 60),  # anchor 0: positive 30, nearest negative 60
        _chord(30, 0) - _chord(30, 60),
        _chord(60, 170) - _chord(60, 30),
        _chord(170, 60) - _chord(170, 30),
    ]
    expected = np.maximum(np.array(hardest) + 0.2, 0)
    loss, active = triplet_loss(emb, labels, margin=0.2, mining="batch-hard")
    assert float(loss) == pytest.approx(expected.mean(), rel=1e-5)
    assert active == pytest.approx((expected > 0).mean())


def test_soft_margin_is_softplus() -> None:
    emb, labels = _angles(0, 30, 60, 170), torch.tensor([0, 0, 1, 1])
    hard, _ = triplet_loss(emb, labels, margin=0.2, mining="batch-hard")
    soft, active = triplet_loss(emb, labels, margin=0.0, mining="batch-hard")
    gap = torch.tensor(  # the same hardest triplets as in test_batch_hard_by_hand
        [_chord(0, 30) - _chord(0, 60), _chord(30, 0) - _chord(30, 60), _chord(60, 170) - _chord(60, 30)]
        + [_chord(170, 60) - _chord(170, 30)]
    )
    assert float(soft) == pytest.approx(float(F.softplus(gap).mean()), rel=1e-5)
    assert active == 1.0 and float(soft) != pytest.approx(float(hard))


@pytest.mark.parametrize("mining", MODES)
def test_well_separated_clusters_cost_nothing(mining: str) -> None:
    emb, labels = _angles(0, 5, 180, 185), torch.tensor([0, 0, 1, 1])
    loss, active = triplet_loss(emb, labels, margin=0.2, mining=mining)
    assert float(loss) == 0.0 and active == 0.0


def test_semi_hard_by_hand() -> None:
    # Alpha at 0 and 40 degrees, Beta at 60 and 170; margin 0.5. Per anchor-positive pair, the
    # nearest negative farther than the positive, else the farthest negative.
    emb, labels = _angles(0, 40, 60, 170), torch.tensor([0, 0, 1, 1])
    gaps = [
        _chord(0, 40) - _chord(0, 60),  # 60 and 170 are both farther than 40: the nearer, 60
        _chord(40, 0) - _chord(40, 170),  # 60 is nearer than the positive: 170
        _chord(60, 170) - _chord(60, 0),  # no negative farther than 110 degrees: the farthest, 0
        _chord(170, 60) - _chord(170, 40),  # 0 and 40 both farther than 110: the nearer, 40
    ]
    loss, active = triplet_loss(emb, labels, margin=0.5, mining="semi-hard")
    expected = np.maximum(np.array(gaps) + 0.5, 0.0)
    assert float(loss) == pytest.approx(expected.mean(), rel=1e-5)
    assert active == pytest.approx((expected > 0).mean())


def test_batch_all_averages_only_the_violating_triplets() -> None:
    emb, labels = _angles(0, 30, 60, 170), torch.tensor([0, 0, 1, 1])
    d = pairwise_distances(emb)
    terms = [
        float(d[a, p] - d[a, n]) + 0.2
        for a in range(4)
        for p in range(4)
        for n in range(4)
        if a != p and labels[a] == labels[p] and labels[n] != labels[a]
    ]
    violating = [t for t in terms if t > 1e-12]
    loss, active = triplet_loss(emb, labels, margin=0.2, mining="batch-all")
    assert float(loss) == pytest.approx(np.mean(violating), rel=1e-5)
    assert active == pytest.approx(len(violating) / len(terms))


@pytest.mark.parametrize("mining", ["batch-hard", "batch-all"])
def test_a_batch_without_negatives_costs_nothing(mining: str) -> None:
    loss, active = triplet_loss(_angles(0, 90, 180), torch.tensor([1, 1, 1]), margin=0.2, mining=mining)
    assert float(loss) == 0.0 and active == 0.0


def test_unknown_mining_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown mining 'hardest'; use 'batch-hard', 'semi-hard' or 'batch-all'"):
        triplet_loss(_angles(0, 90), torch.tensor([0, 1]), margin=0.2, mining="hardest")


def test_pk_sampler_draws_k_clips_of_every_composer_from_different_tracks(rng: np.random.Generator) -> None:
    # composer 0: tracks 0-3 (3 clips each); composer 1: tracks 4-5 (2 each); composer 2: track 6
    label = np.repeat([0, 1, 2], [12, 4, 2])
    track = np.repeat(np.arange(7), [3, 3, 3, 3, 2, 2, 2])
    sampler = PKSampler(label, track, 4, rng)
    for _ in range(20):
        idx = sampler.batch()
        assert np.bincount(label[idx], minlength=3).tolist() == [4, 4, 4]
        assert sorted(set(track[idx[:4]])) == [0, 1, 2, 3]  # enough tracks: K different ones
        assert set(track[idx[4:8]]) <= {4, 5} and set(track[idx[8:]]) == {6}


def _rolled(x: torch.Tensor, s: int) -> torch.Tensor:
    """Reference: bins moved up by ``s`` (down if negative), vacated bins at the clip's minimum."""
    out = torch.full_like(x, float(x.min()))
    if s >= 0:
        out[s:] = x[: x.shape[0] - s]
    else:
        out[:s] = x[-s:]
    return out


def test_augment_crops_a_window_of_each_clip() -> None:
    x = torch.arange(4 * 6 * 10, dtype=torch.float32).reshape(4, 6, 10)
    out = augment(x, crop_frames=4, max_shift=0, gen=torch.Generator().manual_seed(0))
    assert out.shape == (4, 6, 4)
    for i in range(4):
        o = int(out[i, 0, 0] - x[i, 0, 0])
        assert 0 <= o <= 6
        torch.testing.assert_close(out[i], x[i, :, o : o + 4])


def test_augment_transposes_by_rolling_bins_and_fills_with_the_floor() -> None:
    x = (torch.arange(6, dtype=torch.float32)[:, None] + 10.0).expand(6, 10)
    batch = x.expand(16, 6, 10).clone()
    out = augment(batch, crop_frames=10, max_shift=2, gen=torch.Generator().manual_seed(1))
    shifts = []
    for i in range(16):
        matches = [s for s in range(-2, 3) if torch.equal(out[i], _rolled(x, s))]
        assert len(matches) == 1
        shifts += matches
    assert len(set(shifts)) > 1  # random per clip


def test_training_data_lengths_must_agree() -> None:
    with pytest.raises(ValueError, match="feats, label and track must have the same length"):
        TrainingData(np.zeros((3, 84, 44), np.float32), np.zeros(3, int), np.zeros(2, int))


def _random_cqt(rng: np.random.Generator, features: FeatureConfig) -> TrainingData:
    """Random log-CQT clips: 3 composers x 3 tracks x 2 clips, each composer with its own mean."""
    label = np.repeat([0, 1, 2], 6)
    track = np.repeat(np.arange(9), 2)
    feats = rng.normal(-5.0, 1.0, (18, features.n_bins, features.frames_per_clip)).astype(np.float32)
    feats += label[:, None, None] * np.linspace(0, 2, features.n_bins, dtype=np.float32)[None, :, None]
    return TrainingData(feats, label, track)


@pytest.mark.parametrize(("mining", "margin"), [(m, 0.2) for m in MODES] + [("batch-hard", 0.0)])
def test_training_smoke_each_mining_mode(
    rng: np.random.Generator, features: FeatureConfig, mining: str, margin: float
) -> None:
    data = _random_cqt(rng, features)
    tc = TrainConfig(
        epochs=1, batches_per_epoch=3, clips_per_composer=3, mining=mining, margin=margin, crop_seconds=1.0
    )
    result = train_encoder(data, features=features, model_config=TINY_MODEL, train_config=tc)
    assert result.best_epoch == 1 and len(result.history) == 1
    h = result.history[0]
    assert np.isfinite(h.loss) and h.loss >= 0 and 0.0 <= h.active_triplets <= 1.0
    assert h.val_accuracy is None and not result.model.training
    with torch.no_grad():
        emb = result.model(torch.from_numpy(data.feats[:4]))
    assert emb.shape == (4, 8)
    np.testing.assert_allclose(emb.norm(dim=1).numpy(), 1.0, rtol=1e-5)


def test_training_is_deterministic_given_the_seed(rng: np.random.Generator, features: FeatureConfig) -> None:
    data = _random_cqt(rng, features)
    tc = TrainConfig(epochs=1, batches_per_epoch=2, clips_per_composer=2, crop_seconds=1.0, seed=5)
    a = train_encoder(data, features=features, model_config=TINY_MODEL, train_config=tc)
    b = train_encoder(data, features=features, model_config=TINY_MODEL, train_config=tc)
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(v, b.model.state_dict()[k], rtol=0, atol=0)
    assert a.history[0].loss == b.history[0].loss


def test_the_best_validated_epoch_is_kept(rng: np.random.Generator, features: FeatureConfig) -> None:
    data = _random_cqt(rng, features)
    scores = iter([0.5, 0.9, 0.1])
    snapshots = []

    def validate(model: torch.nn.Module) -> tuple[float, float]:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        s = next(scores)
        return s, s

    seen = []
    tc = TrainConfig(epochs=3, batches_per_epoch=1, clips_per_composer=2, crop_seconds=1.0)
    result = train_encoder(
        data, features=features, model_config=TINY_MODEL, train_config=tc, validate=validate, on_epoch=seen.append
    )
    assert result.best_epoch == 2
    assert [s.epoch for s in seen] == [1, 2, 3] and [s.val_balanced_accuracy for s in seen] == [0.5, 0.9, 0.1]
    for k, v in result.model.state_dict().items():
        torch.testing.assert_close(v, snapshots[1][k])


def test_passage_loss_by_hand() -> None:
    """a[i] must be nearer b[i] than any other b[j] by the margin."""
    a = _angles(0, 90)
    b = _angles(10, 30)  # a[1]'s own passage (30 deg) is 60 deg away, a[0]'s other passage (10) only 80 deg
    loss = passage_loss(a.float(), b.float(), margin=0.1)
    expected = (max(0.0, _chord(0, 10) - _chord(0, 30) + 0.1) + max(0.0, _chord(90, 30) - _chord(90, 10) + 0.1)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(passage_loss(_angles(0, 180).float(), _angles(1, 179).float(), margin=0.2)) == 0.0


def test_view_positive_pairs_each_clip_with_another_rendering(
    rng: np.random.Generator, features: FeatureConfig
) -> None:
    """With view_positive, a batch holds every clip twice, in two different renderings."""
    data = _random_cqt(rng, features)
    views = (data.feats + 1.0, data.feats - 1.0)
    tc = TrainConfig(epochs=1, batches_per_epoch=2, clips_per_composer=2, crop_seconds=1.0, view_positive=1.0)
    paired = TrainingData(data.feats, data.label, data.track, views)
    result = train_encoder(paired, features=features, model_config=TINY_MODEL, train_config=tc)
    assert np.isfinite(result.history[0].loss)
    plain = train_encoder(
        paired,
        features=features,
        model_config=TINY_MODEL,
        train_config=TrainConfig(**{**tc.to_dict(), "view_positive": 0.0}),
    )
    assert result.history[0].loss != plain.history[0].loss  # the passage loss is part of the objective


def test_the_note_statistics_branch_is_transposition_invariant_and_trains(
    rng: np.random.Generator, features: FeatureConfig
) -> None:
    from musicidx.encoder.model import N_STATISTICS, Encoder, note_statistics

    x = torch.full((1, 84, 60), float(np.log(1e-4)))
    for b in (24, 28, 31, 36, 43):  # a C major chord and its harmonics
        x[0, b, :] = float(np.log(0.5))
        x[0, min(b + 12, 83), :] = float(np.log(0.2))
    x[0, 40, 30:] = float(np.log(0.5))  # a melody note entering halfway (E4)
    stats = note_statistics(x)
    assert stats.shape == (1, N_STATISTICS) and torch.isfinite(stats).all()
    assert set(stats[0, :12].topk(3).indices.tolist()) == {0, 4, 7}  # key-normalised: C major's tonic first
    keep = torch.ones(N_STATISTICS, dtype=torch.bool)
    keep[44:47] = False  # register moves with a transposition, by design
    for shift in (1, 5, 7):
        moved = note_statistics(torch.roll(x, shift, dims=1))
        torch.testing.assert_close(moved[:, keep], stats[:, keep], atol=0.03, rtol=0)
        assert float(moved[0, 44]) > float(stats[0, 44])  # higher
    tc = TrainConfig(epochs=1, batches_per_epoch=2, clips_per_composer=2, crop_seconds=1.0)
    mc = ModelConfig(channels=(4, 8), embedding_dim=8, stats_dim=6)
    result = train_encoder(_random_cqt(rng, features), features=features, model_config=mc, train_config=tc)
    assert isinstance(result.model, Encoder) and result.model.stats is not None
    with torch.no_grad():
        emb = result.model(x.expand(3, -1, -1).clone())
    assert emb.shape == (3, 8)
    np.testing.assert_allclose(emb.norm(dim=1).numpy(), 1.0, rtol=1e-5)


def test_train_head_retrains_only_the_last_layer_deterministically(
    rng: np.random.Generator, features: FeatureConfig
) -> None:
    from musicidx.encoder.model import Encoder, embed

    data = _random_cqt(rng, features)
    torch.manual_seed(1)
    start = Encoder(TINY_MODEL, features).eval()
    before = {k: v.clone() for k, v in start.state_dict().items()}
    tc = TrainConfig(epochs=3, batches_per_epoch=4, clips_per_composer=2, lr=0.05, seed=3)
    seen: list = []
    a = train_head(start, data, train_config=tc, on_epoch=seen.append)
    b = train_head(start, data, train_config=tc)
    assert [s.epoch for s in seen] == [1, 2, 3] and a.best_epoch == 3 and not a.model.training
    for k, v in start.state_dict().items():  # the pretrained model itself is left alone
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    after = a.model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith(("head.", "neck.")) for k in changed)
    assert "head.weight" in changed
    for k, v in after.items():
        torch.testing.assert_close(v, b.model.state_dict()[k], rtol=0, atol=0)
    assert all(p.requires_grad for p in a.model.parameters())
    emb = embed(a.model, data.feats)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_train_head_steps_on_one_thread_whatever_the_process_uses(
    rng: np.random.Generator, features: FeatureConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last layer's steps run on one torch thread, so the number of cores cannot change the
    weights (a build of the challenge folder on one and on two CPUs named test files differently
    before); the process's thread count is restored after."""
    from musicidx.encoder import train as train_module
    from musicidx.encoder.model import Encoder

    data = _random_cqt(rng, features)
    start = Encoder(TINY_MODEL, features).eval()
    tc = TrainConfig(epochs=2, batches_per_epoch=2, clips_per_composer=2, seed=0)
    threads: list[int] = []
    loss = train_module.triplet_loss
    monkeypatch.setattr(
        train_module, "triplet_loss", lambda *a, **k: threads.append(torch.get_num_threads()) or loss(*a, **k)
    )
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        train_head(start, data, train_config=tc)
        assert threads == [1] * 4 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_train_head_on_a_pooled_memo_trains_the_same_last_layer_without_running_the_body_again(
    rng: np.random.Generator, features: FeatureConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from musicidx.encoder.model import Encoder, PooledMemo

    data = _random_cqt(rng, features)
    torch.manual_seed(1)
    start = Encoder(TINY_MODEL, features).eval()
    tc = TrainConfig(epochs=3, batches_per_epoch=4, clips_per_composer=2, lr=0.05, seed=3)
    ran: list[int] = []  # clips through the body, call by call
    body = Encoder.pooled
    monkeypatch.setattr(Encoder, "pooled", lambda self, x: ran.append(len(x)) or body(self, x))
    plain = train_head(start, data, train_config=tc).model.state_dict()
    assert sum(ran) == len(data.feats)
    memo = PooledMemo(start)
    ran.clear()
    first = train_head(start, data, train_config=tc, memo=memo).model.state_dict()
    assert sum(ran) == len(memo) == len(data.feats)
    ran.clear()
    again = train_head(start, data, train_config=dataclasses.replace(tc, seed=4), memo=memo).model.state_dict()
    assert ran == []  # every clip was in the memo
    for k, v in plain.items():  # the same weights, up to float rounding of the body's batches
        torch.testing.assert_close(first[k], v, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(again["head.weight"], first["head.weight"])  # another seed: another head
    other = Encoder(TINY_MODEL, features).eval()  # another body
    with pytest.raises(ValueError, match="not those of the memo"):
        train_head(other, data, train_config=tc, memo=memo)


def test_forward_is_the_last_layer_over_the_pooled_features(rng: np.random.Generator, features: FeatureConfig) -> None:
    from musicidx.encoder.model import Encoder

    model = Encoder(TINY_MODEL, features).eval()
    x = torch.from_numpy(_random_cqt(rng, features).feats[:5])
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.project(model.pooled(x)), rtol=0, atol=0)
