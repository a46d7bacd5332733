"""``geoseg run``: segment rasters into measured objects in a GeoPackage."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.config import DEFAULT_WORKERS


@click.command("run")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="GeoPackage to write."
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
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@click.option("--keep-cache", is_flag=True, help="Keep per-batch results after success.")
@click.option("--clear-cache", is_flag=True, help="Redo everything instead of resuming.")
def run_command(
    inputs: tuple[str, ...],
    output: Path,
    model: str | None,
    tile_size: int | None,
    overlap: int | None,
    batch_size: int,
    workers: int | None,
    dask_address: str | None,
    threads_per_worker: int | None,
    score_threshold: float,
    min_area_m2: float,
    simplify_m: float,
    device: str,
    overwrite: bool,
    keep_cache: bool,
    clear_cache: bool,
) -> None:
    """Segment INPUTS (GeoTIFFs or anything GDAL reads) into measured objects in OUTPUT.

    Each class of the model becomes a layer of the GeoPackage, with object_id, class_name,
    score, area_m2, perimeter_m and source; the summary and run tables record totals and how
    the run was made.
    """
    from geoseg.api import run

    result = run(
        inputs,
        output,
        model=model,
        tile_size=tile_size,
        overlap_px=overlap,
        batch_size=batch_size,
        workers=workers,
        dask_address=dask_address,
        score_threshold=score_threshold,
        min_area_m2=min_area_m2,
        simplify_m=simplify_m,
        overwrite=overwrite,
        device=device,
        threads_per_worker=threads_per_worker,
        keep_cache=keep_cache,
        clear_cache=clear_cache,
    )
    resumed = f" ({result.batches_reused} of {result.batches} batches resumed)"
    click.echo(
        f"Wrote {result.objects} objects to {result.output}"
        + (resumed if result.batches_reused else "")
    )
    for row in result.summary:
        if row.count:
            click.echo(
                f"  {Path(row.source).name}  {row.class_name}: {row.count} objects, "
                f"{row.total_area_m2:,.1f} m²"
            )
