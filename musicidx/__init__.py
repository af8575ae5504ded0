"""musicidx: who composed this piece, and is it a composer the index knows?

::

    import musicidx

    index = musicidx.load_index("idx")            # a Searcher: the index and its encoder, loaded once
    answer = index.query("piece.mid")             # a QueryResult: composer, confidence, votes, novelty,
    print(answer.composer, answer.is_new)         #   is_new, same_composition, nearest tracks...
    rows = index.score("new_pieces/")             # a ScoreRow per MIDI file under the folder
    musicidx.query_file("piece.mid", index="idx")       # one-off versions of the same
    musicidx.score_folder("new_pieces/", index="idx")
    report = musicidx.build_index("MIDI_DIR", out="idx")  # train, calibrate, index: a BuildReport

These names are imported on first use, so ``import musicidx`` (and ``musicidx --help``) loads
neither torch nor FAISS nor FluidSynth.  Errors are :class:`MusicIdxError` subclasses naming the
file and the reason.

The package is three stages under one namespace -- :mod:`musicidx.encoder` (MIDI to
embeddings), :mod:`musicidx.indexer` (a labelled corpus to an index directory) and
:mod:`musicidx.query` (an index and new files to answers) -- and, on top, the faces and the apps
that use them all: the command line (:mod:`musicidx.cli`), the server (:mod:`musicidx.serve`),
the evaluation (:mod:`musicidx.evaluate`) and the demo (:mod:`musicidx.demo`).
"""

from __future__ import annotations

import importlib
import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from importlib.util import spec_from_file_location
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from musicidx.api import build_index, load_index, query_file, score_folder
    from musicidx.encoder.errors import MusicIdxError
    from musicidx.indexer.build import BuildReport
    from musicidx.query.engine import QueryResult, ScoreRow, Searcher

#: public name -> the module that defines it
_LAZY = {
    "load_index": "musicidx.api",
    "query_file": "musicidx.api",
    "score_folder": "musicidx.api",
    "build_index": "musicidx.api",
    "Searcher": "musicidx.query.engine",
    "QueryResult": "musicidx.query.engine",
    "ScoreRow": "musicidx.query.engine",
    "BuildReport": "musicidx.indexer.build",
    "MusicIdxError": "musicidx.encoder.errors",
}
__all__ = [
    "BuildReport",
    "MusicIdxError",
    "QueryResult",
    "ScoreRow",
    "Searcher",
    "__version__",
    "build_index",
    "load_index",
    "query_file",
    "score_folder",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'musicidx' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # the next lookup is an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


_STAGES = ("encoder", "indexer", "query")


class _SourceStages(MetaPathFinder):
    """Finds ``musicidx.encoder|indexer|query`` in the stage folders of a source checkout, as the
    ``package-dir`` table of ``pyproject.toml`` maps them when the package is installed."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        package, _, stage = fullname.partition(".")
        if package != "musicidx" or stage not in _STAGES:
            return None
        folder = self.root / stage
        return spec_from_file_location(fullname, folder / "__init__.py", submodule_search_locations=[str(folder)])


def _map_source_stages() -> None:
    """From the repository root (a notebook or ``python -m musicidx`` started there), this folder
    shadows the installed package but holds only the face: its stages are the sibling folders."""
    here = Path(__file__).resolve().parent
    if all((here.parent / s / "__init__.py").is_file() for s in _STAGES) and not (here / "query").is_dir():
        sys.meta_path.append(_SourceStages(here.parent))


_map_source_stages()
