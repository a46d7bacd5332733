"""``geoseg inspect``: what ``geoseg run`` would see in a raster, and how it would tile it."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import click


@dataclass(frozen=True)
class RasterReport:
    """What ``geoseg inspect`` prints about a raster and its tiling.

    Attributes
    ----------
    path : str
        The raster, as given.
    width, height, count : int
        Size in pixels and number of bands.
    dtypes : tuple of str
        Distinct band data types, in band order.
    crs : str
        ``AUTHORITY:CODE (name)``, or the CRS's name when it has no code.
    crs_unit : str
        Unit of the CRS's first axis (``metre``, ``degree``, ``US survey foot``, ...).
    resolution : tuple of float
        Pixel width and height in CRS units, both positive.
    pixel_size_m : float
        Ground size of one pixel at the raster's centre, in metres.
    bounds : tuple of float
        ``(left, bottom, right, top)`` in CRS units.
    nodata : str
        How invalid pixels are marked: a nodata value, a mask, alpha, or none.
    model : str
        The model's name, the bands it reads and its classes.
    tile_size, overlap_px : int
        Tiling in pixels.
    tiling_from : str
        Where the tile size and overlap come from (options, model or defaults).
    tiles, tile_cols, tile_rows : int
        Number of tiles, and of tile columns and rows.
    """

    path: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: str
    crs_unit: str
    resolution: tuple[float, float]
    pixel_size_m: float
    bounds: tuple[float, float, float, float]
    nodata: str
    model: str
    tile_size: int
    overlap_px: int
    tiling_from: str
    tiles: int
    tile_cols: int
    tile_rows: int


def format_report(report: RasterReport) -> str:
    """The report as aligned lines for the terminal, ending with a newline."""
    xres, yres = report.resolution
    left, bottom, right, top = report.bounds
    lines = {
        "size": (
            f"{report.width} x {report.height} px, {report.count} band(s), "
            f"{', '.join(report.dtypes)}"
        ),
        "crs": report.crs,
        "resolution": (
            f"{_number(xres)} x {_number(yres)} {report.crs_unit} (CRS units); "
            f"{report.pixel_size_m:.3f} m on the ground at the centre"
        ),
        "bounds": (
            f"{_number(left)}, {_number(bottom)}, {_number(right)}, {_number(top)} "
            "(left, bottom, right, top)"
        ),
        "nodata": report.nodata,
        "model": report.model,
        "tiling": (
            f"{report.tile_size} px tiles, {report.overlap_px} px overlap: {report.tiles} "
            f"tile(s), {report.tile_cols} column(s) x {report.tile_rows} row(s) "
            f"({report.tiling_from})"
        ),
    }
    width = max(map(len, lines))
    return report.path + "\n" + "".join(f"  {k.ljust(width)}  {v}\n" for k, v in lines.items())


def _number(value: float) -> str:
    """A coordinate or resolution to 9 decimals without trailing zeros: 2679062.5, 0.00001."""
    return f"{value:.9f}".rstrip("0").rstrip(".")


def tiling_origin(
    tile_size: int | None,
    overlap: int | None,
    model_tile_size: int | None,
    model_overlap: int | None,
) -> str:
    """Say where the tile size and the overlap come from: an option, the model, or the default.

    >>> tiling_origin(256, None, 512, None)
    'tile size from --tile-size, overlap default'
    >>> tiling_origin(None, None, 512, 64)
    'tile size and overlap from the model'
    """

    def origin(option: int | None, name: str, recommended: int | None) -> str:
        if option is not None:
            return f"from --{name}"
        return "from the model" if recommended is not None else "default"

    size = origin(tile_size, "tile-size", model_tile_size)
    overlap_origin = origin(overlap, "overlap", model_overlap)
    if size == overlap_origin:
        return f"tile size and overlap {size}"
    return f"tile size {size}, overlap {overlap_origin}"


def inspect_raster(
    raster: str, model: str | None, tile_size: int | None, overlap: int | None
) -> RasterReport:
    """Read a raster's header and a model's spec and plan the tiles as ``geoseg run`` would.

    Raises
    ------
    RasterError
        If the raster is missing, unreadable, not georeferenced on a north-up grid, lacks a band
        the model reads, or its CRS has no geodetic datum.
    ModelError
        If the model file breaks the model contract.
    OptionsError
        If the tile size or overlap is unusable.
    """
    import pyproj
    import rasterio
    from rasterio.enums import MaskFlags
    from rasterio.errors import NotGeoreferencedWarning

    from geoseg.config import RunConfig
    from geoseg.models.contract import read_model_spec
    from geoseg.models.greenery import default_model_path
    from geoseg.tasks.measure import pixel_size_m
    from geoseg.tasks.reading import describe_raster, gdal_env
    from geoseg.tasks.tiling import plan_tiles

    config = RunConfig(
        inputs=(raster,), output=Path(os.devnull), tile_size=tile_size, overlap_px=overlap
    )
    spec = read_model_spec(model if model is not None else default_model_path())
    info = describe_raster(raster, spec.bands)
    tiling = config.tiling(spec.tile_size, spec.overlap)
    tiles = plan_tiles(info.width, info.height, *tiling)
    with gdal_env(), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(raster) as src:
            dtypes = tuple(dict.fromkeys(src.dtypes))
            nodata_value = src.nodata
            flags = [set(band_flags) for band_flags in src.mask_flag_enums]
            bounds = tuple(float(v) for v in src.bounds)
    marks = []
    if any(MaskFlags.nodata in band for band in flags):
        marks.append(f"value {nodata_value:g}")
    if any(MaskFlags.per_dataset in band and MaskFlags.alpha not in band for band in flags):
        marks.append("a mask band")
    if any(MaskFlags.alpha in band for band in flags):
        marks.append("an alpha band")
    crs = pyproj.CRS(info.crs_wkt)
    authority = crs.to_authority()
    axis = crs.axis_info[0] if crs.axis_info else None
    classes = ", ".join(spec.classes[label] for label in sorted(spec.classes))
    return RasterReport(
        path=raster,
        width=info.width,
        height=info.height,
        count=info.count,
        dtypes=dtypes,
        crs=f"{authority[0]}:{authority[1]} ({crs.name})" if authority else crs.name,
        crs_unit=axis.unit_name if axis is not None else "unknown unit",
        resolution=(abs(info.transform.a), abs(info.transform.e)),
        pixel_size_m=pixel_size_m(info.transform, crs, info.width, info.height),
        bounds=(bounds[0], bounds[1], bounds[2], bounds[3]),
        nodata=" and ".join(marks) if marks else "none (every pixel is valid)",
        model=(f"{spec.name}: reads band(s) {', '.join(map(str, spec.bands))}; classes {classes}"),
        tile_size=tiling[0],
        overlap_px=tiling[1],
        tiling_from=tiling_origin(tile_size, overlap, spec.tile_size, spec.overlap),
        tiles=len(tiles),
        tile_cols=len({tile.col_off for tile in tiles}),
        tile_rows=len({tile.row_off for tile in tiles}),
    )


@click.command("inspect", short_help="Describe a raster and how geoseg run would tile it.")
@click.argument("raster")
@click.option("--model", help="TorchScript model file (default: the built-in model).")
@click.option("--tile-size", type=int, help="Tile size in pixels (default: the model's, or 512).")
@click.option("--overlap", type=int, help="Tile overlap in pixels (default: the model's, or 64).")
def inspect_command(
    raster: str, model: str | None, tile_size: int | None, overlap: int | None
) -> None:
    """Describe RASTER as geoseg run would see it: size, CRS, resolution, nodata and tiling.

    The resolution is given in CRS units and as the ground size of a pixel at the raster's
    centre in metres. The raster is checked as geoseg run checks it (georeferenced, north-up,
    has the bands the model reads), and the tiles are planned with the same defaults: the
    options, else the model's recommendation, else 512 px tiles overlapping by 64 px.
    """
    click.echo(format_report(inspect_raster(raster, model, tile_size, overlap)), nl=False)
