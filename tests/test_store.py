"""The index directory: atomic save, round trip, and every way a damaged index is refused.

Works on a hand-made index (``synthetic_index``: no FluidSynth, no training), so it is fast;
``test_end_to_end.py`` checks the same on a really built one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tiny import SyntheticIndex

from musicidx.encoder.config import FeatureConfig
from musicidx.encoder.errors import ConfigMismatchError, MusicIdxError
from musicidx.indexer.format import CLIPS_SCHEMA, ClipSource, clip_table, read_index, save_index
from musicidx.indexer.manifest import FORMAT_VERSION, OLDEST_FORMAT_VERSION, IndexFormatError
from musicidx.query.engine import Searcher


def _vectors(index: Any) -> np.ndarray:
    return np.stack([index.reconstruct(i) for i in range(index.ntotal)])


def test_save_load_round_trip(synthetic_index: SyntheticIndex) -> None:
    saved, loaded = synthetic_index.contents, read_index(synthetic_index.path)
    assert sorted(p.name for p in synthetic_index.path.iterdir()) == [
        "clips.parquet",
        "encoder.pt",
        "index.faiss",
        "manifest.json",
    ]
    blob = (synthetic_index.path / "encoder.pt").read_bytes()
    assert loaded.manifest == dataclasses.replace(saved.manifest, encoder_sha256=hashlib.sha256(blob).hexdigest())
    assert loaded.clips.equals(saved.clips)
    np.testing.assert_array_equal(_vectors(loaded.faiss_index), _vectors(saved.faiss_index))
    assert loaded.encoder_state.keys() == saved.encoder_state.keys()
    for k, v in saved.encoder_state.items():
        torch.testing.assert_close(loaded.encoder_state[k], v, rtol=0, atol=0)
    assert loaded.feature_config == saved.manifest.features
    assert loaded.model_config.embedding_dim == 32


def test_the_clip_table_numbers_the_rows_add_appends_after_the_index() -> None:
    tracks = [ClipSource(c, f"W{i}", f"{c}/{i}.mid", f"{i:064x}", f"{i + 9:064x}") for i, c in enumerate("ABCD")]
    first = clip_table(tracks, np.array([0, 0, 2]), np.array([0.0, 5.0, 0.0]), clip_seconds=10.0)
    assert first.schema.equals(CLIPS_SCHEMA)
    assert first.column("track_id").to_pylist() == [0, 0, 2]  # a build's tracks keep their numbers
    assert first.column("dur_s").to_pylist() == [10.0] * 3
    added = clip_table(
        tracks, np.array([1, 3, 3]), np.array([0.0, 0.0, 5.0]), clip_seconds=10.0, first_clip=3, first_track=3
    )
    assert added.column("clip_id").to_pylist() == [3, 4, 5]
    assert added.column("track_id").to_pylist() == [3, 4, 4]  # renumbered in order after the index's
    assert added.column("path").to_pylist() == ["B/1.mid", "D/3.mid", "D/3.mid"]
    assert added.column("notes_sha256")[1].as_py() == f"{12:064x}"


def test_save_replaces_an_existing_index_whole_and_leaves_no_temporaries(synthetic_index: SyntheticIndex) -> None:
    out = synthetic_index.path
    contents = synthetic_index.contents
    contents.manifest = dataclasses.replace(contents.manifest, k=7)
    save_index(contents, out)
    assert read_index(out).manifest.k == 7
    assert sorted(p.name for p in out.iterdir()) == ["clips.parquet", "encoder.pt", "index.faiss", "manifest.json"]
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_save_removes_marked_temporaries_of_dead_builds_only(synthetic_index: SyntheticIndex) -> None:
    out = synthetic_index.path
    dead = out.parent / f".{out.name}.tmp-{2**22 + 7}-x"  # above any pid_max: no such process
    alive = out.parent / f".{out.name}.tmp-1-y"  # pid 1 always exists
    unmarked = out.parent / f".{out.name}.tmp-{2**22 + 8}-z"  # looks like ours, but is not marked: a user's
    for d in (dead, alive, unmarked):
        d.mkdir()
        (d / "f.txt").write_text("data")
    (dead / ".musicidx-partial").touch()
    (alive / ".musicidx-partial").touch()
    save_index(synthetic_index.contents, out)
    assert not dead.exists() and alive.is_dir()
    assert (unmarked / "f.txt").read_text() == "data"


def test_save_refuses_to_replace_a_file(synthetic_index: SyntheticIndex, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(IndexFormatError, match="afile: exists and is not a directory"):
        save_index(synthetic_index.contents, tmp_path / "afile")


def _edit_manifest(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        m = json.loads((d / "manifest.json").read_text())
        change(m)
        (d / "manifest.json").write_text(json.dumps(m))

    return damage


def _truncate(name: str, fraction: float = 0.5) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: int(len(data) * fraction)])

    return damage


def _edit_clips(change: Callable[[pa.Table], pa.Table]) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        pq.write_table(change(pq.read_table(d / "clips.parquet")), d / "clips.parquet")

    return damage


def _replace_encoder(obj: object, *, fix_hash: bool = True) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        (d / "encoder.pt").write_bytes(buf.getvalue())
        if fix_hash:
            _edit_manifest(lambda m: m.update(encoder_sha256=hashlib.sha256(buf.getvalue()).hexdigest()))(d)

    return damage


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing manifest": (lambda d: (d / "manifest.json").unlink(), r"incomplete index: manifest.json is missing"),
    "missing faiss": (lambda d: (d / "index.faiss").unlink(), r"incomplete index: index.faiss is missing"),
    "missing parquet": (lambda d: (d / "clips.parquet").unlink(), r"incomplete index: clips.parquet is missing"),
    "missing encoder": (lambda d: (d / "encoder.pt").unlink(), r"incomplete index: encoder.pt is missing"),
    "manifest not json": (lambda d: (d / "manifest.json").write_text("{"), r"manifest.json is not valid JSON"),
    "manifest a list": (lambda d: (d / "manifest.json").write_text("[]"), r"has no integer format_version"),
    "future format": (
        _edit_manifest(lambda m: m.update(format_version=FORMAT_VERSION + 1)),
        rf"index format_version {FORMAT_VERSION + 1} is newer than this musicidx reads \({FORMAT_VERSION}\); "
        r"upgrade musicidx",
    ),
    "old format": (
        _edit_manifest(lambda m: m.update(format_version=OLDEST_FORMAT_VERSION - 1)),
        rf"format_version {OLDEST_FORMAT_VERSION - 1} is too old; rebuild it",
    ),
    "string format": (_edit_manifest(lambda m: m.update(format_version="1")), r"has no integer format_version"),
    "unknown feature field": (
        _edit_manifest(lambda m: m["features"].update(bogus=1)),
        r"missing or has bad fields \(unknown FeatureConfig field\(s\): \['bogus'\]\)",
    ),
    "no model": (_edit_manifest(lambda m: m.pop("model")), r"manifest.json is missing or has bad fields"),
    "truncated faiss": (_truncate("index.faiss"), r"index.faiss is damaged"),
    "empty faiss": (_truncate("index.faiss", 0.0), r"index.faiss is damaged"),
    "truncated parquet": (_truncate("clips.parquet"), r"clips.parquet is damaged"),
    "parquet rows missing": (
        _edit_clips(lambda t: t.slice(0, t.num_rows - 2)),
        r"index.faiss holds 12 vectors but clips.parquet has 10 rows; rebuild the index",
    ),
    "parquet column missing": (_edit_clips(lambda t: t.drop_columns(["work"])), r"unexpected schema"),
    "clip ids shuffled": (
        _edit_clips(lambda t: t.set_column(0, "clip_id", pa.array(np.arange(12)[::-1], pa.int64()))),
        r"clip_id is not 0..n-1 in order",
    ),
    "dimension": (
        _edit_manifest(lambda m: m.update(embedding_dim=64)),
        r"index.faiss has dimension 32, the manifest says 64",
    ),
    "encoder changed": (_truncate("encoder.pt", 0.9), r"encoder.pt does not match the sha256 in manifest.json"),
    "encoder not a dict": (_replace_encoder([torch.zeros(3)]), r"encoder.pt is not a state_dict"),
    "encoder holds an object": (
        _replace_encoder({"w": torch.zeros(3), "cfg": FeatureConfig()}),
        r"encoder.pt is not a plain state_dict \(UnpicklingError\)",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_a_damaged_index_is_refused(synthetic_index: SyntheticIndex, damage: str) -> None:
    do, match = DAMAGES[damage]
    do(synthetic_index.path)
    with pytest.raises(IndexFormatError, match=match) as info:
        read_index(synthetic_index.path)
    assert str(synthetic_index.path) in str(info.value)


def test_no_index_at_all(tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match=r"nope: no index here \(build one with 'musicidx build MIDI_DIR"):
        read_index(tmp_path / "nope")


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("fix_hash", [False, True], ids=["manifest-hash-stale", "manifest-hash-updated"])
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(
    synthetic_index: SyntheticIndex, tmp_path: Path, fix_hash: bool
) -> None:
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"weight": _Payload(marker)}, protocol=2)  # the protocol torch.save uses
    (synthetic_index.path / "encoder.pt").write_bytes(blob)
    if fix_hash:  # even a manifest that vouches for it does not make weights_only=True run it
        _edit_manifest(lambda m: m.update(encoder_sha256=hashlib.sha256(blob).hexdigest()))(synthetic_index.path)
    with pytest.raises(IndexFormatError, match="encoder.pt"):
        read_index(synthetic_index.path)
    assert not marker.exists()
    pickle.loads(blob)  # the payload is live: unpickled for real, it does create the file
    assert marker.exists()


# ------------------------------------------------------------------------------ Searcher


def test_query_with_other_features_is_refused_naming_both_values(synthetic_index: SyntheticIndex) -> None:
    s = Searcher(synthetic_index.path)
    s.check_features(FeatureConfig(clip_seconds=2.0, clips_per_track=3, min_clip_hop_seconds=1.0))
    with pytest.raises(
        ConfigMismatchError,
        match=r"feature config differs from the index: clip_seconds: index has 2\.0, this run has 10\.0; "
        r"clips_per_track: index has 3, this run has 8; min_clip_hop_seconds: index has 1\.0, this run has 5\.0",
    ):
        s.check_features(FeatureConfig())


def test_searcher_answers_from_features(synthetic_index: SyntheticIndex) -> None:
    s = Searcher(synthetic_index.path)
    r = s.query_features(synthetic_index.feats[4:6], np.array([0.0, 2.0]), name="q.mid")  # track 2: Beta
    assert r.file == "q.mid" and r.composer == "Beta" and r.clips == 2
    assert not r.same_composition and r.same_track is None  # identical audio, but no notes to compare
    assert sum(r.votes.values()) == pytest.approx(1.0, abs=1e-5) and set(r.votes) == {"Alpha", "Beta", "Gamma"}
    assert r.nearest[0].path == "Beta/Work 2_OP2_2_w.mid" and r.nearest[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert len(r.nearest) == 3 and len({n.path for n in r.nearest}) == 3
    assert r.threshold == 0.5 and r.is_new == (r.novelty > 0.5)
    assert json.loads(json.dumps(r.to_dict()))["nearest"][0]["match_start_s"] in (0.0, 2.0)


def test_a_query_with_a_training_tracks_notes_is_that_composition(synthetic_index: SyntheticIndex) -> None:
    """The note fingerprint decides, even against the embedding: Beta's clips with Alpha's notes."""
    s = Searcher(synthetic_index.path)
    alpha_notes = synthetic_index.contents.clips.column("notes_sha256")[0].as_py()  # track 0: Alpha
    r = s.query_features(synthetic_index.feats[4:6], np.array([0.0, 2.0]), name="q", notes_sha256=alpha_notes)
    assert (r.composer, r.confidence, r.same_composition, r.same_track) == (
        "Alpha",
        1.0,
        True,
        "Alpha/Work 0_OP0_0_w.mid",
    )
    assert r.votes == {"Alpha": 1.0, "Beta": 0.0, "Gamma": 0.0} and not r.is_new
    assert r.nearest[0].path == "Beta/Work 2_OP2_2_w.mid"  # the embedding's neighbours are still reported
    other = s.query_features(synthetic_index.feats[4:6], np.array([0.0, 2.0]), name="q", notes_sha256="0" * 64)
    assert other.composer == "Beta" and not other.same_composition


def test_a_verdict_needs_a_threshold_calibrated_for_that_k(synthetic_index: SyntheticIndex) -> None:
    """The issue: one threshold reused for any --k made a known piece "new" at k=100; k=500 on 96 clips ran."""
    with pytest.raises(MusicIdxError, match=r"no novelty threshold was calibrated for k=3, .* for k = 4$"):
        Searcher(synthetic_index.path, k=3)  # an index without thresholds_by_k has its own k's only
    _edit_manifest(lambda m: m["novelty"].update(thresholds_by_k={"4": 0.5, "12": 0.9}))(synthetic_index.path)
    with pytest.raises(MusicIdxError, match=r"k=13 must be between 1 and the 12 clips of the index"):
        Searcher(synthetic_index.path, k=13)
    with pytest.raises(MusicIdxError, match=r"no novelty threshold was calibrated for k=5, .* for k = 4, 12$"):
        Searcher(synthetic_index.path, k=5)
    s = Searcher(synthetic_index.path, k=12)
    r = s.query_features(synthetic_index.feats[:2], np.array([0.0, 2.0]), name="q")
    assert (s.threshold, r.threshold) == (0.9, 0.9) and r.is_new == (r.novelty > 0.9)
    assert Searcher(synthetic_index.path).threshold == 0.5  # the index's own k


def test_neighbours_padded_by_faiss_are_dropped(synthetic_index: SyntheticIndex) -> None:
    from musicidx.encoder.model import embed
    from musicidx.indexer.neighbours import search

    s = Searcher(synthetic_index.path)
    nb = search(s.contents.faiss_index, embed(s.model, synthetic_index.feats[:1]), 50)  # 12 clips: 38 padded
    assert (nb.ids == -1).sum() == 38
    r = s.answer(nb, np.array([0.0]), name="q")
    assert np.isfinite(r.novelty) and 0.0 <= r.novelty <= 2.0
    assert sum(r.votes.values()) == pytest.approx(1.0, abs=1e-5)
    assert len(r.nearest) == 3 and all(n.path for n in r.nearest)


def test_searcher_refusals(synthetic_index: SyntheticIndex, tmp_path: Path) -> None:
    with pytest.raises(MusicIdxError, match="k=0 must be between 1 and the 12 clips of the index"):
        Searcher(synthetic_index.path, k=0)
    s = Searcher(synthetic_index.path)
    with pytest.raises(ConfigMismatchError, match=r"features of shape \(84, 216\) do not match the index's \(84, 44\)"):
        s.query_features(np.zeros((1, 84, 216), np.float32), np.zeros(1), name="q")
    other = tmp_path / "Other.sf2"
    other.write_bytes(b"RIFF" + bytes(64))
    with pytest.raises(ConfigMismatchError, match=r"rendered with SoundFont TimGM6mb\.sf2 .* found Other\.sf2"):
        Searcher(synthetic_index.path, soundfont=other)


def test_an_encoder_that_does_not_fit_the_manifest_model_is_refused(synthetic_index: SyntheticIndex) -> None:
    _edit_manifest(lambda m: m["model"].update(channels=[4, 8, 16]))(synthetic_index.path)
    with pytest.raises(IndexFormatError, match=r"encoder.pt does not fit the model in the manifest"):
        Searcher(synthetic_index.path)


def test_loading_does_not_need_write_access(synthetic_index: SyntheticIndex) -> None:
    for p in synthetic_index.path.iterdir():
        p.chmod(0o444)
    synthetic_index.path.chmod(0o555)
    try:
        assert read_index(synthetic_index.path).faiss_index.ntotal == 12
    finally:
        synthetic_index.path.chmod(0o755)


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_a_save_that_fails_midway_leaves_the_previous_index_or_none(
    synthetic_index: SyntheticIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    import faiss

    out = synthetic_index.path if existing else tmp_path / "new-idx"
    before = read_index(out).manifest if existing else None

    def disk_full(index: object, path: str) -> None:
        Path(path).write_bytes(b"half an ind")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(faiss, "write_index", disk_full)
    synthetic_index.contents.manifest = dataclasses.replace(synthetic_index.contents.manifest, k=99)
    with pytest.raises(MusicIdxError, match="could not write the index .any previous one is intact.: .*No space left"):
        save_index(synthetic_index.contents, out)
    if existing:
        assert read_index(out).manifest == before  # the old index, whole
    else:
        assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if ".tmp-" in p.name] == []
