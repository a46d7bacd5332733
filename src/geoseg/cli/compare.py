"""``geoseg compare``: what changed between two runs over the same place."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import overwrite_option
from geoseg.reports.compare import FORMATS, IOU_THRESHOLD

_SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".gpkg": "gpkg"}


@click.command("compare", short_help="Objects appeared, disappeared and area change between runs.")
@click.argument("before", type=click.Path(path_type=Path))
@click.argument("after", type=click.Path(path_type=Path))
@click.option(
    "--iou",
    type=float,
    default=IOU_THRESHOLD,
    show_default=True,
    help="Least intersection over union for two objects of a class to be the same object.",
)
@click.option("--zones", "zones_file", type=click.Path(path_type=Path), help="Zones file.")
@click.option("--by", help="Zone attribute naming each zone (with --zones).")
@click.option("--layer", help="Layer of the zones file, when it has several.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="table, csv or json on stdout [default: from the -o suffix, else table].",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="changes.gpkg (every object with its status), .csv or .json.",
)
@overwrite_option
def compare_command(
    before: Path,
    after: Path,
    iou: float,
    zones_file: Path | None,
    by: str | None,
    layer: str | None,
    fmt: str | None,
    output: Path | None,
    overwrite: bool,
) -> None:
    """Compare two geoseg outputs of the same place, BEFORE then AFTER.

    Objects of a class are the same object when their polygons overlap with an IoU of at
    least --iou (default 0.5); the others appeared or disappeared. Per class: counts, ground
    areas and their change; with --zones and --by, the area change per zone and class too.
    """
    from geoseg.errors import OptionsError
    from geoseg.reports.compare import compare, format_comparison, write_changes
    from geoseg.reports.results import read_results
    from geoseg.reports.zones import read_zones
    from geoseg.tasks.write import check_output

    if (zones_file is None) != (by is None):
        raise OptionsError("--zones and --by go together: pass both or neither")
    if not 0.0 < iou <= 1.0:
        raise OptionsError(f"--iou must be in (0, 1], got {iou}")
    if output is not None:
        suffix_format = _SUFFIX_FORMATS.get(output.suffix.lower())
        if suffix_format is None or (fmt is not None and fmt != suffix_format):
            raise OptionsError(f"{output}: write changes to a .gpkg, .csv or .json file")
        check_output(output, overwrite)
    first, second = read_results(before), read_results(after)
    zones = read_zones(zones_file, by, layer) if zones_file is not None and by else None
    comparison = compare(first, second, iou, zones)
    if output is None:
        click.echo(format_comparison(comparison, fmt or "table"), nl=False)
        return
    write_changes(comparison, output, overwrite)
    click.echo(f"Wrote the changes of {len(comparison.objects)} objects to {output}")
