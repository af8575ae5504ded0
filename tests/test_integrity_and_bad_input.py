"""Damaged indexes are refused with IndexFormatError; bad files give one clear line (CLI)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pretty_midi
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from midi_factory import write_piece

from musicidx.cli import cli
from musicidx.encoder.config import FeatureConfig, TrainConfig
from musicidx.encoder.errors import ConfigMismatchError
from musicidx.indexer.build import build_index
from musicidx.indexer.store import FORMAT_VERSION, IndexFormatError, load_index

pytestmark = [pytest.mark.fluidsynth]

FEATURES = FeatureConfig(clip_seconds=2.0, clips_per_track=3, min_clip_hop_seconds=1.0)
TRAIN = TrainConfig(epochs=1, batches_per_epoch=2, clips_per_composer=3, val_fraction=0.34)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    rng = np.random.default_rng(5)
    for composer, program, low in (("Alpha", 0, 48), ("Beta", 40, 64)):
        (root / "corpus" / composer).mkdir(parents=True)
        for i in range(3):
            write_piece(root / "corpus" / composer / f"Work {i}_OP{i}_{i}_w{i}.mid", rng, program=program, low=low)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        build_index(root / "corpus", out=root / "idx", features=FEATURES, train_config=TRAIN, workers=1)
    return root


@pytest.fixture
def index_copy(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(built / "cache"))
    shutil.copytree(built / "idx", tmp_path / "idx")
    return tmp_path / "idx"


def test_intact_index_loads(index_copy: Path) -> None:
    c = load_index(index_copy)
    assert c.faiss_index.ntotal == c.clips.num_rows > 0


def test_truncated_faiss_is_refused(index_copy: Path) -> None:
    f = index_copy / "index.faiss"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(IndexFormatError, match="index.faiss is damaged"):
        load_index(index_copy)


def test_parquet_with_rows_missing_is_refused(index_copy: Path) -> None:
    t = pq.read_table(index_copy / "clips.parquet")
    pq.write_table(t.slice(0, t.num_rows - 2), index_copy / "clips.parquet")
    with pytest.raises(IndexFormatError, match=r"holds \d+ vectors but clips.parquet has \d+ rows"):
        load_index(index_copy)


def test_future_format_version_is_refused(index_copy: Path) -> None:
    m = json.loads((index_copy / "manifest.json").read_text())
    m["format_version"] = FORMAT_VERSION + 1
    (index_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="newer than this musicidx reads"):
        load_index(index_copy)


class _Payload:
    def __reduce__(self) -> tuple[object, ...]:
        return (open, (os.environ["MUSICIDX_PWNED"], "w"))


@pytest.mark.parametrize("update_manifest_hash", [False, True])
def test_pickle_that_would_run_code_is_refused_and_not_run(
    index_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, update_manifest_hash: bool
) -> None:
    import hashlib

    marker = tmp_path / "pwned"
    monkeypatch.setenv("MUSICIDX_PWNED", str(marker))
    blob = pickle.dumps(_Payload())
    (index_copy / "encoder.pt").write_bytes(blob)
    if update_manifest_hash:  # even with a consistent manifest, weights_only=True refuses it
        m = json.loads((index_copy / "manifest.json").read_text())
        m["encoder_sha256"] = hashlib.sha256(blob).hexdigest()
        (index_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="encoder.pt"):
        load_index(index_copy)
    assert not marker.exists()


def test_query_with_other_features_is_refused_naming_both_values(index_copy: Path) -> None:
    from musicidx.query.engine import Searcher

    s = Searcher(index_copy)
    with pytest.raises(ConfigMismatchError, match=r"clip_seconds: index has 2\.0, this run has 10\.0"):
        s.check_features(FeatureConfig())


def test_cli_damaged_index_is_one_line_not_a_traceback(index_copy: Path, built: Path) -> None:
    (index_copy / "index.faiss").write_bytes(b"\0" * 10)
    f = next((built / "corpus" / "Alpha").glob("*.mid"))
    r = CliRunner().invoke(cli, ["query", str(f), "--index", str(index_copy)])
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert r.output.strip().startswith("musicidx: error:") and "index.faiss is damaged" in r.output


def _bad_files(d: Path) -> dict[str, str]:
    """name -> the reason its error must mention."""
    good = d.parent / "good.mid"
    write_piece(good, np.random.default_rng(1), program=0, low=50)
    data = good.read_bytes()
    (d / "empty.mid").write_bytes(b"")
    (d / "random.mid").write_bytes(np.random.default_rng(2).bytes(500))
    (d / "truncated.mid").write_bytes(data[: len(data) // 2])
    (d / "dir.mid").mkdir()
    (d / "loop_a.mid").symlink_to(d / "loop_b.mid")
    (d / "loop_b.mid").symlink_to(d / "loop_a.mid")
    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(pretty_midi.Instrument(0))
    pm.write(str(d / "no notes.mid"))
    return {
        "empty.mid": "empty",
        "random.mid": "not a MIDI file",
        "truncated.mid": "truncated",
        "dir.mid": "directory",
        "loop_a.mid": "symbolic links",
        "loop_b.mid": "symbolic links",
        "no notes.mid": "no notes",
    }


def test_cli_query_bad_files_one_line_each(index_copy: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for name, reason in _bad_files(bad).items():
        r = CliRunner().invoke(cli, ["query", str(bad / name), "--index", str(index_copy)])
        assert r.exit_code == 1, name
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and name in lines[0] and reason in lines[0], (name, r.output)


def test_cli_score_bad_corpus_plus_good_files(index_copy: Path, built: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    reasons = _bad_files(folder)
    for i, f in enumerate(sorted((built / "corpus").glob("*/*.mid"))[:3]):
        shutil.copy(f, folder / f"good{i}.mid")
    out = tmp_path / "scores.csv"
    r = CliRunner().invoke(cli, ["score", str(folder), "--index", str(index_copy), "--out", str(out)])
    assert r.exit_code == 3, r.output
    import csv

    rows = {row["file"]: row for row in csv.DictReader(out.open())}
    assert set(rows) == set(reasons) | {"good0.mid", "good1.mid", "good2.mid"}
    for name, reason in reasons.items():
        assert rows[name]["status"] == "error" and reason in rows[name]["error"], rows[name]
    for name in ("good0.mid", "good1.mid", "good2.mid"):
        assert rows[name]["status"] == "ok" and rows[name]["composer"] in {"Alpha", "Beta"}
        assert rows[name]["same_composition"] == "True"


def test_build_skips_bad_files_and_strict_fails(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(built / "cache"))
    corpus = tmp_path / "corpus"
    shutil.copytree(built / "corpus", corpus)
    (corpus / "Alpha" / "broken.mid").write_bytes(b"MThd garbage")
    args = ["build", str(corpus), "--out", str(tmp_path / "idx"), "--epochs", "1", "--clips-per-track", "3"]
    r = CliRunner().invoke(cli, [*args, "--strict"])
    assert r.exit_code == 1 and "broken.mid" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "idx").exists()


def test_json_stdout_stays_clean_when_ci_is_set(index_copy: Path, built: Path, tmp_path: Path) -> None:
    """pyfluidsynth prints "'fluidsynth' was found at ..." on import when $CI is set."""
    import subprocess
    import sys

    f = next((built / "corpus" / "Beta").glob("*.mid"))
    env = {**os.environ, "CI": "true"}
    proc = subprocess.run(
        [sys.executable, "-m", "musicidx", "query", str(f), "--index", str(index_copy), "--json"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert json.loads(proc.stdout)["composer"] == "Beta"


def test_drums_only_and_a_single_5ms_note_are_answered(index_copy: Path, tmp_path: Path) -> None:
    drums = pretty_midi.PrettyMIDI()
    kit = pretty_midi.Instrument(0, is_drum=True)
    kit.notes = [pretty_midi.Note(100, 36 + k % 10, k * 0.25, k * 0.25 + 0.1) for k in range(24)]
    drums.instruments.append(kit)
    drums.write(str(tmp_path / "drums.mid"))
    blip = pretty_midi.PrettyMIDI()
    blip.instruments.append(pretty_midi.Instrument(0))
    blip.instruments[0].notes.append(pretty_midi.Note(100, 60, 0.0, 0.005))
    blip.write(str(tmp_path / "blip.mid"))
    for name in ("drums.mid", "blip.mid"):
        r = CliRunner().invoke(cli, ["query", str(tmp_path / name), "--index", str(index_copy), "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["composer"] in {"Alpha", "Beta"}
