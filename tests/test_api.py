"""The Python API at the top of the package (issue 13, item 6), and importing it from the
repository root, where the source folder ``musicidx/`` shadows the installed package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from midi_factory import TRACK_NAMES
from tiny import RECIPE

import musicidx

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "faiss", "fluidsynth", "nnAudio", "pretty_midi", "pyarrow", "numpy")


def _python(code: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout


def test_import_musicidx_is_light_and_names_its_api(tmp_path: Path) -> None:
    code = (
        "import sys, musicidx; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules)); "
        "print(sorted(n for n in musicidx.__all__ if n in dir(musicidx)) == sorted(musicidx.__all__))"
    )
    assert _python(code, tmp_path) == "[]\nTrue\n"
    assert musicidx.Searcher.__module__ == "musicidx.query.engine" and callable(musicidx.load_index)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        musicidx.nothing  # noqa: B018


@pytest.mark.skipif(not (REPO / "pyproject.toml").is_file(), reason="needs the source checkout")
def test_the_repository_root_imports_the_stages_and_runs_python_m(tmp_path: Path) -> None:
    code = (
        "import musicidx, musicidx.query, musicidx.indexer.format; "
        "print(musicidx.__file__); print(musicidx.query.__file__); print(musicidx.indexer.format.__file__); "
        "print(musicidx.Searcher.__module__)"
    )
    lines = _python(code, REPO).splitlines()
    assert lines == [  # the source folder is the one imported: that is the case that used to fail
        str(REPO / "musicidx" / "__init__.py"),
        str(REPO / "query" / "__init__.py"),
        str(REPO / "indexer" / "format.py"),
        "musicidx.query.engine",
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-m", "musicidx", "info", "--help"], cwd=REPO, env=env, capture_output=True)
    assert r.returncode == 0 and b"Show an index's manifest." in r.stdout and not r.stderr
    # the installed package, imported from anywhere else, is unaffected
    assert _python("import musicidx.query; print(musicidx.query.__file__)", tmp_path).strip() != str(
        REPO / "query" / "__init__.py"
    )


@pytest.mark.fluidsynth
def test_load_query_score_and_build(built_index: Path, corpus_dir: Path, tmp_path: Path) -> None:
    f = corpus_dir / "Gamma" / TRACK_NAMES[2]
    index = musicidx.load_index(built_index)
    answer = index.query(f)
    assert isinstance(answer, musicidx.QueryResult) and answer.composer == "Gamma" and answer.same_composition
    assert musicidx.query_file(f, index=built_index) == answer
    rows = musicidx.score_folder(corpus_dir / "Gamma", index=built_index)
    assert [r.file for r in rows] == sorted(TRACK_NAMES) and all(r.status == "ok" for r in rows)
    assert index.score(corpus_dir / "Gamma") == rows
    with pytest.raises(musicidx.MusicIdxError, match="no novelty threshold was calibrated for k=7"):
        musicidx.load_index(built_index, k=7)
    kw: dict[str, Any] = {"recipe": RECIPE, "workers": 1}
    report = musicidx.build_index(corpus_dir, out=tmp_path / "idx", cache_dir=tmp_path / "cache", **kw)
    assert isinstance(report, musicidx.BuildReport) and report.fit.n_tracks == 12
    assert musicidx.load_index(tmp_path / "idx").query(f).composer == "Gamma"
