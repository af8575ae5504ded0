"""Shared fixtures: tiny MIDI made on the spot, small configs, one real index per session.

Nothing here reads the user's cache or downloads anything: ``$XDG_CACHE_HOME`` points into
pytest's temporary directory for the whole session (CQT kernels, SoundFont hashes, features,
trained encoders), and every build passes its own ``cache_dir``.  Renders use the TimGM6mb
SoundFont shipped inside pretty_midi (``$MUSICIDX_SOUNDFONT``), so results do not depend on which
SoundFonts the machine has, and it loads ~20x faster than a 140 MB General MIDI font.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import midi_factory
import numpy as np
import pytest
from tiny import FEATURES, MODEL, RECIPE, TRAIN, SyntheticIndex, write_tiny_recipe

from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig


def _fluidsynth_missing() -> str | None:
    from musicidx.encoder.deps import import_fluidsynth
    from musicidx.encoder.errors import DependencyError

    try:
        import_fluidsynth()
    except DependencyError as e:
        return e.reason
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``fluidsynth`` are skipped, with the install hint, where the library is missing."""
    if not any(item.get_closest_marker("fluidsynth") for item in items):
        return
    missing = _fluidsynth_missing()
    if missing is None:
        return
    skip = pytest.mark.skip(reason=f"FluidSynth library not available: {missing}")
    for item in items:
        if item.get_closest_marker("fluidsynth"):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A private cache and a fixed SoundFont for the session; no stray index or recipe from the environment."""
    from musicidx.encoder.soundfont import bundled_soundfont

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        mp.setenv("MUSICIDX_SOUNDFONT", str(bundled_soundfont()))
        mp.delenv("MUSICIDX_INDEX", raising=False)
        mp.delenv("MUSICIDX_RECIPE", raising=False)
        yield


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: every test that draws random data draws the same data each run."""
    return np.random.default_rng(20240519)


@pytest.fixture(scope="session")
def features() -> FeatureConfig:
    return FEATURES


@pytest.fixture(scope="session")
def model_config() -> ModelConfig:
    return MODEL


@pytest.fixture(scope="session")
def train_config() -> TrainConfig:
    return TRAIN


@pytest.fixture(scope="session")
def soundfont() -> Any:
    from musicidx.encoder.soundfont import find_soundfont

    return find_soundfont()


