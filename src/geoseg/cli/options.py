"""Options and arguments shared by the commands that read geoseg outputs, defined once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

geopackage_argument = click.argument("geopackage", type=click.Path(path_type=Path))
"""A GeoPackage written by ``geoseg run``. Existence is checked by the command, so that a missing
file is one ``Error:`` line and exit status 2 like every other bad input."""

overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace the output if it exists."
)


def label_class_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--class-column`` and ``--class-name``: where label polygons get their class."""
    command = click.option(
        "--class-name",
        default="building",
        show_default=True,
        help="Class of every polygon without --class-column.",
    )(command)
    return click.option("--class-column", help="Label attribute holding the class name.")(command)


def coco_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--coco`` and ``--images``: a COCO dataset as labelled input."""
    command = click.option(
        "--images", "images_dir", type=click.Path(path_type=Path), help="Folder of the COCO images."
    )(command)
    return click.option("--coco", type=click.Path(path_type=Path), help="COCO annotations JSON.")(
        command
    )
