"""Quicklooks: a downsampled picture of a raster with its objects drawn in their class colours.

Memory is bounded by the picture, never the raster: the raster is read once at the map's size,
GDAL decimating while reading (from overviews when the file has them). Objects are rasterized
onto the map grid: each class's fill is blended over the image at :data:`FILL_ALPHA`, then every
class's outline is drawn opaque, in the colours of :mod:`geoseg.tasks.palette`. The map is then
framed (legend, scale bar, north arrow) by :mod:`geoseg.reports.frame`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyproj
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from geoseg.errors import RasterError
from geoseg.reports.export import replacing
from geoseg.reports.frame import Layout, frame_png, plan_layout
from geoseg.reports.mapscale import ScaleBar, north_angle_deg, plan_scale_bar
from geoseg.reports.results import Results
from geoseg.reports.summary import AreaSummary, summarize
from geoseg.tasks.palette import class_colour, rgb
from geoseg.tasks.reading import describe_raster, gdal_env, gdal_message

__all__ = [
    "FILL_ALPHA",
    "NODATA_RGB",
    "Quicklook",
    "draw_objects",
    "make_quicklook",
    "match_source",
    "read_map",
    "to_rgb",
    "write_atomic",
]

FILL_ALPHA = 0.4
"""Opacity of an object's fill over the image; its outline is opaque."""
NODATA_RGB = (24, 24, 24)
"""Colour of pixels that are nodata in the raster (declared nodata, mask, alpha, NaN)."""
STRETCH_PERCENTILES = (2.0, 98.0)
"""Non-8-bit bands are stretched linearly from the first to the second percentile of their
valid pixels to 0-255, so one hot pixel does not turn the picture black."""


@dataclass(frozen=True)
class Quicklook:
    """A rendered quicklook and what it shows.

    Attributes
    ----------
    png : bytes
        The picture, a PNG of ``layout.width`` x ``layout.height`` pixels.
    raster : str
        The raster, as given.
    source : str
        The GeoPackage's source the raster matched (see :func:`match_source`).
    layout : Layout
        Where the map and the footer are in the picture.
    legend : tuple of AreaSummary
        Count and area of this raster's objects per class, in layer order.
    crs_name : str
        The raster's CRS, for captions.
    scale_bar : ScaleBar or None
        None when the CRS has no ellipsoid to measure on.
    """

    png: bytes
    raster: str
    source: str
    layout: Layout
    legend: tuple[AreaSummary, ...]
    crs_name: str
    scale_bar: ScaleBar | None


def make_quicklook(results: Results, raster: str, max_size: int = 1600) -> Quicklook:
    """Picture ``raster`` with the objects ``results`` holds for it.

    Only the objects whose ``source`` is this raster are drawn (see :func:`match_source`); they
    are reprojected to the raster's CRS when the GeoPackage's differs.

    Raises
    ------
    RasterError
        If the raster is missing, unreadable or not georeferenced, or is no source of
        ``results``.
    OptionsError
        If ``max_size`` is below :data:`geoseg.reports.frame.MIN_SIZE`.
    MissingExtraError
        If matplotlib is not installed.
    """
    info = describe_raster(raster, ())
    source = match_source(results, raster)
    legend = tuple(row for row in summarize(results) if row.source == source)
    layout = plan_layout(info.width, info.height, len(legend), max_size)
    image, transform = read_map(raster, layout.map_width, layout.map_height)
    crs = pyproj.CRS(info.crs_wkt)
    objects = results.objects
    rows = objects.source == source
    geometry = _reproject(objects.geometry[rows], pyproj.CRS(results.crs_wkt), crs)
    outline_px = 1 if max(layout.map_width, layout.map_height) < 1000 else 2
    image = draw_objects(
        image, geometry, objects.class_name[rows], results.class_names, transform, outline_px
    )
    scale_bar = plan_scale_bar(transform, crs, layout.map_width, layout.map_height)
    north = north_angle_deg(transform, crs, layout.map_width, layout.map_height)
    crs_name = _crs_name(crs)
    count = sum(row.count for row in legend)
    title = f"{Path(raster).name}  ·  {crs_name}  ·  {count:,} object{'s' * (count != 1)}"
    png = frame_png(image, layout, legend, title, scale_bar, north)
    return Quicklook(png, raster, source, layout, legend, crs_name, scale_bar)


