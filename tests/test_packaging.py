"""Installing the package is quiet (issue 19, item 7): every folder that ships data files is declared,
so setuptools prints none of its "Package 'musicidx.data' is absent from the `packages`
configuration" banners; and the install hints name both the published package and a checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_building_the_package_prints_no_setuptools_banner(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="builds with the environment's setuptools (no download)")
    src = tmp_path / "src"
    for name in ("musicidx", "encoder", "indexer", "query"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "w"), "."],
        cwd=src,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    said = r.stdout + r.stderr
    assert said.count("absent from the `packages` configuration") == 0, said
    (wheel,) = (tmp_path / "w").glob("musicidx-*.whl")
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {"musicidx/data/demo_recipe.json", "musicidx/serve/static/app.js", "musicidx/serve/static/favicon.svg"}
    assert shipped <= names and "musicidx/py.typed" in names
    # every module of the face ships (a subpackage left out of `packages` would be silently missing)
    face = {f"musicidx/{p.relative_to(ROOT / 'musicidx').as_posix()}" for p in (ROOT / "musicidx").rglob("*.py")}
    assert sorted(face - names) == []


def test_install_hints_name_the_package_and_a_checkout() -> None:
    from musicidx.encoder.errors import install_hint

    assert install_hint("serve") == "pip install 'musicidx[serve]' (from a source checkout: pip install '.[serve]')"
