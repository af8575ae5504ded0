"""Files -> clip features through the content-addressed cache, in order, errors in place."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig
from musicidx.encoder.errors import InvalidMidiError, MusicIdxError, SynthesisError
from musicidx.encoder.fingerprints import file_sha256
from musicidx.encoder.soundfont import SoundFont
from musicidx.indexer.features import FEATURES_VERSION, FeatureCache, extract_file, extract_many
from musicidx.indexer.training import TrainedCache

pytestmark = [pytest.mark.fluidsynth]


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / f"features-v{FEATURES_VERSION}").rglob("*.npz"))


def test_extract_then_hit_the_cache(
    good_midi: Path, tmp_path: Path, features: FeatureConfig, soundfont: SoundFont
) -> None:
    cache = FeatureCache(tmp_path / "cache")
    first = extract_file(good_midi, cfg=features, soundfont=soundfont, cache=cache)
    assert first.feats.shape == (3, features.n_bins, features.frames_per_clip) and first.feats.dtype == np.float16
    assert not first.cached and first.rendered_seconds > 0 and first.sha256 == file_sha256(good_midi)
    assert np.isfinite(first.feats.astype(np.float32)).all() and first.views == ()
    again = extract_file(good_midi, cfg=features, soundfont=soundfont, cache=cache)
    assert again.cached and again.rendered_seconds == 0.0
    np.testing.assert_array_equal(again.feats, first.feats)
    np.testing.assert_array_equal(again.starts, first.starts)
    assert len(_entries(tmp_path / "cache")) == 1


def test_cache_key_covers_content_config_soundfont_and_variant(soundfont: SoundFont) -> None:
    other_sf = SoundFont(soundfont.path, "0" * 64)
    keys = {
        FeatureCache.key("a" * 64, FeatureConfig(), soundfont),
        FeatureCache.key("b" * 64, FeatureConfig(), soundfont),
        FeatureCache.key("a" * 64, FeatureConfig(clip_seconds=5.0), soundfont),
        FeatureCache.key("a" * 64, FeatureConfig(), other_sf),
        FeatureCache.key("a" * 64, FeatureConfig(), soundfont, variant=1),
    }
    assert len(keys) == 5
    assert FeatureCache.key("a" * 64, FeatureConfig(), soundfont) == FeatureCache.key(
        "a" * 64, FeatureConfig(), soundfont
    )


def test_no_cache_writes_nothing(
    good_midi: Path, tmp_path: Path, features: FeatureConfig, soundfont: SoundFont
) -> None:
    got = extract_many([good_midi], cfg=features, soundfont=soundfont, cache_dir=None)
    assert not isinstance(got[0], MusicIdxError) and not got[0].cached
    assert list(tmp_path.iterdir()) == [good_midi]


@pytest.mark.parametrize("damage", [b"", b"garbage", b"PK\x03\x04 truncated zip"], ids=["empty", "garbage", "zip"])
def test_a_damaged_cache_entry_is_recomputed(
    good_midi: Path, tmp_path: Path, features: FeatureConfig, soundfont: SoundFont, damage: bytes
) -> None:
    cache = tmp_path / "cache"
    first = extract_many([good_midi], cfg=features, soundfont=soundfont, cache_dir=cache)[0]
    (entry,) = _entries(cache)
    entry.write_bytes(damage)  # e.g. the zero-length file a power cut can leave after a rename
    again = extract_many([good_midi], cfg=features, soundfont=soundfont, cache_dir=cache)[0]
    assert not isinstance(again, MusicIdxError) and not again.cached
    np.testing.assert_array_equal(again.feats, first.feats)  # type: ignore[union-attr]
    assert entry.stat().st_size > 1000


def test_a_damaged_trained_encoder_cache_means_training_again(tmp_path: Path, features: FeatureConfig) -> None:
    cache = TrainedCache(tmp_path)
    assert cache.root is not None
    cache.root.mkdir(parents=True)
    for damage in (b"", b"garbage"):
        (cache.root / "k.json").write_text('{"best_epoch": 1, "history": []}')
        (cache.root / "k.pt").write_bytes(damage)
        assert cache.get("k", features, ModelConfig()) is None


def test_extract_many_keeps_order_and_puts_errors_in_place(
    corpus_dir: Path, tmp_path: Path, features: FeatureConfig, soundfont: SoundFont
) -> None:
    (tmp_path / "empty.mid").write_bytes(b"")
    paths = [next(corpus_dir.glob("Alpha/*.mid")), tmp_path / "empty.mid", next(corpus_dir.glob("Beta/*.mid"))]
    calls: list[tuple[int, int]] = []
    got = extract_many(
        paths, cfg=features, soundfont=soundfont, cache_dir=tmp_path / "c", on_done=lambda *a: calls.append(a)
    )
    assert [type(r).__name__ for r in got] == ["TrackFeatures", "InvalidMidiError", "TrackFeatures"]
    assert got[1].path == paths[1] and got[1].reason == "file is empty (0 bytes)"  # type: ignore[union-attr]
    assert calls[-1] == (3, 3)


def test_errors_survive_the_trip_to_worker_processes(tmp_path: Path) -> None:
    for err in (InvalidMidiError("contains no notes", path=tmp_path / "x.mid"), SynthesisError("silent")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and back.reason == err.reason and back.path == err.path
        assert str(back) == str(err)


@pytest.mark.slow  # two spawned worker processes, each importing torch
def test_two_worker_processes_give_what_one_gives(
    corpus_dir: Path, tmp_path: Path, features: FeatureConfig, soundfont: SoundFont
) -> None:
    files = sorted(corpus_dir.glob("*/*.mid"))[::4]
    shutil.copy(files[0], tmp_path / "copy.mid")
    (tmp_path / "bad.mid").write_bytes(b"MThd" + bytes(20))
    paths = [*files, tmp_path / "bad.mid"]
    one = extract_many(paths, cfg=features, soundfont=soundfont, cache_dir=None, workers=1)
    two = extract_many(paths, cfg=features, soundfont=soundfont, cache_dir=None, workers=2)
    for a, b in zip(one, two):
        if isinstance(a, MusicIdxError):
            assert type(b) is type(a) and str(b) == str(a)
        else:
            np.testing.assert_array_equal(a.feats, b.feats)  # type: ignore[union-attr]


def test_reorchestrated_views_line_up_with_the_original(
    good_midi: Path, tmp_path: Path, features: FeatureConfig, soundfont: SoundFont
) -> None:
    cache = FeatureCache(tmp_path / "cache")
    tf = extract_file(good_midi, cfg=features, soundfont=soundfont, cache=cache, variants=2)
    assert len(tf.views) == 2 and all(v.shape == tf.feats.shape for v in tf.views)
    assert not np.array_equal(tf.views[0], tf.feats)  # another instrument
    again = extract_file(good_midi, cfg=features, soundfont=soundfont, cache=cache, variants=2)
    assert again.cached
    np.testing.assert_array_equal(again.views[1], tf.views[1])
    assert TrainConfig().program_variants == 0  # off by default


def test_named_orchestrations_line_up_with_the_original_and_are_cached(
    good_midi: Path, tmp_path: Path, features: FeatureConfig, soundfont: SoundFont
) -> None:
    cache = FeatureCache(tmp_path / "cache")
    tf = extract_file(good_midi, cfg=features, soundfont=soundfont, cache=cache, orchestrations=("strings", "winds"))
    assert list(tf.orchestrated) == ["strings", "winds"]
    assert all(v.shape == tf.feats.shape for v in tf.orchestrated.values())
    assert not np.array_equal(tf.orchestrated["strings"], tf.feats)
    assert not np.array_equal(tf.orchestrated["strings"], tf.orchestrated["winds"])
    again = extract_file(good_midi, cfg=features, soundfont=soundfont, cache=cache, orchestrations=("strings", "winds"))
    assert again.cached and again.rendered_seconds == 0.0
    np.testing.assert_array_equal(again.orchestrated["winds"], tf.orchestrated["winds"])
    plain = extract_file(good_midi, cfg=features, soundfont=soundfont, cache=cache)
    assert plain.cached and plain.orchestrated == {}
    assert FeatureCache.key("a" * 64, features, soundfont, "piano") != FeatureCache.key("a" * 64, features, soundfont)