# --- choosing the objects ---------------------------------------------------------------------


def match_source(results: Results, raster: str) -> str:
    """The source of ``results`` that is ``raster``.

    Tried in order: the same string; the same file (a relative source is tried from the
    current folder, then from the GeoPackage's folder); the only source with the same file name
    (for outputs moved to another machine with their rasters).

    Raises
    ------
    RasterError
        If no source matches; the message lists some of the sources.
    """
    if raster in results.sources:
        return raster
    if _is_local(raster) and Path(raster).exists():
        for source in results.sources:
            candidates = [Path(source), results.path.parent / source] if _is_local(source) else []
            if any(path.exists() and os.path.samefile(path, raster) for path in candidates):
                return source
    same_name = [source for source in results.sources if Path(source).name == Path(raster).name]
    if len(same_name) == 1:
        return same_name[0]
    listed = ", ".join(results.sources[:5]) + (", ..." if len(results.sources) > 5 else "")
    raise RasterError(
        f"{raster} is not a source of {results.path} (its sources: {listed or 'none'}); "
        "pass one of them"
    )


def _is_local(path: str) -> bool:
    return "://" not in path and not path.startswith("/vsi")


def _reproject(
    geometry: npt.NDArray[np.object_], crs: pyproj.CRS, to_crs: pyproj.CRS
) -> npt.NDArray[np.object_]:
    if crs == to_crs or not len(geometry):
        return geometry
    transformer = pyproj.Transformer.from_crs(crs, to_crs, always_xy=True)
    result: npt.NDArray[np.object_] = shapely.transform(
        geometry, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
    )
    return result


# --- the map ----------------------------------------------------------------------------------


def read_map(path: str, width: int, height: int) -> tuple[npt.NDArray[np.uint8], Affine]:
    """Read a raster resampled to ``width`` x ``height`` pixels as display colours.

    Bands shown: red, green and blue when the raster says which bands they are, else bands 1-3
    of a raster with three or more bands, else band 1 in grey (through its colour table if it
    has one). GDAL averages pixels when shrinking (or reads overviews) and repeats them when
    enlarging; it never holds the whole raster.

    Returns
    -------
    rgb : ndarray of uint8, shape (height, width, 3)
        Display colours (see :func:`to_rgb`), :data:`NODATA_RGB` where the raster has no data.
    transform : Affine
        Maps map pixel ``(col, row)`` to the raster's CRS coordinates.
    """
    try:
        with gdal_env(), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                bands = _display_bands(src.colorinterp)
                shrink = width < src.width or height < src.height
                pixels = src.read(
                    bands,
                    out_shape=(len(bands), height, width),
                    resampling=Resampling.average if shrink else Resampling.nearest,
                )
                valid = src.dataset_mask(out_shape=(height, width)) > 0
                colormap = None
                if len(bands) == 1 and src.colorinterp[0] == ColorInterp.palette:
                    colormap = src.colormap(bands[0])
                transform = src.transform @ Affine.scale(src.width / width, src.height / height)
    except RasterioIOError as exc:
        raise RasterError(
            f"{path}: pixels cannot be read ({gdal_message(exc, path)}); the file is damaged or "
            "truncated, recreate or download it again"
        ) from exc
    return to_rgb(pixels, valid, colormap), transform


def _display_bands(colorinterp: Sequence[ColorInterp]) -> list[int]:
    order = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    if all(colour in colorinterp for colour in order):
        return [list(colorinterp).index(colour) + 1 for colour in order]
    return [1, 2, 3] if len(colorinterp) >= 3 else [1]


