"""``geoseg run``: segment rasters into measured objects in a GeoPackage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from geoseg.cli.console import run_progress, say
from geoseg.config import DEFAULT_WORKERS, RUN_FILE_KEYS, RunConfig, read_run_file
from geoseg.errors import OptionsError
from geoseg.tasks.sources import DEFAULT_STAC_ASSET, redact, source_name

FAILED_RASTERS_EXIT = 3
"""Exit status of a run that wrote its output but skipped rasters that failed."""


@click.command("run")
@click.argument("inputs", nargs=-1)
@click.option("-o", "--output", help="GeoPackage to write: a path or s3://BUCKET/KEY.gpkg.")
@click.option(
    "--config",
    "run_file",
    type=click.Path(path_type=Path),
    help="Run file (TOML or JSON) with any of these options; options given here override it.",
)
@click.option("--model", help="TorchScript model file (default: the built-in model).")
@click.option("--tile-size", type=int, help="Tile size in pixels (default: the model's, or 512).")
@click.option("--overlap", type=int, help="Tile overlap in pixels (default: the model's, or 64).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Tiles per task.")
@click.option(
    "--workers", type=int, help=f"Local Dask worker processes [default: {DEFAULT_WORKERS}]."
)
@click.option("--dask-address", help="Use an existing Dask scheduler, e.g. tcp://host:8786.")
@click.option("--threads-per-worker", type=int, help="Torch threads per worker.")
@click.option("--score-threshold", type=float, default=0.5, show_default=True)
@click.option("--min-area-m2", type=float, default=0.0, show_default=True)
@click.option(
    "--simplify-m", type=float, default=0.0, show_default=True, help="Simplify outlines (metres)."
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option(
    "--gsd",
    type=float,
    help="Run the model at this ground resolution (m/pixel) [default: the model's own].",
)
@click.option(
    "--tta", is_flag=True, help="Test-time augmentation: flips and rotations averaged (8x slower)."
)
@click.option("--asset", default=DEFAULT_STAC_ASSET, show_default=True, help="STAC asset key.")
@click.option("--crs", help="Output CRS, e.g. EPSG:4326 (default: the first raster's).")
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@click.option("--keep-cache", is_flag=True, help="Keep per-batch results after success.")
@click.option("--clear-cache", is_flag=True, help="Redo everything instead of resuming.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for per-batch results (default: beside the output; ~/.cache/geoseg for s3://).",
)
@click.option(
    "--fail-fast",
    is_flag=True,
    help="Stop at the first raster that fails (by default it is skipped, exit status 3).",
)
@click.pass_context
def run_command(ctx: click.Context, /, run_file: Path | None, **options: Any) -> None:
    """Segment INPUTS into measured objects in the GeoPackage OUTPUT.

    INPUTS are rasters (GeoTIFFs or anything GDAL reads, local or s3:// / https://), folders of
    rasters, glob patterns, text files listing rasters, or STAC Item / ItemCollection JSON files.
    Each class of the model becomes a layer of the GeoPackage, with object_id, class_name,
    score, area_m2, perimeter_m and source; the summary and run tables record totals and how
    the run was made (the run table's config column is a run file that repeats the run).
    """
    from geoseg.api import run_config

    fields = read_run_file(run_file) if run_file is not None else {}
    for name, value in options.items():
        given = ctx.get_parameter_source(name) is not ParameterSource.DEFAULT
        if given or (RUN_FILE_KEYS[name][0] not in fields and value is not None):
            fields[RUN_FILE_KEYS[name][0]] = value
    if not fields.get("inputs"):
        raise OptionsError("no input given: name rasters, or inputs in the --config file")
    if fields.get("output") is None:
        raise OptionsError("no output given: pass -o OUTPUT.gpkg, or output in the --config file")
    with run_progress():
        result = run_config(RunConfig(**fields))  # type: ignore[arg-type]
    for failure in result.failures:
        click.echo(f"Warning: {failure.reason} (raster skipped)", err=True)
    resumed = f" ({result.batches_reused} of {result.batches} batches resumed)"
    say(
        f"Wrote {result.objects} objects to {redact(str(result.output))}"
        + (resumed if result.batches_reused else "")
    )
    for row in result.summary:
        if row.count:
            say(
                f"  {source_name(row.source)}  {row.class_name}: {row.count} objects, "
                f"{row.total_area_m2:,.1f} m²"
            )
    if result.failures:
        skipped = len(result.failures)
        click.echo(f"{skipped} raster(s) failed and were skipped: see the failures table", err=True)
        ctx.exit(FAILED_RASTERS_EXIT)
