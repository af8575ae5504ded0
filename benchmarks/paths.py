"""Where the benchmarks find their inputs and keep their results, written once.

The challenge data lives beside the repository (``../shared/data``: ``musicians/`` the labelled
training folder, ``test/`` unlabelled files that are never trained or tuned on); every script
that reads it takes the folder as an argument with these defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: The repository root (the folder the benchmarks are run from, as ``python -m benchmarks...``).
REPO = Path(__file__).resolve().parent.parent
#: The challenge data beside the repository.
SHARED_DATA = REPO.parent / "shared" / "data"
#: The labelled training folder ``<Composer>/*.mid``.
TRAINING_CORPUS = SHARED_DATA / "musicians"
#: Unlabelled files for timing queries and scoring (never trained or tuned on).
TEST_FOLDER = SHARED_DATA / "test"
#: Every results file the benchmarks write or read.
RESULTS = Path(__file__).resolve().parent / "results"


def add_corpus_argument(ap: argparse.ArgumentParser, *, flag: str = "--corpus", what: str = "") -> None:
    """``--corpus DIR`` (or ``flag``): the labelled training folder, :data:`TRAINING_CORPUS` by default."""
    ap.add_argument(
        flag,
        type=Path,
        default=TRAINING_CORPUS,
        metavar="DIR",
        help=f"labelled folder <Composer>/*.mid{what} [{TRAINING_CORPUS}]",
    )
