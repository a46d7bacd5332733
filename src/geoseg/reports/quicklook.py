"""Quicklooks: a downsampled picture of a raster with its objects drawn in their class colours.

The picture is the *map* (the raster, read once at the picture's size) with a *footer* below it
holding a title line and the legend (class, count, area of this raster's objects); a scale bar
in true ground metres and a north arrow sit on the map. The map fills the picture's full width
and its top :attr:`Layout.map_height` rows, one map pixel per picture pixel.

Memory is bounded by the picture, never the raster: GDAL decimates while reading (from
overviews when the file has them). Objects are rasterized onto the map grid: each class's
fill is blended over the image at :data:`FILL_ALPHA`, then every class's outline is drawn
opaque, in the colours of :mod:`geoseg.tasks.palette`. matplotlib (the ``viz`` extra) only frames
the map with text, through its object-oriented API and the Agg canvas: no global state.
"""

from __future__ import annotations

import io
import math
import os
import secrets
import warnings
from collections.abc import Callable, Mapping, Sequence
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
from pyproj.enums import TransformDirection
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from geoseg.errors import GeosegError, OptionsError, OutputError, RasterError
from geoseg.reports.export import MissingExtraError
from geoseg.reports.results import Results
from geoseg.reports.summary import AreaSummary, summarize
from geoseg.tasks.palette import class_colour, rgb
from geoseg.tasks.reading import describe_raster, first_line, gdal_env, gdal_message
from geoseg.tasks.write import check_output

