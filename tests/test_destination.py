"""Nothing a user owns is ever destroyed: where ``build`` may write an index, and where it may not.

``build --out`` replaces only a folder that holds a musicidx index and nothing else (or an empty
or new one). Every other destination is refused with one line before any work, and the user's
files are still there byte for byte afterwards. The CLI cases use the tiny configs and fail
before rendering, so they are fast.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tiny import SyntheticIndex

from musicidx.cli import cli
from musicidx.indexer.destination import check_index_destination
from musicidx.indexer.format import read_index, save_index
from musicidx.indexer.manifest import IndexFormatError, is_index_dir

THESIS = b"Chapter 1. On the fugue.\n" * 200


def _digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _build(midi_dir: Path, out: Path | str) -> Result:
    return CliRunner().invoke(cli, ["build", str(midi_dir), "--out", str(out), "--workers", "1", "--no-cache"])


def _refused(r: Result, match: str) -> str:
    assert r.exit_code == 1, r.output
    (line,) = r.stderr.splitlines()  # one line, and no progress: nothing was rendered or trained
    assert line.startswith("musicidx: error: ") and match in line, line
    return line


@pytest.fixture
def mini(tmp_path: Path, corpus_dir: Path) -> Path:
    """A private copy of the tiny corpus (the user's MIDI folder)."""
    return Path(shutil.copytree(corpus_dir, tmp_path / "mini"))


def test_build_refuses_a_folder_holding_a_users_file(mini: Path, tmp_path: Path, tiny_cli_defaults: None) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    precious.chmod(0o751)
    (precious / "thesis.txt").write_bytes(THESIS)
    _refused(_build(mini, precious), "holds files that are not part of a musicidx index (thesis.txt)")
    assert (precious / "thesis.txt").read_bytes() == THESIS
    assert sorted(p.name for p in precious.iterdir()) == ["thesis.txt"]
    assert stat.S_IMODE(precious.stat().st_mode) == 0o751
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("where", "match"),
    [
        ("same", "is the input MIDI folder"),
        ("inside", "is inside the input MIDI folder"),
        ("containing", "contains the input MIDI folder"),
    ],
)
def test_build_refuses_an_out_that_is_inside_or_contains_the_input(
    mini: Path, tmp_path: Path, tiny_cli_defaults: None, where: str, match: str
) -> None:
    before = _digest_tree(tmp_path)
    out = {"same": mini, "inside": mini / "Alpha" / "idx", "containing": tmp_path}[where]
    _refused(_build(mini, out), match)
    assert _digest_tree(tmp_path) == before  # every MIDI file is still there, byte for byte
    assert not (mini / "Alpha" / "idx").exists()


def test_build_refuses_the_same_input_reached_by_another_spelling(
    mini: Path, tmp_path: Path, tiny_cli_defaults: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "link").symlink_to(mini)
    monkeypatch.chdir(mini)
    before = _digest_tree(mini)
    _refused(_build(tmp_path / "link", "."), "is the input MIDI folder")
    assert _digest_tree(mini) == before


def test_build_refuses_the_current_directory(tmp_path: Path, mini: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    with pytest.raises(IndexFormatError, match="is the current directory"):
        check_index_destination(".", source=mini)


def test_build_refuses_a_folder_that_is_not_an_index(tmp_path: Path, synthetic_index: SyntheticIndex) -> None:
    """A folder whose only file is named like an index file, but with no musicidx manifest."""
    lookalike = tmp_path / "models"
    lookalike.mkdir()
    (lookalike / "encoder.pt").write_bytes(b"someone's own model")
    (lookalike / "manifest.json").write_text('{"name": "a web app"}')
    with pytest.raises(IndexFormatError, match="is not a musicidx index"):
        save_index(synthetic_index.contents, lookalike)
    assert (lookalike / "encoder.pt").read_bytes() == b"someone's own model"
    assert not is_index_dir(lookalike) and is_index_dir(synthetic_index.path)


def test_an_index_with_a_users_file_added_is_not_replaced(synthetic_index: SyntheticIndex) -> None:
    (synthetic_index.path / "notes.txt").write_text("my notes on this index")
    with pytest.raises(IndexFormatError, match=r"holds files that are not part of a musicidx index \(notes.txt\)"):
        save_index(synthetic_index.contents, synthetic_index.path)
    assert (synthetic_index.path / "notes.txt").read_text() == "my notes on this index"


def test_an_index_and_an_empty_folder_are_replaced_keeping_their_permissions(
    synthetic_index: SyntheticIndex, tmp_path: Path
) -> None:
    synthetic_index.path.chmod(0o750)
    empty = tmp_path / "empty"
    empty.mkdir()
    empty.chmod(0o705)
    for out, mode in ((synthetic_index.path, 0o750), (empty, 0o705)):
        save_index(synthetic_index.contents, out)
        assert read_index(out).faiss_index.ntotal == 12
        assert stat.S_IMODE(out.stat().st_mode) == mode


def test_a_new_index_folder_gets_the_usual_permissions(synthetic_index: SyntheticIndex, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        save_index(synthetic_index.contents, tmp_path / "fresh")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) == 0o755


def test_info_on_a_midi_folder_says_it_is_not_an_index_and_suggests_no_rebuild(mini: Path) -> None:
    before = _digest_tree(mini)
    r = CliRunner().invoke(cli, ["info", "--index", str(mini)])
    line = _refused(r, "is not a musicidx index (no manifest.json)")
    assert "rebuild" not in line
    assert _digest_tree(mini) == before
