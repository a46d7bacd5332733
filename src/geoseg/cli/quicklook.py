"""``geoseg quicklook``: a picture of a raster with its objects, and an HTML report."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import geopackage_argument, overwrite_option


@click.command("quicklook", short_help="Picture a raster with its objects; HTML report.")
@geopackage_argument
@click.argument("raster")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="PNG picture to write.")
@click.option(
    "--html",
    "html",
    type=click.Path(path_type=Path),
    help="Self-contained HTML report to write: picture, summary, area charts, run.",
)
@click.option(
    "--max-size",
    type=int,
    default=1600,
    show_default=True,
    help="Longer side of the picture in pixels.",
)
@overwrite_option
def quicklook_command(
    geopackage: Path,
    raster: str,
    output: Path | None,
    html: Path | None,
    max_size: int,
    overwrite: bool,
) -> None:
    """Picture RASTER with the objects GEOPACKAGE (written by geoseg run) holds for it.

    The raster is read at the picture's size (never whole); its objects are filled and
    outlined in their class colour, with a legend (class, count, area), a scale bar in ground
    metres and a north arrow. Needs matplotlib: pip install 'geoseg[viz]'.
    """
    from geoseg.errors import OptionsError
    from geoseg.reports.html import render_report
    from geoseg.reports.quicklook import make_quicklook, write_atomic
    from geoseg.reports.results import read_results
    from geoseg.reports.summary import summarize
    from geoseg.tasks.write import check_output

    targets = [path for path in (output, html) if path is not None]
    if not targets:
        raise OptionsError("quicklook needs -o PICTURE.png, --html REPORT.html or both")
    if output is not None and html is not None and output.resolve() == html.resolve():
        raise OptionsError(f"-o and --html are both {output}; give two different files")
    for path in targets:
        check_output(path, overwrite)
    results = read_results(geopackage)
    quicklook = make_quicklook(results, raster, max_size)
    report = render_report(results, quicklook, summarize(results)) if html else ""
    if output is not None:
        write_atomic(output, quicklook.png, overwrite)
    if html is not None:
        write_atomic(html, report.encode("utf-8"), overwrite)
    layout = quicklook.layout
    count = sum(row.count for row in quicklook.legend)
    click.echo(
        f"Wrote {' and '.join(map(str, targets))}: {layout.width} x {layout.height} px, "
        f"{count:,} object{'s' * (count != 1)} of {quicklook.source}"
    )
