"""FeatureConfig / ModelConfig / TrainConfig: derived values, validation, (de)serialisation, mismatch."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig, default_cache_dir
from musicidx.encoder.errors import ConfigMismatchError, MusicIdxError


def test_derived_values_of_the_defaults() -> None:
    cfg = FeatureConfig()
    assert cfg.clip_samples == 10 * 11025 == 110250
    assert cfg.frames_per_clip == 110250 // 512 + 1 == 216
    assert cfg.fmax == pytest.approx(3951.07, abs=0.05)  # B7: the 84th bin is 83 semitones above C1
    assert cfg.fmax < cfg.sample_rate / 2


def test_derived_values_follow_the_fields(features: FeatureConfig) -> None:
    assert (features.clip_samples, features.frames_per_clip) == (22050, 44)
    odd = FeatureConfig(sample_rate=16000, hop_length=256, clip_seconds=1.2345)
    assert odd.clip_samples == round(1.2345 * 16000) == 19752
    assert odd.frames_per_clip == 19752 // 256 + 1
    assert FeatureConfig(n_bins=48, bins_per_octave=24).fmax == pytest.approx(32.703 * 2 ** (47 / 24))


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        FeatureConfig().clip_seconds = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample_rate": 4000}, r"sample_rate must be at least 8000 Hz, got 4000"),
        ({"sample_rate": 8000, "n_bins": 85}, r"top CQT bin \(4186 Hz\) must lie below Nyquist \(4000 Hz\)"),
        ({"n_bins": 96}, r"top CQT bin \(\d+ Hz\) must lie below Nyquist \(5512 Hz\)"),
        ({"clip_seconds": 0.0}, r"clip_seconds must be > 0 and clips_per_track >= 1"),
        ({"clips_per_track": 0}, r"clip_seconds must be > 0 and clips_per_track >= 1"),
        ({"render_program": 128}, r"render_program must be a General MIDI program 0-127, got 128"),
    ],
)
def test_invalid_feature_configs_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigMismatchError, match=match):
        FeatureConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [FeatureConfig, ModelConfig, TrainConfig])
def test_round_trip_through_json(cls: type) -> None:
    cfg = cls()
    again = cls.from_dict(json.loads(json.dumps(cfg.to_dict())))  # ModelConfig.channels: list -> tuple
    assert again == cfg


@pytest.mark.parametrize("cls", [FeatureConfig, ModelConfig, TrainConfig])
def test_from_dict_rejects_unknown_fields(cls: type) -> None:
    data = {**cls().to_dict(), "bogus": 1, "also_bogus": 2}
    with pytest.raises(ConfigMismatchError, match=rf"unknown {cls.__name__} field\(s\): \['also_bogus', 'bogus'\]"):
        cls.from_dict(data)


def test_from_dict_fills_missing_fields_with_defaults() -> None:
    assert FeatureConfig.from_dict({"clip_seconds": 4.0}) == FeatureConfig(clip_seconds=4.0)


def test_digest_is_stable_and_changes_with_any_field() -> None:
    base = FeatureConfig()
    assert base.digest() == FeatureConfig().digest() and len(base.digest()) == 16
    digests = {dataclasses.replace(base, **{f.name: _other(getattr(base, f.name))}).digest() for f in _fields(base)}
    assert base.digest() not in digests and len(digests) == len(_fields(base))


def _fields(cfg: FeatureConfig) -> list[dataclasses.Field[object]]:
    return [f for f in dataclasses.fields(cfg) if f.name not in ("sample_rate", "fmin", "n_bins")]


def _other(v: object) -> object:
    if v is None or isinstance(v, bool):
        return 0 if v is None else not v
    return v * 2 if v else 1  # type: ignore[operator]


def test_a_field_left_at_none_does_not_change_the_digest() -> None:
    """Cache keys made before an optional field existed stay valid."""
    import hashlib

    fields = {k: v for k, v in FeatureConfig().to_dict().items() if k != "render_program"}
    old = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    assert FeatureConfig(render_program=None).digest() == old != FeatureConfig(render_program=0).digest()


def test_check_same_accepts_equal_configs_and_float_noise() -> None:
    FeatureConfig().check_same(FeatureConfig())
    FeatureConfig().check_same(FeatureConfig(fmin=32.703 * (1 + 1e-12)))


def test_check_same_names_the_field_and_both_values() -> None:
    index, run = FeatureConfig(clip_seconds=2.0), FeatureConfig(clip_seconds=10.0)
    with pytest.raises(ConfigMismatchError, match=r"clip_seconds: index has 2\.0, this run has 10\.0$") as info:
        run.check_same(index)
    assert isinstance(info.value, MusicIdxError) and info.value.path is None


def test_check_same_lists_every_difference() -> None:
    with pytest.raises(
        ConfigMismatchError,
        match=r"differs from the cache: hop_length: cache has 256, this run has 512; "
        r"clips_per_track: cache has 3, this run has 8$",
    ):
        FeatureConfig().check_same(FeatureConfig(hop_length=256, clips_per_track=3), what="cache")


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "musicidx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "musicidx"
