"""``python tests/tiny_cli.py build ...``: the ``musicidx`` command in a process of its own, with the
tiny test configs as its recipe (what the ``tiny_cli_defaults`` fixture does in-process), through
the public way to name one: ``$MUSICIDX_RECIPE``."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from tiny import write_tiny_recipe

if __name__ == "__main__":
    folder = Path(tempfile.mkdtemp(prefix="tiny-recipe-"))
    os.environ["MUSICIDX_RECIPE"] = str(write_tiny_recipe(folder / "tiny.json"))
    from musicidx.cli import main

    sys.argv[0] = "musicidx"
    main()
