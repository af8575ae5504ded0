"""Every import runs down the stack: musicidx (the faces) -> query -> indexer -> encoder.

Read from the source with ``ast`` (imports inside functions included), so a lazy import that
reaches up fails here even if no test happens to execute it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: folder -> (its package name, its height in the stack)
STAGES = {"encoder": ("musicidx.encoder", 0), "indexer": ("musicidx.indexer", 1), "query": ("musicidx.query", 2)}
FACE = 3


def height_of_module(name: str) -> int | None:
    """The stage a ``musicidx...`` module belongs to (None: not musicidx)."""
    if name != "musicidx" and not name.startswith("musicidx."):
        return None
    for package, height in STAGES.values():
        if name == package or name.startswith(package + "."):
            return height
    return FACE


def imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (relative ones resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return out


def library_files() -> list[tuple[Path, str, int]]:
    files = []
    for folder, (package, height) in STAGES.items():
        for p in sorted((REPO / folder).rglob("*.py")):
            sub = ".".join(p.relative_to(REPO / folder).with_suffix("").parts[:-1])
            files.append((p, f"{package}.{sub}" if sub else package, height))
    for p in sorted((REPO / "musicidx").rglob("*.py")):
        sub = ".".join(p.relative_to(REPO / "musicidx").with_suffix("").parts[:-1])
        files.append((p, f"musicidx.{sub}" if sub else "musicidx", FACE))
    return files


def test_no_import_runs_up_the_stack() -> None:
    ups = []
    for path, package, height in library_files():
        for line, name in imports(path, package):
            h = height_of_module(name)
            if h is not None and h > height:
                ups.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert ups == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from musicidx.query.engine import Searcher\n    from ..indexer import build\n")
    found = [(n, height_of_module(n)) for _, n in imports(f, "musicidx.encoder")]
    assert found == [("musicidx.query.engine", 2), ("musicidx.indexer", 1)]


@pytest.mark.parametrize(
    "name", ["musicidx.cli", "musicidx", "musicidx.serve.app", "musicidx.evaluate.protocol", "musicidx.demo.run"]
)
def test_the_faces_are_on_top(name: str) -> None:
    assert height_of_module(name) == FACE


def test_the_query_stage_builds_nothing() -> None:
    """Apps that build indexes (the evaluation protocol, the demo) live on the face with the CLI:
    no module of the query stage imports what builds or enrols."""
    builders = {"build_index", "fit_index", "add_to_index"}
    found = []
    for path in sorted((REPO / "query").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and builders & {a.name for a in node.names}:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == []
