"""``geoseg export``: convert a geoseg output to COCO, GeoJSON, shapefiles or GeoParquet."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import geopackage_argument, overwrite_option

_FORMATS = ("coco", "geojson", "shapefile", "geoparquet")


@click.command("export", short_help="Export objects to COCO, GeoJSON, shapefiles or GeoParquet.")
@geopackage_argument
@click.option("--to", "to", type=click.Choice(_FORMATS), required=True, help="Format to write.")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="File to write (a folder for shapefile).",
)
@overwrite_option
def export_command(geopackage: Path, to: str, output: Path, overwrite: bool) -> None:
    """Export the objects of GEOPACKAGE (written by geoseg run) to another format.

    \b
    coco        COCO instance-segmentation JSON in each source raster's pixel
                coordinates (needs the source rasters; relative paths are tried
                from here and from the GeoPackage's folder). Polygons are exterior
                rings only: COCO polygons cannot hold holes; area is the true area.
    geojson     one RFC 7946 FeatureCollection in WGS 84 lon/lat, all classes.
    shapefile   one <class>.shp per class in the folder OUTPUT; fields renamed to
                fit 10 characters: object_id, class (class_name), score, area_m2,
                perim_m (perimeter_m), source.
    geoparquet  one file in the GeoPackage's CRS, all classes; needs
                pip install 'geoseg[geoparquet]'.
    """
    from geoseg.reports.export import EXPORTERS
    from geoseg.reports.results import read_results

    results = read_results(geopackage)
    EXPORTERS[to](results, output, overwrite)
    click.echo(f"Wrote {len(results.objects)} objects to {output}")