# ------------------------------------------------------------------------------------ MIDI


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<Composer>/*.mid``: Alpha (piano scales in C), Beta (violin arpeggios), Gamma (organ
    chords), four tracks each in three works (``Sonata No 1`` has two movements). Read only."""
    root = tmp_path_factory.mktemp("corpus")
    midi_factory.write_corpus(root, np.random.default_rng(7))
    return root


@pytest.fixture
def good_midi(tmp_path: Path, rng: np.random.Generator) -> Path:
    """One valid five-second piano piece."""
    return midi_factory.scale_piece(tmp_path / "good.mid", rng)


@pytest.fixture
def edge_midis(tmp_path: Path) -> dict[str, Path]:
    """The edge cases every stage has a defined outcome for: no notes, drums only, a 5 ms note."""
    d = tmp_path / "edge"
    d.mkdir()
    return {
        "no_notes": midi_factory.no_notes(d / "no notes.mid"),
        "drums_only": midi_factory.drums_only(d / "drums only.mid"),
        "blip": midi_factory.blip(d / "blip 5ms.mid"),
    }


@pytest.fixture
def bad_corpus(tmp_path: Path, good_midi: Path, rng: np.random.Generator) -> dict[str, midi_factory.Case]:
    """The bad-input corpus in ``tmp_path/bad``, generated (never downloaded); key -> case
    (keys: ``midi_factory.CASE_KEYS``)."""
    cases = midi_factory.write_bad_corpus(tmp_path / "bad", good_midi.read_bytes(), rng)
    return {c.key: c for c in cases}


# ----------------------------------------------------------------------------------- builds


@pytest.fixture(scope="session")
def build_tiny() -> Callable[..., Any]:
    """``build_tiny(midi_dir, out, cache_dir, **overrides)``: a real build with the tiny configs."""
    from musicidx.indexer.build import build_index

    def build(midi_dir: Path, out: Path, cache_dir: Path | None, **kw: Any) -> Any:
        kw = {"recipe": RECIPE, "workers": 1, **kw}
        return build_index(midi_dir, out=out, cache_dir=cache_dir, **kw)

    return build


@pytest.fixture(scope="session")
def built_index(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path, build_tiny: Callable[..., Any]) -> Path:
    """One real index of the tiny corpus (FluidSynth, nnAudio, training, FAISS), shared by the
    session; tests that change it work on :func:`index_copy`. Needs the ``fluidsynth`` marker."""
    root = tmp_path_factory.mktemp("built")
    build_tiny(corpus_dir, root / "idx", root / "cache")
    return root / "idx"


@pytest.fixture
def index_copy(built_index: Path, tmp_path: Path) -> Path:
    """A private copy of the session's index, free to damage."""
    return Path(shutil.copytree(built_index, tmp_path / "idx"))


@pytest.fixture
def tiny_cli_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Make ``musicidx build`` and ``eval`` use the tiny configs, through the public way to
    change the recipe: a recipe file named by ``$MUSICIDX_RECIPE`` (an explicit option still wins).

    The default recipe builds a real index of 10 s clips with 192 triplet batches, which takes
    minutes; the CLI tests are about the plumbing.  Returns the recipe file."""
    path = write_tiny_recipe(tmp_path_factory.mktemp("recipe") / "tiny.json")
    monkeypatch.setenv("MUSICIDX_RECIPE", str(path))
    return path


# ------------------------------------------------------------------------- a hand-made index


@pytest.fixture
def synthetic_index(tmp_path: Path, soundfont: Any) -> SyntheticIndex:
    """A consistent index made without FluidSynth or training: 3 composers x 2 tracks x 2 clips of
    random log-CQT through a freshly initialised tiny encoder. Free to damage."""
    import torch

    from musicidx.encoder.model import Encoder, embed
    from musicidx.indexer.ann import make_faiss_index
    from musicidx.indexer.format import ClipSource, IndexContents, clip_table, save_index
    from musicidx.indexer.manifest import FORMAT_VERSION, Counts, FaissEntry, Manifest, Novelty, SoundFontRecord

    gen = np.random.default_rng(3)
    feats = gen.normal(-5.0, 2.0, (12, FEATURES.n_bins, FEATURES.frames_per_clip)).astype(np.float32)
    torch.manual_seed(0)
    model = Encoder(MODEL, FEATURES).eval()
    emb = embed(model, feats)
    index, kind = make_faiss_index(MODEL.embedding_dim, len(emb), "flat")
    index.add_with_ids(emb, np.arange(len(emb), dtype=np.int64))
    composers = [("Alpha", "Beta", "Gamma")[t // 2] for t in range(6)]
    tracks = [
        ClipSource(c, f"Work {t}_OP{t}", f"{c}/Work {t}_OP{t}_{t}_w.mid", f"{t:064x}", f"{t + 100:064x}")
        for t, c in enumerate(composers)
    ]
    clips = clip_table(tracks, np.repeat(np.arange(6), 2), np.tile([0.0, 2.0], 6), clip_seconds=FEATURES.clip_seconds)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        features=FEATURES,
        model=MODEL,
        embedding_dim=MODEL.embedding_dim,
        soundfont=SoundFontRecord.from_dict(soundfont.to_dict()),
        composers={"Alpha": 2, "Beta": 2, "Gamma": 2},
        counts=Counts(tracks=6, clips=12, works=6),
        faiss=FaissEntry(kind, "inner_product", 12),
        k=4,
        novelty=Novelty(0.5),
    )
    contents = IndexContents(manifest, index, clips, model.state_dict())
    save_index(contents, tmp_path / "synthetic-idx")
    return SyntheticIndex(tmp_path / "synthetic-idx", feats, contents)
