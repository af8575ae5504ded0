"""The documents match the tool (issue 13, item 7): the design the README points to is in the
repository and describes the current format and commands; shown outputs say which machine printed
them and have the shape the code prints today."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from musicidx.cli import cli
from musicidx.indexer.manifest import FORMAT_VERSION

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (REPO / "README.md").is_file(), reason="needs the source checkout")


def _read(name: str) -> str:
    return (REPO / name).read_text(encoding="utf-8")


def test_every_file_the_readme_links_to_exists() -> None:
    links = re.findall(r"\]\(([^)#:]+)\)", _read("README.md"))
    assert "docs/DESIGN.md" in links
    assert [link for link in links if not (REPO / link).exists()] == []


def test_the_design_describes_the_current_format_and_commands() -> None:
    design = _read("docs/DESIGN.md")
    assert f"format_version {FORMAT_VERSION}" in design and "notes_sha256" in design
    assert "thresholds_by_k" in design
    contract = design.split("## CLI contract", 1)[1].split("```")[1]
    assert sorted(set(re.findall(r"^musicidx (\w+)", contract, re.M))) == sorted(cli.commands)


def test_shown_outputs_name_the_machine_and_determinism_is_per_machine() -> None:
    readme = _read("README.md")
    for heading in ("### Real output (challenge data)",):
        section = readme.split(heading, 1)[1][:800]
        assert "2 vCPU Intel Xeon" in section and "deterministic for a\nseed on one machine" in section
    assert "builds are deterministic on one machine, not across CPUs" in _read("BENCHMARKS.md")


def test_the_readmes_query_output_has_the_shape_the_code_prints() -> None:
    readme = _read("README.md")
    block = readme.split("$ musicidx query ", 1)[1].split("```", 1)[0].splitlines()[1:]
    labels = [line[:15] for line in block if line.strip()]
    assert labels[1:4] == ["  composer     ", "  vote         ", "  verdict      "]
    assert set(labels[4:]) == {"  nearest      "}


def _expand(pattern: str) -> list[str]:
    """``a_{x,y}.json`` -> ``a_x.json``, ``a_y.json`` (one brace group at most)."""
    m = re.search(r"\{([^}]*)\}", pattern)
    return [pattern[: m.start()] + alt + pattern[m.end() :] for alt in m.group(1).split(",")] if m else [pattern]


def test_every_benchmark_the_docs_name_exists_and_every_one_is_mapped() -> None:
    """The documents run benchmarks as modules (``python -m benchmarks.<group>.<script>``; the map in
    benchmarks/README.md writes ``b.`` for ``benchmarks.``) and name their results files: each must
    exist, and benchmarks/README.md must name every script."""
    names = ("BENCHMARKS.md", "README.md", "benchmarks/README.md", "Makefile", "docs/DESIGN.md")
    text = "\n".join(_read(n) for n in names)
    modules = set(re.findall(r"\b(?:benchmarks|b)\.(perf|accuracy|data|tables)\.(\w+)", text))
    assert len(modules) > 15
    assert [f"{g}.{s}" for g, s in sorted(modules) if not (REPO / "benchmarks" / g / f"{s}.py").is_file()] == []
    files = set(re.findall(r"benchmarks/(?:perf|accuracy|data|tables|results|recipes)/[\w.*{},-]*", text))
    files |= {f"benchmarks/{r}" for r in re.findall(r"`(results/[\w.*{},-]+)`", _read("benchmarks/README.md"))}
    assert [f for f in sorted(files) for p in _expand(f) if not list(REPO.glob(p))] == []
    mapped = _read("benchmarks/README.md")
    scripts = [p.stem for g in ("perf", "accuracy", "data", "tables") for p in (REPO / "benchmarks" / g).glob("*.py")]
    assert [s for s in scripts if s != "__init__" and f"`{s}`" not in mapped and f"{s}`" not in mapped] == []
