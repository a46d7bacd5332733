"""Plan overlapping tiles that cover a raster exactly, edges included.

A tile is a window of the raster (the unit of inference) plus its *core*: the part of the raster
the tile owns. Cores partition the raster: every pixel belongs to exactly one core, and the
boundary between two neighbouring cores runs through the middle of their overlap, where both
tiles see the most context. Stitching keeps each instance's pixels inside its tile's core and
joins pieces across cores by matching the instances both tiles see in their overlap.

All coordinates are global pixel indices of the raster (column, row), half-open.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from geoseg.errors import OptionsError

PixelBox = tuple[int, int, int, int]
"""A half-open pixel box ``(col0, row0, col1, row1)``."""


@dataclass(frozen=True)
class Tile:
    """One window of the raster to run the model on.

    Attributes
    ----------
    index : int
        Position in the plan, row-major over the tile grid.
    col_off, row_off, width, height : int
        The window, in raster pixels; always inside the raster.
    core : PixelBox
        The pixels this tile owns, ``(col0, row0, col1, row1)``, inside the window.
    """

    index: int
    col_off: int
    row_off: int
    width: int
    height: int
    core: PixelBox

    def __post_init__(self) -> None:
        col0, row0, col1, row1 = self.core
        inside = (
            self.col_off <= col0 < col1 <= self.col_off + self.width
            and self.row_off <= row0 < row1 <= self.row_off + self.height
        )
        if self.width <= 0 or self.height <= 0 or not inside:
            raise ValueError(f"tile {self.index}: core {self.core} is not inside its window")

    @property
    def box(self) -> PixelBox:
        """The window as a pixel box ``(col0, row0, col1, row1)``."""
        return (self.col_off, self.row_off, self.col_off + self.width, self.row_off + self.height)


def check_tiling(tile_size: int, overlap_px: int) -> None:
    """Refuse tile sizes and overlaps that cannot tile a raster or stitch objects.

    Tiles must overlap by at least one pixel: stitching joins the pieces of an object cut by a
    tile border by comparing what both tiles see in their overlap.
    """
    if tile_size < 16:
        raise OptionsError(
            f"tile size {tile_size} px is too small; use at least 16 (512 is typical)"
        )
    if overlap_px < 1:
        raise OptionsError(
            f"overlap {overlap_px} px: tiles must overlap by at least 1 px so objects cut by a "
            "tile border can be joined (64 is typical)"
        )
    if overlap_px * 2 > tile_size:
        raise OptionsError(
            f"overlap {overlap_px} px is more than half the tile size {tile_size} px; "
            "use a smaller overlap or a larger tile size"
        )


def plan_axis(length: int, tile_size: int, overlap_px: int) -> list[tuple[int, int, int, int]]:
    """Plan tiles along one axis as ``(offset, size, core_start, core_end)``.

    Tiles step by ``tile_size - overlap_px``; the last one is pulled back to end exactly at the
    raster's edge (it then overlaps its neighbour more), so nothing is read out of bounds and no
    strip is missed. An axis shorter than a tile gets one tile of its own length.

    >>> plan_axis(10, 16, 4)
    [(0, 10, 0, 10)]
    """
    if length <= tile_size:
        return [(0, length, 0, length)]
    stride = tile_size - overlap_px
    offsets = [*range(0, length - tile_size, stride), length - tile_size]
    if len(offsets) > 1 and offsets[-1] == offsets[-2]:
        offsets.pop()
    cuts = [(offsets[i + 1] + offsets[i] + tile_size) // 2 for i in range(len(offsets) - 1)]
    starts = [0, *cuts]
    ends = [*cuts, length]
    return [(o, tile_size, s, e) for o, s, e in zip(offsets, starts, ends, strict=True)]


def plan_tiles(width: int, height: int, tile_size: int, overlap_px: int) -> tuple[Tile, ...]:
    """Cover a ``width`` x ``height`` raster with overlapping tiles whose cores partition it.

    >>> [t.box for t in plan_tiles(20, 10, 16, 4)]
    [(0, 0, 16, 10), (4, 0, 20, 10)]
    """
    check_tiling(tile_size, overlap_px)
    if width < 1 or height < 1:
        raise OptionsError(f"cannot tile an empty raster of {width} x {height} px")
    cols = plan_axis(width, tile_size, overlap_px)
    rows = plan_axis(height, tile_size, overlap_px)
    return tuple(
        Tile(
            index=index,
            col_off=col[0],
            row_off=row[0],
            width=col[1],
            height=row[1],
            core=(col[2], row[2], col[3], row[3]),
        )
        for index, (row, col) in enumerate(product(rows, cols))
    )


def intersection(a: PixelBox, b: PixelBox) -> PixelBox | None:
    """The pixel box two boxes share, or None when they share no pixel."""
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[0] < box[2] and box[1] < box[3] else None


def overlapping_pairs(tiles: tuple[Tile, ...]) -> list[tuple[Tile, Tile, PixelBox]]:
    """Every pair of tiles whose windows share pixels, with the shared box, in plan order.

    ``tiles`` must be in plan order (rows of tiles top to bottom), which bounds the search to the
    next rows of tiles.
    """
    pairs = []
    for i, a in enumerate(tiles):
        for b in tiles[i + 1 :]:
            if b.row_off >= a.row_off + a.height:
                break
            shared = intersection(a.box, b.box)
            if shared is not None:
                pairs.append((a, b, shared))
    return pairs


RESAMPLING_TOLERANCE = 0.05
"""Rasters within 5 % of a model's ground resolution are read as they are."""


def resampling_scale(pixel_m: float, gsd_m: float | None) -> float:
    """Model pixels per raster pixel when tiles are resampled to the model's ground resolution.

    ``pixel_m`` is the raster's ground pixel size (metres), ``gsd_m`` the model's (None: the
    model takes any resolution). Returns 1.0 when no resampling is needed.

    >>> resampling_scale(0.075, 0.15)
    0.5
    """
    if gsd_m is None or abs(pixel_m / gsd_m - 1.0) <= RESAMPLING_TOLERANCE:
        return 1.0
    return pixel_m / gsd_m


def raster_tiling(tile_px: int, overlap_px: int, scale: float) -> tuple[int, int]:
    """A model's tile size and overlap (its own pixels) in raster pixels at ``scale``.

    A model that expects 0.15 m tiles of 512 px reads 1024 px of a 0.075 m raster per tile, so
    it sees the same ground as in training; the result stays a valid tiling.
    """
    tile = max(16, round(tile_px / scale))
    overlap = max(1, min(round(overlap_px / scale), tile // 2))
    return tile, overlap
