"""The CQT front end: shape, agreement with nnAudio, the kernel cache, a golden tone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from golden.make_cqt_tone import CONFIG, GOLDEN, tone

from musicidx.encoder import frontend
from musicidx.encoder.config import FeatureConfig, default_cache_dir
from musicidx.encoder.frontend import KernelCQT, cqt_features, cqt_layer, nnaudio_layer


def test_output_shape_dtype_and_finite(features: FeatureConfig, rng: np.random.Generator) -> None:
    audio = rng.uniform(-0.5, 0.5, (3, features.clip_samples)).astype(np.float32)
    out = cqt_features(audio, features)
    assert out.shape == (3, features.n_bins, features.frames_per_clip) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_silence_hits_the_log_floor_not_minus_infinity(features: FeatureConfig) -> None:
    out = cqt_features(np.zeros((1, features.clip_samples), np.float32), features)
    np.testing.assert_allclose(out, np.log(1e-4), rtol=1e-6)


def test_batches_agree(features: FeatureConfig, rng: np.random.Generator) -> None:
    audio = rng.uniform(-0.5, 0.5, (5, features.clip_samples)).astype(np.float32)
    np.testing.assert_allclose(cqt_features(audio, features), cqt_features(audio, features, batch=2), atol=1e-5)


@pytest.mark.parametrize("shape", [(22050,), (2, 22049), (1, 3, 22050)])
def test_wrong_audio_shape_is_refused(features: FeatureConfig, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"expected audio of shape \(n, 22050\), got"):
        cqt_features(np.zeros(shape, np.float32), features)


def test_a_tone_peaks_in_its_bin(features: FeatureConfig) -> None:
    t = np.arange(features.clip_samples) / features.sample_rate
    a4 = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None]
    spectrum = cqt_features(a4, features)[0].mean(axis=1)
    assert int(np.argmax(spectrum)) == round(12 * np.log2(440.0 / features.fmin)) == 45  # A4 is 45 semitones up


def test_kernels_applied_without_nnaudio_match_nnaudio(features: FeatureConfig, rng: np.random.Generator) -> None:
    """The module docstring's promise: the cached-kernel path gives nnAudio's own numbers."""
    layer = nnaudio_layer(features)
    ours = KernelCQT.from_nnaudio(layer)
    x = torch.from_numpy(rng.uniform(-0.5, 0.5, (2, features.clip_samples)).astype(np.float32))
    with torch.inference_mode():
        theirs, mine = layer(x), ours(x)
    assert mine.shape == theirs.shape == (2, features.n_bins, features.frames_per_clip)
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_kernels_are_cached_on_disk_and_reloaded(features: FeatureConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = FeatureConfig(clip_seconds=1.0, hop_length=256)  # a config no other test uses
    cached = default_cache_dir() / "cqt-v1" / f"{cfg.digest()}.pt"
    first = cqt_layer(cfg)
    assert cached.is_file() and cqt_layer(cfg) is first  # made once per process
    monkeypatch.setattr(frontend, "_LAYERS", {})
    monkeypatch.setattr(frontend, "nnaudio_layer", _must_not_be_called)
    again = cqt_layer(cfg)  # a "new process": from the file, without nnAudio
    torch.testing.assert_close(again.real, first.real)
    assert (again.kernel_width, again.hop_length) == (first.kernel_width, 256)


def _must_not_be_called(cfg: FeatureConfig) -> None:
    raise AssertionError("the cached kernels should have been used")


@pytest.mark.parametrize("damage", [b"", b"garbage", b"PK\x03\x04 truncated zip"], ids=["empty", "garbage", "zip"])
def test_a_damaged_kernel_cache_is_rebuilt(monkeypatch: pytest.MonkeyPatch, damage: bytes) -> None:
    cfg = FeatureConfig(clip_seconds=1.0, hop_length=128)
    cached = default_cache_dir() / "cqt-v1" / f"{cfg.digest()}.pt"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(damage)  # e.g. the zero-length file a power cut can leave after a rename
    monkeypatch.setattr(frontend, "_LAYERS", {})
    layer = cqt_layer(cfg)
    assert layer.hop_length == 128 and cached.stat().st_size > 1000


def test_golden_tone() -> None:
    """The log-CQT of a synthetic tone still gives the committed numbers (regenerate with
    ``tests/golden/make_cqt_tone.py`` when a change to the front end is intended)."""
    cfg = FeatureConfig(**CONFIG)
    with np.load(GOLDEN, allow_pickle=False) as z:
        golden = z["cqt"]
    out = cqt_features(tone(cfg.sample_rate, cfg.clip_samples), cfg)[0]
    assert out.shape == golden.shape == (84, 44)
    np.testing.assert_allclose(out, golden, rtol=1e-4, atol=1e-3)