__all__ = [
    "FILL_ALPHA",
    "MIN_SIZE",
    "NODATA_RGB",
    "Layout",
    "Quicklook",
    "ScaleBar",
    "draw_objects",
    "format_area",
    "make_quicklook",
    "match_source",
    "north_angle_deg",
    "plan_layout",
    "plan_scale_bar",
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
MIN_SIZE = 256
"""Smallest longest side of a picture, in pixels: below it the legend no longer fits."""

_DPI = 100  # one point of matplotlib text is 100/72 picture pixels
_PAD_PX = 10
_TITLE_PX = 24
_ROW_PX = 22
_COLUMN_PX = 320
_NAME_CHARS = 18
_SCALE_BAR_FRACTION = 0.2


@dataclass(frozen=True)
class Layout:
    """Sizes of a quicklook picture in pixels: the map on top, the footer below, full width."""

    map_width: int
    map_height: int
    footer_height: int
    columns: int

    @property
    def width(self) -> int:
        """Width of the picture."""
        return self.map_width

    @property
    def height(self) -> int:
        """Height of the picture."""
        return self.map_height + self.footer_height


@dataclass(frozen=True)
class ScaleBar:
    """A scale bar: its ground length in metres, its length in map pixels, its label."""

    length_m: float
    length_px: float
    label: str


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
        If ``max_size`` is below :data:`MIN_SIZE`.
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
    png = _compose_png(image, layout, legend, title, scale_bar, north)
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


def plan_layout(raster_width: int, raster_height: int, classes: int, max_size: int) -> Layout:
    """Size the picture so that its longer side is ``max_size`` pixels and the map keeps the
    raster's aspect ratio.

    The footer holds a title line and the legend in columns of about 320 pixels; the map takes
    the rest. Only a legend taller than ``max_size`` by itself makes a taller picture.

    Examples
    --------
    >>> plan_layout(2000, 1000, 1, 800)
    Layout(map_width=800, map_height=400, footer_height=66, columns=1)
    """
    if max_size < MIN_SIZE:
        raise OptionsError(f"--max-size {max_size} is too small; pass at least {MIN_SIZE} pixels")
    aspect = raster_width / raster_height
    map_width = max_size if aspect >= 1 else max(1, round(max_size * aspect))
    while True:  # map_width only shrinks, so this ends
        columns = max(1, min(classes, map_width // _COLUMN_PX))
        footer = 2 * _PAD_PX + _TITLE_PX + math.ceil(classes / columns) * _ROW_PX
        map_height = max(1, min(round(map_width / aspect), max_size - footer))
        fitted = max(1, min(map_width, round(map_height * aspect)))
        if fitted == map_width:
            return Layout(map_width, map_height, footer, columns)
        map_width = fitted


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


# --- scale bar and north arrow ----------------------------------------------------------------


def plan_scale_bar(transform: Affine, crs: pyproj.CRS, width: int, height: int) -> ScaleBar | None:
    """A scale bar of a round ground length, at most a fifth of the map's width.

    The ground size of a map pixel is measured geodesically along the map's middle row, on the
    CRS's ellipsoid, so the bar is true in any CRS (in EPSG:4326 a degree of longitude is not
    a degree of latitude; in Web Mercator a metre of the CRS is less on the ground away from the
    equator). Where the scale differs by more than 1% between the map's top and bottom rows the
    label says it holds at the map's centre.

    Returns None for a CRS without an ellipsoid.
    """
    ground = _Ground.of(crs)
    if ground is None:
        return None
    centre = ground.metres_per_px(transform, width, height / 2)
    if not math.isfinite(centre) or centre <= 0:
        return None
    edges = [ground.metres_per_px(transform, width, row) for row in (0.5, height - 0.5)]
    varies = max(abs(edge / centre - 1) for edge in edges) > 0.01
    length = _round_length(centre * width * _SCALE_BAR_FRACTION)
    label = _format_distance(length) + (" at the centre" if varies else "")
    return ScaleBar(length, length / centre, label)


def north_angle_deg(transform: Affine, crs: pyproj.CRS, width: int, height: int) -> float | None:
    """Direction of true north at the map's centre, in degrees clockwise from the map's up.

    Zero for north-up rasters in geographic or Mercator CRSs; a few degrees away from a
    projection's central meridian (meridian convergence); 180 for north-down rasters. None
    where it cannot be computed (no ellipsoid, a pole).
    """
    ground = _Ground.of(crs)
    if ground is None:
        return None
    step_px = max(width, height) / 20
    step_m = ground.metres_per_px(transform, width, height / 2) * step_px
    x, y = transform @ (width / 2, height / 2)
    lon, lat = ground.to_lonlat.transform(x, y)
    lon, lat, _ = ground.geod.fwd(lon, lat, 0.0, step_m)
    x, y = ground.to_lonlat.transform(lon, lat, direction=TransformDirection.INVERSE)
    col, row = ~transform @ (x, y)
    d_col, d_row = col - width / 2, row - height / 2
    if not (math.isfinite(d_col) and math.isfinite(d_row)) or (d_col == 0 and d_row == 0):
        return None
    return math.degrees(math.atan2(d_col, -d_row))


@dataclass(frozen=True)
class _Ground:
    """A CRS's ellipsoid and the way to its geographic coordinates, for ground distances."""

    geod: pyproj.Geod
    to_lonlat: pyproj.Transformer

    @classmethod
    def of(cls, crs: pyproj.CRS) -> _Ground | None:
        geod, geodetic = crs.get_geod(), crs.geodetic_crs
        if geod is None or geodetic is None:
            return None
        return cls(geod, pyproj.Transformer.from_crs(crs, geodetic, always_xy=True))

    def metres_per_px(self, transform: Affine, width: int, row: float) -> float:
        """Ground length of a map pixel along ``row``, around the map's middle column."""
        span = max(width / 10, 1.0)
        left = transform @ (width / 2 - span / 2, row)
        right = transform @ (width / 2 + span / 2, row)
        lon, lat = self.to_lonlat.transform([left[0], right[0]], [left[1], right[1]])
        return float(self.geod.inv(lon[0], lat[0], lon[1], lat[1])[2]) / span


def _round_length(metres: float) -> float:
    """The largest 1, 2 or 5 times a power of ten not above ``metres``."""
    power = 10.0 ** math.floor(math.log10(metres))
    return next(step * power for step in (5, 2, 1) if step * power <= metres * (1 + 1e-9))


def _format_distance(metres: float) -> str:
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"


def _crs_name(crs: pyproj.CRS) -> str:
    code = crs.to_epsg(min_confidence=70)
    return f"EPSG:{code} ({crs.name})" if code else crs.name


def format_area(m2: float) -> str:
    """A ground area for reading: m² below a hectare, ha below a km², else km².

    >>> format_area(1234.5), format_area(56_789), format_area(3_400_000)
    ('1,234 m²', '5.68 ha', '3.40 km²')
    """
    if m2 < 10_000:
        return f"{m2:,.0f} m²"
    if m2 < 1_000_000:
        return f"{m2 / 10_000:,.2f} ha"
    return f"{m2 / 1_000_000:,.2f} km²"


# --- the picture ------------------------------------------------------------------------------


def _matplotlib() -> tuple[Any, Any, Any, Any]:
    """matplotlib's Figure, Agg canvas, patches and identity transform, or a one-line error."""
    try:
        from matplotlib import patches
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.transforms import IdentityTransform
    except ImportError as exc:
        raise MissingExtraError(
            "quicklook needs matplotlib, which is not installed; pip install 'geoseg[viz]'"
        ) from exc
    return Figure, FigureCanvasAgg, patches, IdentityTransform


def _compose_png(
    image: npt.NDArray[np.uint8],
    layout: Layout,
    legend: Sequence[AreaSummary],
    title: str,
    scale_bar: ScaleBar | None,
    north: float | None,
) -> bytes:
    """Frame the map with the footer, scale bar and north arrow; coordinates are pixels from the
    picture's bottom-left corner, as matplotlib counts them."""
    figure_class, canvas_class, patches, identity = _matplotlib()
    figure = figure_class(figsize=(layout.width / _DPI, layout.height / _DPI), dpi=_DPI)
    canvas = canvas_class(figure)
    figure.figimage(image, xo=0, yo=layout.footer_height, origin="upper")
    pixels = identity()

    def text(x: float, y: float, words: str, size_px: float, **kwargs: Any) -> Any:
        return figure.text(
            x, y, words, transform=pixels, fontsize=size_px * 72 / _DPI, zorder=3, **kwargs
        )

    top = layout.footer_height - _PAD_PX
    text(_PAD_PX, top, title, 15, va="top", fontweight="bold", color="#222222")
    column_px = layout.width / layout.columns
    for number, row in enumerate(legend):
        x = _PAD_PX + (number % layout.columns) * column_px
        y = top - _TITLE_PX - (number // layout.columns + 0.5) * _ROW_PX
        colour = class_colour(row.class_name)
        figure.add_artist(
            patches.Rectangle(
                (x, y - 7), 22, 14, transform=pixels, facecolor=colour, alpha=FILL_ALPHA + 0.2
            )
        )
        figure.add_artist(
            patches.Rectangle(
                (x, y - 7), 22, 14, transform=pixels, fill=False, edgecolor=colour, linewidth=1.5
            )
        )
        name = row.class_name
        name = name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "…"
        objects = f"{row.count:,} object{'s' * (row.count != 1)}"
        words = f"{name}: {objects}, {format_area(row.total_area_m2)}"
        text(x + 30, y, words, 14, va="center", color="#222222")
    if scale_bar is not None:
        _draw_scale_bar(figure, canvas, patches, text, pixels, layout, scale_bar)
    if north is not None:
        _draw_north_arrow(figure, patches, text, pixels, layout, north)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return buffer.getvalue()


def _draw_scale_bar(
    figure: Any,
    canvas: Any,
    patches: Any,
    text: Callable[..., Any],
    pixels: Any,
    layout: Layout,
    bar: ScaleBar,
) -> None:
    """A black and white bar with its label above, on a white box at the map's bottom left."""
    x, y = 20.0, layout.footer_height + 14.0
    label = text(x, y + 12, bar.label, 13, va="bottom", color="black")
    label_width = label.get_window_extent(canvas.get_renderer()).width
    half = bar.length_px / 2
    for step, colour in enumerate(("black", "white")):
        figure.add_artist(
            patches.Rectangle(
                (x + step * half, y + 2),
                half,
                6,
                transform=pixels,
                facecolor=colour,
                edgecolor="black",
                linewidth=1,
                zorder=2,
            )
        )
    figure.add_artist(
        patches.FancyBboxPatch(
            (x - 8, y - 4),
            max(bar.length_px, label_width) + 16,
            36,
            boxstyle="round,pad=0,rounding_size=4",
            transform=pixels,
            facecolor="white",
            edgecolor="none",
            alpha=0.8,
            zorder=1,
        )
    )


def _draw_north_arrow(
    figure: Any, patches: Any, text: Callable[..., Any], pixels: Any, layout: Layout, angle: float
) -> None:
    """An "N" over an arrow turned to true north, on a white box at the map's top right."""
    right, top = layout.width - 10.0, layout.height - 10.0
    figure.add_artist(
        patches.FancyBboxPatch(
            (right - 30, top - 56),
            30,
            56,
            boxstyle="round,pad=0,rounding_size=4",
            transform=pixels,
            facecolor="white",
            edgecolor="none",
            alpha=0.8,
            zorder=1,
        )
    )
    text(right - 15, top - 3, "N", 14, ha="center", va="top", fontweight="bold", color="black")
    cx, cy = right - 15, top - 37
    sin, cos = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    shape = [(0.0, 14.0), (7.0, -12.0), (0.0, -6.0), (-7.0, -12.0)]
    points = [(cx + px * cos + py * sin, cy - px * sin + py * cos) for px, py in shape]
    figure.add_artist(
        patches.Polygon(points, closed=True, transform=pixels, facecolor="black", zorder=2)
    )


# --- files ------------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes, overwrite: bool) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    Raises
    ------
    OutputError
        If ``path`` cannot be written, or exists and ``overwrite`` is false.
    """
    check_output(path, overwrite)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial{path.suffix}")
    try:
        temp.write_bytes(data)
        os.replace(temp, path)
    except OSError as exc:
        if isinstance(exc, GeosegError):
            raise
        raise OutputError(f"cannot write {path}: {first_line(exc)}") from exc
    finally:
        temp.unlink(missing_ok=True)