def to_rgb(
    pixels: npt.NDArray[Any],
    valid: npt.NDArray[np.bool_],
    colormap: Mapping[int, Sequence[int]] | None = None,
) -> npt.NDArray[np.uint8]:
    """Display colours ``(rows, cols, 3)`` of one (grey) or three (RGB) bands ``(C, rows, cols)``.

    8-bit bands are shown as they are (a one-band raster through its colour table when given);
    any other type is stretched band by band between :data:`STRETCH_PERCENTILES` of its valid,
    finite pixels. Invalid and non-finite pixels become :data:`NODATA_RGB`.

    Examples
    --------
    >>> to_rgb(np.array([[[0, 1000, 2000]]], dtype=np.uint16), np.ones((1, 3), bool))[0, :, 0]
    array([  0, 128, 255], dtype=uint8)
    """
    valid = valid & np.all(np.isfinite(pixels), axis=0)
    if pixels.dtype == np.uint8 and colormap is not None and pixels.shape[0] == 1:
        table = np.zeros((256, 3), dtype=np.uint8)
        for value, colour in colormap.items():
            table[value] = colour[:3]
        out: npt.NDArray[np.uint8] = table[pixels[0]]
    else:
        bands = pixels if pixels.dtype == np.uint8 else [_stretch(b, valid) for b in pixels]
        out = np.stack([bands[i] for i in ((0, 1, 2) if len(bands) >= 3 else (0, 0, 0))], axis=-1)
    out[~valid] = NODATA_RGB
    return out


def _stretch(band: npt.NDArray[Any], valid: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    values = band[valid].astype(np.float64)
    if not values.size:
        return np.zeros(band.shape, dtype=np.uint8)
    low, high = np.percentile(values, STRETCH_PERCENTILES)
    if high <= low:
        return np.where(valid, 128, 0).astype(np.uint8)
    scaled = (band.astype(np.float64) - low) * (255.0 / (high - low))
    stretched: npt.NDArray[np.uint8] = np.rint(np.clip(np.nan_to_num(scaled), 0, 255)).astype(
        np.uint8
    )
    return stretched


def draw_objects(
    image: npt.NDArray[np.uint8],
    geometry: npt.NDArray[np.object_],
    class_name: npt.NDArray[Any],
    classes: Sequence[str],
    transform: Affine,
    outline_px: int = 1,
) -> npt.NDArray[np.uint8]:
    """Draw objects on an image: fills blended at :data:`FILL_ALPHA`, then opaque outlines.

    Parameters
    ----------
    image : ndarray of uint8, shape (rows, cols, 3)
        The map.
    geometry : ndarray of object
        Polygons in the CRS that ``transform`` maps to.
    class_name : ndarray of str
        Each object's class.
    classes : sequence of str
        Classes in drawing order (later ones on top).
    transform : Affine
        Maps map pixel ``(col, row)`` to CRS coordinates.
    outline_px : int
        Outline width in pixels. A pixel is filled when its centre is inside an object; every
        pixel an outline touches is outlined, so objects smaller than a pixel still show.
    """
    shape = image.shape[:2]
    out = image.astype(np.float64)
    outlines = []
    for name in classes:
        geoms = [g for g in geometry[class_name == name] if g is not None and not g.is_empty]
        if not geoms:
            continue
        colour = np.array(rgb(class_colour(name)), dtype=np.float64)
        fill = rasterio.features.rasterize(geoms, shape, transform=transform, dtype=np.uint8) > 0
        out[fill] = (1 - FILL_ALPHA) * out[fill] + FILL_ALPHA * colour
        lines = shapely.boundary(np.array(geoms, dtype=object))
        edge = rasterio.features.rasterize(
            lines, shape, transform=transform, all_touched=True, dtype=np.uint8
        )
        outlines.append((_dilate(edge > 0, outline_px - 1), colour))
    for edge, colour in outlines:
        out[edge] = colour
    return np.rint(out).astype(np.uint8)


def _dilate(mask: npt.NDArray[np.bool_], steps: int) -> npt.NDArray[np.bool_]:
    for _ in range(steps):
        grown = mask.copy()
        grown[1:, :] |= mask[:-1, :]
        grown[:, 1:] |= mask[:, :-1]
        mask = grown
    return mask


def _crs_name(crs: pyproj.CRS) -> str:
    code = crs.to_epsg(min_confidence=70)
    return f"EPSG:{code} ({crs.name})" if code else crs.name


# --- files ------------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes, overwrite: bool) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    Raises
    ------
    OutputError
        If ``path`` cannot be written, or exists and ``overwrite`` is false.
    """
    with replacing(path, overwrite) as temp:
        temp.write_bytes(data)
