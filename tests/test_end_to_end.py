"""End to end with real FluidSynth, nnAudio, training and FAISS on the tiny corpus.

The session's ``built_index`` (conftest) is the index under test; the CLI is driven through
click's ``CliRunner``; a few checks need a real process (``python -m musicidx``).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import midi_factory
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from midi_factory import TRACK_NAMES

from musicidx.cli import cli
from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig
from musicidx.encoder.fingerprints import file_sha256
from musicidx.encoder.midi import load_midi
from musicidx.encoder.render import clip_starts
from musicidx.encoder.soundfont import find_soundfont
from musicidx.indexer.corpus import work_of
from musicidx.indexer.format import CLIPS_SCHEMA, read_index
from musicidx.indexer.manifest import FORMAT_VERSION, package_version, read_manifest
from musicidx.query.engine import SCORE_COLUMNS, Searcher

pytestmark = [pytest.mark.fluidsynth]

COMPOSERS = ["Alpha", "Beta", "Gamma"]


def _manifest(index: Path) -> dict[str, Any]:
    return json.loads((index / "manifest.json").read_text())


def _vectors(index: Path) -> np.ndarray:
    ix = read_index(index).faiss_index
    return np.stack([ix.reconstruct(i) for i in range(ix.ntotal)])


# ------------------------------------------------------------------------------ the index


def test_manifest_describes_the_index(
    built_index: Path, features: FeatureConfig, model_config: ModelConfig, train_config: TrainConfig
) -> None:
    m = _manifest(built_index)
    typed = read_manifest(built_index)  # and the typed manifest writes the very bytes the build wrote
    assert typed.to_json() == (built_index / "manifest.json").read_text() and typed.k == m["k"]
    assert m["format_version"] == FORMAT_VERSION and m["musicidx_version"] == package_version()
    assert dt.datetime.fromisoformat(m["created"]).tzinfo is not None
    assert FeatureConfig.from_dict(m["features"]) == features
    assert ModelConfig.from_dict(m["model"]) == model_config and m["embedding_dim"] == 32
    assert {k: m["training"][k] for k in train_config.to_dict()} == json.loads(json.dumps(train_config.to_dict()))
    history = m["training"]["history"]
    assert [h["epoch"] for h in history] == list(range(1, train_config.epochs + 1))
    bacc = [h["val_balanced_accuracy"] for h in history]
    # the kept epoch is the last one with the best held-out balanced accuracy
    assert m["training"]["best_epoch"] == max(e for e, b in enumerate(bacc, 1) if b == max(bacc))
    assert m["soundfont"]["name"] == "TimGM6mb.sf2" and m["soundfont"]["sha256"] == find_soundfont().sha256
    assert m["soundfont"]["rendered_seconds"] > 0
    assert m["composers"] == {"Alpha": 4, "Beta": 4, "Gamma": 4}
    assert m["counts"] == {"tracks": 12, "clips": 36, "works": 9}
    f = m["faiss"]
    assert {k: f[k] for k in ("type", "metric", "ntotal", "params")} == {
        "type": "flat",
        "metric": "inner_product",
        "ntotal": 36,
        "params": {},
    }
    assert f["chosen"].startswith("auto: flat up to 100,000 vectors") and m["k"] == 10
    assert f["recall_at_10"]["value"] == 1.0 and f["recall_at_10"]["queries"] == 36  # exact search
    assert 4 * 32 + 8 <= f["bytes_per_vector"] < 4 * 32 + 16 and f["mapped_bytes_per_vector"] == 0
    nov = m["novelty"]
    assert 0.0 <= nov["threshold"] <= 2.0 and nov["accept_rate"] == 0.95
    assert nov["calibrated_on"]["tracks"] == len(nov["calibrated_on"]["track_ids"]) == m["validation"]["tracks"] > 0
    assert m["skipped"] == []
    assert m["encoder_sha256"] == hashlib.sha256((built_index / "encoder.pt").read_bytes()).hexdigest()


def test_clips_table_points_back_at_the_corpus(built_index: Path, corpus_dir: Path, features: FeatureConfig) -> None:
    t = pq.read_table(built_index / "clips.parquet")
    assert t.schema.equals(CLIPS_SCHEMA)
    rows = t.to_pylist()
    assert [r["clip_id"] for r in rows] == list(range(36))
    by_track: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_track.setdefault(r["track_id"], []).append(r)
    assert sorted(by_track) == list(range(12))
    for clips in by_track.values():
        f = corpus_dir / clips[0]["path"]
        assert f.is_file() and not Path(clips[0]["path"]).is_absolute()
        assert {(r["composer"], r["work"], r["sha256"], r["dur_s"]) for r in clips} == {
            (f.parent.name, work_of(f), file_sha256(f), features.clip_seconds)
        }
        np.testing.assert_allclose([r["start_s"] for r in clips], clip_starts(load_midi(f), features))


def test_validation_holds_out_whole_works(built_index: Path) -> None:
    m = _manifest(built_index)
    held = set(m["novelty"]["calibrated_on"]["track_ids"])
    t = pq.read_table(built_index / "clips.parquet").to_pylist()
    group = {r["track_id"]: f"{r['composer']}/{r['work']}" for r in t}
    for g in set(group.values()):
        tracks = {tid for tid, gg in group.items() if gg == g}
        assert tracks <= held or not tracks & held, f"work {g} split across training and validation"
    assert m["novelty"]["calibrated_on"]["works"] == len({group[t] for t in held})


def test_query_a_training_file_finds_itself(built_index: Path, corpus_dir: Path) -> None:
    f = corpus_dir / "Beta" / TRACK_NAMES[2]
    r = Searcher(built_index, k=1).query(f)  # k=1: the vote is the nearest clip's, i.e. its own
    assert r.composer == "Beta" and r.confidence == pytest.approx(1.0)
    assert r.same_composition and r.same_track == f"Beta/{TRACK_NAMES[2]}"
    top = r.nearest[0]
    assert (top.path, top.composer, top.work) == (f"Beta/{TRACK_NAMES[2]}", "Beta", "Sonata No 2_OP2")
    assert top.similarity == pytest.approx(1.0, abs=1e-4) and top.query_start_s == top.match_start_s
    assert r.clips == 3 and r.novelty == pytest.approx(0.0, abs=1e-4) and not r.is_new

    r10 = Searcher(built_index).query(f)
    assert r10.composer in COMPOSERS and r10.same_composition
    assert sum(r10.votes.values()) == pytest.approx(1.0, abs=1e-5) and r10.confidence == max(r10.votes.values())


def test_an_unseen_piece_is_not_the_same_composition(
    built_index: Path, tmp_path: Path, rng: np.random.Generator
) -> None:
    f = midi_factory.arpeggio_piece(tmp_path / "new.mid", rng, seconds=6.0)
    r = Searcher(built_index).query(f)
    assert not r.same_composition and r.same_track is None
    assert r.composer in COMPOSERS and r.novelty > 0.0 and r.nearest[0].similarity < 1.0 - 1e-4


def test_a_feature_cache_on_queries_gives_the_same_answer(built_index: Path, corpus_dir: Path, tmp_path: Path) -> None:
    f = corpus_dir / "Gamma" / TRACK_NAMES[0]
    cold = Searcher(built_index, cache_dir=tmp_path / "qcache").query(f)
    warm = Searcher(built_index, cache_dir=tmp_path / "qcache")
    assert warm.features_of(f).cached
    assert warm.query(f) == cold


# ------------------------------------------------------------------------------ CLI


def test_cli_query_json(built_index: Path, corpus_dir: Path) -> None:
    f = corpus_dir / "Gamma" / TRACK_NAMES[3]
    r = CliRunner().invoke(cli, ["query", str(f), "--index", str(built_index), "--json", "--k", "1"])
    assert r.exit_code == 0, r.output
    a = json.loads(r.stdout)  # one file: one object (on one line)
    assert r.stdout.count("\n") == 1
    assert a["file"] == str(f) and a["composer"] == "Gamma" and a["same_composition"] is True
    assert set(a) >= {"confidence", "votes", "novelty", "threshold", "is_new", "same_track", "nearest", "clips"}
    two = CliRunner().invoke(
        cli, ["query", str(f), str(corpus_dir / "Alpha" / TRACK_NAMES[0]), "--index", str(built_index), "--json"]
    )
    assert two.exit_code == 0, two.output
    lines = two.stdout.splitlines()  # JSON Lines: an object per file, in order
    assert [json.loads(x)["file"] for x in lines] == [str(f), str(corpus_dir / "Alpha" / TRACK_NAMES[0])]


def test_cli_query_text(built_index: Path, corpus_dir: Path) -> None:
    f = corpus_dir / "Alpha" / TRACK_NAMES[1]
    r = CliRunner().invoke(cli, ["query", str(f), "--index", str(built_index), "--k", "1"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == str(f) and lines[1] == "  composer     Alpha (confidence 1.00: its share of the vote)"
    assert lines[2] == "  vote         Alpha 1.00, the composer of that track (no vote needed)"
    assert (
        lines[3]
        == f"  verdict      a known composer: it plays the same notes as the training track Alpha/{TRACK_NAMES[1]} "
        "(the index's novelty threshold is uncalibrated, but none is needed here)"  # three held-out works only
    )
    assert lines[4].startswith(f"  nearest      Alpha/{TRACK_NAMES[1]} (Alpha): distance 0; best-matching clips start")
    assert len(lines) == 5  # k=1: one neighbour, one track


def test_cli_score_to_a_file_and_to_stdout(built_index: Path, corpus_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "q"
    (folder / "sub").mkdir(parents=True)
    sources = {}
    for i, f in enumerate(sorted(corpus_dir.glob("*/*.mid"))[::5]):
        name = f"sub/t{i}.MID" if i % 2 else f"t{i}.MID"
        (folder / name).write_bytes(f.read_bytes())
        sources[name] = f.relative_to(corpus_dir).as_posix()
    out = tmp_path / "s.csv"
    r = CliRunner().invoke(cli, ["score", str(folder), "--index", str(built_index), "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open(newline="")))
    assert [row["file"] for row in rows] == ["sub/t1.MID", "t0.MID", "t2.MID"]
    assert all(row["status"] == "ok" and row["same_composition"] == "True" for row in rows)
    assert {row["file"]: row["nearest_track"] for row in rows} == sources  # each copy finds its original
    assert r.stdout == f"scored 3 of 3 files -> {out}\n"

    to_stdout = CliRunner().invoke(cli, ["score", str(folder), "--index", str(built_index), "--out", "-", "--json"])
    assert to_stdout.exit_code == 0
    table = list(csv.DictReader(io.StringIO(to_stdout.stdout)))
    assert tuple(table[0]) == SCORE_COLUMNS and len(table) == 3  # the CSV alone on stdout
    assert json.loads(to_stdout.stderr.splitlines()[-1]) == {"files": 3, "scored": 3, "errors": 0, "out": "-"}


def test_cli_info(built_index: Path) -> None:
    r = CliRunner().invoke(cli, ["info", "--index", str(built_index)])
    assert r.exit_code == 0, r.output
    assert "composers      Alpha (4), Beta (4), Gamma (4)" in r.stdout
    assert "counts         12 tracks, 9 works, 36 clips" in r.stdout
    assert "features       11025 Hz, CQT 84 bins from 32.7 Hz, hop 512, 3 clips x 2s" in r.stdout
    assert "soundfont      TimGM6mb.sf2" in r.stdout and "skipped        0 file(s)" in r.stdout
    j = CliRunner().invoke(cli, ["info", "--index", str(built_index), "--json"])
    assert json.loads(j.stdout) == _manifest(built_index)


def test_cli_index_from_the_environment(built_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICIDX_INDEX", str(built_index))
    assert CliRunner().invoke(cli, ["info", "--json"]).exit_code == 0


@pytest.mark.slow  # a build of its own (no cache)
def test_cli_build_json_then_query_it(
    corpus_dir: Path, tmp_path: Path, tiny_cli_defaults: None, features: FeatureConfig
) -> None:
    out = tmp_path / "idx"
    args = ["build", str(corpus_dir), "--out", str(out), "--workers", "1", "--no-cache", "--json", "--k", "3"]
    r = CliRunner().invoke(cli, [*args, "--clips-per-track", "2", "--epochs", "1", "--faiss", "hnsw"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert (s["out"], s["tracks"], s["works"], s["composers"]) == (str(out), 12, 9, COMPOSERS)
    assert (s["clips"], s["faiss"], s["skipped"], s["soundfont"]) == (24, "hnsw", [], "TimGM6mb.sf2")
    assert s["best_epoch"] == 1 and s["cached_tracks"] == 0 and s["rendered_seconds"] > 0
    assert set(s["seconds"]) == {"features", "train", "calibrate", "index", "save", "total"}
    m = _manifest(out)
    assert m["features"]["clips_per_track"] == 2 and m["k"] == 3 and m["training"]["epochs"] == 1
    assert m["features"]["clip_seconds"] == features.clip_seconds  # the tiny default, not 10 s
    q = CliRunner().invoke(cli, ["query", str(corpus_dir / "Beta" / TRACK_NAMES[0]), "--index", str(out), "--json"])
    assert q.exit_code == 0 and json.loads(q.stdout)["same_composition"] is True


@pytest.mark.slow  # a build of its own (no cache)
def test_cli_build_text_summary(corpus_dir: Path, tmp_path: Path, tiny_cli_defaults: None) -> None:
    out = tmp_path / "idx"
    r = CliRunner().invoke(cli, ["build", str(corpus_dir), "--out", str(out), "--workers", "1", "--no-cache"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == f"index        {out}"
    assert lines[1] == "tracks       12 (9 works), 36 clips"
    assert lines[2] == "composers    Alpha, Beta, Gamma"
    assert "skipped" not in r.stdout
    assert [ln.split(":")[0] for ln in r.stderr.splitlines()] == ["features", "training", "indexing"]  # progress


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["query", "x.mid", "--index", "{tmp}/none"], r"none: no index here \(build one with"),
        (["info", "--index", "{tmp}/none"], r"none: no index here"),
        (
            ["build", "{tmp}/in", "--out", "{tmp}/idx"],
            r"no MIDI files found where expected: found no MIDI files and no ",
        ),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str], match: str) -> None:
    (tmp_path / "in").mkdir()
    r = CliRunner().invoke(cli, [a.format(tmp=tmp_path) for a in args])
    assert r.exit_code == 1 and r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert line.startswith("musicidx: error: ")
    assert re.search(match, line), line


def test_cli_damaged_index_is_one_line_not_a_traceback(index_copy: Path, corpus_dir: Path) -> None:
    (index_copy / "index.faiss").write_bytes(b"\0" * 10)
    r = CliRunner().invoke(cli, ["query", str(corpus_dir / "Alpha" / TRACK_NAMES[0]), "--index", str(index_copy)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    (line,) = r.stderr.splitlines()
    assert line.startswith(f"musicidx: error: {index_copy / 'index.faiss'}: index.faiss is damaged")


def test_cli_query_with_another_soundfont_is_refused(built_index: Path, corpus_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "Other.sf2"
    other.write_bytes(b"RIFF" + bytes(64))
    f = corpus_dir / "Alpha" / TRACK_NAMES[0]
    r = CliRunner().invoke(cli, ["query", str(f), "--index", str(built_index), "--soundfont", str(other)])
    assert r.exit_code == 1
    (line,) = r.stderr.splitlines()
    assert "the index was rendered with SoundFont TimGM6mb.sf2" in line and "this run found Other.sf2" in line


def test_usage_errors_exit_2(built_index: Path) -> None:
    assert CliRunner().invoke(cli, ["query", "--index", str(built_index)]).exit_code == 2  # no FILE
    assert CliRunner().invoke(cli, ["build"]).exit_code == 2  # no MIDI_DIR (a missing one is an error: 1)
    assert CliRunner().invoke(cli, ["query", "x.mid", "--k", "0"]).exit_code == 2


# ------------------------------------------------------------------------------ processes


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # cwd outside the source tree, so that the installed package is the one tested (from the
    # repository root the source folder musicidx/ is imported instead: tests/test_api.py covers that)
    return subprocess.run(
        [sys.executable, *args], env={**os.environ, **env}, capture_output=True, text=True, cwd=cwd, check=True
    )


def test_help_answers_without_heavy_imports(tmp_path: Path) -> None:
    code = (
        "import sys; from click.testing import CliRunner; from musicidx.cli import cli; "
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'faiss', 'fluidsynth', 'nnAudio', 'pretty_midi', 'pyarrow') "
        "if m in sys.modules))"
    )
    assert _run(["-c", code], tmp_path).stdout == "[]\n"
    assert _run(["-m", "musicidx", "--version"], tmp_path).stdout == f"musicidx, version {package_version()}\n"


@pytest.mark.slow
@pytest.mark.fluidsynth
def test_a_local_build_and_query_never_import_the_optional_engines(corpus_dir: Path, tmp_path: Path) -> None:
    """Ray (``--ray``) and the HTTP server (``serve``) are extras: without them asked for, the core
    does not import them, installed or not."""
    tests = Path(__file__).resolve().parent
    code = (
        f"import sys; sys.path.insert(0, {str(tests)!r}); from tiny import RECIPE; "
        "from musicidx.indexer.build import build_index; from musicidx.query.engine import Searcher; "
        f"build_index({str(corpus_dir)!r}, out={str(tmp_path / 'idx')!r}, cache_dir={str(tmp_path / 'c')!r}, "
        "recipe=RECIPE, workers=2); "
        f"Searcher({str(tmp_path / 'idx')!r}).query({str(next(corpus_dir.glob('*/*.mid')))!r}); "
        "print(sorted(m for m in ('ray', 'fastapi', 'uvicorn', 'starlette') if m in sys.modules))"
    )
    assert _run(["-c", code], tmp_path).stdout.splitlines()[-1] == "[]"


@pytest.mark.slow  # a whole musicidx process: torch, FAISS and FluidSynth imported
def test_json_stdout_stays_clean_when_ci_is_set(built_index: Path, corpus_dir: Path, tmp_path: Path) -> None:
    """pyfluidsynth prints "'fluidsynth' was found at ..." on import when $CI is set."""
    f = corpus_dir / "Beta" / TRACK_NAMES[0]
    proc = _run(["-m", "musicidx", "query", str(f), "--index", str(built_index), "--json"], tmp_path, CI="true")
    assert json.loads(proc.stdout)["file"] == str(f)


@pytest.mark.slow  # five interpreters importing torch: ~5 s on an idle 2-core machine, far more under load
def test_four_processes_querying_at_once_agree_with_one(built_index: Path, corpus_dir: Path, tmp_path: Path) -> None:
    files = [str(p) for p in sorted(corpus_dir.glob("*/*.mid"))[::3]]
    args = ["-m", "musicidx", "query", *files, "--index", str(built_index), "--json"]

    def answers() -> list[Any]:
        return [json.loads(line) for line in _run(args, tmp_path).stdout.splitlines()]

    alone = answers()
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda _: answers(), range(4)))
    assert len(alone) == len(files) and all(answers == alone for answers in together)


# ------------------------------------------------------------------------------ determinism


@pytest.mark.slow  # two builds of its own, one cold
def test_same_seed_gives_an_identical_index_and_a_warm_rebuild_reuses_everything(
    built_index: Path, corpus_dir: Path, tmp_path: Path, build_tiny: Callable[..., Any]
) -> None:
    out, cache = tmp_path / "idx", tmp_path / "cache"
    cold = build_tiny(corpus_dir, out, cache)  # a fresh cache: features rendered, encoder trained again
    assert cold.cached_tracks == 0
    assert pq.read_table(out / "clips.parquet").equals(pq.read_table(built_index / "clips.parquet"))
    np.testing.assert_array_equal(_vectors(out), _vectors(built_index))
    a, b = _manifest(out), _manifest(built_index)
    assert a["encoder_sha256"] == b["encoder_sha256"]
    assert a["novelty"] == b["novelty"] and a["validation"] == b["validation"]

    warm = build_tiny(corpus_dir, out, cache)  # same cache, same place: the index is replaced atomically
    assert warm.cached_tracks == 12 and warm.rendered_seconds == 0.0
    np.testing.assert_array_equal(_vectors(out), _vectors(built_index))
    assert _manifest(out)["encoder_sha256"] == b["encoder_sha256"]


@pytest.mark.slow  # two builds of its own
def test_another_seed_trains_another_encoder(corpus_dir: Path, tmp_path: Path, build_tiny: Callable[..., Any]) -> None:
    from tiny import TRAIN

    build_tiny(corpus_dir, tmp_path / "a", tmp_path / "cache")
    build_tiny(
        corpus_dir, tmp_path / "b", tmp_path / "cache", train_config=TrainConfig(**{**TRAIN.to_dict(), "seed": 1})
    )
    assert _manifest(tmp_path / "a")["encoder_sha256"] != _manifest(tmp_path / "b")["encoder_sha256"]
    assert pq.read_table(tmp_path / "a" / "clips.parquet").equals(pq.read_table(tmp_path / "b" / "clips.parquet"))


def test_score_to_an_unwritable_place_is_one_line(built_index: Path, corpus_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "dir" / "s.csv"
    r = CliRunner().invoke(cli, ["score", str(corpus_dir / "Alpha"), "--index", str(built_index), "--out", str(out)])
    assert isinstance(r.exception, SystemExit) and r.exit_code == 1, repr(r.exception)
    (line,) = r.stderr.splitlines()[-1:]
    assert line.startswith(f"musicidx: error: {out}: ")


def test_build_to_an_unwritable_place_is_one_line(corpus_dir: Path, tmp_path: Path, tiny_cli_defaults: None) -> None:
    (tmp_path / "afile").write_text("not a folder")
    out = tmp_path / "afile" / "idx"
    r = CliRunner().invoke(cli, ["build", str(corpus_dir), "--out", str(out), "--workers", "1", "--no-cache"])
    assert isinstance(r.exception, SystemExit) and r.exit_code == 1, repr(r.exception)
    assert r.stderr.splitlines()[-1].startswith(f"musicidx: error: {out}: cannot write the index here")
    assert "features" not in r.stderr and "training" not in r.stderr, "the destination is checked first"


def test_score_replaces_its_table_only_when_done(built_index: Path, corpus_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    out.write_text("an earlier table\n")
    missing = tmp_path / "no-index"
    r = CliRunner().invoke(cli, ["score", str(corpus_dir / "Alpha"), "--index", str(missing), "--out", str(out)])
    assert r.exit_code == 1
    assert out.read_text() == "an earlier table\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"], "no temporary file is left behind"
    r = CliRunner().invoke(cli, ["score", str(corpus_dir / "Alpha"), "--index", str(built_index), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_text().startswith("file,composer,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]


# ------------------------------------------------------------------------------ add, eval


def test_cli_add_enrols_a_new_composer_without_retraining(
    index_copy: Path, corpus_dir: Path, tmp_path: Path, rng: np.random.Generator
) -> None:
    new = tmp_path / "new" / "Delta"
    new.mkdir(parents=True)
    for i in range(3):
        midi_factory.write_notes(
            new / f"Flute {i}_K{i}_{i}_f.mid",
            [(72 + int(rng.integers(0, 12)), 0.3 * j, 0.3 * j + 0.25) for j in range(16)],
            program=73,
        )
    (new / "empty.mid").write_bytes(b"")
    shutil.copy(corpus_dir / "Alpha" / TRACK_NAMES[0], new / "dup.mid")  # content already indexed
    before = _manifest(index_copy)
    r = CliRunner().invoke(cli, ["add", str(tmp_path / "new"), "--index", str(index_copy), "--workers", "1", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert (rep["added_tracks"], rep["new_composers"], rep["duplicates"]) == (3, ["Delta"], ["Delta/dup.mid"])
    assert rep["skipped"] == [["Delta/empty.mid", "file is empty (0 bytes)"]]
    after = _manifest(index_copy)
    assert after["encoder_sha256"] == before["encoder_sha256"] and after["composers"]["Delta"] == 3
    by_k = after["novelty"]["thresholds_by_k"]  # every calibrated k recalibrated, the index's own among them
    assert list(by_k) == list(before["novelty"]["thresholds_by_k"]) and by_k["10"] == after["novelty"]["threshold"]
    assert by_k != before["novelty"]["thresholds_by_k"]
    assert read_index(index_copy).faiss_index.ntotal == 36 + rep["added_clips"]
    q = Searcher(index_copy, k=1).query(new / "Flute 1_K1_1_f.mid")
    assert q.composer == "Delta" and q.same_composition


@pytest.mark.slow  # eval: 2 folds x 2 seeds, 3 left out, 2 re-orchestrations
def test_eval_closed_and_open_set_on_the_tiny_corpus(corpus_dir: Path, tmp_path: Path) -> None:
    from tiny import RECIPE

    from musicidx.evaluate.protocol import evaluate
    from musicidx.evaluate.report import write_report

    rep = evaluate(
        corpus_dir,
        folds=2,
        seeds=[0, 1],
        recipe=RECIPE,
        orchestrations=("piano", "strings"),
        cache_dir=tmp_path,
        workers=1,
    )
    assert rep.composers == COMPOSERS and rep.folds == 2 and rep.seeds == [0, 1]
    assert rep.closed["tracks"] == 12 and 0.0 <= rep.closed["balanced_accuracy"] <= 1.0
    assert np.array(rep.closed["confusion_matrix"]).sum() == 12
    assert set(rep.open["per_composer"]) == set(COMPOSERS)
    assert all(0.0 <= m["auroc"] <= 1.0 for m in rep.open["per_composer"].values())
    mean = rep.open["mean"]
    for name in ("low_confidence", "relative", "mean_k", "nearest", "piano", "strings"):  # candidates, orchestrations
        assert 0.0 <= mean[f"auroc_{name}"] <= 1.0
    assert [c for c, _, _ in rep.novelty_loco] == COMPOSERS and len(rep.thresholds) == len(COMPOSERS)
    # every held-out track asked again in each orchestration; agreement is over all of them
    assert set(rep.closed["orchestrations"]) == {"piano", "strings"}
    for m in rep.closed["orchestrations"].values():
        assert 0.0 <= m["balanced_accuracy"] <= 1.0 and m["novelty_shift_median"] >= 0.0
        assert rep.closed["agreement"] <= m["agrees_with_original"]
    # every headline number per seed, and its mean and std over the seeds
    assert len(rep.per_seed) == 2 and [s["seed"] for s in rep.per_seed] == [0, 1]
    for key in (
        "closed.original.balanced_accuracy",
        "closed.piano.balanced_accuracy",
        "closed.agreement",
        "open.original.auroc",
        "open.strings.auroc",
    ):
        values = [s[key] for s in rep.per_seed]
        assert rep.summary[key]["values"] == values
        assert rep.summary[key]["mean"] == pytest.approx(np.mean(values))
        assert rep.summary[key]["std"] == pytest.approx(np.std(values))
    assert {v: e.shape for v, e in rep.embeddings_orchestrated.items()} == {
        v: (int(rep.embedding_held_out.sum()), RECIPE.model.embedding_dim) for v in ("piano", "strings")
    }
    written = write_report(rep, tmp_path / "report", plots=False)
    assert json.loads((tmp_path / "report" / "report.json").read_text())["closed"]["tracks"] == 12
    assert [p.name for p in written] == ["report.json"]
    pytest.importorskip("matplotlib", reason="the plots need the 'plots' extra")
    written = write_report(rep, tmp_path / "plotted")
    names = ["report.json", "confusion_matrix.png", "embeddings_pca.png", "novelty_hist.png", "orchestrations.png"]
    assert [p.name for p in written] == names
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written[1:])
    assert json.loads(written[0].read_text())["plots"] == names[1:]


@pytest.mark.slow  # eval twice: 2 folds x 2 seeds, 3 left out, 1 re-orchestration
def test_a_head_eval_runs_the_body_once_per_clip_and_gives_the_numbers_it_gives_without(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A head recipe's eval reads the shipped body's pooled features from one memo for every fold,
    seed and role (:class:`~musicidx.encoder.model.PooledMemo`): the same numbers as running the
    whole encoder every time, up to float rounding, with the body run once per distinct clip."""
    import torch
    from tiny import FEATURES, MODEL, TRAIN

    from musicidx.encoder.model import Encoder
    from musicidx.encoder.recipe import Recipe
    from musicidx.evaluate import protocol
    from musicidx.indexer.prepare import prepare_corpus, stack_clips

    torch.manual_seed(0)  # "shipped" weights: a random encoder with its card
    pt = tmp_path / "tiny-shipped.pt"
    torch.save(Encoder(MODEL, FEATURES).state_dict(), pt)
    card = {"sha256": file_sha256(pt), "recipe": {"model": MODEL.to_dict(), "features": FEATURES.to_dict()}}
    pt.with_suffix(".json").write_text(json.dumps(card))
    recipe = Recipe(features=FEATURES, model=MODEL, train=TRAIN, encoder=str(pt), head=True)
    ran: list[int] = []  # clips through the body, call by call
    body = Encoder.pooled
    monkeypatch.setattr(Encoder, "pooled", lambda self, x: ran.append(len(x)) or body(self, x))
    memos: list[Any] = []
    make_memo = protocol._body_memo
    monkeypatch.setattr(protocol, "_body_memo", lambda *a: memos.append(make_memo(*a)) or memos[-1])

    def run() -> Any:
        ran.clear()
        return protocol.evaluate(
            corpus_dir, folds=2, seeds=[0, 1], recipe=recipe, orchestrations=("piano",), cache_dir=tmp_path, workers=1
        )

    with_memo, ran_with = run(), sum(ran)
    monkeypatch.setattr(protocol, "_body_memo", lambda *a: None)
    without, ran_without = run(), sum(ran)

    corpus = prepare_corpus(corpus_dir, features=FEATURES, cache_dir=tmp_path, workers=1, orchestrations=("piano",))
    every = np.arange(len(corpus.tracks))
    clips = np.concatenate([stack_clips(corpus, every).feats, stack_clips(corpus, every, orchestration="piano").feats])
    distinct = len({row.tobytes() for row in clips.astype(np.float32)})
    assert len(memos) == 1 and ran_with == len(memos[0]) == distinct  # once per clip, for every fold and seed
    assert ran_without > 5 * ran_with
    assert with_memo.per_seed == [pytest.approx(s, rel=1e-4, abs=1e-6) for s in without.per_seed]
    assert with_memo.closed["per_fold"] == without.closed["per_fold"]
    assert with_memo.closed["confusion_matrix"] == without.closed["confusion_matrix"]
    assert with_memo.thresholds == pytest.approx(without.thresholds, rel=1e-4, abs=1e-6)
    for (name, known, unknown), (name_, known_, unknown_) in zip(with_memo.novelty_loco, without.novelty_loco):
        assert name == name_
        np.testing.assert_allclose(known, known_, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(unknown, unknown_, rtol=1e-4, atol=1e-6)
    assert with_memo.embeddings is not None and without.embeddings is not None
    np.testing.assert_allclose(with_memo.embeddings, without.embeddings, atol=1e-5)
    np.testing.assert_allclose(
        with_memo.embeddings_orchestrated["piano"], without.embeddings_orchestrated["piano"], atol=1e-5
    )


def test_eval_of_an_index_on_another_labelled_folder(
    built_index: Path, corpus_dir: Path, tmp_path: Path, rng: np.random.Generator
) -> None:
    """Cross-corpus: the index's composers are known, any other counts as new."""
    folder = tmp_path / "other"
    shutil.copytree(corpus_dir / "Alpha", folder / "Alpha")
    (folder / "Delta").mkdir()
    for i in range(3):
        midi_factory.write_notes(
            folder / "Delta" / f"Flute {i}_K{i}_{i}_f.mid",
            [(72 + int(rng.integers(0, 12)), 0.3 * j, 0.3 * j + 0.25) for j in range(16)],
            program=73,
        )
    (folder / "Delta" / "empty.mid").write_bytes(b"")
    r = CliRunner().invoke(
        cli,
        [
            "eval",
            str(folder),
            "--index",
            str(built_index),
            "--workers",
            "1",
            "--json",
            "--report",
            str(tmp_path / "rep"),
        ],
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert (rep["known_composers"], rep["new_composers"], rep["tracks"]) == (["Alpha"], ["Delta"], 7)
    assert rep["skipped"] == [["Delta/empty.mid", "file is empty (0 bytes)"]]
    assert rep["known"]["tracks"] == 4 and rep["known"]["accuracy"] == 1.0  # the index's own training files
    assert rep["open"]["new_tracks"] == 3 and set(rep["open"]["per_new_composer"]) == {"Delta"}
    assert 0.0 <= rep["open"]["auroc"] <= 1.0
    assert sum(row["known"] for row in rep["rows"]) == 4
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["tracks"] == 7
    text = CliRunner().invoke(cli, ["eval", str(folder), "--index", str(built_index), "--workers", "1"])
    assert text.exit_code == 0 and "known        4 tracks of Alpha: accuracy 1.000" in text.stdout
