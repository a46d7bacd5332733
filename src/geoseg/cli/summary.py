"""``geoseg summary``: object counts and areas per class and source of a geoseg output."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import geopackage_argument, overwrite_option
from geoseg.reports.summary import FORMATS

_SUFFIX_FORMATS = {".csv": "csv", ".json": "json"}


@click.command("summary", short_help="Count and measure objects per class and source.")
@geopackage_argument
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="table (aligned text), csv or json [default: from the -o suffix, else table].",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Write to a file, not stdout."
)
@overwrite_option
def summary_command(
    geopackage: Path, fmt: str | None, output: Path | None, overwrite: bool
) -> None:
    """Count and measure the objects of GEOPACKAGE per class and source raster.

    For every source and class: the number of objects, their total ground area in m², ha and
    km², and the mean and median area of one object in m², computed from the class layers.
    With several sources, rows with source "all sources" (empty in CSV, null in JSON) total
    each class.
    """
    from geoseg.reports.results import read_results
    from geoseg.reports.summary import format_summary, summarize
    from geoseg.tasks.write import check_output

    if fmt is None:
        fmt = _SUFFIX_FORMATS.get(output.suffix.lower(), "table") if output else "table"
    if output is not None:
        check_output(output, overwrite)
    text = format_summary(summarize(read_results(geopackage)), fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
