"""``geoseg zones``: ground area and count of objects per class inside each zone."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import geopackage_argument, overwrite_option

_SUFFIXES = (".gpkg", ".csv")


@click.command("zones", short_help="Area and count per class inside zones (parcels, districts).")
@geopackage_argument
@click.argument("zones_file", metavar="ZONES", type=click.Path(path_type=Path))
@click.option("--by", required=True, help="Zone attribute naming each zone, e.g. parcel_id.")
@click.option("--layer", help="Layer of ZONES to read, when it has several.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="zones.gpkg (keeps zone geometry) or zones.csv [default: CSV on stdout].",
)
@overwrite_option
def zones_command(
    geopackage: Path,
    zones_file: Path,
    by: str,
    layer: str | None,
    output: Path | None,
    overwrite: bool,
) -> None:
    """Measure the objects of GEOPACKAGE inside each zone of ZONES.

    ZONES is any polygon file (GeoPackage, GeoJSON, Shapefile) in any CRS; rows sharing a --by
    value are one zone. Objects straddling zones are cut at the zone borders and each piece is
    measured on the ellipsoid like the objects' own area_m2, so no area is counted twice.
    Columns: the --by value, zone_area_m2, then <class>_area_m2 and <class>_count per class
    (an object is counted in the zone holding its representative point).
    """
    from geoseg.errors import OptionsError
    from geoseg.reports.results import read_results
    from geoseg.reports.zones import format_zones_csv, measure_zones, read_zones, write_zones
    from geoseg.tasks.write import check_output

    if output is not None:
        if output.suffix.lower() not in _SUFFIXES:
            raise OptionsError(f"{output}: write zones to a .gpkg or a .csv file")
        check_output(output, overwrite)
    results = read_results(geopackage)
    zones = read_zones(zones_file, by, layer)
    rows = measure_zones(results, zones)
    if output is None:
        click.echo(format_zones_csv(rows, by, results.class_names), nl=False)
        return
    write_zones(rows, zones, results.class_names, output, overwrite)
    click.echo(f"Wrote {len(rows)} zone(s) to {output}")
