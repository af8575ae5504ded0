"""What several commands share: the exit statuses, the index, ``--json``, ``--soundfont`` and
``--recipe`` options, and the recipe a command builds or evaluates with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

EXIT_ERROR, EXIT_PARTIAL = 1, 3
DEFAULT_INDEX = "musicidx-index"


def index_path_option(*decls: str, help: str) -> Any:
    """An index directory option, from $MUSICIDX_INDEX when not given (every command alike)."""
    return click.option(
        *decls,
        type=click.Path(path_type=Path),
        default=DEFAULT_INDEX,
        envvar="MUSICIDX_INDEX",
        show_default=True,
        help=help,
    )


index_option = index_path_option("--index", "index_dir", help="Index directory (or $MUSICIDX_INDEX).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
soundfont_option = click.option("--soundfont", type=click.Path(path_type=Path), help="SoundFont (.sf2) to render with.")
recipe_option = click.option(
    "--recipe",
    "recipe_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MUSICIDX_RECIPE",
    help="Recipe file (TOML or JSON; see data/recipe.toml) over the default recipe (or $MUSICIDX_RECIPE).",
)


def recipe_from(recipe_file: Path | None, **changes: Any) -> Any:
    """The default recipe, or ``recipe_file`` over it; then the options given (None = unchanged)."""
    import dataclasses

    from musicidx.encoder.recipe import DEFAULT_RECIPE, load_recipe

    r = DEFAULT_RECIPE if recipe_file is None else load_recipe(recipe_file)
    features = {k: v for k in ("clips_per_track",) if (v := changes.pop(k, None)) is not None}
    train = {k: v for k in ("epochs", "seed") if (v := changes.pop(k, None)) is not None}
    return r.replace(
        features=dataclasses.replace(r.features, **features) if features else None,
        train=dataclasses.replace(r.train, **train) if train else None,
        **changes,
    )
