"""Frame a quicklook's map with matplotlib: a footer with title and legend, a scale bar and a
north arrow on the map.

The picture is the map on top, full width, one map pixel per picture pixel (placed with
``figimage``, so never resampled), and the footer below it. matplotlib (the ``viz`` extra) is
used through its object-oriented API and the Agg canvas: no pyplot, no global state.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from geoseg.errors import OptionsError
from geoseg.reports.export import MissingExtraError
from geoseg.reports.mapscale import ScaleBar
from geoseg.reports.summary import AreaSummary
from geoseg.tasks.palette import class_colour

__all__ = ["MIN_SIZE", "Layout", "format_area", "frame_png", "plan_layout"]

MIN_SIZE = 256
"""Smallest longest side of a picture, in pixels: below it the legend no longer fits."""

_DPI = 100  # one point of matplotlib text is 100/72 picture pixels
_PAD_PX = 10
_TITLE_PX = 24
_ROW_PX = 22
_COLUMN_PX = 320
_MIN_TEXT_PX = 11
_MIN_MAP_PX_FOR_MARKS = 80  # a shallower map has no room for the scale bar and north arrow
_SWATCH_ALPHA = 0.6  # a fill over white reads paler than over imagery


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
        columns, footer = _footer(classes, map_width)
        room = max(1, max_size - footer)
        if round(map_width / aspect) <= room:
            return Layout(map_width, max(1, round(map_width / aspect)), footer, columns)
        fitted = max(1, min(map_width - 1, round(room * aspect)))
        if _footer(classes, fitted) == (columns, footer):
            return Layout(fitted, room, footer, columns)
        map_width = fitted


def _footer(classes: int, width: int) -> tuple[int, int]:
    """Legend columns and footer height in pixels for a picture ``width`` pixels wide."""
    columns = max(1, min(classes, width // _COLUMN_PX))
    return columns, 2 * _PAD_PX + _TITLE_PX + math.ceil(classes / columns) * _ROW_PX


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


def frame_png(
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

    renderer = canvas.get_renderer()
    top = layout.footer_height - _PAD_PX
    heading = text(_PAD_PX, top, title, 15, va="top", fontweight="bold", color="#222222")
    _fit(heading, renderer, layout.width - 2 * _PAD_PX)
    column_px = layout.width / layout.columns
    for number, row in enumerate(legend):
        x = _PAD_PX + (number % layout.columns) * column_px
        y = top - _TITLE_PX - (number // layout.columns + 0.5) * _ROW_PX
        colour = class_colour(row.class_name)
        figure.add_artist(
            patches.Rectangle(
                (x, y - 7), 22, 14, transform=pixels, facecolor=colour, alpha=_SWATCH_ALPHA
            )
        )
        figure.add_artist(
            patches.Rectangle(
                (x, y - 7), 22, 14, transform=pixels, fill=False, edgecolor=colour, linewidth=1.5
            )
        )
        objects = f"{row.count:,} object{'s' * (row.count != 1)}"
        words = f"{row.class_name}: {objects}, {format_area(row.total_area_m2)}"
        entry = text(x + 30, y, words, 14, va="center", color="#222222")
        _fit(entry, renderer, column_px - 30 - 2 * _PAD_PX)
    if layout.map_height < _MIN_MAP_PX_FOR_MARKS:
        scale_bar = north = None
    if scale_bar is not None:
        _draw_scale_bar(figure, renderer, patches, text, pixels, layout, scale_bar)
    if north is not None:
        _draw_north_arrow(figure, patches, text, pixels, layout, north)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return buffer.getvalue()


def _fit(text: Any, renderer: Any, width_px: float) -> None:
    """Make a text at most ``width_px`` wide: smaller type down to :data:`_MIN_TEXT_PX`, then
    characters cut from its middle (class names and file names differ at their ends)."""
    size = text.get_fontsize()
    wide = text.get_window_extent(renderer).width
    if wide <= width_px:
        return
    text.set_fontsize(max(size * width_px / wide, _MIN_TEXT_PX * 72 / _DPI))
    words = text.get_text()
    middle, cut = len(words) // 2, 1
    while text.get_window_extent(renderer).width > width_px and cut < len(words):
        text.set_text(words[: middle - (cut + 1) // 2] + "…" + words[middle + cut // 2 :])
        cut += 1


def _draw_scale_bar(
    figure: Any,
    renderer: Any,
    patches: Any,
    text: Callable[..., Any],
    pixels: Any,
    layout: Layout,
    bar: ScaleBar,
) -> None:
    """A black and white bar with its label above, on a white box at the map's bottom left."""
    x, y = 20.0, layout.footer_height + 14.0
    label = text(x, y + 12, bar.label, 13, va="bottom", color="black")
    label_width = label.get_window_extent(renderer).width
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
