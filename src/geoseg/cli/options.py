"""Options and arguments shared by the commands that read geoseg outputs, defined once."""

from __future__ import annotations

from pathlib import Path

import click

geopackage_argument = click.argument("geopackage", type=click.Path(path_type=Path))
"""A GeoPackage written by ``geoseg run``. Existence is checked by the command, so that a missing
file is one ``Error:`` line and exit status 2 like every other bad input."""

overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace the output if it exists."
)
