"""``geoseg chips``: cut a raster and its labelled polygons into a COCO dataset."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import label_class_options


@click.command("chips")
@click.argument("raster", type=click.Path(path_type=Path))
@click.argument("labels", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@label_class_options
@click.option("--size", type=int, default=512, show_default=True, help="Chip edge in pixels.")
@click.option("--stride", type=int, help="Pixels between chips [default: --size, no overlap].")
@click.option(
    "--min-area-m2",
    type=float,
    default=0.0,
    show_default=True,
    help="Drop smaller polygons (ground area inside the raster).",
)
@click.option("--overwrite", is_flag=True, help="Write into OUTPUT even if it holds a dataset.")
def chips_command(
    raster: Path,
    labels: Path,
    output: Path,
    class_column: str | None,
    class_name: str,
    size: int,
    stride: int | None,
    min_area_m2: float,
    overwrite: bool,
) -> None:
    """Rasterize LABELS (any CRS) onto RASTER's grid and write chips as a COCO dataset in OUTPUT.

    OUTPUT gets images/*.png and annotations.json (polygon segmentations in pixel coordinates).
    """
    from geoseg.errors import OptionsError, OutputError
    from geoseg.models.datasets import cut_chips, read_georeferenced, write_coco

    if size < 16:
        raise OptionsError(f"--size must be at least 16 pixels, got {size}")
    if stride is not None and not 0 < stride <= size:
        raise OptionsError(f"--stride must be between 1 and --size {size}, got {stride}")
    if (output / "annotations.json").exists() and not overwrite:
        raise OutputError(f"{output} already holds a COCO dataset; pass --overwrite to replace it")
    image, classes = read_georeferenced(
        raster, labels, class_column, default_class=class_name, min_area_m2=min_area_m2
    )
    chips = cut_chips(image, size, stride)
    target = write_coco(chips, output, classes)
    count = sum(len(c.classes) for c in chips)
    click.echo(f"Wrote {len(chips)} chips with {count} instances to {target}")
